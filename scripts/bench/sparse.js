#!/usr/bin/env node
// Sparse (SPLADE) encoding throughput: coltrast's SparseEncoder.encode() against sentence-transformers'
// SparseEncoder.encode() on the same random-weight SPLADE model (a BERT of a real shape, 30,522-entry vocabulary, with a
// masked-LM head whose output bias makes its vectors about as sparse as a trained model's; written by
// scripts/bench/python/sparse.py), the same texts, batch size and thread count. Both timings are whole encode() calls:
// tokenizing, sorting by length, the forward passes, the head's vocabulary logits, SPLADE pooling and the sparse
// vectors handed back. Each side runs --rounds times, alternating, after one warm-up batch; each side's fastest round
// is reported. The vectors of the two sides are compared (the largest difference over every entry either side has).
// Then (--index) the vectors are searched: SparseIndex's build and exact search of --queries query vectors.
//
//   node scripts/bench/sparse.js [--shape base] [--texts 1000] [--batch-size 32] [--threads 2] [--rounds 2]
//       [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--json out.json]
//
// Python: $COLTRAST_ST_PYTHON, else build/pyenv/bin/python. coltrast runs on whichever addon loads (Debian's libtorch
// 1.13 by default; COLTRAST_BINARY=cpu COLTRAST_PYTHON=build/pyenv/bin/python for the prebuild on the same PyTorch 2.x).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { ROOT, stPython, runPython, wordSampler, alternate, report } = require('./st-compare');

const { SparseEncoder, SparseIndex, runtimeInfo } = require(path.join(ROOT, 'dist'));
const { makeRandomBert } = require(path.join(ROOT, 'scripts', 'fixtures', 'random-bert'));

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'base' },
    device: { type: 'string', default: 'cpu' },
    dtype: { type: 'string', default: 'float32' },
    texts: { type: 'string', default: '1000' },
    'batch-size': { type: 'string', default: '32' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    rounds: { type: 'string', default: '2' },
    json: { type: 'string' },
  },
});
const SCRIPT = path.join(__dirname, 'python', 'sparse.py');

/** Every entry of the vectors, dense by text, for comparing two sides' sparse vectors. */
function flatten(vectors, width) {
  const out = new Float32Array(vectors.length * width);
  vectors.forEach((v, i) => v.indices.forEach((index, k) => (out[i * width + index] = v.values[k])));
  return out;
}

async function main() {
  const PYTHON = stPython();
  const python = (args) => runPython(PYTHON, args);
  const threads = Number(values.threads);
  const batchSize = Number(values['batch-size']);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-sparse-'));
  const model = path.join(work, 'sparse');
  // Documents of 30-120 words, from the example sentences, seeded.
  const text = wordSampler();
  const texts = Array.from({ length: Number(values.texts) }, () => text(30, 120));
  const textsFile = path.join(work, 'texts.json');
  fs.writeFileSync(textsFile, JSON.stringify(texts));
  python([SCRIPT, 'make', makeRandomBert(path.join(work, 'bert'), { shape: values.shape, seed: 1 }), model, '--texts', textsFile]);

  const encoder = await SparseEncoder.load(model, { device: values.device, dtype: values.dtype, threads });
  await encoder.encode(texts.slice(0, batchSize), { batchSize });
  const vectorsFile = path.join(work, 'vectors.json');
  let ours;
  const compared = await alternate(
    Number(values.rounds),
    async () => flatten((ours = await encoder.encode(texts, { batchSize })), encoder.dimension),
    () => ({
      result: python([SCRIPT, 'bench', model, textsFile, '--threads', String(threads), '--batch-size', String(batchSize), '--vectors', vectorsFile, '--device', values.device, '--dtype', values.dtype]),
      outputs: flatten(JSON.parse(fs.readFileSync(vectorsFile, 'utf8')), encoder.dimension),
    }),
  );
  const nonZeros = ours.reduce((n, v) => n + v.indices.length, 0) / ours.length;
  // The index: every vector added, then each of the first 100 texts' vectors searched as a query.
  const built = process.hrtime.bigint();
  const index = new SparseIndex(encoder.dimension);
  await index.addAll(texts.map((_, i) => `t${i}`), ours);
  const buildSeconds = Number(process.hrtime.bigint() - built) / 1e9;
  const queries = ours.slice(0, 100);
  const searched = process.hrtime.bigint();
  const hits = await index.searchAll(queries, 10);
  const searchSeconds = Number(process.hrtime.bigint() - searched) / 1e9;
  const selfFound = hits.filter((h, i) => h[0]?.id === `t${i}`).length;
  encoder.dispose();
  fs.rmSync(work, { recursive: true, force: true });
  report({
    unit: 'texts', count: texts.length, compared, info: runtimeInfo(), threads, json: values.json,
    extra: {
      shape: values.shape, texts: texts.length, batchSize, device: values.device, dtype: values.dtype, nonZeros,
      index: { documents: texts.length, postings: index.postings, buildSeconds, queries: queries.length, searchMsPerQuery: (1000 * searchSeconds) / queries.length, selfFound },
    },
    summary: `${values.shape} SPLADE, ${texts.length} texts (${nonZeros.toFixed(0)} non-zeros a text), batch ${batchSize}, ${values.device} ${values.dtype}`,
  });
  console.log(`SparseIndex: ${texts.length} documents (${index.postings} postings) built in ${buildSeconds.toFixed(3)} s; ${queries.length} queries at ${((1000 * searchSeconds) / queries.length).toFixed(2)} ms each; ${selfFound} found themselves first`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
