/**
 * Reading data files (training pairs, corpora, BEIR folders, documents to index): a line at a time, in chunks, or
 * whole; gzipped or not; checked to be UTF-8 text (Latin-1 and UTF-16 named, with the command that converts them); JSON
 * errors placed by line and column; the heap watched so that a file too large ends in an error, not V8's fatal one.
 */
import { isUtf8 } from 'node:buffer';
import fs from 'node:fs';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import { promisify } from 'node:util';
import v8 from 'node:v8';
import zlib from 'node:zlib';
import { CsvError, parse as csvParser } from 'csv-parse';
import { ColtrastError } from './errors';
import { nextTurn } from './turns';

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

/** `p` as one word of a shell command. */
function shellQuote(p: string): string {
  return /^[\w./@%+=:,-]+$/.test(p) ? p : `'${p.replace(/'/g, "'\\''")}'`;
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
  return gz ? `gunzip -c ${shellQuote(file)} | iconv -f ${from} -t utf-8 | gzip > ${shellQuote(out)}` : `iconv -f ${from} -t utf-8 ${shellQuote(file)} > ${shellQuote(out)}`;
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
 * For a file that is not UTF-8 text, whose first bytes are `head`: the error when they are the magic bytes of a
 * compressed file (gzip without its .gz name, or gzipped twice; zip, zstd, bzip2, xz), or undefined. Such a file was
 * "not UTF-8 text (Latin-1? Windows-1252?)" with an iconv command, which turns it into garbage.
 */
function compressedMark(file: string, head: Uint8Array): ColtrastError | undefined {
  const starts = (...magic: number[]) => magic.every((b, i) => head[i] === b);
  if (starts(0x1f, 0x8b)) {
    const what = /\.gz$/i.test(file) ? 'gzipped twice: gunzip it once (keeping the .gz name)' : `gzip-compressed but not named .gz: rename it (mv ${shellQuote(file)} ${shellQuote(`${file}.gz`)}), and coltrast decompresses it`;
    return new ColtrastError('INVALID_ARGUMENT', `${file} is ${what}`);
  }
  const kind = starts(0x50, 0x4b, 0x03, 0x04) ? 'a zip archive' : starts(0x28, 0xb5, 0x2f, 0xfd) ? 'zstd-compressed' : starts(0x42, 0x5a, 0x68) ? 'bzip2-compressed' : starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00) ? 'xz-compressed' : undefined;
  if (kind) return new ColtrastError('INVALID_ARGUMENT', `${file} is ${kind}, not text: extract or decompress it first (coltrast reads plain files, and gzipped ones named .gz)`);
  return undefined;
}

/**
 * Where fileLines ends lines, by the format's Python reader that a user compares with:
 * - 'any': at '\n', '\r\n' or a lone '\r', as Python reads a text file (open() in text mode: universal newlines), so
 *   a plain-text file of texts or a BEIR qrels TSV (csv.reader on open(), without newline='') splits as
 *   `for line in open(f)` splits it: old Mac line ends are lines, not one text, and '\r\r\n' (a '\r\n' written
 *   through Windows' text mode) is a line and a blank one (skipped), not a text that ends in '\r'.
 * - 'lf': at '\n' only, the '\r' of a '\r\n' dropped: JSON Lines, whose separator is '\n' (jsonlines.org; pandas'
 *   read_json(lines=True) splits there too). A valid JSON line holds a '\r' only as whitespace (a string cannot hold
 *   one unescaped), which JSON.parse skips, so no value is read otherwise than Python reads it; a file whose lines
 *   end in '\r' alone is one line that is not JSON, an error naming the fix (jsonLineHint) rather than a guess.
 * - 'keep': where 'any' ends them, each line keeping its line end, so that the lines joined are the file's text: for
 *   csvBatches, whose parser needs every character (a '\r' or '\n' ends a record only outside quotes, which only the
 *   parser knows) and still gets a file of old Mac line ends a piece at a time.
 */
export type LineEnds = 'any' | 'lf' | 'keep';

/**
 * Splits a file's bytes, given a chunk at a time, into lines: a line may span chunks (its bytes are joined once,
 * when its end is found) and a multi-byte character may too (lines are decoded whole); so may a '\r\n' (a line that
 * ends a chunk with '\r' waits for the next chunk's first byte). Lines end as `ends` says; a UTF-8 byte-order mark at
 * the start is dropped; a last line without a line end counts unless it is empty. Bytes that are not UTF-8 text
 * (another encoding's, a NUL byte, a UTF-16 byte-order mark) are an error naming the line, never decoded to U+FFFD:
 * a chunk's whole lines are checked at once (a '\n' or '\r' byte is never part of a multi-byte character, so they
 * hold whole characters), a line that spans chunks when it is joined.
 */
