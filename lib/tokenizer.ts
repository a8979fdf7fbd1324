/**
 * Tokenization with Hugging Face's `tokenizers` (the same Rust library Python uses), truncating to the
 * model's maximum sequence length. Padding is ours: batches are padded to their own longest text.
 *
 * The tokenizers live in a worker thread (lib/tokenizer-host.ts): the package reads a tokenizer.json synchronously,
 * about 0.4 s for one of Qwen3's size, which would otherwise hold the application's event loop at each model load.
 * A TextTokenizer here sends its requests there and reads the ids back from packed typed arrays. The server's
 * /tokenize and /decode go to a second one, a request at a time (inspectHost below), so that they never hold up the
 * models' tokenizing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { ColtrastError } from './errors';
import { nextTurn } from './turns';

export interface TokenizedText {
  ids: number[];
  typeIds: number[];
}

/** @internal Texts unpacked per turn of the event loop by unpackIds. */
export const IDS_SLICE = 1024;

/** @internal Texts per encodeBatch call in the worker (an encoding holds much more than its ids: ~8 KB a text). */
export const ENCODE_SLICE = 8192;

/** @internal Which tokenizer a request is for: sent with every request, so a restarted worker rebuilds it. */
export interface TokenizerSpec {
  file: string;
  /**
   * The file as it was when the model was loaded (fileVersion): a part of the key, so that a folder rewritten and
   * loaded again gets the new file's tokenizer while a model still alive from before keeps the old one, and a
   * restarted worker refuses a file changed since instead of running new ids under an old model.
   */
  version: string;
  lowercase: boolean;
  /** Tokens added as special (unsplittable, not normalized) before use. */
  specialTokens: string[];
}

/** @internal Many texts' ids and token types, end to end: text i's are [ends[i - 1], ends[i]). */
export interface PackedIds {
  ids: Int32Array;
  typeIds: Int32Array;
  ends: Int32Array;
}

/** @internal What a TextTokenizer asks the worker to do; a TokenizerRequest when numbered. */
export type TokenizerWork = { spec: TokenizerSpec } & (
  | { op: 'load'; maxLength: number }
  | { op: 'encode'; texts: string[]; maxLength: number; special: boolean }
  | { op: 'encodePairs'; pairs: [string, string][]; maxLength: number }
  | { op: 'decode'; ids: number[][]; maxLength: number }
  | { op: 'decodeIds'; ids: number[][]; skipSpecial: boolean; maxLength: number }
  | { op: 'tokenOffsets'; texts: string[]; special: boolean; maxLength: number }
  | { op: 'tokenToIds'; tokens: string[]; maxLength: number }
  | { op: 'idsToTokens'; ids: number[]; maxLength: number }
  | { op: 'promptLength'; prompt: string; maxLength: number }
  | { op: 'pieces'; text: string; maxLength: number }
  | { op: 'release' }
  | { op: 'held' }
);

/** @internal */
export type TokenizerRequest = TokenizerWork & { id: number };

/** @internal */
export type TokenizerReply = { id: number; result: unknown } | { id: number; error: string; loading: boolean };

/**
 * @internal Many texts' tokens as text-embeddings-inference's /tokenize shows them, end to end: text i's are
 * [ends[i - 1], ends[i]). starts and stops are UTF-8 byte offsets into the text as it was given (Rust's offsets, which
 * TEI answers with); specialTexts holds the special tokens' strings only, in order (the others' text is their bytes
 * of the input: a string per token would cost the main thread ~0.5 µs each to receive, 2 s for 4 million).
 */
export interface TokenOffsets {
  ids: Int32Array;
  special: Uint8Array;
  starts: Int32Array;
  stops: Int32Array;
  ends: Int32Array;
  specialTexts: string[];
}

/** @internal decodeIds' answer: the texts, or the first id the vocabulary lacks (list, position, id) and its size. */
export type DecodedIds = { texts: string[] } | { unknown: [list: number, position: number, id: number]; vocabularySize: number };

/**
 * @internal The UTF-8 byte offset of each code point boundary of `text` (code points + 1 entries). The tokenizers
 * package gives offsets in code points; a lone surrogate counts as its UTF-8 replacement, as Buffer.from writes it.
 */
