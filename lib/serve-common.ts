/**
 * What the server's routes share (lib/serve.ts, lib/serve-generation.ts): errors that carry their HTTP status, the
 * checks of request bodies, the queue that batches requests across clients, and CORS.
 */
import { ColtrastError } from './errors';
import type { TokenOffsets } from './tokenizer';
import { booleanValue, checkOptions, invalid, numberValue } from './validate';

/** What one queue has done: model calls, the inputs they took, the largest call, and the inputs dropped unrun. */
export interface QueueStats {
  calls: number;
  inputs: number;
  largestCall: number;
  /** Inputs being prepared (tokenized), waiting, or in a model call now. */
  waiting: number;
  /** Inputs dropped before any model call took them (while prepared or waiting): their client went away. */
  cancelled: number;
}

/** An error with the HTTP status it answers with. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/**
 * What a request's promise rejects with when its client goes away first (its signal aborts): the server answers
 * nobody, so the status (nginx's 499, "client closed request") only shows in onRequest's log.
 */
export class ClientGone extends HttpError {
  constructor() {
    super(499, 'the client went away before its answer was ready');
  }
}

/** One request in a queue: its items, the outputs so far, and how far model calls have taken its items. */
interface Request<I, O> {
  key: string;
  /** The request's inputs: set once prepared (none queued before). */
  items: I[];
  /** How many inputs it has. */
  size: number;
  out: O[];
  /** Items [0, taken) have gone to model calls; the rest wait (one piece in the queue, the later ones not yet). */
  taken: number;
  /** Its client went away: its pieces left the queue, and it is never answered. */
  cancelled: boolean;
  resolve: (out: O[]) => void;
  reject: (error: unknown) => void;
}

/** Items [start, end) of a request: what waits in the queue, one piece per request at a time. */
interface Piece<I, O> {
  request: Request<I, O>;
  start: number;
  end: number;
}

/**
 * Continuous batching: requests wait here while `run` works; the next call takes the oldest waiting piece and
 * every other waiting piece with the same key, up to `maxItems` items. A request larger than `maxItems` waits
 * one piece at a time, its next piece queued when the last one is done, behind the requests that came
 * meanwhile: a large request does not hold up small ones. One call at a time per queue (the model's work is
 * serialized natively anyway); beyond `maxWaiting` items, requests are refused (503) rather than queued
 * without end. A request whose `signal` aborts (its client went away) leaves the queue at once: its items that
 * no call has taken are never run, and it rejects with ClientGone; a call under way finishes for the other
 * requests in it.
 *
 * With `prepare`, each request's inputs are prepared (tokenized) as it arrives, concurrently with the other requests
 * and with the model's calls, and join the queue once prepared: a call only runs the model, so that a short request
 * is batched with whatever is ready, not made to wait for the tokenizing of huge requests that came before it (as
 * text-embeddings-inference's tokenization workers before its batching queue). Inputs being prepared count towards
 * `maxWaiting`; a preparation that fails answers its own request only; a client gone while its inputs are prepared
 * aborts the preparation (`prepare`'s signal) and its result is dropped.
 */
export class BatchQueue<I, O, T = I> {
  private queue: Piece<I, O>[] = [];
  private waiting = 0;
  private busy = false;
  private readonly counts = { calls: 0, inputs: 0, largestCall: 0, cancelled: 0 };

  constructor(
    private readonly run: (key: string, items: I[]) => Promise<O[]>,
    private readonly maxItems: number,
    private readonly maxWaiting: number,
    private readonly prepare?: (key: string, inputs: T[], signal: AbortSignal | undefined) => Promise<I[]>,
  ) {}

  stats(): QueueStats {
    return { calls: this.counts.calls, inputs: this.counts.inputs, largestCall: this.counts.largestCall, waiting: this.waiting, cancelled: this.counts.cancelled };
  }

