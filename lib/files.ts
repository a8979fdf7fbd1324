/**
 * The files coltrast reads and writes: data files read a line at a time, the checks on input and output paths, and
 * atomic file and folder writes (readers see the old content or the new, never a half-written one).
 */
import { isUtf8 } from 'node:buffer';
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

/**
 * Writes one JSON object a line (writeLines) to `${file}.tmp`, then renames it over `file`; the temporary file is
 * removed when writing fails and when the process is interrupted (trackTemporaryFile). A device or pipe
 * (/dev/stdout) is written in place.
 */
export async function writeJsonLinesAtomic(file: string, rows: Iterable<unknown>): Promise<void> {
  if (writtenInPlace(file)) return writeLines(file, jsonLines(rows));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const temporary = `${file}.tmp`;
  const untrack = trackTemporaryFile(temporary);
  try {
    await writeLines(temporary, jsonLines(rows));
    fs.renameSync(temporary, file);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw naming(error, file, temporary);
  } finally {
    untrack();
  }
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
 * (a model and an optimizer state each, gigabytes for a large model) and folders it was removing. Such a folder is
 * named for its process (workName), and only those of processes no longer running are removed, off the event loop.
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
    const m = /^(?:saving|removing)-(\d+)-[^.]+(?:\.old)?$/.exec(name.slice(prefix.length));
    return m !== null && Number(m[1]) !== process.pid && !processAlive(Number(m[1]));
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
  fs.mkdirSync(path.dirname(target), { recursive: true });
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
      fs.renameSync(staging, target);
      if (old) {
        const untrackOld = trackTemporaryFile(old);
        await fs.promises.rm(old, { recursive: true, force: true }).finally(untrackOld);
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
 * A command that converts `file` from the encoding `from` to UTF-8, writing a file beside it with `.utf8` before its
 * extension (so that its format is still known by its name): `docs.jsonl` gives `docs.utf8.jsonl`.
 */
function convertCommand(file: string, from: string): string {
  const gz = /\.gz$/i.test(file);
  const plain = gz ? file.slice(0, -3) : file;
  const ext = path.extname(plain);
  const out = `${plain.slice(0, plain.length - ext.length)}.utf8${ext}${gz ? file.slice(-3) : ''}`;
  const q = (p: string) => (/^[\w./@%+=:,-]+$/.test(p) ? p : `'${p.replace(/'/g, "'\\''")}'`);
  return gz ? `gunzip -c ${q(file)} | iconv -f ${from} -t utf-8 | gzip > ${q(out)}` : `iconv -f ${from} -t utf-8 ${q(file)} > ${q(out)}`;
}

/**
 * @internal The offset in `bytes` of the first byte that is not part of well-formed UTF-8 (as Unicode defines it: no
 * overlong forms, surrogates or code points past U+10FFFF), or of the first NUL byte; -1 when there is none. Only
 * for the message of an error: Buffer's isUtf8 checks a whole chunk at once.
 */
export function firstBadByte(bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    if (b === 0) return i;
    if (b < 0x80) {
      i++;
      continue;
    }
    // The bytes that follow `b` and the range of the first of them (the later ones are 0x80-0xBF).
    let n: number;
    let low = 0x80;
    let high = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) n = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      n = 2;
      if (b === 0xe0) low = 0xa0;
      if (b === 0xed) high = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 3;
      if (b === 0xf0) low = 0x90;
      if (b === 0xf4) high = 0x8f;
    } else return i;
    if (i + n >= bytes.length) return i; // the character is cut off at the end
    if (bytes[i + 1] < low || bytes[i + 1] > high) return i;
    for (let k = 2; k <= n; k++) if (bytes[i + k] < 0x80 || bytes[i + k] > 0xbf) return i;
    i += n + 1;
  }
  return -1;
}

