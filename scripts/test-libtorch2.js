#!/usr/bin/env node
// The test suite a second time, on PyTorch 2.x's libtorch: the CPU prebuild made against build/pyenv's
// torch (scripts/setup.sh), loaded as an npm user with a pip torch gets it (COLTRAST_BINARY=cpu, the
// Python torch found first). `npm test` runs on Debian 12's libtorch 1.13; the GPU machine builds against
// PyTorch 2.x, so this is where a 2.x difference in behaviour shows before a GPU is lent.
//   node scripts/test-libtorch2.js (npm run test:libtorch2) [ava arguments, e.g. test/ops.test.ts]
// Left out: the tests whose subject is which libtorch and addon get picked on this machine (binary, pack), the
// compile-only checks (cuda-compile, torch2-compile) and the CUDA emulator, which do not load the addon, and the
// tests of what does not depend on the libtorch (the comparisons with sentence-transformers in Python, whose
// coltrast side the recorded-reference tests check here too; the hub client, BM25, IR metrics, files, progress,
// the benchmark plumbing and the HTTP server, whose model calls are embed's, rank's and search's; reading data files,
// and the command line's errors, flag names and docs, whose model calls the library's own tests make), so that CI
// stays well under its time. Of the files added since on those grounds: CSV/TSV and other data-file reading and its
// probes (csv-data, data-probe: no model, no native op; csv-inputs: the CLI's embed and index and trainRag() on CSV
// inputs, whose model calls encoder's, index's and rag's tests make), embed's .npy and .safetensors output files
// (embed-files: its vectors are embed()'s), the server's /tokenize and /decode (serve-tokenize: the tokenizers
// package, no libtorch), /similarity (serve-similarity: Encoder.similarity()'s products, which similarity and
// similarity-blocks check against float64 here), large answers written in turns (serve-large-answers), CORS
// (serve-cors) and hostile clients and shutdowns (cli-serve-probe), all of whose model calls are embed's; an
// adapter's record of its base (lora-base: SHA-256 of the base's file bytes in JavaScript; the LoRA training and
// adapted embedding it starts from are lora's); chunk bounds and generateQueries' count checks (chunking-bounds:
// tokenizer counts; its embedding is rag's); the command line's start (cli-startup: which modules a run requires),
// the server's Content-Type rule (serve-content-type), its tokenizing before the queues and the tokenizer's long lane
// (serve-long-texts, serve-long-queries, serve-long-questions, serve-long-prompts, tokenizer-lanes: their vectors, hits and answers are
// embed()'s, predict()'s, search()'s and Rag.answer()'s, compared within the run) and the config schema's lazy compile (config-schema: no model). Kept:
// similarity, similarity-blocks (native products), the index probes (torch's topk ties, the native loader's conversions), model-files-probe (the native loader's refusals),
// eval-mining-probe (dense scores cut inside a tie) and abort-long-work (native calls stopped midway).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const python = process.env.COLTRAST_ST_PYTHON || path.join(root, 'build', 'pyenv', 'bin', 'python');
const LEFT_OUT = [
  'binary', 'pack', 'cuda-compile', 'torch2-compile', 'cuda-emulator',
  'python-interop', 'hub', 'bm25-check', 'ir-metrics-check', 'files', 'progress', 'bench', 'compare-gpu', 'serve', 'serve-generation',
  'data-files', 'cli-errors', 'cli-flag-errors', 'cli-docs',
  'csv-data', 'data-probe', 'csv-inputs', 'embed-files', 'serve-tokenize', 'serve-similarity', 'serve-large-answers',
  'serve-cors', 'cli-serve-probe', 'lora-base', 'chunking-bounds', 'cli-startup', 'serve-content-type', 'serve-long-texts',
  'serve-long-queries', 'serve-long-questions', 'serve-long-prompts', 'tokenizer-lanes', 'config-schema',
];

function fail(message) {
  console.error(`test-libtorch2: ${message}`);
  process.exit(1);
}

if (!fs.existsSync(python)) fail(`no ${python}: run scripts/setup.sh (it makes build/pyenv with a PyTorch 2.x)`);
const env = { ...process.env, COLTRAST_BINARY: 'cpu', COLTRAST_PYTHON: python };
// What gets loaded must be a prebuild for libtorch 2.x running on the Python torch, or this pass tests nothing new.
const probe = spawnSync(process.execPath, [path.join(root, 'dist', 'cli.js'), 'info', '--json'], { encoding: 'utf8', env, cwd: root });
if (probe.status !== 0) fail(`coltrast info failed: ${probe.stderr.trim()}\nMake the prebuild: node scripts/prebuild.js -- --CDTorch_DIR=<build/pyenv's torch>/share/cmake/Torch`);
const info = JSON.parse(probe.stdout);
const binary = info.binary ?? {};
if (!/^cpu-torch2\./.test(binary.variant ?? '') || binary.libtorch?.source !== 'python') {
  fail(`expected a cpu-torch2.x prebuild on the Python torch, got ${JSON.stringify({ variant: binary.variant, libtorch: binary.libtorch })}`);
}
console.log(`test-libtorch2: ${binary.variant} on libtorch ${binary.libtorch?.version} (${binary.libtorch?.libDir ?? python})`);

const args = process.argv.slice(2);
const files = args.length
  ? args
  : fs
      .readdirSync(path.join(root, 'test'))
      .filter((f) => f.endsWith('.test.ts') && !LEFT_OUT.includes(f.replace(/\.test\.ts$/, '')))
      .map((f) => path.join('test', f));
const ava = path.join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs');
const run = spawnSync(process.execPath, [ava, ...files], { stdio: 'inherit', env, cwd: root });
process.exit(run.status ?? 1);
