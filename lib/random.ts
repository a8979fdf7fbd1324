/**
 * mulberry32: a small seeded generator with the same sequence on every platform, for data order, splits
 * and synthetic test and benchmark data. `state()` is where it has got to, so a resumed run continues
 * the sequence with seededRandom(0, state).
 */
export function seededRandom(seed: number, state = seed >>> 0): { next: () => number; state: () => number } {
  let a = state >>> 0;
  return {
    next: () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    },
    state: () => a,
  };
}