class LineSplitter {
  /** The bytes of a line that started in an earlier chunk (its line end too, once found), one buffer per chunk. */
  private pending: Buffer[] = [];
  /** The pending line ends with a '\r' that ended its chunk: the line ends there, or with the next chunk's '\n'. */
  private pendingCr = false;
  private first = true;
  /** The file's first bytes (of its first line), for compressedMark. */
  private head: Uint8Array = new Uint8Array(0);
  lineNumber = 0;

  constructor(
    private readonly file: string,
    private readonly ends: LineEnds = 'any',
  ) {}

  /** The lines that end in `data`. */
  push(data: Buffer): string[] {
    const lines: string[] = [];
    if (data.length === 0) return lines;
    let start = 0;
    if (this.pendingCr) {
      this.pendingCr = false;
      if (data[0] === 0x0a) {
        this.pending.push(data.subarray(0, 1));
        start = 1;
      }
      lines.push(this.decode(false));
    }
    const crEnds = this.ends !== 'lf';
    // The next '\n' and, where a lone '\r' ends a line too, the next '\r' (-1: none); a line ends at the first.
    let lf = data.indexOf(0x0a, start);
    let cr = crEnds ? data.indexOf(0x0d, start) : -1;
    const firstEnd = lf < 0 ? cr : cr < 0 ? lf : Math.min(lf, cr);
    // The lines after the chunk's first, which are whole in it: when they are UTF-8 text, they need no check each.
    const checked = firstEnd >= 0 && isUtf8Text(data.subarray(firstEnd + 1, Math.max(data.lastIndexOf(0x0a), crEnds ? data.lastIndexOf(0x0d) : -1) + 1));
    for (let end = firstEnd; end >= 0; ) {
      const lineStart = start;
      start = end + 1;
      if (end === cr) {
        if (start === data.length) {
          this.pending.push(data.subarray(lineStart));
          this.pendingCr = true;
          return lines;
        }
        if (data[start] === 0x0a) start++;
      }
      this.pending.push(data.subarray(lineStart, start));
      lines.push(this.decode(lineStart > firstEnd && checked));
      if (lf >= 0 && lf < start) lf = data.indexOf(0x0a, start);
      if (cr >= 0 && cr < start) cr = data.indexOf(0x0d, start);
      end = lf < 0 ? cr : cr < 0 ? lf : Math.min(lf, cr);
    }
    if (start < data.length) this.pending.push(data.subarray(start));
    return lines;
  }

  /** The last line: one without a line end, unless it is empty, or one that ends the file with '\r'. */
  end(): string[] {
    const ended = this.pendingCr;
    this.pendingCr = false;
    const last = this.pending.length > 0 ? this.decode(false) : '';
    return last === '' && !ended ? [] : [last];
  }

