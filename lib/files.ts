/**
 * The files coltrast writes, and the checks on input and output paths: atomic file and folder writes (readers see the
 * old content or the new, never a half-written one), temporary files removed when the process is interrupted, and
 * file system errors in plain words. Reading data files is lib/data-files.ts's.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseJsonLines } from './data-files';
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

/** Refuses an output folder path that names a file (reading it as a folder failed with ENOTDIR), or one under a file. */
export function checkOutputFolder(dir: string, what: string): void {
  const stat = outputStat(dir, what);
  if (stat && !stat.isDirectory()) throw new ColtrastError('INVALID_ARGUMENT', `${what}: ${dir} is a file; give the path of a folder`);
}

/** Whether an output folder holds anything already (it exists and is not empty); a file there is refused. */
export function nonEmptyFolder(dir: string, what: string): boolean {
  checkOutputFolder(dir, what);
  return fs.existsSync(dir) && fs.readdirSync(dir).length > 0;
}

/** Refuses an output file path that names a folder (writing there failed with EISDIR after all the work), or one under a file. */
export function checkOutputFile(file: string, what: string): void {
  if (outputStat(file, what)?.isDirectory()) {
    throw new ColtrastError('INVALID_ARGUMENT', `${what}: ${file} is a folder; give the path of the file to write`);
  }
}

/** An output path's stat, or undefined where nothing is there; a path under a file is refused (underAFile). */
function outputStat(target: string, what: string): fs.Stats | undefined {
  try {
    return fs.statSync(target, { throwIfNoEntry: false });
  } catch (error) {
    throw underAFile(error, target, what);
  }
}

/**
 * The part of `target`'s path that is a file (it exists and is not a folder), or undefined where there is none:
 * nothing can be written under it.
 */
function fileOnPath(target: string): string | undefined {
  for (let dir = path.dirname(path.resolve(target)); ; dir = path.dirname(dir)) {
    const stat = existingStat(dir);
    if (stat) return stat.isDirectory() ? undefined : dir;
    if (dir === path.dirname(dir)) return undefined;
  }
}

/**
 * `error`, an error of writing `target` (or of making a folder, a temporary file beside it); where it is ENOTDIR
 * (a part of the path is a file: `afile/sub`), or the EEXIST of making a folder where that file is (a recursive
 * mkdir of `afile`), the INVALID_ARGUMENT error that names that file and the fix instead, as checkWritable says it
 * (Node's names only the path it was given, the fix nowhere). `what`, where given, names the option or argument that
 * gave the path.
 */
function underAFile(error: unknown, target: string, what?: string): unknown {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code !== 'ENOTDIR' && code !== 'EEXIST') return error;
  const file = fileOnPath(target);
  if (file === undefined) return error;
  return new ColtrastError('INVALID_ARGUMENT', `${what ? `${what}: ` : ''}cannot write ${target}: ${file} is a file, not a folder; give a path under a folder`, { cause: error });
}

/** fs.mkdirSync(dir, { recursive: true }), refusing a path under a file (underAFile) for `target`. */
function makeFolders(dir: string, target: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (error) {
    throw underAFile(error, target);
  }
}

/**
 * Writes each of `lines` followed by '\n' to `file`, about a megabyte at a time: never one string of them all, which
 * V8 cannot make past ~512 MiB. Writes are asynchronous, so the event loop runs between megabytes (a million
 * training pairs are ~400 MiB of JSON, seconds of writing).
 */
export async function writeLines(file: string, lines: Iterable<string>): Promise<void> {
  const handle = await fs.promises.open(file, 'w').catch((error: unknown) => {
    throw underAFile(error, file);
  });
  try {
    let buffer = '';
    for (const line of lines) {
      buffer += `${line}\n`;
      if (buffer.length > 1 << 20) {
        await handle.write(buffer);
        buffer = '';
      }
    }
    await handle.write(buffer);
  } finally {
    await handle.close();
  }
}

/** Temporary files named by temporaryFor in this process so far. */
let temporaries = 0;

