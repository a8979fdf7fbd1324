#!/usr/bin/env node
// How sparse a SparseEncoder's vectors are on a BEIR data set (read from ../shared/data, never copied into the
// repository): the mean count of non-zero entries of the first --docs documents and --queries queries, embedded as
// documents and as queries, and the heaviest terms of the first of each. Uses the built package.
//   node scripts/bench/sparse-activity.js --model <dir> [--data ../shared/data/scifact] [--docs 500] [--queries 300] [--threads 2]
'use strict';
const path = require('node:path');
const { parseArgs } = require('node:util');
const { SparseEncoder, loadBeir } = require('../../dist');

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    data: { type: 'string', default: path.resolve(__dirname, '..', '..', '..', 'shared', 'data', 'scifact') },
    docs: { type: 'string', default: '500' },
    queries: { type: 'string', default: '300' },
    threads: { type: 'string', default: '2' },
  },
});

async function main() {
  if (!values.model) throw new Error('--model <SparseEncoder folder> is required');
  const data = await loadBeir(values.data);
  const docs = data.corpus.slice(0, Number(values.docs)).map((d) => (d.title ? `${d.title} ${d.text}` : d.text));
  const queries = [...data.queries.values()].slice(0, Number(values.queries));
  const model = await SparseEncoder.load(values.model, { device: 'cpu', threads: Number(values.threads) });
  try {
    const d = await model.encode(docs, { task: 'document' });
    const q = await model.encode(queries, { task: 'query' });
    const mean = (vectors) => vectors.reduce((n, v) => n + v.indices.length, 0) / vectors.length;
    const heaviest = async (v) => (await model.decode(v, 8)).map(([token, weight]) => `${token} ${weight.toFixed(2)}`).join(', ');
    console.log(JSON.stringify({ model: values.model, data: values.data, dimension: model.dimension, documents: docs.length, meanDocumentEntries: mean(d), queries: queries.length, meanQueryEntries: mean(q) }));
    console.log(`query    ${JSON.stringify(queries[0].slice(0, 80))} -> ${await heaviest(q[0])}`);
    console.log(`document ${JSON.stringify(docs[0].slice(0, 80))} -> ${await heaviest(d[0])}`);
  } finally {
    model.dispose();
  }
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