/** Whether `bytes` are UTF-8 text a data file may hold: well-formed UTF-8 without NUL bytes. */
function isUtf8Text(bytes: Uint8Array): boolean {
  return isUtf8(bytes) && bytes.indexOf(0) < 0;
}

/**
 * The error for bytes of `file` that are not UTF-8 text, at line `line` (counted from 1), `at` bytes into it: UTF-16
 * (a NUL byte: UTF-16 text of ASCII characters holds one in every other byte) or another 8-bit encoding, with the
 * command that converts the file.
 */
function notUtf8(file: string, line: number, bytes: Uint8Array, at: number): ColtrastError {
  const b = bytes[at];
  if (b === 0) {
    return new ColtrastError('INVALID_ARGUMENT', `${file}:${line} is not UTF-8 text (it holds NUL bytes, as UTF-16 text does): convert it, e.g. ${convertCommand(file, 'utf-16le')}`);
  }
  // Bytes 0x80-0x9F are control characters in Latin-1 and punctuation (curly quotes, dashes, €) in Windows-1252.
  const from = b >= 0x80 && b <= 0x9f ? 'windows-1252' : 'latin1';
  const hex = `0x${b.toString(16).toUpperCase().padStart(2, '0')}`;
  return new ColtrastError(
    'INVALID_ARGUMENT',
    `${file}:${line} is not UTF-8 text (byte ${hex} at byte ${at + 1} of the line: Latin-1? Windows-1252? UTF-16?): convert it, e.g. ${convertCommand(file, from)}`,
  );
}

/** The error for a file that starts with a UTF-16 byte-order mark (FF FE or FE FF), or undefined. */
function utf16Mark(file: string, bytes: Uint8Array): ColtrastError | undefined {
  if ((bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff)) {
    return new ColtrastError('INVALID_ARGUMENT', `${file}:1 is UTF-16 text (it starts with a UTF-16 byte-order mark), not UTF-8: convert it, e.g. ${convertCommand(file, 'utf-16')}`);
  }
  return undefined;
}

