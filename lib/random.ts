/**
 * mulberry32: a small seeded generator with the same sequence on every platform, for data order, splits
 * and synthetic test and benchmark data. `state()` is where it has got to, so a resumed run continues
 * the sequence with seededRandom(0, state).
 */
export function seededRandom(seed: number, state = seedState(seed)): { next: () => number; state: () => number } {
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

/**
 * A seed's 32-bit starting state: its low 32 bits, mixed with the bits above them (a seed below 2^32 is itself, so
 * data orders stay as they were; 2^32 no longer starts where 0 does, as `seed >>> 0` alone made it).
 */
export function seedState(seed: number): number {
  const high = Math.floor(seed / 4294967296);
  return ((seed >>> 0) ^ Math.imul(high >>> 0, 0x9e3779b1) ^ Math.imul(Math.floor(high / 4294967296) >>> 0, 0x85ebca6b)) >>> 0;
}