  /**
   * `inputs`' outputs, in order (prepared first, with `prepare`); `signal` aborting (the client went away) takes the
   * request out of the queue, and stops its preparation. `onQueued` is called when the request joins the queue (its
   * inputs prepared): a streamed answer starts then, its refusals all behind it.
   */
  submit(key: string, inputs: T[], signal?: AbortSignal, onQueued?: () => void): Promise<O[]> {
    if (signal?.aborted) return Promise.reject(new ClientGone());
    if (this.waiting + inputs.length > this.maxWaiting) {
      return Promise.reject(
        new HttpError(503, `the server is busy: ${this.waiting} inputs are waiting (maxQueue ${this.maxWaiting}); retry shortly`, { 'Retry-After': '1' }),
      );
    }
    if (inputs.length === 0) return Promise.resolve([]);
    const size = inputs.length;
    this.waiting += size;
    return new Promise<O[]>((resolve, reject) => {
      const onAbort = () => this.cancel(request);
      const done = () => signal?.removeEventListener('abort', onAbort);
      const request: Request<I, O> = {
        key,
        items: [],
        size,
        out: new Array<O>(size),
        taken: 0,
        cancelled: false,
        resolve: (out) => (done(), resolve(out)),
        reject: (error) => (done(), reject(error)),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const queue = (items: I[]) => {
        request.items = items;
        onQueued?.();
        this.enqueue(request, 0);
        this.start();
      };
      if (!this.prepare) {
        queue(inputs as unknown as I[]);
        return;
      }
      const failed = (error: unknown) => {
        this.waiting -= size;
        request.reject(error);
      };
      this.prepare(key, inputs, signal).then(
        (items) => {
          // Its client gone meanwhile: cancel() has let its inputs go.
          if (request.cancelled) return;
          if (items.length === size) queue(items);
          else failed(new Error(`BatchQueue: prepare gave ${items.length} items for ${size} inputs`));
        },
        (error: unknown) => {
          if (!request.cancelled) failed(error);
        },
      );
    });
  }

  private enqueue(request: Request<I, O>, start: number): void {
    this.queue.push({ request, start, end: Math.min(start + this.maxItems, request.items.length) });
  }

  /** The client went away: its items no call has taken leave the queue (a call under way keeps its piece). */
  private cancel(request: Request<I, O>): void {
    if (request.cancelled) return;
    request.cancelled = true;
    this.queue = this.queue.filter((piece) => piece.request !== request);
    const unrun = request.size - request.taken;
    this.waiting -= unrun;
    this.counts.cancelled += unrun;
    request.reject(new ClientGone());
  }

  private start(): void {
    if (this.busy || this.queue.length === 0) return;
    const key = this.queue[0].request.key;
    const group: Piece<I, O>[] = [];
    let taken = 0;
    this.queue = this.queue.filter((piece) => {
      const size = piece.end - piece.start;
      if (piece.request.key !== key || taken + size > this.maxItems) return true;
      group.push(piece);
      piece.request.taken = piece.end;
      taken += size;
      return false;
    });
    this.busy = true;
    this.counts.calls++;
    this.counts.inputs += taken;
    this.counts.largestCall = Math.max(this.counts.largestCall, taken);
    const items = group.flatMap(({ request, start, end }) => request.items.slice(start, end));
    this.run(key, items)
      .then(
        (out) => {
          this.waiting -= taken;
          let offset = 0;
          for (const { request, start, end } of group) {
            // A request cancelled during the call: its outputs are dropped, its later pieces were never queued.
            if (!request.cancelled) {
              for (let i = start; i < end; i++) request.out[i] = out[offset + i - start];
              if (end < request.items.length) this.enqueue(request, end);
              else request.resolve(request.out);
            }
            offset += end - start;
          }
        },
        (error) => {
          this.waiting -= taken;
          for (const { request } of group) {
            if (request.cancelled) continue;
            this.waiting -= request.items.length - request.taken; // its later pieces never run
            request.reject(error);
          }
        },
      )
      .finally(() => {
        this.busy = false;
        this.start();
      });
  }
}

export type Body = Record<string, unknown>;

/** The header that makes a request body JSON, as the 415's message spells it. */
const JSON_HEADER = "-H 'Content-Type: application/json'";

/**
 * Refuses (415) a request body whose Content-Type does not say JSON: `application/json` or a `+json` type
 * (`application/vnd.api+json`), in any case, its charset, if any, UTF-8 (the only one the body is decoded as). A web
 * page on any origin can make its visitors' browsers POST to this server without a CORS preflight with Content-Type
 * text/plain, application/x-www-form-urlencoded or multipart/form-data, or with none at all (fetch() of a Blob or an
 * ArrayBuffer): the page cannot read the answer, but the request would still change a writable index or run the
 * model. A JSON type needs a preflight, which a server without cors refuses, so those four are refused here, as
 * text-embeddings-inference (axum's Json) and FastAPI (its strict_content_type default) refuse them.
 */
export function checkJsonContentType(header: string | undefined): void {
  const [essence, ...parameters] = (header ?? '').split(';').map((part) => part.trim());
  const type = essence.toLowerCase();
  const reason = 'so that a web page cannot make a browser post to this server without a CORS preflight';
  if (type === '') throw new HttpError(415, `the request has no Content-Type: send its JSON body with ${JSON_HEADER} (a body that says no type is refused, ${reason})`, { Connection: 'close' });
  if (type !== 'application/json' && !/^application\/[^/\s]+\+json$/.test(type)) {
    throw new HttpError(415, `Content-Type ${header!.trim()} is not JSON: send the JSON body with ${JSON_HEADER} (other types are refused, ${reason})`, { Connection: 'close' });
  }
  for (const parameter of parameters) {
    const [name, value = ''] = parameter.split('=').map((part) => part.trim());
    const charset = value.replace(/^"(.*)"$/, '$1').toLowerCase();
    if (name.toLowerCase() === 'charset' && charset !== 'utf-8' && charset !== 'utf8') {
      throw new HttpError(415, `Content-Type ${header!.trim()}: the server reads request bodies as UTF-8 only: send the body in UTF-8 with ${JSON_HEADER} (or charset=utf-8)`, { Connection: 'close' });
    }
  }
}

/** Refuses fields the route does not know, naming them and the known ones. */
export function fields(body: unknown, allowed: readonly string[]): Body {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'the request body must be a JSON object');
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) throw new HttpError(400, `unknown field "${key}" (this route takes: ${allowed.join(', ')})`);
  }
  return body as Body;
}

