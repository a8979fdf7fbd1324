/**
 * What the server's routes share (lib/serve.ts, lib/serve-generation.ts): errors that carry their HTTP status, the
 * checks of request bodies, and the queue that batches requests across clients.
 */

/** What one queue has done: model calls, the inputs they took, and the largest call. */
export interface QueueStats {
  calls: number;
  inputs: number;
  largestCall: number;
  waiting: number;
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

/** One request in a queue: its items, the outputs so far, and where its next piece starts. */
interface Request<I, O> {
  key: string;
  items: I[];
  out: O[];
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
 * without end.
 */
export class BatchQueue<I, O> {
  private queue: Piece<I, O>[] = [];
  private waiting = 0;
  private busy = false;
  private readonly counts = { calls: 0, inputs: 0, largestCall: 0 };

  constructor(
    private readonly run: (key: string, items: I[]) => Promise<O[]>,
    private readonly maxItems: number,
    private readonly maxWaiting: number,
  ) {}

  stats(): QueueStats {
    return { ...this.counts, waiting: this.waiting };
  }

  submit(key: string, items: I[]): Promise<O[]> {
    if (this.waiting + items.length > this.maxWaiting) {
      return Promise.reject(
        new HttpError(503, `the server is busy: ${this.waiting} inputs are waiting (maxQueue ${this.maxWaiting}); retry shortly`, { 'Retry-After': '1' }),
      );
    }
    if (items.length === 0) return Promise.resolve([]);
    this.waiting += items.length;
    return new Promise<O[]>((resolve, reject) => {
      this.enqueue({ key, items, out: new Array<O>(items.length), resolve, reject }, 0);
      this.start();
    });
  }

  private enqueue(request: Request<I, O>, start: number): void {
    this.queue.push({ request, start, end: Math.min(start + this.maxItems, request.items.length) });
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
            for (let i = start; i < end; i++) request.out[i] = out[offset++];
            if (end < request.items.length) this.enqueue(request, end);
            else request.resolve(request.out);
          }
        },
        (error) => {
          this.waiting -= taken;
          for (const { request, end } of group) {
            this.waiting -= request.items.length - end; // its later pieces never run
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
  /** `signal` aborts when the client goes away before its answer is complete. */
  handle: (body: unknown, signal: AbortSignal) => Promise<RouteResult>;
}