export function utf8Boundaries(text: string): Int32Array {
  const out: number[] = [0];
  let bytes = 0;
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    out.push(bytes);
  }
  return Int32Array.from(out);
}

/**
 * @internal For a text tokenized lowercased (sentence-transformers' do_lower_case): the code point of `text` that
 * each code point of text.toLowerCase() came from, and the end; undefined when each stays one code point (nearly
 * always: 'İ' is one that becomes two). Offsets into the lowercased text become offsets into `text` through it.
 */
export function lowercaseOrigins(text: string): Int32Array | undefined {
  const chars = Array.from(text);
  const counts = chars.map((ch) => Array.from(ch.toLowerCase()).length);
  if (counts.every((n) => n === 1)) return undefined;
  const out: number[] = [];
  counts.forEach((n, i) => {
    for (let k = 0; k < n; k++) out.push(i);
  });
  out.push(chars.length);
  // Context-dependent lowercasing that changes the count (none in the default locale's rules): positions kept as given.
  return out.length - 1 === Array.from(text.toLowerCase()).length ? Int32Array.from(out) : undefined;
}

/** @internal The truncation length of work that must see a whole text (however long: /tokenize counts its tokens). */
export const UNTRUNCATED = 1 << 30;

/** @internal The worker's workerData.role. */
export const HOST_ROLE = 'coltrast-tokenizer-host';

/** @internal The key of a spec's tokenizers. */
export function specKey(spec: TokenizerSpec): string {
  return JSON.stringify([spec.file, spec.version, spec.lowercase, spec.specialTokens]);
}

/** @internal A file's identity now: its inode, size and modification time (a rename over it changes the inode). */
export function fileVersion(stat: { ino: number; size: number; mtimeMs: number }): string {
  return `${stat.ino}:${stat.size}:${stat.mtimeMs}`;
}

/**
 * @internal The texts of `packed`, as arrays, a slice of IDS_SLICE per turn of the event loop: 40,000 texts' ids made
 * at once would hold it for tens of milliseconds (BENCHMARKS.md, "Tokenizing while the model runs").
 */
export async function unpackIds(packed: PackedIds): Promise<TokenizedText[]> {
  const { ids, typeIds, ends } = packed;
  const out: TokenizedText[] = new Array(ends.length);
  for (let start = 0; start < ends.length; start += IDS_SLICE) {
    if (start > 0) await nextTurn();
    for (let i = start; i < Math.min(start + IDS_SLICE, ends.length); i++) {
      const from = i === 0 ? 0 : ends[i - 1];
      out[i] = { ids: Array.from(ids.subarray(from, ends[i])), typeIds: Array.from(typeIds.subarray(from, ends[i])) };
    }
  }
  return out;
}

/**
 * @internal Characters of text sent to the tokenizer worker in one message. postMessage copies its texts on the event
 * loop: 0.5-2.5 ms a million characters on the development VM (80 million: 99-202 ms, 2026-12-06), so a request with
 * more goes as several messages, each sent on a turn of the loop of its own. (A single text longer than this still
 * goes whole.) encode()'s parts are smaller still (LONG_CHARACTERS); /tokenize's are of this size.
 */
export const SEND_CHARACTERS = 1 << 21;
let sendCharacters = SEND_CHARACTERS;

/** @internal Sets the characters a message (tests: parts of small inputs); returns the setting before. */
export function setSendCharacters(n: number): number {
  const before = sendCharacters;
  sendCharacters = n;
  return before;
}

/**
 * @internal Characters above which a text (or pair) is tokenized on the long lane (Host.callLong), one message at a
 * time for the whole process: a call's long texts together (up to SEND_CHARACTERS a message, or one longer text
 * alone), a pair alone. The tokenizers package tokenizes a text whole and truncates after, on libuv's pool
 * (4 threads for the process, which the models' native calls run on too), ~0.9 µs a character here: 100,000 characters
 * took 58 ms, 2 million 1.7 s (2026-12-07). Four /embed requests of 2 million characters, tokenized at once, held the
 * whole pool, and an embed() of one short text sent meanwhile waited 4.5 s. Shorter texts go in parts of at most this
 * many characters, a call's parts one at a time: however large or many the calls, a short text waits for a pool
 * thread about as long as one part takes. A message of several texts is one encodeBatch, one pool thread, which the
 * tokenizers package spreads over the cores itself (its own threads): 16 texts of 200,000 characters took 0.39-0.47 s
 * so, 0.73-0.97 s one a message (2 cores, 2026-12-07); a pair is its own encode call, a pool thread each (the package
 * takes no pairs in encodeBatch: tokenizer-host.ts), so pairs go one a message.
 */