  /** The pending bytes as a line (its line end dropped, unless `ends` keeps it); `checked`: they are known to be UTF-8 text. */
  private decode(checked: boolean): string {
    this.lineNumber++;
    let bytes = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
    this.pending = [];
    if (this.first) {
      this.first = false;
      this.head = bytes.slice(0, 6);
      if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
      const utf16 = utf16Mark(this.file, bytes);
      if (utf16) throw utf16;
    }
    if (!checked && !isUtf8Text(bytes)) throw compressedMark(this.file, this.head) ?? notUtf8(this.file, this.lineNumber, bytes, firstBadByte(bytes));
    if (this.ends !== 'keep') {
      // '\n', '\r\n' or '\r' (the last line's '\r' too, in 'lf': a file that ends without its '\n').
      let n = bytes.length;
      if (n > 0 && bytes[n - 1] === 0x0a) n--;
      if (n > 0 && bytes[n - 1] === 0x0d) n--;
      bytes = bytes.subarray(0, n);
    }
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
 * not hold the event loop for the seconds reading it takes (timers, progress, a server's requests go on). Lines as
 * LineSplitter splits them, ending where `ends` says (by default at '\n', '\r\n' or a lone '\r', as Python reads a
 * text file: LineEnds); an empty file has none. A `.gz` file is decompressed (whole, off the JS thread: at most 2 GiB
 * compressed and 4 GiB decompressed, Node's limits for one buffer). Pipes work (`/dev/stdin`). `chunkBytes` is for
 * tests.
 */
export async function* fileLines(file: string, chunkBytes = LINE_CHUNK_BYTES, { ends = 'any' as LineEnds } = {}): AsyncGenerator<string[]> {
  const lines = new LineSplitter(file, ends);
  if (/\.gz$/i.test(file)) {
    const whole = await gunzipFile(file);
    for (let start = 0; start < whole.length; start += chunkBytes) {
      checkHeap(file, lines.lineNumber + 1);
      yield lines.push(whole.subarray(start, Math.min(whole.length, start + chunkBytes)));
      await nextTurn();
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
  const gz = /\.gz$/i.test(file);
  // `decompressed`: the size of a .gz file's text (the file's own is a fraction of it).
  const tooLarge = (decompressed?: number) => {
    const gib = ((decompressed ?? fs.statSync(file).size) / 2 ** 30).toFixed(2);
    return new ColtrastError('INVALID_ARGUMENT', `${noun} file ${file} (${gib} GiB${decompressed !== undefined ? ' decompressed' : ''}) is too large to read as one JSON document (Node's longest string is ~512 MiB); write it as JSON Lines (a .jsonl file, one item a line), which is read a line at a time`);
  };
  let bytes: Buffer;
  try {
    bytes = gz ? await gunzipFile(file) : await fs.promises.readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ERR_FS_FILE_TOO_LARGE' && !(error instanceof RangeError)) throw error;
    throw tooLarge();
  }
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) bytes = bytes.subarray(3);
  const utf16 = utf16Mark(file, bytes);
  if (utf16) throw utf16;
  if (!isUtf8Text(bytes)) {
    const compressed = compressedMark(file, bytes);
    if (compressed) throw compressed;
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
    throw tooLarge(gz ? bytes.length : undefined);
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
 * Written here because Node 20's V8 gives no position for most syntax errors ("Unexpected token '}', ... is not valid
 * JSON"), and the npm packages that place JSON errors read that position from V8's message; checked against
 * JSON.parse on 20,000 random broken texts (test/data-files.test.ts).
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
  for await (const lines of fileLines(file, LINE_CHUNK_BYTES, { ends: 'lf' })) {
    for (const line of lines) {
      i++;
      if (line.trim() === '') continue;
      const where = `${file}:${i}`;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (error) {
        throw new ColtrastError('INVALID_ARGUMENT', `${where}: not valid JSON (${(error as Error).message})${jsonLineHint(file, line)}`);
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

/**
 * What a JSON Lines line that is not JSON most likely is, for its error: a byte-order mark past the file's start
 * (files joined with cat keep each one's, invisible in an editor and in V8's message), lines that end in '\r' alone
 * (classic Mac OS: the whole file is one line), or the first line of a document written over many lines (`{` alone,
 * JSON.stringify(x, null, 2)), which belongs in a .json file.
 */
function jsonLineHint(file: string, line: string): string {
  if (line.charCodeAt(0) === 0xfeff) return `; the line starts with a byte-order mark (U+FEFF), as where files were joined with cat: remove it (and any others), e.g. sed -i 's/^\\xEF\\xBB\\xBF//' ${shellQuote(file)}`;
  if (line.includes('\r')) return `; its lines end in '\\r' alone (old Mac line endings), not '\\n' or '\\r\\n': convert them, e.g. tr '\\r' '\\n' < ${shellQuote(file)} > fixed.jsonl`;
  if (jsonErrorOffset(line) === line.length) return '; each line of a JSON Lines file must be one whole JSON value: a document written over several lines (pretty-printed) belongs in a .json file';
  return '';
}

/** The lines of JSON Lines `file` that are not blank, counted without parsing them (a progress bar's total). */
export async function countLines(file: string): Promise<number> {
  let n = 0;
  for await (const lines of fileLines(file, LINE_CHUNK_BYTES, { ends: 'lf' })) for (const line of lines) if (line.trim() !== '') n++;
  return n;
}

/**
 * Characters of CSV text parsed at once, the event loop running between: csv-parse took ~70 ms a megabyte of pairs
 * (200,000 pairs, 26 MB: 1.9 s, JSONL's 0.4-0.5 s, on the shared 2-core development VM), so a megabyte at once held
 * the loop that long; with 64 Ki characters the longest stall was 20-60 ms past the first chunk's, JSONL's 26-39 ms.
 */
const CSV_PIECE_CHARS = 1 << 16;

/** A CSV (`.csv`) or TSV (`.tsv`) file's name, gzipped or not: a table with a header row, read by parseCsv. */
export const CSV = /\.(csv|tsv)(\.gz)?$/i;

/**
 * What parseCsv does with a table: given its header's column names (trimmed) and the header's `file:line`, it
 * checks them (an error names the file, the columns found and those expected) and returns what reads each record
 * (its fields, one per column, and its `file:line`).
 */
export type CsvReader<T> = (columns: string[], where: string) => (fields: string[], where: string) => T;

/**
 * Parses a CSV or TSV file (CSV by its name's `.tsv`, else commas; `.gz` decompressed) whose first record is a
 * header naming its columns: `start(columns)` checks them, and what it returns reads every later record, in order.
 * The text comes from fileLines (a megabyte at a time, checked to be UTF-8 text, a byte-order mark dropped) and
 * csv-parse splits it into records at '\n', '\r\n' or a lone '\r' (as Python's csv module does, the file opened with
 * newline='' as its manual says: old Mac line ends, and '\r\r\n', a record and a blank line): RFC 4180's quoting, a quoted field may hold the delimiter,
 * `""` and line breaks, and keeps every character of them as Python's csv module reads it (a '\r\n' or a lone '\r'
 * in a quoted field stays one); a `"` inside an unquoted field is kept as it is, as TSV writers that do not quote
 * leave it. TSV uses the same quoting (as pandas' and Python's csv writers quote a field with a tab, a line break or
 * a `"`). Blank lines are skipped, and records whose fields are all blank (a spreadsheet's rows of commas) too unless
 * `keepBlankRows` (a reader whose rows must stay aligned with the file's). Each record's `file:line` is the line it
 * starts on (lines end as records do, and at a quoted field's '\n', but not at a '\r' alone inside one, which a
 * text editor in Unix mode shows as ^M in its line, where Python's line_num counts a line); a record with another
 * number of fields than the header, or a quote never closed, is an error naming that line. An empty file gives no records.
 */
export async function parseCsv<T>(file: string, start: CsvReader<T>, options: CsvOptions = {}): Promise<T[]> {
  const out: T[] = [];
  for await (const batch of csvBatches(file, start, options)) for (const value of batch) out.push(value);
  return out;
}

export interface CsvOptions {
  /** Records whose fields are all blank are read too, not skipped (blank lines are skipped still). */
  keepBlankRows?: boolean;
}

/**
 * parseCsv's records in batches, as they are parsed (a piece of the file at a time), without the whole file's
 * records in memory at once: `coltrast index` reads a table of millions of documents so.
 */
export async function* csvBatches<T>(file: string, start: CsvReader<T>, { keepBlankRows = false }: CsvOptions = {}): AsyncGenerator<T[]> {
  const tsv = /\.tsv(\.gz)?$/i.test(file);
  const what = tsv ? 'TSV' : 'CSV';
  let out: T[] = [];
  let read: ((fields: string[], where: string) => T) | undefined;
  let header = 0;
  // Lines taken by the records read so far (each one's, plus the '\n's in its quoted fields), counted as the parser
  // gives each record: csv-parse's own count (info.lines) takes a '\r' inside a quoted field for a line break. The
  // blank lines it skipped are its info.empty_lines (a lone '\r' ends a blank line or a record, and so a line).
  let recordLines = 0;
  const onRecord = (record: string[], info: { empty_lines: number }): null => {
    const where = `${file}:${recordLines + info.empty_lines + 1}`;
    for (const field of record) for (let nl = field.indexOf('\n'); nl >= 0; nl = field.indexOf('\n', nl + 1)) recordLines++;
    recordLines++;
    if (read === undefined) {
      header = record.length;
      read = start(csvHeader(file, where, record, tsv), where);
    } else if (keepBlankRows || !record.every((f) => f.trim() === '')) out.push(read(record, where));
    return null;
  };
  // The lines keep their line ends (fileLines' 'keep'), which the parser tells apart: a quoted field's '\r\n' or '\r'
  // is its own, and one between records ends the record as '\n' does.
  const parser = csvParser({ delimiter: tsv ? '\t' : ',', record_delimiter: ['\r\n', '\n', '\r'], relax_quotes: true, skip_empty_lines: true, on_record: onRecord });
  // The parser passes no record on (onRecord returns null) and parses a write as it is made (its _transform calls back
  // at once), so nothing queues in it: an error (a CsvError, or onRecord's) is known when the write returns, from the
  // 'error' event emitted on the next tick.
  let failure: unknown;
  parser.on('error', (error) => (failure ??= error));
  parser.resume();
  const parsed = async (piece: string[]) => {
    // The file's text, whole lines (fileLines never cuts a '\r\n' in two); a record that ends a piece with '\r' may
    // wait for the next write (the parser looks for a '\n' after it), the last one for end().
    parser.write(piece.join(''));
    await nextTurn();
    if (failure !== undefined) throw failure;
  };
  try {
    for await (const lines of fileLines(file, LINE_CHUNK_BYTES, { ends: 'keep' })) {
      // A chunk's lines in pieces of about CSV_PIECE_CHARS (whole lines: a cut could split a surrogate pair).
      let start = 0;
      let chars = 0;
      for (let i = 0; i < lines.length; i++) {
        chars += lines[i].length;
        if (chars < CSV_PIECE_CHARS && i < lines.length - 1) continue;
        await parsed(lines.slice(start, i + 1));
        start = i + 1;
        chars = 0;
        if (out.length > 0) {
          yield out;
          out = [];
        }
      }
    }
    parser.end();
    await nextTurn();
    if (failure !== undefined) throw failure;
    if (!parser.writableFinished) await finished(parser);
  } catch (error) {
    if (!(error instanceof CsvError)) throw error;
    const e = error as CsvError & { empty_lines?: number; record?: string[] };
    const where = `${file}:${recordLines + (e.empty_lines ?? 0) + 1}`;
    if (e.code === 'CSV_RECORD_INCONSISTENT_FIELDS_LENGTH') {
      const fields = e.record?.length ?? 0;
      throw new ColtrastError(
        'INVALID_ARGUMENT',
        `${where}: a record of ${fields} field${fields === 1 ? '' : 's'} where the header has ${header}: not valid ${what} (a field that holds a ${tsv ? 'tab' : 'comma'} must be quoted: "a${tsv ? '\\t' : ','} b")`,
      );
    }
    if (e.code === 'CSV_QUOTE_NOT_CLOSED') {
      throw new ColtrastError('INVALID_ARGUMENT', `${where}: a quoted field of the record that starts here is never closed (the rest of the file was read into it): not valid ${what}; close it with ", and write a " inside a quoted field as ""`);
    }
    throw new ColtrastError('INVALID_ARGUMENT', `${where}: not valid ${what} (${e.message})`);
  }
  if (out.length > 0) yield out;
}

/**
 * A CSV or TSV header's column names, trimmed: a column without a name (pandas writes its index as one), a name
 * twice, or one name holding the other format's delimiter (a file named for the wrong one) is an error.
 */
function csvHeader(file: string, where: string, record: string[], tsv: boolean): string[] {
  const columns = record.map((c) => c.trim());
  const list = columns.map((c) => JSON.stringify(c)).join(', ');
  const other = tsv ? [',', 'comma', '.csv'] : ['\t', 'tab', '.tsv'];
  if (columns.some((c) => c.includes(other[0]))) {
    throw new ColtrastError('INVALID_ARGUMENT', `${where}: the header's column ${list} holds a ${other[1]}: the file looks ${other[1]}-separated; name it ${other[2]}${/\.gz$/i.test(file) ? '.gz' : ''}`);
  }
  if (!tsv && columns.length === 1 && columns[0].includes(';')) {
    throw new ColtrastError('INVALID_ARGUMENT', `${where}: the header ${list} is separated by semicolons (as spreadsheets write CSV in some locales); coltrast reads comma-separated CSV: save the file with commas`);
  }
  const unnamed = columns.indexOf('');
  if (unnamed >= 0) {
    throw new ColtrastError('INVALID_ARGUMENT', `${where}: column ${unnamed + 1} of the header (${list}) has no name${unnamed === 0 ? ' (pandas writes its index so: to_csv(..., index=False) leaves it out)' : ''}; name every column, or remove the column`);
  }
  const twice = columns.find((c, i) => columns.indexOf(c) !== i);
  if (twice !== undefined) throw new ColtrastError('INVALID_ARGUMENT', `${where}: the header names column "${twice}" twice (${list})`);
  return columns;
}