/** `body[key]`: one string or a non-empty array of strings, at most `max` of them; a missing field is named. */
export function requiredTexts(body: Body, key: string, max: number): string[] {
  if (body[key] === undefined) throw new HttpError(400, `missing field "${key}": a string or an array of strings`);
  return textList(key, body[key], max);
}

/** One string or a non-empty array of strings, at most `max` of them. */
export function textList(name: string, value: unknown, max: number): string[] {
  if (typeof value === 'string') return [value];
  if (!Array.isArray(value)) throw new HttpError(400, `"${name}" must be a string or an array of strings`);
  if (value.length === 0) throw new HttpError(400, `"${name}" is empty: send at least one text`);
  if (value.length > max) throw new HttpError(400, `"${name}" holds ${value.length} texts; this server takes at most ${max} per request (maxInputs)`);
  value.forEach((v, i) => {
    if (typeof v === 'number' || Array.isArray(v)) throw new HttpError(400, `"${name}[${i}]": token-id input is not supported; send text`);
    if (typeof v !== 'string') throw new HttpError(400, `"${name}[${i}]" must be a string`);
  });
  return value;
}

export function optional<T>(body: Body, key: string, check: (name: string, value: unknown) => T): T | undefined {
  return body[key] === undefined || body[key] === null ? undefined : check(`"${key}"`, body[key]);
}

/** A string (OpenAI's `model` and `user`: taken, not used, but of the right type). */
export function stringValue(name: string, value: unknown): string {
  if (typeof value !== 'string') throw new HttpError(400, `${name} must be a string`);
  return value;
}

/** The largest token id, u32 as text-embeddings-inference takes them. */
const MAX_TOKEN_ID = 2 ** 32 - 1;

/**
 * text-embeddings-inference's /decode `ids`: one list of token ids, or a non-empty array of at most `max` lists; each
 * list non-empty (TEI refuses an empty one), each id an integer from 0 to 2^32 - 1. `single`: one list was sent alone.
 */