export const LONG_CHARACTERS = 100_000;
let longCharacters = LONG_CHARACTERS;

/** @internal Sets LONG_CHARACTERS (tests: Infinity sends every part on the main lane, the way before the long lane); returns the setting before. */
export function setLongCharacters(n: number): number {
  const before = longCharacters;
  longCharacters = n;
  return before;
}

/**
 * The ids of `items` tokenized by the worker, in order, the request made by `request` for each part: the items of
 * more than LONG_CHARACTERS characters (by `characters`) on the long lane, in parts of at most SEND_CHARACTERS (one
 * longer item alone), or one a part unless `groupLong` (texts: one encodeBatch; not pairs); the others in parts of at most
 * LONG_CHARACTERS and SEND_CHARACTERS, on the main lane, each sent once the one before has been answered (and
 * unpacked meanwhile, in turns: unpackIds). The ids are those of the whole input tokenized at once: each text is
 * still tokenized whole, by the same tokenizer. `signal` aborted (a server's client gone), the parts not yet sent are
 * not (a huge text waiting its turn on the long lane is never tokenized), and it rejects ABORTED.
 */
async function encodeInParts<T>(items: T[], characters: (item: T) => number, request: (part: T[]) => TokenizerWork, groupLong: boolean, signal?: AbortSignal): Promise<TokenizedText[]> {
  if (signal?.aborted) throw aborted(request([]).op);
  type Part = { indices: number[]; long: boolean };
  // Each lane's part being filled, its characters so far, and how many a part may hold (one item at least).
  const lanes = {
    main: { open: undefined as Part | undefined, size: 0, limit: Math.min(sendCharacters, longCharacters) },
    long: { open: undefined as Part | undefined, size: 0, limit: groupLong ? sendCharacters : 0 },
  };
  const parts: Part[] = [];
  items.forEach((item, i) => {
    const n = characters(item);
    const long = n > longCharacters;
    const lane = long ? lanes.long : lanes.main;
    if (!lane.open || lane.size + n > lane.limit) {
      parts.push((lane.open = { indices: [], long }));
      lane.size = 0;
    }
    lane.open.indices.push(i);
    lane.size += n;
  });
  if (parts.length === 1 && !parts[0].long) return unpackIds(await host.call<PackedIds>(request(items), signal));
  let previous: Promise<unknown> = Promise.resolve();
  const replies = parts.map((part) => {
    const work = request(part.indices.map((i) => items[i]));
    let reply: Promise<PackedIds>;
    if (part.long) reply = host.callLong<PackedIds>(work, signal);
    else {
      reply = previous.then(() => host.call<PackedIds>(work, signal));
      previous = reply;
    }
    reply.catch(() => {}); // awaited below, in order; a later part may fail first
    return reply;
  });
  const out: TokenizedText[] = new Array(items.length);
  for (const [k, reply] of replies.entries()) {
    const ids = await unpackIds(await reply);
    parts[k].indices.forEach((i, j) => (out[i] = ids[j]));
  }
  return out;
}

/**
 * The worker and the requests waiting for it. It keeps the process alive only while a request waits. If it dies
 * (it should not: the tokenizers package reports errors as exceptions), the waiting requests fail and the next
 * request starts another, which rebuilds each tokenizer it is asked for.
 */
class Host {
  private worker: Worker | undefined;
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  /** With oneAtATime: settles when the last request sent has been answered; the next one waits for it. */
  private last: Promise<unknown> = Promise.resolve();
  /** The long lane's (callLong) last request, as `last`, and how many of its requests are not answered yet. */
  private lastLong: Promise<unknown> = Promise.resolve();
  private longWaiting = 0;

  /**
   * `oneAtATime`: each request is sent once the one before it has been answered. The worker runs its requests'
   * tokenizing concurrently, on libuv's pool (4 threads for the whole process, which the models' calls run on too):
   * four large requests at once would hold all of it.
   */
  constructor(private readonly oneAtATime = false) {}

