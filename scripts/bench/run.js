#!/usr/bin/env node
// Runs the benchmark suites that fit this machine, one child process each (so one suite's memory and
// threads do not colour the next), and writes what they measured:
//   <out>/<suite>-<device>.json   each suite's own JSON (machine, versions, rows)
//   <out>/results.json            all of them, with the exact commands
//   <out>/results.md              one Markdown table per suite, headed by machine, date and command
//   <out>/<suite>-<device>.svg    a bar chart of each suite's headline number per row
// Suites: ops (fused losses against eager libtorch), embed (texts/s), train (samples/s), index (search
// latency and QPS), multivector (a ColBERT-style index: build and exact MaxSim search), each on the CPU and on CUDA too where a GPU and a CUDA build are present;
// crossencoder, decoder, encoders and generator (coltrast beside sentence-transformers / transformers, where
// build/pyenv or COLTRAST_ST_PYTHON has them); serve (HTTP requests/s under concurrent clients); and, where a python3 with torch is (COLTRAST_PYTHON, python3 or
// /usr/bin/python3), python (coltrast against the same recipe in plain PyTorch: train samples/s and embed texts/s, side
// by side) and parity (per-step losses of both). Without --suites, all of them, in SUITES' order.
// `npm run bench` and `coltrast bench` run this. --quick: small sizes, a few minutes on two cores.
//   node scripts/bench/run.js [--out bench-results] [--suites ops,embed,train,index,multivector,crossencoder,decoder,encoders,generator,serve,python,parity] [--quick]
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { parseArgs } = require('node:util');

const { values } = parseArgs({
  options: {
    out: { type: 'string', default: 'bench-results' },
    suites: { type: 'string' }, // default: every suite, in SUITES' order
    quick: { type: 'boolean', default: false },
  },
});

const root = path.resolve(__dirname, '..', '..');
const { runtimeInfo } = require(path.join(root, 'dist'));