/**
 * A temporary file beside `file` (`.<name>.<pid>-<n>.tmp`): the one an atomic writer fills and renames over it, or
 * another that a writer of `file` needs meanwhile (vectorWriter's token vectors). Its own to each call, so that two
 * writes of one file at once (two processes, two calls) never share one. A shared one was truncated by the second
 * write while the first wrote it, renamed into place by the first (which reported success with the other's content),
 * and gone at the second's rename; and one process's interruption removed the other's. One name for all of them, so
 * that removeLeftovers knows each one a process that died left beside `file`.
 */
export function temporaryFor(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}-${++temporaries}.tmp`);
}

/**
 * Writes one JSON object a line (writeLines) to a temporary file beside `file` (temporaryFor), then renames it over
 * `file`; the temporary file is removed when writing fails and when the process is interrupted (trackTemporaryFile).
 * A device or pipe (/dev/stdout) is written in place.
 */
export async function writeJsonLinesAtomic(file: string, rows: Iterable<unknown>): Promise<void> {
  if (writtenInPlace(file)) return writeLines(file, jsonLines(rows));
  makeFolders(path.dirname(file), file);
  await removeLeftovers(file);
  const temporary = temporaryFor(file);
  const untrack = trackTemporaryFile(temporary);
  try {
    await writeLines(temporary, jsonLines(rows));
    fs.renameSync(temporary, file);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw underAFile(naming(error, file, temporary), file);
  } finally {
    untrack();
  }
}

function* jsonLines(rows: Iterable<unknown>): Generator<string> {
  for (const row of rows) yield JSON.stringify(row);
}

/** Writes `text` to a temporary file beside `file` (temporaryFor), renamed over it; a failed write leaves neither. */
export function writeTextAtomic(file: string, text: string): void {
  const temporary = temporaryFor(file);
  try {
    fs.writeFileSync(temporary, text);
    fs.renameSync(temporary, file);
  } catch (error) {
    // Its removal fails too where the path is under a file (ENOTDIR, not the ENOENT that force passes over).
    try {
      fs.rmSync(temporary, { force: true });
    } catch {
      // never made: the write's error is the one to say
    }
    throw underAFile(error, file);
  }
}

/** JSON with Infinity kept as the string 'Infinity' (JSON has no infinities). */
export function writeJsonAtomic(file: string, value: unknown): void {
  writeTextAtomic(file, JSON.stringify(value, (_, v) => (v === Infinity ? 'Infinity' : v), 2));
}

/**
 * A training run's saved state, `<dir>/state.json` as the run wrote it (one of `versions`), or undefined when the
 * folder has none; a file that is not valid JSON, or another version's, is an error that says to delete the checkpoint.
 */
export function readCheckpointState<T>(dir: string, versions: readonly number[] = [1]): T | undefined {
  const file = path.join(dir, 'state.json');
  if (!fs.existsSync(file)) return undefined;
  let saved: T & { version?: number };
  try {
    saved = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ColtrastError('MODEL_FILES', `checkpoint ${file} is not valid JSON (${(error as Error).message}); delete ${dir} to start over`);
  }
  if (!versions.includes(saved.version as number)) throw new ColtrastError('MODEL_FILES', `checkpoint ${dir} was written by another coltrast version; delete it to start over`);
  return saved;
}

/**
 * A training run's data in its checkpoint: each list of rows as `<name>.jsonl` in the staging folder, beside a small
 * state.json (which held the rows until version 2, as one JSON string: past ~512 MiB of data V8 cannot make it). The
 * rows do not change during a run, so they are written at its first checkpoint and hard-linked after that from
 * `from`, the checkpoint folder that holds this run's files (copied where the file system has no hard links, written
 * again where that fails too).
 * Returns each list's row count, for state.json.
 */
export async function saveRunData(staging: string, lists: Record<string, readonly unknown[]>, from: string | undefined): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const [name, rows] of Object.entries(lists)) {
    counts[name] = rows.length;
    const file = path.join(staging, `${name}.jsonl`);
    if (from !== undefined && (await reuse(path.join(from, `${name}.jsonl`), file))) continue;
    await writeLines(file, jsonLines(rows));
  }
  return counts;
}

/** Puts `old` at `file` by a hard link, else a copy; false when neither works (then the caller writes it). */
async function reuse(old: string, file: string): Promise<boolean> {
  for (const put of [fs.promises.link, fs.promises.copyFile]) {
    try {
      await put(old, file);
      return true;
    } catch {
      // the next way, or none
    }
  }
  return false;
}

/** The lists saveRunData wrote into checkpoint `dir`, each checked against its count in state.json. */
export async function readRunData(dir: string, counts: Record<string, number>): Promise<Record<string, unknown[]>> {
  const lists: Record<string, unknown[]> = {};
  for (const [name, count] of Object.entries(counts)) {
    const file = path.join(dir, `${name}.jsonl`);
    const damaged = (why: string) => new ColtrastError('MODEL_FILES', `checkpoint ${dir}: ${name}.jsonl ${why}; delete the checkpoint to start over`);
    if (notAFile(file)) throw damaged('is missing');
    let rows: unknown[];
    try {
      rows = await parseJsonLines(file, (value) => value);
    } catch (error) {
      throw damaged(`is damaged (${(error as Error).message})`);
    }
    if (rows.length !== count) throw damaged(`has ${rows.length} rows, state.json says ${count}`);
    lists[name] = rows;
  }
  return lists;
}

/** Whether a process `pid` is running (one of another user counts: it may not be signalled, but it is there). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The hidden sibling of `target` named for a piece of work on it (`saving`, `removing`) by this process. */
function workName(target: string, work: 'saving' | 'removing'): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${work}-${process.pid}-`);
}