  /** Whether a worker is running (a request has started one and it has not died). */
  get started(): boolean {
    return this.worker !== undefined;
  }

  private start(): Worker {
    // Compiled, dist/tokenizer-host.js. Run from source (the tests, through tsx), lib/tokenizer-host.ts: tsx's loader
    // does not follow into a worker, so the worker registers it first (tsx is a dev dependency, as the sources are).
    const ts = path.extname(__filename) === '.ts';
    const file = path.join(__dirname, `tokenizer-host${ts ? '.ts' : '.js'}`);
    const workerData = { role: HOST_ROLE };
    const worker = ts
      ? new Worker(`require(${JSON.stringify(require.resolve('tsx/cjs/api'))}).register(); require(${JSON.stringify(file)});`, { eval: true, workerData })
      : new Worker(file, { workerData });
    worker.unref();
    worker.on('message', (reply: TokenizerReply) => {
      const call = this.waiting.get(reply.id);
      if (!call) return;
      this.settled(reply.id);
      if ('error' in reply) call.reject(new ColtrastError(reply.loading ? 'MODEL_FILES' : 'NATIVE', reply.error));
      else call.resolve(reply.result);
    });
    const died = (error: Error) => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      const calls = [...this.waiting.values()];
      this.waiting.clear();
      for (const call of calls) call.reject(new ColtrastError('NATIVE', `the tokenizer's worker thread stopped: ${error.message}`, { cause: error }));
    };
    worker.on('error', died);
    worker.on('exit', (code) => died(new Error(`exit code ${code}`)));
    return worker;
  }

  private settled(id: number): void {
    this.waiting.delete(id);
    if (this.waiting.size === 0) this.worker?.unref();
  }

  /** `signal`: aborted before the request is sent (with oneAtATime, while it waits its turn), it never is, and rejects ABORTED. */
  call<T>(request: TokenizerWork, signal?: AbortSignal): Promise<T> {
    if (!this.oneAtATime) return signal?.aborted ? Promise.reject(aborted(request.op)) : this.send<T>(request);
    const reply = this.last.then(() => {
      if (signal?.aborted) throw aborted(request.op);
      return this.send<T>(request);
    });
    this.last = reply.catch(() => {});
    return reply;
  }

  /**
   * The long lane: each request sent once the lane's one before it has been answered, for every tokenizer of the
   * process (LONG_CHARACTERS), while the others go on meanwhile: texts of millions of characters hold one of libuv's
   * pool threads at most, never the pool. (Merged into one encodeBatch, which the tokenizers package spreads over the
   * cores itself, four texts of 2 million characters were no faster: 13.5 s, against 8.6 s one after another.)
   * `signal` aborted while the request waits its turn (the server's client gone), it is never sent, and rejects ABORTED.
   */
  callLong<T>(request: TokenizerWork, signal?: AbortSignal): Promise<T> {
    this.longWaiting++;
    const reply = this.lastLong
      .then(() => {
        if (signal?.aborted) throw aborted(request.op);
        return this.send<T>(request);
      })
      .finally(() => this.longWaiting--);
    this.lastLong = reply.catch(() => {});
    return reply;
  }

  private send<T>(request: TokenizerWork): Promise<T> {
    const worker = (this.worker ??= this.start());
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      if (this.waiting.size === 0) worker.ref();
      this.waiting.set(id, { resolve: resolve as (value: unknown) => void, reject });
      worker.postMessage({ ...request, id });
    });
  }

  /** Lets the worker drop a spec's tokenizers (no TextTokenizer of it is left). */
  release(spec: TokenizerSpec): void {
    const post = () => this.worker?.postMessage({ id: -1, op: 'release', spec } satisfies TokenizerRequest);
    // After the requests queued before it, which would build the tokenizer again.
    if (this.oneAtATime) void this.last.then(post);
    else if (this.longWaiting > 0) void this.lastLong.then(post);
    else post();
  }
}

/** What a tokenizer request whose signal aborted before it was sent rejects with. */
function aborted(op: string): ColtrastError {
  return new ColtrastError('ABORTED', `the tokenizer's ${op} was aborted (its signal) before it began`);
}

/** The worker of the models' own tokenizing: embedding, re-ranking, generation, loading. */
const host = new Host();

