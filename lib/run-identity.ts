/**
 * A training run's identity, kept in its checkpoints (train() and trainRag()), so that a resume with other settings or
 * data is refused: it would go on from the checkpoint's weights and examples under the new settings, and end with the
 * weights of neither run, where a resume promises those of the uninterrupted run.
 */
import { createHash } from 'node:crypto';
import { ColtrastError } from './errors';
import { inTurns } from './turns';

const digest = (text: string) => `sha256:${createHash('sha256').update(text).digest('hex')}`;

/** JSON with every object's keys sorted: options given as { r: 8, alpha: 16 } or { alpha: 16, r: 8 } are the same run. */
const canonical = (value: unknown): string =>
  JSON.stringify(value, (_, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );

/**
 * Each setting as its JSON, keys sorted (a digest when longer than 200 characters; undefined ones left out), and
 * `data`, a digest of the lists of `data` as read, hashed an item at a time in turns of the event loop (a million pairs
 * are about a second). Callers pass resolved settings (defaults filled in, model paths absolute), so that an option given at its
 * default is the same run as one left out; and only what shapes the steps (not the device, threads or how often to save).
 */
export async function runIdentity(settings: Record<string, unknown>, data: Record<string, readonly unknown[] | undefined>): Promise<Record<string, string>> {
  const identity: Record<string, string> = {};
  for (const [key, value] of Object.entries(settings)) {
    if (value === undefined) continue;
    const json = canonical(value);
    identity[key] = json.length <= 200 ? json : digest(json);
  }
  const hash = createHash('sha256');
  for (const [name, list] of Object.entries(data)) {
    if (!list) continue;
    hash.update(`${name}:${list.length}\n`);
    await inTurns(list, (item) => hash.update(`${JSON.stringify(item)}\n`));
  }
  identity.data = `sha256:${hash.digest('hex')}`;
  return identity;
}

/** Refuses to resume the checkpoint `dir` of a run (`then`) with other settings or data than `now`, naming what differs. */
export function checkSameRun(dir: string, then: Record<string, string> | undefined, now: Record<string, string>): void {
  if (!then) return; // a checkpoint written before runs kept their identity
  const keys = [...new Set([...Object.keys(then), ...Object.keys(now)])].filter((key) => then[key] !== now[key]);
  if (keys.length === 0) return;
  const shown = (value: string | undefined) => (value === undefined ? 'not set' : value);
  const short = (value: string | undefined) => value === undefined || (value.length <= 60 && !value.startsWith('sha256:'));
  const differences = keys.map((key) =>
    key === 'data'
      ? 'the data (other examples, or the same file changed)'
      : short(then[key]) && short(now[key])
        ? `options.${key} ${shown(then[key])} then, ${shown(now[key])} now`
        : `options.${key} differs`,
  );
  throw new ColtrastError(
    'INVALID_ARGUMENT',
    `options.resume: ${dir} is of a run with other settings: ${differences.join('; ')}. Resume with that run's data and options, or train without resume to start over (which replaces the checkpoint)`,
  );
}
