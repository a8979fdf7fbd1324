/**
 * What the server's routes share (lib/serve.ts, lib/serve-generation.ts): errors that carry their HTTP status, the
 * checks of request bodies, and the queue that batches requests across clients.
 */

/** What one queue has done: model calls, the inputs they took, the largest call, and the inputs dropped unrun. */
export interface QueueStats {
  calls: number;
  inputs: number;
  largestCall: number;
  /** Inputs waiting or in a model call now. */
  waiting: number;
  /** Inputs dropped from the queue before any model call took them: their client went away. */
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
  items: I[];
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
 */
export class BatchQueue<I, O> {
  private queue: Piece<I, O>[] = [];
  private waiting = 0;
  private busy = false;
  private readonly counts = { calls: 0, inputs: 0, largestCall: 0, cancelled: 0 };

  constructor(
    private readonly run: (key: string, items: I[]) => Promise<O[]>,
    private readonly maxItems: number,
    private readonly maxWaiting: number,
  ) {}

  stats(): QueueStats {
    return { calls: this.counts.calls, inputs: this.counts.inputs, largestCall: this.counts.largestCall, waiting: this.waiting, cancelled: this.counts.cancelled };
  }

  /** `items`' outputs, in order; `signal` aborting (the client went away) takes the request out of the queue. */
  submit(key: string, items: I[], signal?: AbortSignal): Promise<O[]> {
    if (signal?.aborted) return Promise.reject(new ClientGone());
    if (this.waiting + items.length > this.maxWaiting) {
      return Promise.reject(
        new HttpError(503, `the server is busy: ${this.waiting} inputs are waiting (maxQueue ${this.maxWaiting}); retry shortly`, { 'Retry-After': '1' }),
      );
    }
    if (items.length === 0) return Promise.resolve([]);
    this.waiting += items.length;
    return new Promise<O[]>((resolve, reject) => {
      const onAbort = () => this.cancel(request);
      const done = () => signal?.removeEventListener('abort', onAbort);
      const request: Request<I, O> = {
        key,
        items,
        out: new Array<O>(items.length),
        taken: 0,
        cancelled: false,
        resolve: (out) => (done(), resolve(out)),
        reject: (error) => (done(), reject(error)),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.enqueue(request, 0);
      this.start();
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
    const unrun = request.items.length - request.taken;
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

/** What a route answers: a JSON body (or text, with its content type), or a stream of server-sent events. */
export type RouteResult =
  | { json: unknown; inputs: number; contentType?: string }
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