/**
 * Removes what a process that died mid-way (SIGKILL, a crash, power) left beside `target`: staging folders of its saves
 * (a model and an optimizer state each, gigabytes for a large model), folders it was removing, and the temporary files
 * of its atomic writes and their side files (an embedding or export run's output, as large; `embed --tokens`' token
 * vectors before they are copied in). Each is named for its process (workName,
 * temporaryFor), and only those of processes no longer running are removed, off the event loop.
 */
async function removeLeftovers(target: string): Promise<void> {
  const prefix = `.${path.basename(target)}.`;
  const dir = path.dirname(target);
  let names: string[];
  try {
    names = await fs.promises.readdir(dir);
  } catch {
    return;
  }
  const stale = names.filter((name) => {
    if (!name.startsWith(prefix)) return false;
    const m = /^(?:(?:saving|removing)-(\d+)-[^.]+(?:\.old)?|(\d+)-\d+\.tmp)$/.exec(name.slice(prefix.length));
    const pid = Number(m?.[1] ?? m?.[2]);
    return m !== null && pid !== process.pid && !processAlive(pid);
  });
  await Promise.all(stale.map((name) => fs.promises.rm(path.join(dir, name), { recursive: true, force: true }).catch(() => {})));
}

/**
 * Removes the folder `dir`: renamed out of the way at once (so that no one, a resume included, reads it half
 * removed), then deleted off the event loop (a training checkpoint with its optimizer state is gigabytes for a large
 * model: a synchronous delete held the loop 661 ms for a BERT-base-sized one, 2026-12-06).
 */