/**
 * A second worker, one request at a time, for what only inspects the tokenizer and can be of any size: the server's
 * /tokenize (a whole text of millions of characters, untruncated, with offsets) and /decode. On the models' worker a
 * /tokenize of 2 million characters held every other route's tokenizing for ~2 s (the offsets are made on the
 * worker's thread), and four such requests at once took libuv's whole pool: a one-text /embed sent meanwhile took
 * 42 s (2026-12-07, this VM; test/serve-tokenize.test.ts).
 */
const inspectHost = new Host(true);

/** @internal The files whose tokenizers the worker holds (tests: disposing a model lets its tokenizer go). */
export async function heldTokenizers(): Promise<string[]> {
  const spec = { file: '', version: '', lowercase: false, specialTokens: [] };
  const held = await host.call<string[]>({ op: 'held', spec });
  if (inspectHost.started) held.push(...(await inspectHost.call<string[]>({ op: 'held', spec })));
  return [...new Set(held)];
}

/** TextTokenizers alive (neither disposed nor collected) per spec key: the worker keeps a spec's tokenizers while one is. */
const alive = new Map<string, number>();

/**
 * tokenizer.json's bytes as the TextTokenizers alive were loaded from them, by file and version, with how many of them
 * there are: a saved model gets these (lib/model-dir.ts, writeModelFiles), the tokenizer it ran with, not the file as
 * it is by then, which may have been changed or replaced since. Read as the tokenizer loads, off the event loop (a
 * tokenizer.json is tens of megabytes for a large vocabulary: a synchronous read of one of 17 MB held the loop ~145 ms
 * here, 2026-12-06); kept once per file and version, however many models share it.
 */
const loadedFiles = new Map<string, { bytes?: Buffer; users: number }>();
const loadedKey = (file: string, version: string) => JSON.stringify([file, version]);

/**
 * @internal tokenizer.json's bytes as `file` was when a TextTokenizer still alive was loaded from it at `version`
 * (fileVersion), or undefined where none is.
 */
export function loadedTokenizerFile(file: string, version: string): Buffer | undefined {
  return loadedFiles.get(loadedKey(file, version))?.bytes;
}

function gone(spec: TokenizerSpec): void {
  const kept = loadedFiles.get(loadedKey(spec.file, spec.version));
  if (kept && --kept.users <= 0) loadedFiles.delete(loadedKey(spec.file, spec.version));
  const key = specKey(spec);
  const left = (alive.get(key) ?? 1) - 1;
  if (left > 0) alive.set(key, left);
  else {
    alive.delete(key);
    host.release(spec);
    inspectHost.release(spec);
  }
}

const finalizer = new FinalizationRegistry<TokenizerSpec>(gone);

export class TextTokenizer {
  private constructor(
    private readonly spec: TokenizerSpec,
    private readonly maxLength: number,
  ) {
    const key = specKey(spec);
    alive.set(key, (alive.get(key) ?? 0) + 1);
    finalizer.register(this, spec, this);
  }

  private disposed = false;

