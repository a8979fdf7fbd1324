// AVA's configuration (a file rather than package.json's "ava" key: sortTestFiles is a function).
// Test files run two at a time on a 2-core machine (AVA's default: one per core). The longest ones start
// first, so that none of them is left running alone at the end (longest-first scheduling; their times in a
// CI run: pack ~125 s, whose install builds the addon from source; cuda-emulator ~95 s before its kernel checks ran
// in three thread orders (2026-12-04), 149 s since (alone, this VM); cuda-compile ~30 s
// after scripts/check-cuda-build.sh, ~90 s without; python-interop ~35 s; cli-docs ~30 s (the README's commands); compare-gpu ~25 s; parity ~20 s;
// torch2-compile, ~300 s where no fresh libtorch 2.x build stands for its checks); then the longest of the rest, measured
// one file at a time on this VM (2026-12-07, seconds alone on a mostly idle machine: wall, or CPU where other work shared
// it): data-files ~55, cli-errors ~51 (its 31 CLI runs), train ~50, csv-inputs ~45, index ~40, rag ~37 (ops, ~50 then, is ~15
// since its float64 references are made once); the rest follow in name order.
const SLOW_FIRST = [
  'cuda-emulator', 'pack', 'torch2-compile', 'data-files', 'cli-errors', 'train', 'csv-inputs', 'index', 'rag',
  'python-interop', 'cuda-compile', 'cli-docs', 'compare-gpu', 'parity',
];
const rank = (file) => {
  const i = SLOW_FIRST.findIndex((name) => file.endsWith(`/${name}.test.ts`));
  return i < 0 ? SLOW_FIRST.length : i;
};

export default {
  // AVA runs one test file per core, each in a process of its own. Without a thread count, each of those
  // would compute on every core (coltrast's default, and PyTorch's in the Python references), so two files at
  // once on 2 cores are four OpenMP threads, whose idle spinning stalls the others: measured on this suite's
  // busiest files, 35 s on Debian's libtorch 1.13 and 183 s on PyTorch 2.13's, against 24 s and 22 s with one
  // thread per process. OMP_NUM_THREADS sets both; one set by the caller is kept. Tests that compare thread
  // counts, and the benchmarks, pass theirs explicitly.
  environmentVariables: {
    OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? '1',
    OPENBLAS_NUM_THREADS: process.env.OPENBLAS_NUM_THREADS ?? '1',
  },
  workerThreads: false,
  extensions: { ts: 'commonjs' },
  nodeArguments: ['--import=tsx'],
  files: ['test/**/*.test.ts'],
  timeout: '5m',
  sortTestFiles: (a, b) => rank(a) - rank(b) || a.localeCompare(b),
};
