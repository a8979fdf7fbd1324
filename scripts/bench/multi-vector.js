#!/usr/bin/env node
// A multi-vector (ColBERT-style) model end to end: a random BERT of a real shape gets a token Dense of 128 (as
// ColBERT and PyLate models have) and is saved as a sentence-transformers MultiVectorEncoder folder; documents
// of about --doc-tokens tokens are embedded into an Index (token vectors only, float16) and queries (expanded
// to 32 tokens) are searched by exact MaxSim over every document. Measures the index build (documents/s,
// token vectors stored) and the search (queries/s). Uses the built package (npm run build).
//   node scripts/bench/multi-vector.js [--docs 2000] [--queries 64] [--shape minilm|base|small] [--doc-tokens 180]
//     [--device cpu|cuda] [--json out.json]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { Encoder, Index, runtimeInfo } = require('../../dist');
const { seededRandom } = require('../../dist/random');
const { PUNCTUATION } = require('../../dist/model-dir');
const { makeRandomBert } = require('../fixtures/random-bert');

const { values } = parseArgs({
  options: {
    docs: { type: 'string', default: '2000' },
    queries: { type: 'string', default: '64' },
    shape: { type: 'string', default: 'minilm' },
    'doc-tokens': { type: 'string', default: '180' },
    device: { type: 'string', default: 'cpu' },
    json: { type: 'string' },
  },
});
const docs = Number(values.docs);
const queries = Number(values.queries);
const docTokens = Number(values['doc-tokens']);
const WIDTH = 128;
const QUERY_LENGTH = 32;

/** A random BERT of the chosen shape made multi-vector by coltrast itself (what train({ multiVector }) does), saved. */
async function multiVectorModel(dir) {
  const bert = `${dir}-bert`;
  makeRandomBert(bert, { shape: values.shape, seed: 3 });
  const encoder = await Encoder.load(bert, { device: 'cpu' });
  await encoder.makeMultiVector(
    { dimension: WIDTH, queryLength: QUERY_LENGTH, documentLength: docTokens, queryExpansion: 'fixed', attendExpansion: false, skiplist: [...PUNCTUATION] },
    5,
  );
  await encoder.save(dir);
  encoder.dispose();
}

/** Texts of random lowercase words, long enough for `tokens` tokens of the fixture's character-level vocabulary. */
function texts(n, tokens, seed) {
  const next = seededRandom(seed).next;
  const word = () => Array.from({ length: 3 + Math.floor(next() * 6) }, () => String.fromCharCode(97 + Math.floor(next() * 26))).join('');
  return Array.from({ length: n }, () => {
    const words = [];
    for (let chars = 0; chars < tokens * 1.2; chars += 7) words.push(word());
    return words.join(' ');
  });
}

async function main() {
  const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'coltrast-mv-bench-')), 'model');
  await multiVectorModel(dir);
  const encoder = await Encoder.load(dir, { device: values.device });
  const corpus = texts(docs, docTokens, 1).map((text, i) => ({ id: `d${i}`, text }));
  const asked = texts(queries, 12, 2);
  let started = process.hrtime.bigint();
  const index = await Index.build(encoder, corpus, { batchSize: 32 });
  const buildSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  const stored = (await encoder.embed(corpus.slice(0, 50).map((d) => d.text), { output: 'tokens', task: 'document' })).reduce((s, m) => s + m.dims[0], 0) / 50;
  await index.search(asked.slice(0, 2), { k: 10 }); // warm
  started = process.hrtime.bigint();
  const hits = await index.search(asked, { k: 10 });
  const searchSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  const queryEmbed = process.hrtime.bigint();
  await encoder.embed(asked, { output: 'tokens', task: 'query' });
  const queryEmbedSeconds = Number(process.hrtime.bigint() - queryEmbed) / 1e9;
  encoder.dispose();
  const info = runtimeInfo();
  const result = {
    date: new Date().toISOString(),
    cpu: os.cpus()[0].model,
    threads: os.availableParallelism(),
    torch: info.torchVersion,
    blas: info.blas.kind,
    device: values.device,
    model: `${values.shape}, token Dense ${WIDTH}, queries expanded to ${QUERY_LENGTH}, documents cut at ${docTokens}`,
    rows: [
      { measure: 'Index.build', unit: 'documents/s', documents: docs, tokenVectorsPerDocument: +stored.toFixed(1), seconds: +buildSeconds.toFixed(2), rate: +(docs / buildSeconds).toFixed(1) },
      { measure: 'index.search (exact MaxSim, top 10)', unit: 'queries/s', queries, documents: docs, seconds: +searchSeconds.toFixed(3), queryEmbedSeconds: +queryEmbedSeconds.toFixed(3), rate: +(queries / searchSeconds).toFixed(1) },
    ],
    hitsPerQuery: hits[0].length,
  };
  console.log(JSON.stringify(result, null, 2));
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(result, null, 2));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
