// AVA's configuration (a file rather than package.json's "ava" key: sortTestFiles is a function).
// Test files run two at a time on a 2-core machine (AVA's default: one per core). The longest ones start
// first, so that none of them is left running alone at the end (longest-first scheduling; their times in a
// CI run: python-interop ~330 s, cuda-compile ~140 s, pack ~130 s, cuda-emulator ~100 s, torch2-compile
// ~70 s, compare-gpu ~60 s, parity ~40 s); the rest follow in name order.
const SLOW_FIRST = ['python-interop', 'cuda-compile', 'pack', 'cuda-emulator', 'torch2-compile', 'compare-gpu', 'parity'];
const rank = (file) => {
  const i = SLOW_FIRST.findIndex((name) => file.endsWith(`/${name}.test.ts`));
  return i < 0 ? SLOW_FIRST.length : i;
};

export default {
  workerThreads: false,
  extensions: { ts: 'commonjs' },
  nodeArguments: ['--import=tsx'],
  files: ['test/**/*.test.ts'],
  timeout: '5m',
  sortTestFiles: (a, b) => rank(a) - rank(b) || a.localeCompare(b),
};
