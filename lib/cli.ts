#!/usr/bin/env node
/**
 * The `coltrast` command line. Each command validates its flags (node:util parseArgs, strict: unknown
 * flags are errors) and exits non-zero with a one-line reason on bad input.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { Encoder, type Device } from './encoder';
import { ColtrastError } from './errors';
import { ProgressBar } from './progress';
import { runtimeInfo } from './runtime';

const USAGE = `usage: coltrast <command> [options]

commands:
  info                       libtorch, devices, threads and BLAS in use
  embed <texts>              embed a text file (one text per line) or JSONL ({"text": ...} per line)
    --model <dir|hub id>     model folder or Hugging Face id (required)
    --output <file>          write JSONL {"index", "embedding"} here (default: stdout)
    --batch-size <n>         texts per forward pass (default 32)
    --device <d>             auto | cpu | cuda | cuda:N (default auto)
    --threads <n>            CPU threads (default: every core)
    --json                   print a JSON summary instead of text
  help                       this text`;

function fail(message: string): never {
  process.stderr.write(`coltrast: ${message}\n`);
  process.exit(2);
}

function readTexts(file: string): string[] {
  if (!fs.existsSync(file)) fail(`input file ${file} does not exist`);
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim().length > 0);
  if (!file.endsWith('.jsonl')) return lines;
  return lines.map((line, i) => {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      fail(`${file}:${i + 1}: not valid JSON`);
    }
    const text = (value as { text?: unknown })?.text;
    if (typeof text !== 'string') fail(`${file}:${i + 1}: expected an object with a "text" string`);
    return text;
  });
}

async function info(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' } }, strict: true });
  const r = runtimeInfo();
  if (values.json) {
    console.log(JSON.stringify(r, null, 2));
    return;
  }
  console.log(`coltrast ${r.version}`);
  console.log(`libtorch ${r.torchVersion} (${r.torchSource ?? 'unknown source'})`);
  console.log(`CUDA: ${r.cudaAvailable ? `${r.cudaDeviceCount} device(s)` : 'not available'}`);
  console.log(`CPU threads: ${r.threads}`);
  console.log(`BLAS: ${r.blas.kind}${r.blas.libraries.length ? ` (${r.blas.libraries.join(', ')})` : ''}`);
  if (r.blas.warning) console.log(`warning: ${r.blas.warning}`);
}

async function embed(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      model: { type: 'string' },
      output: { type: 'string' },
      'batch-size': { type: 'string' },
      device: { type: 'string' },
      threads: { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  if (positionals.length !== 1) fail('embed takes one input file (see coltrast help)');
  if (!values.model) fail('embed needs --model <folder or Hugging Face id>');
  const int = (flag: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) fail(`--${flag} must be a positive integer, got ${v}`);
    return n;
  };
  const texts = readTexts(positionals[0]);
  const started = Date.now();
  const download = new ProgressBar('download', 'MB');
  const enc = await Encoder.load(values.model, {
    device: (values.device ?? 'auto') as Device,
    threads: int('threads', values.threads),
    onDownloadProgress: (p) => {
      if (p.file === 'model.safetensors' && p.total) download.update(p.downloaded / 2 ** 20, p.total / 2 ** 20);
    },
  });
  const bar = new ProgressBar('embed', 'texts');
  const e = await enc.embed(texts, { batchSize: int('batch-size', values['batch-size']), onProgress: (d, n) => bar.update(d, n) });
  const seconds = (Date.now() - started) / 1000;
  const out = values.output ? fs.createWriteStream(values.output) : process.stdout;
  if (values.output || !values.json) {
    for (let i = 0; i < texts.length; i++) {
      const v = Array.from(e.data.subarray(i * enc.dimension, (i + 1) * enc.dimension), (x) => +x.toFixed(6));
      out.write(JSON.stringify({ index: i, embedding: v }) + '\n');
    }
    if (values.output) await new Promise((resolve) => (out as fs.WriteStream).end(resolve));
  }
  const summary = { texts: texts.length, dimension: enc.dimension, device: enc.device, seconds, output: values.output ?? null };
  if (values.json) console.log(JSON.stringify(summary));
  else if (values.output) console.error(`embedded ${texts.length} texts (dim ${enc.dimension}, ${enc.device}) in ${seconds.toFixed(2)} s -> ${values.output}`);
  enc.dispose();
}

const COMMANDS: Record<string, (argv: string[]) => Promise<void>> = { info, embed };

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    console.log(USAGE);
    return;
  }
  const run = COMMANDS[command];
  if (!run) fail(`unknown command ${command} (commands: ${Object.keys(COMMANDS).join(', ')}, help)`);
  if (rest.includes('--help')) {
    console.log(USAGE);
    return;
  }
  await run(rest);
}

main().catch((error: unknown) => {
  if (error instanceof ColtrastError || (error as { code?: string })?.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    fail((error as Error).message);
  }
  throw error;
});