export function tokenIdLists(name: string, value: unknown, max: number): { lists: number[][]; single: boolean } {
  const expected = `a list of token ids (integers from 0 to ${MAX_TOKEN_ID}) or an array of such lists`;
  if (value === undefined) throw new HttpError(400, `missing field "${name}": ${expected}`);
  if (!Array.isArray(value)) throw new HttpError(400, `"${name}" must be ${expected}`);
  if (value.length === 0) throw new HttpError(400, `"${name}" is empty: send at least one token id`);
  const single = !Array.isArray(value[0]);
  const lists: unknown[] = single ? [value] : value;
  if (lists.length > max) throw new HttpError(400, `"${name}" holds ${lists.length} lists; this server takes at most ${max} per request (maxInputs)`);
  lists.forEach((list, i) => {
    const at = single ? name : `${name}[${i}]`;
    if (!Array.isArray(list)) throw new HttpError(400, `"${at}" must be a list of token ids: "${name}" is one list or an array of lists, not both`);
    if (list.length === 0) throw new HttpError(400, `"${at}" is empty: send at least one token id`);
    list.forEach((id, j) => {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > MAX_TOKEN_ID) {
        throw new HttpError(400, `"${at}[${j}]" must be a token id, an integer from 0 to ${MAX_TOKEN_ID}; got ${JSON.stringify(id) ?? String(id)}`);
      }
    });
  });
  return { lists: lists as number[][], single };
}

/** Special tokens the model adds after a text's own (a multi-vector model's query expansion): ids, and each id's string. */
export interface AppendedTokens {
  ids: number[][];
  texts: ReadonlyMap<number, string>;
}

/**
 * text-embeddings-inference's /tokenize answer, as pieces of JSON text (an untruncated long text has millions of
 * tokens: reply writes them a chunk per turn of the event loop): per text, its tokens as {id, text, special, start,
 * stop}, then its `appended` ones; a special token's text is its string and its offsets null, another's text its bytes
 * start..stop of the text (UTF-8 offsets, Rust's).
 */
export function* tokenizeAnswer(texts: string[], tokens: TokenOffsets, appended?: AppendedTokens): Generator<string, void, undefined> {
  const { ids, special, starts, stops, ends, specialTexts } = tokens;
  const specialToken = (id: number, text: string) => `{"id":${id},"text":${JSON.stringify(text)},"special":true,"start":null,"stop":null}`;
  let named = 0;
  yield '[';
  for (let i = 0; i < texts.length; i++) {
    const bytes = Buffer.from(texts[i], 'utf8');
    const first = i === 0 ? 0 : ends[i - 1];
    yield i === 0 ? '[' : ',[';
    for (let k = first; k < ends[i]; k++) {
      const id = ids[k] >>> 0;
      yield (k === first ? '' : ',') +
        (special[k] === 1
          ? specialToken(id, specialTexts[named++])
          : `{"id":${id},"text":${JSON.stringify(bytes.toString('utf8', starts[k], stops[k]))},"special":false,"start":${starts[k]},"stop":${stops[k]}}`);
    }
    for (const [j, id] of (appended?.ids[i] ?? []).entries()) yield (j === 0 && first === ends[i] ? '' : ',') + specialToken(id, appended!.texts.get(id) ?? '');
    yield ']';
  }
  yield ']';
}

/**
 * An answer of up to this many characters is sent whole, with its Content-Length; a longer one in chunks of about
 * this size, one per turn of the event loop (reply in lib/serve.ts).
 */
export const ANSWER_CHUNK = 64 * 1024;

/** Items of a large array written per piece by jsonPieces when none of them is an object. */
const JSON_SLICE = 4096;

/** Neither an object nor an array: JSON.stringify writes it (or its null) on its own, with nothing inside to walk. */
function isLeaf(value: unknown): boolean {
  return value === null || (typeof value !== 'object' && typeof value !== 'function');
}

/** What JSON.stringify writes in place of `value` under `key`: its toJSON's answer, if it has one (a Date's string). */
function toJson(value: unknown, key: string): unknown {
  const toJSON = value !== null && typeof value === 'object' ? (value as { toJSON?: unknown }).toJSON : undefined;
  return typeof toJSON === 'function' ? toJSON.call(value, key) : value;
}