// Each suite: its script, arguments per device (full and --quick), and the number its chart shows.
const SUITES = {
  ops: {
    script: 'ops.js',
    args: (device, quick) => ['--device', device, '--runs', quick ? '5' : '20', ...(device === 'cuda' ? ['--dtype', 'bfloat16'] : [])],
    label: (r) => `${r.op} B=${r.B} N=${r.N}`,
    value: (r) => r.speedup,
    unit: 'speed-up of the fused op over eager libtorch (×)',
  },
  embed: {
    script: 'embed.js',
    args: (device, quick) => ['--device', device, '--shapes', quick ? 'tiny,minilm' : 'tiny,minilm,base', '--texts', quick ? '400' : '2000'],
    label: (r) => r.model,
    value: (r) => r.textsPerSecond,
    unit: 'texts/s',
  },
  train: {
    script: 'train.js',
    args: (device, quick) => ['--device', device, '--shapes', quick ? 'tiny,minilm' : 'tiny,minilm,base', '--steps', quick ? '3' : '6', '--batch-size', '16'],
    label: (r) => `${r.model} batch ${r.batchSize}`,
    value: (r) => r.samplesPerSecond,
    unit: 'samples/s',
  },
  index: {
    script: 'index.js',
    args: (device, quick) => (device === 'cpu' ? ['--rows', quick ? '100000' : '1000000', '--dim', '384', '--storage', 'float16'] : null),
    label: (r) => `${r.rows} rows, batch ${r.batch}`,
    value: (r) => r.queriesPerSecond,
    unit: 'queries/s',
  },
  multivector: {
    script: 'multi-vector.js',
    args: (device, quick) => ['--device', device, '--docs', quick ? '200' : '2000', '--queries', quick ? '16' : '64'],
    label: (r) => `${r.measure} (${r.unit})`,
    value: (r) => r.rate,
    unit: 'a multi-vector index: documents/s to build, queries/s to search',
  },
  crossencoder: {
    // sentence-transformers' CrossEncoder.predict on the same model and pairs (build/pyenv, or COLTRAST_ST_PYTHON).
    script: 'cross-encoder.js',
    needsSentenceTransformers: true,
    args: (device, quick) => (device === 'cpu' ? ['--shape', quick ? 'small' : 'minilm', '--pairs', quick ? '100' : '500', '--rounds', quick ? '1' : '3'] : null),
    label: (r) => r.side,
    value: (r) => r.pairsPerSecond,
    unit: 'cross-encoder re-ranking, pairs/s',
  },
  decoder: {
    // sentence-transformers' encode() of a Qwen3-Embedding-shaped random model (build/pyenv, or COLTRAST_ST_PYTHON).
    script: 'architectures.js',
    needsSentenceTransformers: true,
    args: (device, quick) => (device === 'cpu' ? ['--shape', quick ? 'qwen3-small' : 'qwen3-0.6b', '--texts', quick ? '16' : '100', '--rounds', quick ? '1' : '2'] : null),
    label: (r) => r.side,
    value: (r) => r.textsPerSecond,
    unit: 'decoder (Qwen3) embedding, texts/s',
  },
  encoders: {
    // sentence-transformers' encode() of an all-mpnet-base-v2-shaped random model (build/pyenv, or COLTRAST_ST_PYTHON); the
    // DeBERTa-v3-base, ModernBERT-base and sentence-t5-base shapes with architectures.js --shape deberta-v3-base / modernbert-base / sentence-t5-base.
    script: 'architectures.js',
    needsSentenceTransformers: true,
    args: (device, quick) => (device === 'cpu' ? ['--shape', 'mpnet-base', '--texts', quick ? '16' : '64', '--rounds', quick ? '1' : '2'] : null),
    label: (r) => r.side,
    value: (r) => r.textsPerSecond,
    unit: 'MPNet-base embedding, texts/s',
  },
  generator: {
    // transformers' log-likelihoods and generate() on a Qwen3ForCausalLM-shaped random model (build/pyenv, or COLTRAST_ST_PYTHON);
    // on a GPU in bfloat16, the full 28-layer Qwen3-0.6B shape.
    script: 'generator.js',
    needsSentenceTransformers: true,
    args: (device, quick) =>
      device === 'cpu'
        ? ['--pairs', quick ? '16' : '64', '--prompts', quick ? '8' : '16', '--max-new-tokens', quick ? '8' : '32', '--beam-prompts', quick ? '2' : '8', '--rounds', quick ? '1' : '2']
        : ['--device', device, '--dtype', 'bfloat16', '--shape', quick ? 'qwen3-small' : 'qwen3-0.6b', '--pairs', quick ? '32' : '256', '--prompts', quick ? '16' : '64',
            '--batch-size', '32', '--max-new-tokens', quick ? '16' : '64', '--beam-prompts', quick ? '8' : '32', '--rounds', quick ? '1' : '2'],
    label: (r) => `${r.measure}: ${r.side}`,
    value: (r) => r.rate,
    unit: 'causal LM: log-likelihood pairs/s, generated tokens/s (greedy, beam search)',
  },
  serve: {
    // coltrast serve under concurrent clients, with and without batching across requests.
    script: 'serve.js',
    args: (device, quick) => ['--device', device, '--requests', quick ? '100' : '400', '--concurrency', quick ? '1,16' : '1,8,32', '--rounds', quick ? '1' : '3'],
    label: (r) => `${r.clients} client${r.clients > 1 ? 's' : ''}, ${r.batching ? 'batched' : 'one call per request'}`,
    value: (r) => r.requestsPerSecond,
    unit: 'POST /v1/embeddings, one sentence per request: requests/s',
  },
  python: {
    // On the CPU the plain-PyTorch recipe (Debian's torch); on a GPU sentence-transformers and the eager
    // ColTrast recipe on its models (scripts/bench/python/compare-gpu.js).
    script: (device) => (device === 'cpu' ? 'python/compare.js' : 'python/compare-gpu.js'),
    needsPython: true,
    args: (device, quick) =>
      device === 'cpu'
        ? ['--shape', quick ? 'small' : 'minilm', '--batch-sizes', quick ? '16' : '32', '--steps', quick ? '2' : '5', '--texts', quick ? '200' : '1000', '--rounds', quick ? '1' : '2']
        : quick
          ? ['--quick']
          : [],
    // One row per measurement, coltrast's and Python's numbers side by side.
    rows: (result) =>
      result.device !== 'cpu' && result.rows.largest
        ? [
            ...result.rows.embed.map((r) => ({ measure: `embed ${r.shape} ${r.dtype}`, unit: 'texts/s', coltrast: r.coltrast.textsPerSecond, python: r.sentenceTransformers.textsPerSecond, coltrastPeakGpuMiB: r.coltrast.peakGpuMiB, pythonPeakGpuMiB: r.sentenceTransformers.peakGpuMiB })),
            ...result.rows.train.map((r) => ({ measure: `train ${r.loss} ${r.precision} batch ${r.batchSize}${r.miniBatchSize ? `, both cached (mini-batch ${r.miniBatchSize})` : ''}`, unit: 'samples/s', coltrast: r.coltrast.oom ? 'OOM' : r.coltrast.samplesPerSecond, python: r.python.oom ? 'OOM' : r.python.samplesPerSecond, coltrastPeakGpuMiB: r.coltrast.peakGpuMiB, pythonPeakGpuMiB: r.python.peakGpuMiB })),
            ...result.rows.largest.flatMap((r) => [
              { measure: `largest batch ${r.loss} ${r.precision}`, unit: 'batch', coltrast: r.coltrast?.largestBatch, python: r.python?.largestBatch },
              { measure: `largest batch ${r.loss} ${r.precision}, coltrast with miniBatchSize ${r.miniBatchSize}`, unit: 'batch', coltrast: r.coltrastCached?.largestBatch, python: r.python?.largestBatch },
            ]),
          ]
        : [
            ...result.rows.train.map((r) => ({ measure: `train batch ${r.batchSize}`, unit: 'samples/s', coltrast: r.coltrast.samplesPerSecond, python: r.python.samplesPerSecond, coltrastPeakRssMiB: r.coltrast.peakRssMiB, pythonPeakRssMiB: r.python.peakRssMiB })),
            ...result.rows.embed.map((r) => ({ measure: `embed ${r.texts} texts`, unit: 'texts/s', coltrast: r.coltrast.textsPerSecond, python: r.python.textsPerSecond, coltrastPeakRssMiB: r.coltrast.peakRssMiB, pythonPeakRssMiB: r.python.peakRssMiB })),
          ],
    label: (r) => `${r.measure} (${r.unit})`,
    // Throughputs only (a largest-batch row is in the table, not the chart); an OOM side has no bar.
    value: (r) => (r.unit === 'batch' ? undefined : r.coltrast),
    compare: (r) => (typeof r.python === 'number' ? r.python : undefined),
    unit: 'coltrast (blue) and the Python baseline (orange): plain PyTorch on the CPU, sentence-transformers on a GPU',
  },
  parity: {
    script: 'parity.js',
    needsPython: true,
    // parity.js writes parity.json (and its own loss-curve chart, parity.svg) into a folder.
    args: (device, quick, out) => (device === 'cpu' ? ['--shape', quick ? 'tiny' : 'small', '--steps', quick ? '10' : '50', '--out', path.join(out, 'parity')] : null),
    output: (out) => path.join(out, 'parity', 'parity.json'),
    rows: (result) => Object.entries(result.maxRelDiff).map(([part, value]) => ({ part, maxRelativeDifference: value })),
    chart: (out) => path.join('parity', 'parity.svg'),
  },
};

