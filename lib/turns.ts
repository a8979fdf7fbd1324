/**
 * Long synchronous loops in JavaScript (indexing a million documents for BM25, batching a million training pairs) done
 * in turns, so that the event loop runs between them: timers, progress, a server's requests.
 */
import { performance } from 'node:perf_hooks';
import { setImmediate } from 'node:timers/promises';

/** Lets the event loop run (timers, I/O) before going on: between the steps of long work that cannot be split. */
export const nextTurn = (): Promise<void> => setImmediate();

/** How long a turn may run, in milliseconds. */
const TURN_MS = 10;

/** A stretch of work done in turns: maybe() lets the event loop run when TURN_MS have passed since it last did. */
export class Turns {
  private since = performance.now();

  /** Whether TURN_MS have passed since the last turn (a cheap check for tight loops). */
  get due(): boolean {
    return performance.now() - this.since >= TURN_MS;
  }

  async maybe(): Promise<void> {
    if (!this.due) return;
    await nextTurn();
    this.since = performance.now();
  }
}

/** Calls `each` on every item of `items` in order, letting the event loop run every TURN_MS. */
export async function inTurns<T>(items: Iterable<T>, each: (item: T) => void): Promise<void> {
  const turns = new Turns();
  for (const item of items) {
    each(item);
    if (turns.due) await turns.maybe();
  }
}

/** The items of `items` in an array, made in turns (inTurns). */
export async function arrayInTurns<T>(items: Iterable<T>): Promise<T[]> {
  const out: T[] = [];
  await inTurns(items, (item) => out.push(item));
  return out;
}

/** `items.map(each)`, made in turns (inTurns); a hole of a sparse array is passed as undefined, not skipped. */
export async function mapInTurns<T, U>(items: readonly T[], each: (item: T, index: number) => U): Promise<U[]> {
  const out = new Array<U>(items.length);
  let i = 0;
  await inTurns(items, (item) => {
    out[i] = each(item, i);
    i++;
  });
  return out;
}

/**
 * @internal The longest stretch (ms) in which a 1 ms timer could not fire while `work` ran: how long the event loop was
 * held at most (a server's other clients, Ctrl-C), and `work`'s result. The measure of the tests and benchmarks of
 * the work done in turns (test/*, scripts/bench/ops-stall.js, serve-large.js).
 */
export async function longestStall<T>(work: () => Promise<T>): Promise<{ result: T; stallMs: number }> {
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 1);
  try {
    const result = await work();
    return { result, stallMs: Math.max(longest, performance.now() - last) };
  } finally {
    clearInterval(timer);
  }
}
