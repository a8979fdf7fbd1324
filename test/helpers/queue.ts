/** A BatchQueue for the queue's own tests: each call it makes waits until the test releases it. */
import { BatchQueue } from '../../lib/serve';

/**
 * A queue of numbers, `maxItems` a call and `maxWaiting` waiting, whose calls record their key and items, then wait
 * for `release()` before answering `answer(items)` (ten times each item unless given; a throw fails the call).
 */
export function heldQueue(maxItems: number, maxWaiting: number, answer: (items: number[]) => number[] = (items) => items.map((x) => x * 10)) {
  const calls: number[][] = [];
  const keys: string[] = [];
  let releaseCall: () => void = () => {};
  const queue = new BatchQueue<number, number>(
    async (key, items) => {
      calls.push(items);
      keys.push(key);
      await new Promise<void>((resolve) => (releaseCall = resolve));
      return answer(items);
    },
    maxItems,
    maxWaiting,
  );
  return { queue, calls, keys, release: () => releaseCall() };
}

/** One turn of the event loop: what a released call does next has happened. */
export const tick = () => new Promise((resolve) => setImmediate(resolve));