/** What JSON.stringify leaves out of an object (and writes as null in an array). */
function isOmitted(value: unknown): boolean {
  return value === undefined || typeof value === 'function' || typeof value === 'symbol';
}

/** Values a subtree may hold and still be written by JSON.stringify whole (one piece). */
const SMALL_NODES = 256;

/**
 * What is left of `budget` after the values `value` holds (itself included), or -1 past it or at a typed array or a
 * toJSON: a value with some left is written by JSON.stringify whole exactly as the walk would, and much faster (one
 * piece, not one per value: a /search answer of 2048 queries' hits took 5 to 7 times JSON.stringify's time walked to
 * its leaves).
 */
function smallBudget(value: unknown, budget: number): number {
  if (--budget < 0) return -1;
  if (value === null || typeof value !== 'object') return budget;
  if (ArrayBuffer.isView(value) || typeof (value as { toJSON?: unknown }).toJSON === 'function') return -1;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length && budget >= 0; i++) budget = smallBudget(value[i], budget);
    return budget;
  }
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) return -1;
  for (const key in value) {
    if (budget < 0) break;
    budget = smallBudget((value as Record<string, unknown>)[key], budget);
  }
  return budget;
}

const small = (value: unknown): boolean => smallBudget(value, SMALL_NODES) >= 0;

/**
 * The JSON text of `value`, exactly as JSON.stringify writes it, as a sequence of pieces: arrays and plain objects
 * are walked, so that the text of a large answer (an /embed of 2048 vectors of 1024 numbers is ~40 MB) is never one
 * string nor built in one turn of the event loop; toJSON is called as the walk reaches it, so a value can be made
 * only when it is written ({ toJSON: () => base64(v) }). A typed array is written as the array of its numbers
 * (JSON.stringify would write an object of indices), so routes need not copy their vectors into arrays. What has no
 * objects inside (a slice of numbers, an object of strings) goes to JSON.stringify whole. The value must not be cyclic.
 */
export function jsonPieces(value: unknown): Generator<string, void, undefined> {
  return pieces(toJson(value, ''));
}

/** jsonPieces of a value whose toJSON has been called already (JSON.stringify calls it once). */
function* pieces(value: unknown): Generator<string, void, undefined> {
  if (ArrayBuffer.isView(value) && !(value instanceof DataView) && !(value instanceof BigInt64Array) && !(value instanceof BigUint64Array)) {
    const numbers = value as unknown as Float32Array;
    if (numbers.length <= JSON_SLICE) {
      yield JSON.stringify(Array.from(numbers));
      return;
    }
    for (let i = 0; i < numbers.length; i += JSON_SLICE) {
      const text = JSON.stringify(Array.from(numbers.subarray(i, i + JSON_SLICE)));
      yield (i === 0 ? '[' : ',') + text.slice(1, -1);
    }
    yield ']';
    return;
  }
  if (Array.isArray(value)) {
    if (value.length <= JSON_SLICE && value.every(isLeaf)) {
      yield JSON.stringify(value);
      return;
    }
    yield '[';
    for (let i = 0; i < value.length; i += JSON_SLICE) {
      const slice = value.slice(i, i + JSON_SLICE);
      if (slice.every(isLeaf)) {
        yield (i === 0 ? '' : ',') + JSON.stringify(slice).slice(1, -1);
        continue;
      }
      for (let j = 0; j < slice.length; j++) {
        if (i + j > 0) yield ',';
        const item = toJson(slice[j], String(i + j));
        if (isOmitted(item)) yield 'null';
        else if (small(item)) yield JSON.stringify(item);
        else yield* pieces(item);
      }
    }
    yield ']';
    return;
  }
  const prototype = value !== null && typeof value === 'object' ? Object.getPrototypeOf(value) : undefined;
  if ((prototype !== Object.prototype && prototype !== null) || Object.values(value as object).every(isLeaf)) {
    // A leaf, an object of leaves, or an object of a class (its own enumerable fields, as JSON.stringify writes them).
    yield JSON.stringify(value) ?? 'null';
    return;
  }
  let first = true;
  yield '{';
  for (const [name, raw] of Object.entries(value as object)) {
    const item = toJson(raw, name);
    if (isOmitted(item)) continue;
    const head = `${first ? '' : ','}${JSON.stringify(name)}:`;
    first = false;
    if (small(item)) {
      yield head + JSON.stringify(item);
    } else {
      yield head;
      yield* pieces(item);
    }
  }
  yield '}';
}

