/**
 * The files coltrast reads and writes: data files read a line at a time, the checks on input and output paths, and
 * atomic file and folder writes (readers see the old content or the new, never a half-written one).
 */
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import v8 from 'node:v8';
import zlib from 'node:zlib';
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

/**
 * Writes each of `lines` followed by '\n' to `file`, about a megabyte at a time: never one string of them all, which
 * V8 cannot make past ~512 MiB. Writes are asynchronous, so the event loop runs between megabytes (a million
 * training pairs are ~400 MiB of JSON, seconds of writing).
 */
export async function writeLines(file: string, lines: Iterable<string>): Promise<void> {
  const handle = await fs.promises.open(file, 'w');
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

/** Writes one JSON object a line (writeLines) to `${file}.tmp`, then renames it over `file`. */
export async function writeJsonLinesAtomic(file: string, rows: Iterable<unknown>): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const temporary = `${file}.tmp`;
  await writeLines(temporary, jsonLines(rows));
  fs.renameSync(temporary, file);
}

function* jsonLines(rows: Iterable<unknown>): Generator<string> {
  for (const row of rows) yield JSON.stringify(row);
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
    if (overwrite) replaceDir(staging, target);
    else {
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
  }
}

/**
 * Bytes read at a time by fileLines. 1 MiB: a chunk's lines (~2,700 of MS MARCO's pairs) are parsed in a few
 * milliseconds and die young; at 4 MiB parsing a million pairs took 15-20% longer (more of each chunk's strings
 * outlive a young-generation collection) and at 64 KiB the reads' overhead shows.
 */
const LINE_CHUNK_BYTES = 1 << 20;

/**
 * Refuses to read on when Node's heap is nearly full (less than a tenth of its limit, at least 64 MiB, left): what a
 * caller keeps of a large file's lines would otherwise end the process with V8's fatal "heap out of memory", which no
 * handler can catch. Checked before each chunk. The heap's use counts garbage not yet collected, so the check may
 * fire a little early; the fix it names is the same.
 */
function checkHeap(file: string, line: number): void {
  const { used_heap_size: used, heap_size_limit: limit } = v8.getHeapStatistics();
  if (limit - used >= Math.max(64 << 20, limit / 10)) return;
  const mib = (n: number) => Math.round(n / 2 ** 20);
  const suggested = Math.ceil((2 * limit) / 2 ** 30) * 1024;
  throw new ColtrastError(
    'OUT_OF_MEMORY',
    `${file}:${line}: Node's heap is nearly full (${mib(used)} of ${mib(limit)} MiB) with this file's data; give Node a larger heap (NODE_OPTIONS=--max-old-space-size=${suggested}, in MiB) or use a smaller file`,
  );
}

/**
 * Splits a file's bytes, given a chunk at a time, into lines: a line may span chunks (its bytes are joined once,
 * when its end is found) and a multi-byte character may too (lines are decoded whole). Lines end at '\n' ('\r\n'
 * too: the '\r' is dropped); a byte-order mark at the start is dropped; a last line without '\n' counts unless it is
 * empty.
 */
class LineSplitter {
  /** The bytes of a line that started in an earlier chunk, one buffer per chunk. */
  private pending: Buffer[] = [];
  private first = true;
  lineNumber = 0;

  constructor(private readonly file: string) {}

  /** The lines that end in `data`. */
  push(data: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let nl = data.indexOf(0x0a); nl >= 0; start = nl + 1, nl = data.indexOf(0x0a, start)) {
      this.pending.push(data.subarray(start, nl));
      lines.push(this.decode());
    }
    if (start < data.length) this.pending.push(data.subarray(start));
    return lines;
  }

  /** The last line, when the file does not end with '\n'. */
  end(): string[] {
    const last = this.pending.length > 0 ? this.decode() : '';
    return last === '' ? [] : [last];
  }

  private decode(): string {
    this.lineNumber++;
    let bytes = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
    this.pending = [];
    if (this.first) {
      this.first = false;
      if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
    }
    if (bytes.length > 0 && bytes[bytes.length - 1] === 0x0d) bytes = bytes.subarray(0, bytes.length - 1);
    try {
      return bytes.toString('utf8');
    } catch (error) {
      throw new ColtrastError('INVALID_ARGUMENT', `${this.file}:${this.lineNumber}: a line of ${bytes.length} bytes, longer than the longest string Node can hold (${(error as Error).message}); split it`);
    }
  }
}