  /**
   * Lets the worker drop this tokenizer once no other TextTokenizer of the same file and settings is left (the model
   * that owns it is disposed; collection does the same later). A request made after it builds the tokenizer again.
   */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    finalizer.unregister(this);
    gone(this.spec);
  }

  /** Reads the tokenizer (in the worker); a tokenizer.json that does not load is a MODEL_FILES error. */
  static async load(file: string, maxLength: number, lowercase: boolean, specialTokens: string[] = []): Promise<TextTokenizer> {
    // A file that cannot be read has no version: the worker's load then reports why.
    const version = await fs.promises.stat(file).then(fileVersion, () => '');
    // Its bytes, kept for a save (loadedFiles): those of `version` when the file is the same after the read (the
    // worker builds the tokenizer from that version only); changed meanwhile, the worker refuses it.
    let bytes: Buffer | undefined;
    if (version && !loadedFiles.get(loadedKey(file, version))?.bytes) {
      bytes = await fs.promises.readFile(file).catch(() => undefined);
      if ((await fs.promises.stat(file).then(fileVersion, () => '')) !== version) bytes = undefined;
    }
    const tokenizer = new TextTokenizer({ file, version, lowercase, specialTokens }, maxLength);
    const kept = loadedFiles.get(loadedKey(file, version)) ?? { users: 0 };
    kept.users++;
    kept.bytes ??= bytes;
    loadedFiles.set(loadedKey(file, version), kept);
    await host.call({ op: 'load', spec: tokenizer.spec, maxLength });
    return tokenizer;
  }

  /**
   * Tokenizes, truncating to `maxLength` tokens (default: the model's maximum sequence length). `signal` aborted, the
   * parts not sent yet to the worker are not (a long text waiting on the long lane), and it rejects ABORTED.
   */
  async encode(texts: string[], maxLength = this.maxLength, signal?: AbortSignal): Promise<TokenizedText[]> {
    return encodeInParts(texts, (text) => text.length, (part) => ({ op: 'encode', spec: this.spec, texts: part, maxLength, special: true }), true, signal);
  }

  /** Tokenizes without the special tokens the tokenizer's template adds (a completion that follows a prompt); `signal` as encode's. */
  async encodeBare(texts: string[], maxLength = this.maxLength, signal?: AbortSignal): Promise<TokenizedText[]> {
    return encodeInParts(texts, (text) => text.length, (part) => ({ op: 'encode', spec: this.spec, texts: part, maxLength, special: false }), true, signal);
  }

  /** Token ids back to text, special tokens left out. */
  async decode(ids: number[][]): Promise<string[]> {
    if (ids.length === 0) return [];
    return host.call<string[]>({ op: 'decode', spec: this.spec, ids, maxLength: this.maxLength });
  }

  /**
   * @internal Token ids back to text, special tokens kept unless `skipSpecial`; an id the vocabulary lacks is
   * reported (the tokenizers package would drop it silently) rather than decoded. On the second worker (inspectHost).
   */
  async decodeIds(ids: number[][], skipSpecial: boolean): Promise<DecodedIds> {
    if (ids.length === 0) return { texts: [] };
    return inspectHost.call<DecodedIds>({ op: 'decodeIds', spec: this.spec, ids, skipSpecial, maxLength: this.maxLength });
  }

  /**
   * @internal Each text's tokens, untruncated, with (`special`) or without the special tokens the template adds:
   * ids, the special-tokens mask and UTF-8 byte offsets into the text (server's /tokenize). A request of more than
   * SEND_CHARACTERS characters goes as several messages, as encode()'s do. On the second worker, a message at a time
   * (inspectHost): a text of millions of characters delays other /tokenize requests, not the models. `signal` aborted
   * (the client went away), the messages not yet sent are not, and it rejects ABORTED.
   */
  async tokenOffsets(texts: string[], special: boolean, signal?: AbortSignal): Promise<TokenOffsets> {
    const parts: string[][] = [[]];
    let size = 0;
    for (const text of texts) {
      if (size + text.length > sendCharacters && parts[parts.length - 1].length > 0) {
        parts.push([]);
        size = 0;
      }
      parts[parts.length - 1].push(text);
      size += text.length;
    }
    const replies: Promise<TokenOffsets>[] = [];
    for (const part of parts) {
      if (replies.length > 0) await nextTurn();
      const reply = inspectHost.call<TokenOffsets>({ op: 'tokenOffsets', spec: this.spec, texts: part, special, maxLength: UNTRUNCATED }, signal);
      reply.catch(() => {}); // awaited below, in order; a later part may fail first
      replies.push(reply);
    }
    const all: TokenOffsets[] = [];
    for (const reply of replies) all.push(await reply);
    return all.length === 1 ? all[0] : joinTokenOffsets(all);
  }

  /**
   * Tokenizes text pairs as one input each ([CLS] a [SEP] b [SEP], token types 0 then 1), cutting the longer
   * text first until the pair fits `maxLength` (transformers' 'longest_first', as cross-encoders are run). `signal` as encode's.
   */
  async encodePairs(pairs: [string, string][], maxLength = this.maxLength, signal?: AbortSignal): Promise<TokenizedText[]> {
    return encodeInParts(pairs, ([a, b]) => a.length + b.length, (part) => ({ op: 'encodePairs', spec: this.spec, pairs: part, maxLength }), false, signal);
  }

  /** Each token's id (added tokens included), or null where the vocabulary has no such token. */
  async tokenToIds(tokens: string[]): Promise<(number | null)[]> {
    return host.call<(number | null)[]>({ op: 'tokenToIds', spec: this.spec, tokens, maxLength: this.maxLength });
  }

  /** Each id's token as the vocabulary spells it ("##ing", "Ġthe"; added tokens included), or null for an id it lacks. */
  async idsToTokens(ids: number[]): Promise<(string | null)[]> {
    return host.call<(string | null)[]>({ op: 'idsToTokens', spec: this.spec, ids, maxLength: this.maxLength });
  }

  /** A token's id (added tokens included), or null when the vocabulary has no such token. */
  async tokenToId(token: string): Promise<number | null> {
    return (await this.tokenToIds([token]))[0];
  }

  /** How many tokens `prompt` takes at the start of a text: with the leading special tokens, without a trailing one
   * (sentence-transformers' prompt length, which include_prompt false leaves out of pooling). */
  async promptLength(prompt: string, maxLength = this.maxLength): Promise<number> {
    return host.call<number>({ op: 'promptLength', spec: this.spec, prompt, maxLength });
  }

  /** The tokens `text` splits into, without special tokens (to see whether a marker stays one piece). */
  async pieces(text: string): Promise<string[]> {
    return host.call<string[]>({ op: 'pieces', spec: this.spec, text, maxLength: this.maxLength });
  }
}