/**
 * What a route answers: a value written as JSON (jsonPieces; a string is sent as it is, as text of `contentType`),
 * text given in pieces (written a chunk per turn of the event loop: the route builds them as they are written), or a
 * stream of server-sent events. Everything that can fail must have happened when the route resolves: a long answer's
 * status is sent before its body is written.
 */
export type RouteResult =
  | { json: unknown; inputs: number; contentType?: string }
  | { pieces: Iterable<string> | AsyncIterable<string>; inputs: number; contentType?: string }
  | {
      /** Writes the events with `send` (each `data: <JSON>`), then resolves with the inputs served; `[DONE]` follows. */
      events: (send: (data: unknown) => void) => Promise<number>;
    };

export interface Route {
  method: 'GET' | 'POST';
  /** 'openai' errors are { error: { message, type, code } }; 'tei' errors are { error, error_type }. */
  style: 'openai' | 'tei';
  /**
   * `signal` aborts when the client goes away before its answer is complete: queued work for it leaves the queue
   * (BatchQueue.submit's signal), and generation under way for it stops.
   */
  handle: (body: unknown, signal: AbortSignal) => Promise<RouteResult>;
}

/** What `serve({ cors })` takes: which web pages, on other origins than the server's, may call it from a browser. */
export interface CorsOptions {
  /**
   * The origins whose pages may read the answers, each as a browser sends it in its Origin header: scheme, host, and
   * the port unless it is the scheme's default (`https://app.example.com`, `http://localhost:5173`; no path, no
   * trailing slash), compared exactly; or '*' for every origin.
   */
  origins: readonly string[] | '*';
  /** Seconds a browser may keep a preflight's answer before it asks again (default 600; Chromium keeps 7200 at most). */
  maxAge?: number;
  /**
   * Let pages send what the browser holds for the server (cookies, HTTP authentication: fetch's `credentials:
   * 'include'`), e.g. to a proxy in front that authenticates by cookie (default false). The API key needs no
   * credentials: a page sends it as an Authorization header. Not with origins '*'.
   */
  credentials?: boolean;
}

/** The header names of a preflight's Access-Control-Request-Headers (tokens, RFC 9110); anything else is dropped. */
function headerNames(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((name) => name.trim())
    .filter((name) => /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name));
}

/** `value` when it is an origin exactly as browsers serialize one, else an error naming the exact form to give. */
function checkOrigin(value: unknown): string {
  const name = 'options.cors.origins';
  if (typeof value !== 'string') throw invalid(`${name}[]`, 'an origin such as "https://app.example.com"', value);
  const shown = JSON.stringify(value);
  if (value === '*') throw new ColtrastError('INVALID_ARGUMENT', `${name}: "*" allows every origin on its own (origins: '*'), not as one origin of a list`);
  // Sandboxed frames and file:// pages all send "null": allowing it would let any of them read the answers.
  if (value === 'null') throw new ColtrastError('INVALID_ARGUMENT', `${name}: "null" is the origin of every sandboxed frame and file:// page, so it cannot be allowed; serve the page from an http(s) origin and give that`);
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    // not a URL: said below
  }
  if (url === undefined || url.host === '' || url.username !== '' || url.password !== '') {
    throw new ColtrastError('INVALID_ARGUMENT', `${name}: ${shown} is not an origin: give the scheme, host and port that a browser sends in its Origin header, such as "https://app.example.com" or "http://localhost:5173"`);
  }
  // A browser's Origin is `scheme://host[:port]`: lower case, no default port, no path; anything else never matches.
  const exact = `${url.protocol}//${url.host}`;
  if (exact !== value) {
    throw new ColtrastError('INVALID_ARGUMENT', `${name}: ${shown} is not an origin as browsers send it (scheme://host, :port unless the scheme's default, in lower case, with no path or trailing slash), so no request would match it: give "${exact}"`);
  }
  return value;
}