export async function removeFolder(dir: string): Promise<void> {
  if (!fs.existsSync(dir)) return;
  const doomed = `${workName(dir, 'removing')}${Math.random().toString(36).slice(2, 8)}`;
  fs.renameSync(dir, doomed);
  const untrack = trackTemporaryFile(doomed);
  try {
    await fs.promises.rm(doomed, { recursive: true, force: true });
  } finally {
    untrack();
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
  makeFolders(path.dirname(target), target);
  await removeLeftovers(target);
  const staging = fs.mkdtempSync(workName(target, 'saving'));
  // Removed by the CLI's signal handlers (removeTemporaryFiles) if the process is interrupted mid-save.
  const untrack = trackTemporaryFile(staging);
  try {
    // mkdtemp makes the folder private (0700); the result is an ordinary folder, as mkdir would make it.
    const umask = process.umask();
    fs.chmodSync(staging, 0o777 & ~umask);
    await fill(staging);
    if (overwrite) {
      // The old folder renamed aside, the new one renamed into place, then the old deleted off the event loop.
      const old = fs.existsSync(target) ? `${staging}.old` : undefined;
      if (old) fs.renameSync(target, old);
      try {
        fs.renameSync(staging, target);
      } catch (error) {
        // Not in place (another process made `target` meanwhile, say): the old folder goes back, as if never moved; where
        // even that fails, the error says where it is rather than leave it unnamed under a hidden name.
        if (old) {
          try {
            fs.renameSync(old, target);
          } catch {
            throw new Error(`${target} could not be replaced (${(error as Error).message}), and its old content could not be put back: it is in ${old}`);
          }
        }
        throw error;
      }
      if (old) {
        const untrackOld = trackTemporaryFile(old);
        // The save is done: a failure here only leaves the old folder (a later save removes it once this process is gone).
        await fs.promises.rm(old, { recursive: true, force: true }).catch(() => {}).finally(untrackOld);
      }
    } else {
      try {
        // Without overwrite, no replacing: a rename onto a folder that is not empty fails (ENOTEMPTY), so another save
        // that filled `target` while this one ran (another call, another process) is kept, not silently overwritten.
        fs.renameSync(staging, target);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
        throw new ColtrastError('INVALID_ARGUMENT', `${target} was filled by another save while this one ran; pass { overwrite: true } to replace it`);
      }
    }
  } catch (error) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw error;
  } finally {
    untrack();
  }
}

// What the command line needs of every writer: output locations checked before the work, temporary files removed when
// the process is interrupted, and file system errors in plain words.

/** Temporary files being written (trackTemporaryFile), removed by removeTemporaryFiles. */
const temporaryFiles = new Set<string>();

/**
 * Registers `file`, a temporary file an atomic writer is filling, so that removeTemporaryFiles deletes it (the command
 * line calls that when SIGINT or SIGTERM interrupts it, and at exit); returns the function that unregisters it.
 */
export function trackTemporaryFile(file: string): () => void {
  temporaryFiles.add(file);
  return () => temporaryFiles.delete(file);
}

/**
 * Deletes every temporary file registered by trackTemporaryFile and not yet unregistered (synchronously: a signal
 * handler calls it). A registered folder (a staging folder) goes with what it holds.
 */
export function removeTemporaryFiles(): void {
  for (const file of temporaryFiles) {
    try {
      fs.rmSync(file, { recursive: true, force: true });
    } catch {
      // nothing more can be done about it
    }
  }
  temporaryFiles.clear();
}

/**
 * Whether `file` is written in place, not through a temporary file renamed over it: an existing device or pipe
 * (/dev/stdout, /dev/null, a FIFO), which a rename would replace.
 */
export function writtenInPlace(file: string): boolean {
  const stat = existingStat(file);
  return stat !== undefined && !stat.isFile() && !stat.isDirectory();
}

/** `file`'s stat (following links), or undefined when nothing is there (or a part of its path is a file). */
function existingStat(file: string): fs.Stats | undefined {
  try {
    return fs.statSync(file, { throwIfNoEntry: false });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw error;
  }
}

/** A file system error of writing `temporary` for `target`, made to name `target` (what the user gave). */
function naming<T>(error: T, target: string, temporary?: string): T {
  const e = error as NodeJS.ErrnoException;
  if (e && typeof e === 'object' && typeof e.code === 'string' && (e.path === undefined || e.path === temporary)) e.path = target;
  return error;
}