/** Parts' TokenOffsets as one, in order. */
function joinTokenOffsets(parts: TokenOffsets[]): TokenOffsets {
  const join = <T extends Int32Array | Uint8Array>(make: new (n: number) => T, get: (p: TokenOffsets) => T): T => {
    const out = new make(parts.reduce((n, p) => n + get(p).length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(get(p), at);
      at += get(p).length;
    }
    return out;
  };
  const ends = join(Int32Array, (p) => p.ends);
  let at = 0;
  let shift = 0;
  for (const p of parts) {
    for (let i = 0; i < p.ends.length; i++) ends[at + i] += shift;
    at += p.ends.length;
    shift += p.ids.length;
  }
  return {
    ids: join(Int32Array, (p) => p.ids),
    special: join(Uint8Array, (p) => p.special),
    starts: join(Int32Array, (p) => p.starts),
    stops: join(Int32Array, (p) => p.stops),
    ends,
    specialTexts: parts.flatMap((p) => p.specialTexts),
  };
}

/**
 * A text's tokens as the model gets them. `attention` overrides the default (every token attended) and `scored`
 * names the positions pooled or returned as token vectors when they are not the attended ones.
 */
export interface ModelInput extends TokenizedText {
  attention?: number[];
  scored?: number[];
}

/** Indices of `items`, longest first: similar lengths share a batch, and a too-large batch fails at once, not at the end. */
export function longestFirst(items: { ids: number[] }[]): number[] {
  return items.map((_, i) => i).sort((a, b) => items[b].ids.length - items[a].ids.length);
}

/** Packs texts into one right-padded batch as the native encoder expects it. */
export function padBatch(items: ModelInput[]): {
  inputIds: Int32Array;
  attentionMask: Int32Array;
  tokenTypeIds: Int32Array;
  batchSize: number;
  seqLen: number;
  outputMask?: Int32Array;
} {
  const seqLen = Math.max(1, ...items.map((t) => t.ids.length));
  const size = items.length * seqLen;
  const inputIds = new Int32Array(size);
  const attentionMask = new Int32Array(size);
  const tokenTypeIds = new Int32Array(size);
  const outputMask = items.some((t) => t.scored) ? new Int32Array(size) : undefined;
  items.forEach((t, row) => {
    inputIds.set(t.ids, row * seqLen);
    tokenTypeIds.set(t.typeIds, row * seqLen);
    if (t.attention) attentionMask.set(t.attention, row * seqLen);
    else attentionMask.fill(1, row * seqLen, row * seqLen + t.ids.length);
    if (outputMask) {
      if (t.scored) outputMask.set(t.scored, row * seqLen);
      else outputMask.set(attentionMask.subarray(row * seqLen, row * seqLen + t.ids.length), row * seqLen);
    }
  });
  return { inputIds, attentionMask, tokenTypeIds, batchSize: items.length, seqLen, ...(outputMask && { outputMask }) };
}
