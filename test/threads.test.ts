// The CPU thread count: `threads` when given (Encoder.load, setThreads, --threads), else OMP_NUM_THREADS when it
// is a positive integer (as PyTorch takes it: a test runner or job scheduler that gives each process a share of
// the cores sets both), else every core. Each case runs in a process of its own, since the setting is the process's.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { FIXTURE } from './helpers/fixture';

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');

function threadsIn(env: Record<string, string | undefined>, script?: string): number {
  const e = { ...process.env, ...env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete e[k];
  const r = script
    ? spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 240_000, env: e, cwd: ROOT })
    : spawnSync(process.execPath, [CLI, 'info', '--json'], { encoding: 'utf8', timeout: 240_000, env: e });
  if (r.status !== 0) throw new Error(r.stderr);
  return script ? Number(r.stdout.trim()) : JSON.parse(r.stdout).threads;
}

test('without a setting, every core; OMP_NUM_THREADS sets the default when it is a positive integer', (t) => {
  t.is(threadsIn({ OMP_NUM_THREADS: undefined }), os.availableParallelism());
  t.is(threadsIn({ OMP_NUM_THREADS: '3' }), 3);
  t.is(threadsIn({ OMP_NUM_THREADS: '3,1' }), 3, "a nested list: the first level's, as OpenMP takes it");
  for (const ignored of ['0', '-2', 'two', '2x', '']) t.is(threadsIn({ OMP_NUM_THREADS: ignored }), os.availableParallelism(), `OMP_NUM_THREADS=${JSON.stringify(ignored)}`);
});

test('the threads option wins over OMP_NUM_THREADS, and a later load without it keeps it', (t) => {
  const script = `
    const { Encoder, runtimeInfo } = require('./dist');
    (async () => {
      const a = await Encoder.load(${JSON.stringify(FIXTURE)}, { device: 'cpu', threads: 5 });
      const first = runtimeInfo().threads;
      const b = await Encoder.load(${JSON.stringify(FIXTURE)}, { device: 'cpu' });
      console.log(first * 100 + runtimeInfo().threads);
      a.dispose(); b.dispose();
    })().catch((e) => { console.error(e); process.exit(1); });`;
  t.is(threadsIn({ OMP_NUM_THREADS: '3' }, script), 505);
  // Without the option, the first load applies the default.
  t.is(threadsIn({ OMP_NUM_THREADS: '3' }, script.replace(', threads: 5', '')), 303);
});