/**
 * CORS (the Fetch standard's protocol), so that web pages on the allowed origins may call the server: answers to
 * preflights (OPTIONS with Access-Control-Request-Method), and Access-Control-Allow-Origin on every answer to an
 * allowed origin, errors included (a page cannot read a response without it). The server still answers requests from
 * other origins (it is the browser that keeps their answers from the page), without the headers.
 */
export class Cors {
  private constructor(
    private readonly origins: ReadonlySet<string> | '*',
    private readonly maxAge: number,
    private readonly credentials: boolean,
  ) {}

  /** The policy `serve({ cors })` asks for, checked; undefined (no CORS) when it is not given. */
  static from(value: unknown): Cors | undefined {
    if (value === undefined) return undefined;
    const o = checkOptions('options.cors', value as CorsOptions, ['origins', 'maxAge', 'credentials']);
    if (o.origins === undefined) throw new ColtrastError('INVALID_ARGUMENT', `options.cors needs origins: '*' or an array of origins such as ["https://app.example.com"]`);
    if (o.origins !== '*' && (!Array.isArray(o.origins) || o.origins.length === 0)) {
      throw invalid('options.cors.origins', `'*' or a non-empty array of origins such as ["https://app.example.com"]`, o.origins);
    }
    const origins = o.origins === '*' ? '*' : new Set(o.origins.map(checkOrigin));
    const maxAge = o.maxAge === undefined ? 600 : numberValue('options.cors.maxAge', o.maxAge, (x) => Number.isInteger(x) && x >= 0, 'a whole number of seconds >= 0');
    const credentials = booleanValue('options.cors.credentials', o.credentials ?? false);
    if (credentials && origins === '*') {
      throw new ColtrastError('INVALID_ARGUMENT', `options.cors.credentials cannot go with origins '*': browsers refuse credentials with "Access-Control-Allow-Origin: *" (any site could read what the user's cookies fetch); list the origins`);
    }
    return new Cors(origins, maxAge, credentials);
  }

  allows(origin: string | undefined): origin is string {
    return origin !== undefined && (this.origins === '*' || this.origins.has(origin));
  }

  /** The headers of every answer to a request from `origin` (none from an origin not allowed, but Vary). */
  headers(origin: string | undefined): Record<string, string> {
    // The answer depends on the Origin when the server echoes it: caches must keep one answer per origin.
    const vary: Record<string, string> = this.origins === '*' ? {} : { Vary: 'Origin' };
    if (!this.allows(origin)) return vary;
    return {
      ...vary,
      'Access-Control-Allow-Origin': this.origins === '*' ? '*' : origin,
      ...(this.credentials && { 'Access-Control-Allow-Credentials': 'true' }),
      // A page reads only a few response headers unless told; Retry-After says when a 503 may be tried again.
      'Access-Control-Expose-Headers': 'Retry-After',
    };
  }

  /**
   * A preflight's answer (its origin allowed): the route's `methods`, and the request headers it asks for. Those are
   * allowed whatever they are (the server reads none but Authorization, Content-Type and Content-Encoding, and
   * clients such as OpenAI's send their own x-stainless-* headers); Authorization is always named, as the Fetch
   * standard wants it: "*" does not cover it. `privateNetwork`: the preflight asked
   * (Access-Control-Request-Private-Network: true).
   */
  preflight(origin: string, methods: string, requestHeaders: string | undefined, privateNetwork: boolean): Record<string, string> {
    const asked = headerNames(requestHeaders);
    const named = new Map<string, string>();
    for (const h of ['Authorization', 'Content-Type', ...asked]) if (!named.has(h.toLowerCase())) named.set(h.toLowerCase(), h);
    return {
      ...this.headers(origin),
      Vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
      'Access-Control-Allow-Methods': methods,
      'Access-Control-Allow-Headers': [...named.values()].join(', '),
      'Access-Control-Max-Age': String(this.maxAge),
      // Chromium's Private Network Access: a public page calling a server on this machine or the LAN (the default
      // 127.0.0.1) asks first whether the server agrees.
      ...(privateNetwork && { 'Access-Control-Allow-Private-Network': 'true' }),
    };
  }
}
