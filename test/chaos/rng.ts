// A seeded pseudo-random generator (mulberry32): the same seed gives the same
// schedule of faults and the same choices of names and modes.
export interface Rng {
  next(): number; // [0, 1)
  int(lo: number, hi: number): number; // lo..hi inclusive
  pick<T>(items: readonly T[]): T;
  fork(salt: number): Rng;
}

export function rng(seed: number): Rng {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const self: Rng = {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (items) => items[Math.floor(next() * items.length)]!,
    fork: (salt) => rng((seed * 31 + salt * 7919) >>> 0),
  };
  return self;
}
