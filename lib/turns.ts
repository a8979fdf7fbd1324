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

/** Calls `each` on every item of `items` in order, letting the event loop run every TURN_MS. */
export async function inTurns<T>(items: Iterable<T>, each: (item: T) => void): Promise<void> {
  let since = performance.now();
  for (const item of items) {
    each(item);
    if (performance.now() - since >= TURN_MS) {
      await nextTurn();
      since = performance.now();
    }
  }
}

/** The items of `items` in an array, made in turns (inTurns). */
export async function arrayInTurns<T>(items: Iterable<T>): Promise<T[]> {
  const out: T[] = [];
  await inTurns(items, (item) => out.push(item));
  return out;
}