/** A file system error's code in plain words, with the fix where there is one. */
const FS_REASONS: Record<string, string> = {
  ENOSPC: 'no space left on the device (disk full?): free some space or write elsewhere',
  EDQUOT: 'disk quota exceeded: free some space or write elsewhere',
  ENOTDIR: 'a part of the path is a file, not a folder',
  EACCES: 'permission denied: choose a place you may write to, or change its permissions',
  EPERM: 'operation not permitted: choose a place you may write to, or change its permissions',
  EROFS: 'the file system is read-only: write elsewhere',
  EISDIR: 'it is a folder, not a file',
  ENOENT: 'no such file or folder',
  EEXIST: 'something of that name exists already',
  ENOTEMPTY: 'the folder is not empty',
  EMFILE: 'too many open files: raise the limit (ulimit -n)',
  ENFILE: 'too many open files on this system',
  EFBIG: 'the file is larger than this file system allows',
  ENAMETOOLONG: 'a name on the path is too long',
  ELOOP: 'too many symbolic links on the path',
  EIO: 'input/output error (a failing disk, or a network file system gone?)',
  EBUSY: 'the file or device is busy',
  EXDEV: 'a rename across file systems',
};

/** The system calls of writing (and making, renaming, removing) files, and those of reading them. */
const WRITE_CALLS = new Set(['write', 'writev', 'close', 'rename', 'mkdir', 'mkdtemp', 'rmdir', 'rm', 'unlink', 'copyfile', 'link', 'symlink', 'fsync', 'fdatasync', 'ftruncate', 'chmod', 'fchmod', 'utime', 'futime']);
const READ_CALLS = new Set(['read', 'scandir', 'opendir', 'stat', 'lstat', 'fstat', 'access', 'readlink', 'realpath']);

/** A file system error's reason in plain words (its code's, else Node's message without the code). */
function fsReason(error: NodeJS.ErrnoException): string {
  return FS_REASONS[error.code!] ?? error.message.replace(/^[A-Z0-9_]+: /, '').replace(/, \w+ '[^']*'( -> '[^']*')?$/, '');
}

/**
 * A file system error (Node's: a `code` such as ENOSPC and the `syscall` that failed) as one line for a user:
 * "cannot write <path>: no space left on the device (disk full?): ...". `fallback` is the path named when the error
 * names none (a failed write to an open file names no path). Undefined for any other error (a network one, a bug).
 */
export function fileSystemErrorMessage(error: unknown, fallback?: string): string | undefined {
  const e = error as NodeJS.ErrnoException;
  if (!e || typeof e !== 'object' || typeof e.code !== 'string' || !/^E[A-Z]+$/.test(e.code) || typeof e.syscall !== 'string') return undefined;
  const verb = e.syscall === 'open' ? 'open' : WRITE_CALLS.has(e.syscall) ? 'write' : READ_CALLS.has(e.syscall) ? 'read' : undefined;
  if (!verb) return undefined;
  const file = e.path ?? (verb === 'write' ? fallback : undefined);
  return `cannot ${verb}${file !== undefined ? ` ${file}` : ''}: ${fsReason(e)}`;
}

/**
 * Checks, before any work, that `target` can be written (`what` names it in errors, e.g. '--output'): no part of its
 * path is a file; a 'file' target is not a folder (checkOutputFile); and the nearest folder on the path that exists
 * takes new files (one is made there and removed; the writers make the missing folders below it, and put their
 * temporary files and folders beside the target). An existing device or pipe (/dev/stdout) is written in place: it
 * has only to be writable. A 'folder' target that is a file is left to the writer's own check (checkOutputFolder,
 * an index's checkIndexFolder), which says what the folder must be.
 */