/**
 * Splits a file's bytes, given a chunk at a time, into lines: a line may span chunks (its bytes are joined once,
 * when its end is found) and a multi-byte character may too (lines are decoded whole). Lines end at '\n' ('\r\n'
 * too: the '\r' is dropped); a UTF-8 byte-order mark at the start is dropped; a last line without '\n' counts unless
 * it is empty. Bytes that are not UTF-8 text (another encoding's, a NUL byte, a UTF-16 byte-order mark) are an error
 * naming the line, never decoded to U+FFFD: a chunk's whole lines are checked at once (a '\n' byte is never part of
 * a multi-byte character, so they hold whole characters), a line that spans chunks when it is joined.
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
    let nl = data.indexOf(0x0a);
    if (nl < 0) {
      if (data.length > 0) this.pending.push(data);
      return lines;
    }
    // The lines after the chunk's first, which are whole in it: when they are UTF-8 text, they need no check each.
    const checked = isUtf8Text(data.subarray(nl + 1, data.lastIndexOf(0x0a)));
    let start = 0;
    for (; nl >= 0; start = nl + 1, nl = data.indexOf(0x0a, start)) {
      this.pending.push(data.subarray(start, nl));
      lines.push(this.decode(start > 0 && checked));
    }
    if (start < data.length) this.pending.push(data.subarray(start));
    return lines;
  }

  /** The last line, when the file does not end with '\n'. */
  end(): string[] {
    const last = this.pending.length > 0 ? this.decode(false) : '';
    return last === '' ? [] : [last];
  }

  /** The pending bytes as a line; `checked`: they are known to be UTF-8 text. */
  private decode(checked: boolean): string {
    this.lineNumber++;
    let bytes = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
    this.pending = [];
    if (this.first) {
      this.first = false;
      if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
      const utf16 = utf16Mark(this.file, bytes);
      if (utf16) throw utf16;
    }
    if (!checked && !isUtf8Text(bytes)) throw notUtf8(this.file, this.lineNumber, bytes, firstBadByte(bytes));
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
 * A file's whole text, for formats that are one document (a .json file): a `.gz` file is decompressed, a UTF-8
 * byte-order mark dropped, and bytes that are not UTF-8 text an error naming their line (as fileLines does). A file
 * too large for one string is an error that points to JSON Lines, which fileLines reads a line at a time.
 */
export async function readWholeText(file: string, noun: string): Promise<string> {
  const tooLarge = () => {
    const gib = (fs.statSync(file).size / 2 ** 30).toFixed(2);
    return new ColtrastError('INVALID_ARGUMENT', `${noun} file ${file} (${gib} GiB) is too large to read as one JSON document (Node's longest string is ~512 MiB); write it as JSON Lines (a .jsonl file, one item a line), which is read a line at a time`);
  };
  let bytes: Buffer;
  try {
    bytes = /\.gz$/i.test(file) ? await gunzipFile(file) : await fs.promises.readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ERR_FS_FILE_TOO_LARGE' && !(error instanceof RangeError)) throw error;
    throw tooLarge();
  }
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
  const utf16 = utf16Mark(file, bytes);
  if (utf16) throw utf16;
  if (!isUtf8Text(bytes)) {
    const at = firstBadByte(bytes);
    let line = 1;
    for (let nl = bytes.indexOf(0x0a); nl >= 0 && nl < at; nl = bytes.indexOf(0x0a, nl + 1)) line++;
    const start = at === 0 ? 0 : bytes.lastIndexOf(0x0a, at - 1) + 1;
    throw notUtf8(file, line, bytes.subarray(start), at - start);
  }
  try {
    return bytes.toString('utf8');
  } catch (error) {
    // A text too long for one string: ERR_STRING_TOO_LONG.
    if ((error as NodeJS.ErrnoException).code !== 'ERR_STRING_TOO_LONG' && !(error instanceof RangeError)) throw error;
    throw tooLarge();
  }
}

/**
 * Parses `text`, the whole of `file`, as one JSON document. A syntax error names the file, line and column where the
 * text stops being JSON (`file:line:column:`; V8's message gives a character position at most), then V8's message
 * and `hint`.
 */
export function parseJsonDocument(file: string, text: string, hint?: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    const at = jsonErrorOffset(text);
    let where = file;
    if (at >= 0) {
      let line = 1;
      let lineStart = 0;
      for (let nl = text.indexOf('\n'); nl >= 0 && nl < at; nl = text.indexOf('\n', nl + 1)) {
        line++;
        lineStart = nl + 1;
      }
      where = `${file}:${line}:${at - lineStart + 1}`;
    }
    // V8 quotes the text around the error, line breaks and all: kept on one line.
    const message = (error as Error).message.replace(/\r?\n/g, '\\n');
    throw new ColtrastError('INVALID_ARGUMENT', `${where}: not valid JSON (${message})${hint ? `; ${hint}` : ''}`);
  }
}

/**
 * @internal The offset (in UTF-16 code units) in `text` where it stops being a JSON document: the character JSON.parse
 * cannot take, or text.length when the text ends too soon; -1 when it is valid JSON. For an error's line and column.
 */
