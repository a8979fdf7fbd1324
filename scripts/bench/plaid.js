#!/usr/bin/env node
// A multi-vector index's token storage and first stage on a BEIR set (default SciFact, read from
// ../shared/data, never copied into the repository): exact MaxSim over float16 token vectors against residual
// storage (ColBERTv2's centroid + quantized residual) searched exhaustively (every centroid probed, every document
// scored: what the compression alone costs) and PLAID-style (nprobe centroids per query token, fullScores
// candidates scored exactly). Reports nDCG@10 and Recall@100 (trec_eval's, as evaluate() computes them), the
// overlap of each top 10 with the exact one, search time per query (query embedding included, all queries in
// one call) and the token storage's size on disk. --distractors adds documents that no query is judged against
// (JSONL with "positive" or "text", e.g. Debian package descriptions), to see how each search scales.
// --pool-factor 2,3 repeats the float16 and residual indexes with the documents' token vectors pooled (hierarchical
// token pooling, BuildOptions.poolFactor); the overlap is still with the unpooled exact search.
// Uses the built package (npm run build).
//   node scripts/bench/plaid.js --model <multi-vector model> [--data ../shared/data/scifact] [--bits 2,4]
//     [--nprobe 1,2,4,8] [--full-scores 256,1024] [--pool-factor 2,3] [--distractors file.jsonl] [--no-exhaustive]
//     [--threads N] [--json out.json]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { Encoder, Index, runtimeInfo } = require('../../dist');
const { loadBeir, docText } = require('../../dist/beir');
const { evaluateRun } = require('../../dist/ir-metrics');

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    data: { type: 'string', default: path.resolve(__dirname, '..', '..', '..', 'shared', 'data', 'scifact') },
    bits: { type: 'string', default: '2,4' },
    nprobe: { type: 'string', default: '1,2,4,8' },
    'full-scores': { type: 'string', default: '256,1024' },
    'pool-factor': { type: 'string', default: '' },
    threads: { type: 'string' },
    distractors: { type: 'string' },
    'no-exhaustive': { type: 'boolean' },
    json: { type: 'string' },
  },
});
if (!values.model) {
  console.error('plaid.js needs --model <a multi-vector model folder> (e.g. coltrast train --model default --multi-vector 128 ...)');
  process.exit(2);
}
const list = (s) => s.split(',').map(Number);
const K = 100;

async function main() {
  const encoder = await Encoder.load(values.model, { device: 'cpu', ...(values.threads ? { threads: Number(values.threads) } : {}) });
  if (!encoder.multiVector) throw new Error(`${values.model} is not a multi-vector model`);
  const data = await loadBeir(values.data, 'test');
  const docs = data.corpus.map((d) => ({ id: d.id, text: docText(d) }));
  if (values.distractors) {
    const lines = fs.readFileSync(values.distractors, 'utf8').split('\n').filter((l) => l.trim());
    lines.forEach((l, i) => {
      const row = JSON.parse(l);
      docs.push({ id: `distractor-${i}`, text: row.text ?? row.positive });
    });
  }
  const ids = [...data.qrels.keys()].filter((q) => data.queries.has(q));
  const queries = ids.map((q) => data.queries.get(q));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'coltrast-plaid-'));
  const rows = [];
  let truth;

  const measure = async (name, index, options, extra) => {
    await index.search(queries.slice(0, 2), { k: K, ...options }); // warm-up
    const started = process.hrtime.bigint();
    const hits = await index.search(queries, { k: K, ...options });
    const ms = Number(process.hrtime.bigint() - started) / 1e6 / queries.length;
    const run = new Map(ids.map((q, i) => [q, hits[i].map((h) => ({ id: h.id, score: h.score }))]));
    const { metrics } = evaluateRun(run, data.qrels, [10, 100]);
    truth ??= hits;
    const overlap = hits.reduce((s, h, i) => s + h.slice(0, 10).filter((x) => truth[i].slice(0, 10).some((y) => y.id === x.id)).length / 10, 0) / hits.length;
    const row = { name, ndcg10: metrics.ndcg[10], recall100: metrics.recall[100], overlap10: overlap, msPerQuery: ms, ...extra };
    rows.push(row);
    console.error(JSON.stringify(row));
  };
  const tokenBytes = async (index, name) => {
    const dir = path.join(work, name);
    await index.save(dir);
    return fs.statSync(path.join(dir, 'tokens.safetensors')).size;
  };

  let started = Date.now();
  await encoder.embed(queries, { output: 'tokens', task: 'query' });
  const embedMs = (Date.now() - started) / queries.length;
  for (const poolFactor of [1, ...(values['pool-factor'] ? list(values['pool-factor']) : [])]) {
    const pooled = poolFactor > 1 ? { poolFactor } : {};
    const suffix = poolFactor > 1 ? `, pool factor ${poolFactor}` : '';
    started = Date.now();
    const exact = await Index.build(encoder, docs, { batchSize: 32, ...pooled });
    const buildExact = (Date.now() - started) / 1000;
    await measure(`float16${suffix}, exact MaxSim over every document`, exact, {}, { poolFactor, buildSeconds: buildExact, tokenBytes: await tokenBytes(exact, `float16-${poolFactor}`) });
    for (const bits of list(values.bits)) {
      started = Date.now();
      const index = await Index.build(encoder, docs, { batchSize: 32, tokenStorage: 'residual', residualBits: bits, ...pooled });
      const build = (Date.now() - started) / 1000;
      const bytes = await tokenBytes(index, `residual${bits}-${poolFactor}`);
      const common = { poolFactor, bits, centroids: index.centroids };
      const built = { ...common, buildSeconds: build, tokenBytes: bytes };
      let first = true;
      const extra = () => (first ? ((first = false), built) : common);
      if (!values['no-exhaustive']) await measure(`residual ${bits} bits${suffix}, exhaustive (every centroid, every document)`, index, { nprobe: index.centroids, fullScores: index.size }, extra());
      for (const fullScores of list(values['full-scores'])) {
        for (const nprobe of list(values.nprobe)) {
          await measure(`residual ${bits} bits${suffix}, nprobe ${nprobe}, fullScores ${fullScores}`, index, { nprobe, fullScores }, { ...extra(), nprobe, fullScores });
        }
      }
    }
  }
  fs.rmSync(work, { recursive: true, force: true });

  const info = runtimeInfo();
  console.log(`${docs.length} documents, ${queries.length} queries (${path.basename(values.data)}), model ${values.model}, libtorch ${info.torchVersion}, ${info.threads} threads`);
  console.log(`embedding the queries alone: ${embedMs.toFixed(1)} ms/query\n`);
  console.log('| token storage and search | nDCG@10 | Recall@100 | top-10 overlap with exact | ms/query | token storage on disk | build |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const size = r.tokenBytes ? `${(r.tokenBytes / 2 ** 20).toFixed(1)} MiB` : '';
    const build = r.buildSeconds ? `${r.buildSeconds.toFixed(0)} s${r.centroids ? ` (${r.centroids} centroids)` : ''}` : '';
    console.log(`| ${r.name} | ${r.ndcg10.toFixed(4)} | ${r.recall100.toFixed(4)} | ${r.overlap10.toFixed(3)} | ${r.msPerQuery.toFixed(1)} | ${size} | ${build} |`);
  }
  if (values.json) fs.writeFileSync(values.json, JSON.stringify({ documents: docs.length, queries: queries.length, embedMsPerQuery: embedMs, rows }, null, 2));
  encoder.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
