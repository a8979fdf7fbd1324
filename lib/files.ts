/** Atomic file and folder writes: readers see the old content or the new, never a half-written one. */
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError } from './errors';

/**
 * Why `file` cannot be read as a file ("does not exist", "is a folder, not a file"), or undefined when it can. Pipes
 * and devices pass: `cat texts.txt | coltrast embed /dev/stdin` reads a pipe.
 */
export function notAFile(file: string): string | undefined {
  const stat = fs.statSync(file, { throwIfNoEntry: false });
  if (!stat) return 'does not exist';
  return stat.isDirectory() ? 'is a folder, not a file' : undefined;
}

/** Refuses an output folder path that names a file (reading it as a folder failed with ENOTDIR). */
export function checkOutputFolder(dir: string, what: string): void {
  const stat = fs.statSync(dir, { throwIfNoEntry: false });
  if (stat && !stat.isDirectory()) throw new ColtrastError('INVALID_ARGUMENT', `${what}: ${dir} is a file; give the path of a folder`);
}

/** Whether an output folder holds anything already (it exists and is not empty); a file there is refused. */
export function nonEmptyFolder(dir: string, what: string): boolean {
  checkOutputFolder(dir, what);
  return fs.existsSync(dir) && fs.readdirSync(dir).length > 0;
}

/** Refuses an output file path that names a folder (writing there failed with EISDIR after all the work). */
export function checkOutputFile(file: string, what: string): void {
  if (fs.statSync(file, { throwIfNoEntry: false })?.isDirectory()) {
    throw new ColtrastError('INVALID_ARGUMENT', `${what}: ${file} is a folder; give the path of the file to write`);
  }
}

export function writeTextAtomic(file: string, text: string): void {
  fs.writeFileSync(`${file}.tmp`, text);
  fs.renameSync(`${file}.tmp`, file);
}

/** JSON with Infinity kept as the string 'Infinity' (JSON has no infinities). */
export function writeJsonAtomic(file: string, value: unknown): void {
  writeTextAtomic(file, JSON.stringify(value, (_, v) => (v === Infinity ? 'Infinity' : v), 2));
}

/**
 * A training run's saved state, `<dir>/state.json` as the run wrote it (version 1), or undefined when the folder has
 * none; a file that is not valid JSON, or another version's, is an error that says to delete the checkpoint.
 */
export function readCheckpointState<T>(dir: string): T | undefined {
  const file = path.join(dir, 'state.json');
  if (!fs.existsSync(file)) return undefined;
  let saved: T & { version?: number };
  try {
    saved = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ColtrastError('MODEL_FILES', `checkpoint ${file} is not valid JSON (${(error as Error).message}); delete ${dir} to start over`);
  }
  if (saved.version !== 1) throw new ColtrastError('MODEL_FILES', `checkpoint ${dir} was written by another coltrast version; delete it to start over`);
  return saved;
}

/** Puts the folder `staging` at `target` by renames (the old `target`, if any, is removed afterwards). */
export function replaceDir(staging: string, target: string): void {
  if (fs.existsSync(target)) {
    const old = `${staging}.old`;
    fs.renameSync(target, old);
    fs.renameSync(staging, target);
    fs.rmSync(old, { recursive: true, force: true });
  } else {
    fs.renameSync(staging, target);
  }
}

/**
 * Writes a folder atomically: `fill` writes into a staging folder beside `target`, which then replaces
 * `target` by renames. An existing non-empty `target` needs `overwrite`. On failure nothing changes.
 */
export async function writeFolderAtomic(target: string, overwrite: boolean, fill: (staging: string) => Promise<void>): Promise<void> {
  if (nonEmptyFolder(target, 'the output folder') && !overwrite) {
    throw new ColtrastError('INVALID_ARGUMENT', `${target} exists and is not empty; pass { overwrite: true } to replace it`);
  }
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const staging = fs.mkdtempSync(path.join(path.dirname(target), `.${path.basename(target)}.saving-`));
  try {
    // mkdtemp makes the folder private (0700); the result is an ordinary folder, as mkdir would make it.
    const umask = process.umask();
    fs.chmodSync(staging, 0o777 & ~umask);
    await fill(staging);
    replaceDir(staging, target);
  } catch (error) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw error;
  }
}

/** Parses a JSON Lines text: `each(value, "file:line")` for every non-blank line; bad JSON names its line. */
export function parseJsonLines<T>(file: string, content: string, each: (value: unknown, where: string) => T): T[] {
  const out: T[] = [];
  content.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${file}:${i + 1}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      throw new ColtrastError('INVALID_ARGUMENT', `${where}: not valid JSON (${(error as Error).message})`);
    }
    out.push(each(value, where));
  });
  return out;
}