/**
 * The lines of a UTF-8 text file, read a chunk at a time and given a chunk's lines at a time. A data file may be
 * larger than the longest string V8 can hold (2^29 - 24 characters, ~512 MiB), which reading it whole (readFileSync
 * to a string) cannot do, and no copy of the whole text or array of all lines is kept. Reads are asynchronous and
 * a caller handles one chunk's lines (a few milliseconds of parsing) before the next read, so a gigabyte file does
 * not hold the event loop for the seconds reading it takes (timers, progress, a server's requests go on). Lines as LineSplitter splits them; an empty file has none. A `.gz` file is decompressed (whole,
 * off the JS thread: at most 2 GiB compressed and 4 GiB decompressed, Node's limits for one buffer). Pipes work
 * (`/dev/stdin`). `chunkBytes` is for tests.
 */
export async function* fileLines(file: string, chunkBytes = LINE_CHUNK_BYTES): AsyncGenerator<string[]> {
  const lines = new LineSplitter(file);
  if (/\.gz$/i.test(file)) {
    const whole = await gunzipFile(file);
    for (let start = 0; start < whole.length; start += chunkBytes) {
      checkHeap(file, lines.lineNumber + 1);
      yield lines.push(whole.subarray(start, Math.min(whole.length, start + chunkBytes)));
      await new Promise((resolve) => setImmediate(resolve));
    }
    yield lines.end();
    return;
  }
  const handle = await fs.promises.open(file, 'r');
  try {
    for (;;) {
      checkHeap(file, lines.lineNumber + 1);
      const chunk = Buffer.allocUnsafe(chunkBytes);
      const { bytesRead } = await handle.read(chunk, 0, chunkBytes, null);
      if (bytesRead === 0) break;
      yield lines.push(chunk.subarray(0, bytesRead));
    }
    yield lines.end();
  } finally {
    await handle.close();
  }
}

async function gunzipFile(file: string): Promise<Buffer> {
  let raw: Buffer;
  try {
    raw = await fs.promises.readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ERR_FS_FILE_TOO_LARGE') throw error;
    throw new ColtrastError('INVALID_ARGUMENT', `${file} is larger than the 2 GiB Node reads at once; decompress it first (gunzip -k ${file}) and give the uncompressed file`);
  }
  try {
    return await promisify(zlib.gunzip)(raw);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const tooLarge = code === 'ERR_BUFFER_TOO_LARGE' || error instanceof RangeError;
    throw new ColtrastError('INVALID_ARGUMENT', tooLarge
      ? `${file} decompresses to more than the 4 GiB Node holds in one buffer; decompress it first (gunzip -k ${file}) and give the uncompressed file`
      : `${file} cannot be decompressed (${(error as Error).message})`);
  }
}

/**
 * A file's whole text, for formats that are one document (a .json file). A file too large for one string is an
 * error that points to JSON Lines, which fileLines reads a line at a time.
 */
export async function readWholeText(file: string, noun: string): Promise<string> {
  try {
    return await fs.promises.readFile(file, 'utf8');
  } catch (error) {
    // fs.promises.readFile fails on a text too long for one string with a plain RangeError ("Invalid string length").
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ERR_STRING_TOO_LONG' && code !== 'ERR_FS_FILE_TOO_LARGE' && !(error instanceof RangeError)) throw error;
    const gib = (fs.statSync(file).size / 2 ** 30).toFixed(2);
    throw new ColtrastError('INVALID_ARGUMENT', `${noun} file ${file} (${gib} GiB) is too large to read as one JSON document (Node's longest string is ~512 MiB); write it as JSON Lines (a .jsonl file, one item a line), which is read a line at a time`);
  }
}

/**
 * Parses a JSON Lines file: `each(value, "file:line")` for every non-blank line (read by fileLines); bad JSON names
 * its line.
 */
export async function parseJsonLines<T>(file: string, each: (value: unknown, where: string) => T): Promise<T[]> {
  const out: T[] = [];
  for await (const batch of jsonLineBatches(file, Infinity, each)) for (const value of batch) out.push(value);
  return out;
}

/**
 * parseJsonLines in batches of at most `size` values (each, as `each` returns it, with its `file:line`), without the
 * whole file's values in memory at once; blank lines are skipped.
 */
export async function* jsonLineBatches<T>(file: string, size: number, each: (value: unknown, where: string) => T): AsyncGenerator<T[]> {
  let batch: T[] = [];
  let i = 0;
  for await (const lines of fileLines(file)) {
    for (const line of lines) {
      i++;
      if (line.trim() === '') continue;
      const where = `${file}:${i}`;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (error) {
        throw new ColtrastError('INVALID_ARGUMENT', `${where}: not valid JSON (${(error as Error).message})`);
      }
      batch.push(each(value, where));
      if (batch.length >= size) {
        yield batch;
        batch = [];
      }
    }
  }
  if (batch.length > 0) yield batch;
}

/** The lines of `file` that are not blank, counted without parsing them (a progress bar's total). */
export async function countLines(file: string): Promise<number> {
  let n = 0;
  for await (const lines of fileLines(file)) for (const line of lines) if (line.trim() !== '') n++;
  return n;
}
