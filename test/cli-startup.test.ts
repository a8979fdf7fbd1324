// What the command line loads before it has work for it: --help, --version and a mistyped command or flag load neither
// libtorch (~0.8 s of shared libraries) nor the modules of commands they do not run (train's config schema, compiled
// by Ajv: ~0.1 s), since those are required where a command first uses them; a damaged tokenizer is one clear error line.
// Runs the built CLI, dist/cli.js (npm run build:ts first).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './helpers/fixture';

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const ENV = { ...process.env, OMP_NUM_THREADS: '1' };

/**
 * Runs the CLI with a script required first that writes, as the process exits, the native modules and shared libraries
 * it has loaded (/proc/self/maps where there is one) and the package's modules it has required.
 */
function loaded(args: string[]): { status: number | null; stderr: string; libraries: string[]; modules: string[] } {
  const dir = tempDir();
  const report = path.join(dir, 'loaded.json');
  const probe = path.join(dir, 'probe.js');
  fs.writeFileSync(
    probe,
    `process.on('exit', () => {
      const maps = require('node:fs').existsSync('/proc/self/maps') ? require('node:fs').readFileSync('/proc/self/maps', 'utf8') : '';
      const libraries = [...new Set(maps.split('\\n').map((l) => l.split(/\\s+/)[5]).filter((f) => f && /\\.(so|node)(\\.|$)/.test(f)))];
      const modules = Object.keys(require.cache);
      require('node:fs').writeFileSync(${JSON.stringify(report)}, JSON.stringify({ libraries, modules }));
    });`,
  );
  const run = spawnSync(process.execPath, ['--require', probe, CLI, ...args], { cwd: ROOT, encoding: 'utf8', env: ENV, timeout: 120_000 });
  return { status: run.status, stderr: run.stderr, ...(JSON.parse(fs.readFileSync(report, 'utf8')) as { libraries: string[]; modules: string[] }) };
}

test('help, the version and mistyped commands or flags load neither libtorch nor the modules of other commands', (t) => {
  const runs: [string[], number][] = [
    [['--help'], 0],
    [['--version'], 0],
    [['embed', '--help'], 0],
    [['embed', '--bogus', 'x.txt'], 2],
    [['train', '--epochs'], 2],
    [['nosuch'], 2],
  ];
  for (const [args, status] of runs) {
    const run = loaded(args);
    const label = `coltrast ${args.join(' ')}`;
    t.is(run.status, status, `${label}\n${run.stderr}`);
    t.deepEqual(run.libraries.filter((f) => /libtorch|libc10|coltrast\.node|tokenizers/.test(f)), [], label);
    t.deepEqual(run.modules.filter((f) => f.endsWith('.node')), [], label);
    t.deepEqual(
      run.modules.filter((f) => /[/\\](ajv|re2js|@huggingface[/\\]jinja)[/\\]|[/\\]dist[/\\](config-schema|train|serve|search-index|encoder|native)\.js$/.test(f)),
      [],
      label,
    );
  }
});

test('embed loads the addon and the tokenizer it uses, and the modules of no other command', (t) => {
  const dir = tempDir();
  const texts = path.join(dir, 'texts.txt');
  fs.writeFileSync(texts, 'alpha beta\ngamma delta\n');
  const run = loaded(['embed', texts, '--output', path.join(dir, 'out.npy')]);
  t.is(run.status, 0, run.stderr);
  t.true(fs.existsSync(path.join(dir, 'out.npy')));
  t.true(run.modules.some((f) => /[/\\]dist[/\\]native\.js$/.test(f)));
  t.deepEqual(run.modules.filter((f) => /[/\\]ajv[/\\]|[/\\]dist[/\\](config-schema|train|serve|search-index|evaluate)\.js$/.test(f)), []);
});

test('a damaged tokenizer.json is one coltrast: error line naming the tokenizer, without a stack trace', (t) => {
  const model = path.join(tempDir(), 'model');
  fs.cpSync(path.join(ROOT, 'default-model'), model, { recursive: true });
  fs.writeFileSync(path.join(model, 'tokenizer.json'), '{"version": "1.0", "model": ');
  const texts = path.join(path.dirname(model), 'texts.txt');
  fs.writeFileSync(texts, 'alpha beta\n');
  const run = spawnSync(process.execPath, [CLI, 'embed', texts, '--model', model], { cwd: ROOT, encoding: 'utf8', env: ENV, timeout: 120_000 });
  t.is(run.status, 2, run.stderr);
  const lines = run.stderr.split('\n').filter((l) => l.startsWith('coltrast: '));
  t.is(lines.length, 1, run.stderr);
  t.regex(lines[0] ?? '', /tokenizer/i);
  t.notRegex(run.stderr, /\n\s+at |node:internal|unhandled/i);
});