export function jsonErrorOffset(text: string): number {
  const n = text.length;
  let i = 0;
  const skipSpace = () => {
    for (let c = text.charCodeAt(i); c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d; c = text.charCodeAt(++i));
  };
  const isDigit = (c: number) => c >= 0x30 && c <= 0x39;
  const isHex = (c: number) => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
  // A string at i (its opening '"'): true with i after it, or false with i at the error.
  const string = (): boolean => {
    if (text.charCodeAt(i) !== 0x22) return false;
    for (i++; i < n; ) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return true;
      }
      if (c < 0x20) return false;
      if (c !== 0x5c) {
        i++;
        continue;
      }
      const e = text[i + 1];
      if (e === 'u') {
        for (let k = 2; k < 6; k++) if (!isHex(text.charCodeAt(i + k))) return ((i += k), false);
        i += 6;
      } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
      else return ((i += 1), false);
    }
    return false;
  };
  // Containers open around the value being read: true for an object, false for an array.
  const open: boolean[] = [];
  for (;;) {
    // A value at i.
    skipSpace();
    const c = text.charCodeAt(i);
    if (c === 0x7b || c === 0x5b) {
      i++;
      skipSpace();
      const close = c === 0x7b ? 0x7d : 0x5d;
      if (text.charCodeAt(i) === close) i++;
      else {
        open.push(c === 0x7b);
        if (c === 0x7b) {
          if (!string()) return i;
          skipSpace();
          if (text.charCodeAt(i) !== 0x3a) return i;
          i++;
        }
        continue;
      }
    } else if (c === 0x22) {
      if (!string()) return i;
    } else if (c === 0x2d || isDigit(c)) {
      if (c === 0x2d) i++;
      if (text.charCodeAt(i) === 0x30) i++;
      else if (isDigit(text.charCodeAt(i))) while (isDigit(text.charCodeAt(i))) i++;
      else return i;
      if (text.charCodeAt(i) === 0x2e) {
        i++;
        if (!isDigit(text.charCodeAt(i))) return i;
        while (isDigit(text.charCodeAt(i))) i++;
      }
      if (text.charCodeAt(i) === 0x65 || text.charCodeAt(i) === 0x45) {
        i++;
        if (text.charCodeAt(i) === 0x2b || text.charCodeAt(i) === 0x2d) i++;
        if (!isDigit(text.charCodeAt(i))) return i;
        while (isDigit(text.charCodeAt(i))) i++;
      }
    } else {
      const word = c === 0x74 ? 'true' : c === 0x66 ? 'false' : c === 0x6e ? 'null' : undefined;
      if (word === undefined) return i;
      for (const ch of word) {
        if (text[i] !== ch) return i;
        i++;
      }
    }
    // After a value: what closes or continues the containers around it.
    for (;;) {
      skipSpace();
      if (open.length === 0) return i < n ? i : -1;
      const inObject = open[open.length - 1];
      const d = text.charCodeAt(i);
      if (d === (inObject ? 0x7d : 0x5d)) {
        open.pop();
        i++;
        continue;
      }
      if (d !== 0x2c) return i;
      i++;
      if (inObject) {
        skipSpace();
        if (!string()) return i;
        skipSpace();
        if (text.charCodeAt(i) !== 0x3a) return i;
        i++;
      }
      break;
    }
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
  write(chunk: string): Promise<void>;
  /** Finishes the file: flushed, synced and renamed over the target. */
  commit(): Promise<void>;
  /** Gives up: the temporary file is removed and the target left as it was. Safe to call at any time. */
  abort(): void;
}

/**
 * Writes `file` through a temporary file beside it (`.<name>.<pid>.tmp`), renamed over it by commit(): a failure,
 * abort(), or an interruption (the temporary file is registered with trackTemporaryFile) leaves the old file as it
 * was and no temporary file behind. Missing folders on the path are made. An existing device or pipe (/dev/stdout)
 * is written in place. A failed write's error names `file`.
 */
export function atomicOutput(file: string): AtomicOutput {
  const inPlace = writtenInPlace(file);
  if (!inPlace) fs.mkdirSync(path.dirname(file), { recursive: true });
  const temporary = inPlace ? file : path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const untrack = inPlace ? () => false : trackTemporaryFile(temporary);
  // Opened at once (not when the stream gets to it): the file is there to remove from now on, and a path that cannot
  // be written throws here.
  let fd: number;
  try {
    fd = fs.openSync(temporary, 'w');
  } catch (error) {
    untrack();
    throw naming(error, file, temporary);
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
      try {
        const fd = fs.openSync(temporary, 'r');
        try {
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
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