/** A horizontal bar chart: one bar per row, the value printed at its end. Hand-written (see lib/report.ts). */
function barChart(title, unit, bars) {
  const rowHeight = 26;
  const labelWidth = 230;
  const width = 640;
  const plot = width - labelWidth - 70;
  const height = 50 + rowHeight * bars.length + 20;
  const max = Math.max(...bars.flatMap((b) => [b.value, b.compare ?? 0]), 1e-9);
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`,
    `<text x="10" y="38" fill="#555">${esc(unit)}</text>`,
  ];
  bars.forEach((b, i) => {
    const y = 50 + i * rowHeight;
    const w = Math.max(1, (b.value / max) * plot);
    parts.push(`<text x="${labelWidth - 6}" y="${y + 15}" text-anchor="end">${esc(b.label)}</text>`);
    if (b.compare === undefined) {
      parts.push(`<rect x="${labelWidth}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowHeight - 8}" fill="#3b6ea5"/>`);
      parts.push(`<text x="${(labelWidth + w + 4).toFixed(1)}" y="${y + 15}">${esc(b.value)}</text>`);
    } else {
      const w2 = Math.max(1, (b.compare / max) * plot);
      parts.push(`<rect x="${labelWidth}" y="${y + 2}" width="${w.toFixed(1)}" height="10" fill="#3b6ea5"/>`);
      parts.push(`<text x="${(labelWidth + w + 4).toFixed(1)}" y="${y + 11}" font-size="10">${esc(b.value)}</text>`);
      parts.push(`<rect x="${labelWidth}" y="${y + 13}" width="${w2.toFixed(1)}" height="10" fill="#e08a2c"/>`);
      parts.push(`<text x="${(labelWidth + w2 + 4).toFixed(1)}" y="${y + 22}" font-size="10">${esc(b.compare)}</text>`);
    }
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

function markdownTable(rows) {
  if (rows.length === 0) return '(no rows)';
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return [`| ${keys.join(' | ')} |`, `|${keys.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${keys.map((k) => r[k] ?? '').join(' | ')} |`)].join('\n');
}

function main() {
  const out = path.resolve(values.out);
  fs.mkdirSync(out, { recursive: true });
  const info = runtimeInfo();
  const devices = ['cpu', ...(info.cudaAvailable ? ['cuda'] : [])];
  const results = [];
  const failures = [];
  const skipped = [];
  // The Python suites' own choice (COLTRAST_PYTHON, python3, /usr/bin/python3: the first with torch).
  const names = values.suites?.split(',') ?? Object.keys(SUITES);
  const python = names.some((n) => SUITES[n]?.needsPython) && require('./parity').findPython() !== null;
  for (const name of names) {
    const suite = SUITES[name];
    if (!suite) {
      console.error(`bench: unknown suite '${name}' (${Object.keys(SUITES).join(', ')})`);
      process.exit(2);
    }
    if (suite.needsPython && !python) {
      skipped.push(`${name}: no python3 with torch (install python3-torch, or set COLTRAST_PYTHON)`);
      continue;
    }
    const stPython = process.env.COLTRAST_ST_PYTHON || path.join(root, 'build', 'pyenv', 'bin', 'python');
    if (suite.needsSentenceTransformers && !fs.existsSync(stPython)) {
      skipped.push(`${name}: no ${stPython} with sentence-transformers (scripts/setup.sh makes it, or set COLTRAST_ST_PYTHON)`);
      continue;
    }
    for (const device of devices) {
      const args = suite.args(device, values.quick, out);
      if (!args) continue;
      const json = suite.output ? suite.output(out) : path.join(out, `${name}-${device}.json`);
      const fullArgs = suite.output ? args : [...args, '--json', json];
      const script = typeof suite.script === 'function' ? suite.script(device) : suite.script;
      const command = ['node', `scripts/bench/${script}`, ...fullArgs];
      console.log(`bench: ${command.join(' ')}`);
      const started = Date.now();
      fs.rmSync(json, { force: true });
      const r = spawnSync(process.execPath, [path.join(__dirname, script), ...fullArgs], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
      if (r.status !== 0 || !fs.existsSync(json)) {
        failures.push(`${name} on ${device} (exit ${r.status ?? r.signal})`);
        continue;
      }
      const result = JSON.parse(fs.readFileSync(json, 'utf8'));
      const rows = suite.rows ? suite.rows(result) : result.rows;
      let chart;
      if (suite.chart) chart = suite.chart(out);
      else {
        chart = `${name}-${device}.svg`;
        const bars = rows
          .filter((row) => typeof suite.value(row) === 'number')
          .map((row) => ({ label: suite.label(row), value: suite.value(row), compare: suite.compare?.(row) }));
        fs.writeFileSync(path.join(out, chart), barChart(`${name} on ${device}`, suite.unit, bars));
      }
      results.push({ suite: name, device, command: command.join(' '), seconds: (Date.now() - started) / 1000, result, rows, chart });
    }
  }
  fs.writeFileSync(path.join(out, 'results.json'), `${JSON.stringify({ date: new Date().toISOString(), quick: values.quick, results, failures, skipped }, null, 2)}\n`);
  const md = results.map(({ suite, device, command, result, rows, chart }) =>
    [
      `## ${suite} on ${device}`,
      '',
      `${result.date}; ${result.cpu}, ${result.threads ?? result.coltrast?.threads} threads, libtorch ${result.torch ?? result.coltrast?.torch}. Command: \`${command}\``,
      '',
      markdownTable(rows),
      '',
      `![${suite} on ${device}](${chart})`,
      '',
    ].join('\n'),
  );
  fs.writeFileSync(path.join(out, 'results.md'), `# coltrast benchmarks\n\n${values.quick ? 'A --quick run: small sizes and one round each, a check that the suites run; the numbers are indicative only.\n\n' : ''}${md.join('\n')}${skipped.length ? `\nNot run here: ${skipped.join('; ')}\n` : ''}${failures.length ? `\nFailed: ${failures.join('; ')}\n` : ''}`);
  for (const why of skipped) console.log(`bench: not run: ${why}`);
  console.log(`bench: wrote ${path.relative(process.cwd(), out) || out}/results.{json,md} and ${results.length} charts`);
  if (failures.length) {
    console.error(`bench: failed: ${failures.join('; ')}`);
    process.exit(1);
  }
}

main();