export function checkWritable(target: string, what: string, kind: 'file' | 'folder'): void {
  const resolved = path.resolve(target);
  const refuse = (reason: string) => new ColtrastError('INVALID_ARGUMENT', `${what}: cannot write ${target}: ${reason}`);
  const stat = existingStat(resolved);
  if (kind === 'file' && stat?.isDirectory()) throw new ColtrastError('INVALID_ARGUMENT', `${what}: ${target} is a folder; give the path of the file to write`); // as checkOutputFile
  if (stat && kind === 'file' && !stat.isFile()) {
    try {
      fs.accessSync(resolved, fs.constants.W_OK);
    } catch (error) {
      throw refuse(fsReason(error as NodeJS.ErrnoException));
    }
    return;
  }
  let dir = path.dirname(resolved);
  for (let s = existingStat(dir); !s?.isDirectory(); s = existingStat(dir)) {
    if (s) throw refuse(`${dir} is a file, not a folder; give a path under a folder`);
    dir = path.dirname(dir);
  }
  const probe = path.join(dir, `.coltrast-probe-${process.pid}-${Math.random().toString(36).slice(2)}`);
  try {
    fs.closeSync(fs.openSync(probe, 'wx'));
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    throw refuse(e.code === 'ENOENT' ? `${dir} takes no new files; write elsewhere` : `no new file can be made in ${dir}: ${fsReason(e)}`);
  }
  fs.rmSync(probe, { force: true });
}

/** A file written a chunk at a time, atomically (atomicOutput). */
export interface AtomicOutput {
  /** Writes `chunk`, waiting while the file's buffer is full; rejects once a write has failed. */
  write(chunk: string | Uint8Array): Promise<void>;
  /** Finishes the file: flushed, synced and renamed over the target. */
  commit(): Promise<void>;
  /** Gives up: the temporary file is removed and the target left as it was. Safe to call at any time. */
  abort(): void;
}

/**
 * Writes `file` through a temporary file beside it (temporaryFor), renamed over it by commit(): a failure,
 * abort(), or an interruption (the temporary file is registered with trackTemporaryFile) leaves the old file as it
 * was and no temporary file behind. Missing folders on the path are made. An existing device or pipe (/dev/stdout)
 * is written in place. A failed write's error names `file`.
 */
export function atomicOutput(file: string): AtomicOutput {
  const inPlace = writtenInPlace(file);
  if (!inPlace) makeFolders(path.dirname(file), file);
  const temporary = inPlace ? file : temporaryFor(file);
  const untrack = inPlace ? () => false : trackTemporaryFile(temporary);
  // The temporary file is opened at once (not when the stream gets to it): it is there to remove from now on, and a
  // path that cannot be written throws here. A device or pipe is opened by the stream, off the event loop: the open of
  // a FIFO waits for a reader, and a synchronous one held the loop (Ctrl-C and SIGTERM unanswered) until one came.
  let fd: number | undefined;
  if (!inPlace) {
    try {
      fd = fs.openSync(temporary, 'w');
    } catch (error) {
      untrack();
      throw underAFile(naming(error, file, temporary), file);
    }
  }
  const stream = fs.createWriteStream(temporary, { fd, encoding: 'utf8' });
  let failed: Error | undefined;
  stream.on('error', (error) => (failed ??= naming(error, file, temporary)));
  // Resolves at `event`, rejects at a failure (one before the wait included).
  const until = (event: string) =>
    new Promise<void>((resolve, reject) => {
      const done = () => {
        stream.off(event, done);
        stream.off('error', done);
        failed ? reject(failed) : resolve();
      };
      if (failed) return reject(failed);
      stream.on(event, done);
      stream.on('error', done);
    });
  return {
    async write(chunk) {
      if (failed) throw failed;
      if (!stream.write(chunk)) await until('drain');
    },
    async commit() {
      if (failed) throw failed;
      const finished = until('finish');
      stream.end();
      await finished;
      if (inPlace) return;
      await removeLeftovers(file);
      try {
        // Off the event loop: the fsync of a large file (a million documents' sparse index, 926 MiB) held it 0.36 s.
        const handle = await fs.promises.open(temporary, 'r');
        try {
          await handle.sync();
        } finally {
          await handle.close();
        }
        fs.renameSync(temporary, file);
      } catch (error) {
        throw naming(error, file, temporary);
      }
      untrack();
    },
    abort() {
      stream.destroy();
      if (!inPlace) fs.rmSync(temporary, { force: true });
      untrack();
    },
  };
}
