/** The kill-and-resume check shared by the training tests: a run killed mid-epoch resumes and ends as an uninterrupted one. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { tempDir } from './fixture';

const CHILD = path.resolve(__dirname, 'train-child.ts');
// A time limit: a child that never ends (a CI run once sat out ava's 5 minutes in test/train.test.ts, whose spawnSync calls
// then held its event loop, no test of the file reporting) fails its own check, killed, with what it printed.
const run = (options: object) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(options)], { encoding: 'utf8', timeout: 240_000 });
  if (r.error) throw new Error(`the training child did not end within 4 minutes (${r.error.message}); its stderr:\n${r.stderr}`);
  return r;
};

/**
 * Trains `base` (JSON TrainOptions with checkpointEvery; RagTrainOptions with `rag: true`) uninterrupted, then again
 * killed by SIGKILL right after step `killAt`, then resumed: the resumed run must end with the uninterrupted run's
 * weights (`weights`, default model.safetensors, paths in the output folder) and per-step losses (in `history`,
 * default training_history.json), its checkpoint (written at step `checkpointAt`) gone. `steps` is the run's number
 * of optimizer steps. `beforeResume` may change the killed run's checkpoint folder first.
 */
export function checkKillAndResume(
  t: ExecutionContext,
  base: object,
  {
    steps, killAt, checkpointAt, weights = ['model.safetensors'], history = 'training_history.json', beforeResume,
  }: { steps: number; killAt: number; checkpointAt: number; weights?: string[]; history?: string; beforeResume?: (checkpoint: string) => void },
): void {
  const dir = tempDir();
  const whole = run({ ...base, output: path.join(dir, 'whole') });
  t.is(whole.status, 0, whole.stderr);
  t.is(JSON.parse(whole.stdout).steps, steps);

  const output = path.join(dir, 'resumed');
  const killed = run({ ...base, output, killAtStep: killAt });
  t.is(killed.signal, 'SIGKILL');
  t.true(fs.existsSync(path.join(`${output}.checkpoint`, 'state.json')));
  t.is(JSON.parse(fs.readFileSync(path.join(`${output}.checkpoint`, 'state.json'), 'utf8')).state.step, checkpointAt);
  beforeResume?.(`${output}.checkpoint`);
  const resumed = run({ ...base, output, resume: true });
  t.is(resumed.status, 0, resumed.stderr);
  t.is(JSON.parse(resumed.stdout).steps, steps, 'the history covers the whole run');
  for (const file of weights) {
    t.true(fs.readFileSync(path.join(output, file)).equals(fs.readFileSync(path.join(dir, 'whole', file))), `the resumed run ends with the uninterrupted run’s ${file}`);
  }
  t.false(fs.existsSync(`${output}.checkpoint`), 'a finished run removes its checkpoint');
  const a = JSON.parse(fs.readFileSync(path.join(output, history), 'utf8'));
  const b = JSON.parse(fs.readFileSync(path.join(dir, 'whole', history), 'utf8'));
  t.deepEqual(a.history.steps.map((s: { loss: number }) => s.loss), b.history.steps.map((s: { loss: number }) => s.loss));
}

/**
 * checkKillAndResume for a run (`base`, which checkpoints every 2 steps) whose number of steps is found by running it
 * once without checkpoints: at least 6, killed one step before its end, its last checkpoint the even step before that.
 */
export function checkKillAndResumeNearEnd(t: ExecutionContext, base: object): void {
  t.is((base as { checkpointEvery?: number }).checkpointEvery, 2);
  const probe = run({ ...base, output: path.join(tempDir(), 'probe'), checkpointEvery: 0 });
  t.is(probe.status, 0, probe.stderr);
  const steps = JSON.parse(probe.stdout).steps as number;
  t.true(steps >= 6, `${steps} steps`);
  checkKillAndResume(t, base, { steps, killAt: steps - 1, checkpointAt: steps - 2 - ((steps - 2) % 2) });
}
