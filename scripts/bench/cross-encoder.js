#!/usr/bin/env node
// Re-ranking throughput: coltrast's CrossEncoder.predict() against sentence-transformers' CrossEncoder.predict()
// on the same random-weight cross-encoder (a BERT of a real shape with a seeded classification head, written
// by scripts/bench/python/cross_encoder.py; or with --decoder, a reranker on a causal LM of Qwen3-0.6B's shape set up
// as Qwen3-Reranker is: its chat template, LogitScore on "yes" against "no"), the same (query, document) pairs, batch
// size and thread count.
// Both timings are whole predict() calls: tokenizing the pairs, sorting them by length, the forward passes and
// the activation. Each side runs --rounds times, alternating, after one warm-up batch; each side's fastest
// round is reported. The scores of the two sides are compared.
//
//   node scripts/bench/cross-encoder.js [--shape minilm] [--pairs 500] [--batch-size 32] [--threads 2]
//       [--rounds 2] [--json out.json]
//   node scripts/bench/cross-encoder.js --decoder qwen3-small|qwen3-0.6b [--pairs 64] ...
//   ... [--device cpu|cuda] [--dtype float32|bfloat16|float16] (both sides: where the model runs, its weights' type)
//   ... [--quantize int8] (both sides: CrossEncoder.load({ quantize: 'int8' }); in Python, quantize_dynamic with
//       per_channel_dynamic_qconfig on the base model's encoder, the head left in float32 as coltrast leaves it)
//
// Python: $COLTRAST_ST_PYTHON, else build/pyenv/bin/python (scripts/setup.sh makes it: PyTorch 2.x and
// sentence-transformers). coltrast runs on whichever addon loads (Debian's libtorch 1.13 by default;
// COLTRAST_BINARY=cpu COLTRAST_PYTHON=build/pyenv/bin/python for the prebuild on the same PyTorch 2.x).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { ROOT, stPython, runPython, wordSampler, readFloat32, alternate, report } = require('./st-compare');

const { CrossEncoder, runtimeInfo } = require(path.join(ROOT, 'dist'));
const { makeRandomBert } = require(path.join(ROOT, 'scripts', 'fixtures', 'random-bert'));

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'minilm' },
    decoder: { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    dtype: { type: 'string', default: 'float32' },
    quantize: { type: 'string' },
    pairs: { type: 'string', default: '500' },
    'batch-size': { type: 'string', default: '32' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    rounds: { type: 'string', default: '2' },
    json: { type: 'string' },
  },
});
const SCRIPT = path.join(__dirname, 'python', 'cross_encoder.py');

// Queries of 5-15 words and documents of 30-120, from the example sentences, seeded.
function makePairs(n) {
  const text = wordSampler();
  return Array.from({ length: n }, () => [text(5, 15), text(30, 120)]);
}

async function main() {
  const PYTHON = stPython();
  const python = (args) => runPython(PYTHON, args);
  const threads = Number(values.threads);
  const batchSize = Number(values['batch-size']);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-cross-encoder-'));
  const model = path.join(work, 'cross-encoder');
  if (values.decoder) {
    const causal = path.join(work, 'causal');
    python([path.join(__dirname, 'python', 'generator.py'), 'make', causal, '--shape', values.decoder, '--tokenizer', path.join(ROOT, 'default-model')]);
    python([SCRIPT, 'make-decoder', causal, model]);
  } else {
    python([SCRIPT, 'make', makeRandomBert(path.join(work, 'bert'), { shape: values.shape, seed: 1 }), model]);
  }
  const pairs = makePairs(Number(values.pairs));
  const pairsFile = path.join(work, 'pairs.json');
  fs.writeFileSync(pairsFile, JSON.stringify(pairs));

  const ce = await CrossEncoder.load(model, { device: values.device, dtype: values.dtype, threads, ...(values.quantize && { quantize: values.quantize }) });
  await ce.predict(pairs.slice(0, batchSize), { batchSize });
  const scoresFile = path.join(work, 'scores.bin');
  const compared = await alternate(
    Number(values.rounds),
    async () => (await ce.predict(pairs, { batchSize })).data,
    () => ({
      result: python([SCRIPT, 'bench', model, pairsFile, '--threads', String(threads), '--batch-size', String(batchSize), '--scores', scoresFile, '--device', values.device, '--dtype', values.dtype, ...(values.quantize ? ['--quantize', values.quantize] : [])]),
      outputs: readFloat32(scoresFile),
    }),
  );
  ce.dispose();
  fs.rmSync(work, { recursive: true, force: true });
  report({
    unit: 'pairs', count: pairs.length, compared, info: runtimeInfo(), threads, json: values.json,
    extra: { shape: values.decoder ? `${values.decoder} reranker (LogitScore)` : values.shape, pairs: pairs.length, batchSize, device: values.device, dtype: values.dtype, ...(values.quantize && { quantize: values.quantize }) },
    summary: `${values.decoder ? `${values.decoder} reranker (LogitScore)` : values.shape}, ${pairs.length} pairs, batch ${batchSize}, ${values.device} ${values.dtype}${values.quantize ? ` (${values.quantize})` : ''}`,
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
