#!/usr/bin/env node
// Embedding throughput of an embedding model of a given architecture: coltrast's embed() against
// sentence-transformers' encode() on the same random-weight model (a decoder LLM, Qwen3-Embedding-0.6B's shape by
// default or EmbeddingGemma-300m's, or an encoder beside BERT: all-mpnet-base-v2's, DeBERTa-v3-base's, ModernBERT-base's or sentence-t5-base's; written by
// scripts/bench/python/architectures.py with coltrast's default-model tokenizer), the same texts, batch size and
// thread count. Both timings are whole calls: tokenizing, sorting by length, the forward passes, the shape's
// pooling and normalization. Each side runs --rounds times, alternating, after one warm-up batch; each side's
// fastest round is reported. The embeddings of the two sides are compared.
//
//   node scripts/bench/architectures.js [--shape qwen3-0.6b|qwen3-small|embeddinggemma-300m|mpnet-base|deberta-v3-base|modernbert-base|sentence-t5-base] [--texts 100] [--batch-size 16] [--threads 2]
//       [--rounds 2] [--json out.json]
//
// coltrast runs on whichever addon loads (Debian's libtorch 1.13 by default; COLTRAST_BINARY=cpu
// COLTRAST_PYTHON=build/pyenv/bin/python for the prebuild on the Python side's PyTorch 2.x).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { ROOT, stPython, runPython, wordSampler, readFloat32, alternate, report } = require('./st-compare');

const { Encoder, runtimeInfo } = require(path.join(ROOT, 'dist'));

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'qwen3-0.6b' },
    texts: { type: 'string', default: '100' },
    'batch-size': { type: 'string', default: '16' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    rounds: { type: 'string', default: '2' },
    json: { type: 'string' },
  },
});
const SCRIPT = path.join(__dirname, 'python', 'architectures.py');

async function main() {
  const python = stPython();
  const threads = Number(values.threads);
  const batchSize = Number(values['batch-size']);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-architectures-'));
  const model = path.join(work, 'model');
  runPython(python, [SCRIPT, 'make', model, '--shape', values.shape, '--tokenizer', path.join(ROOT, 'default-model')]);
  // Texts of 10-120 words, as scripts/bench/embed.js.
  const text = wordSampler();
  const texts = Array.from({ length: Number(values.texts) }, () => text(10, 120));
  const textsFile = path.join(work, 'texts.json');
  fs.writeFileSync(textsFile, JSON.stringify(texts));

  const encoder = await Encoder.load(model, { device: 'cpu', threads });
  const tokens = (await encoder.tokenize(texts)).reduce((n, ids) => n + ids.length, 0);
  await encoder.embed(texts.slice(0, batchSize), { batchSize });
  const vectorsFile = path.join(work, 'vectors.bin');
  const compared = await alternate(
    Number(values.rounds),
    async () => (await encoder.embed(texts, { batchSize })).data,
    () => ({
      result: runPython(python, [SCRIPT, 'bench', model, textsFile, '--threads', String(threads), '--batch-size', String(batchSize), '--vectors', vectorsFile]),
      outputs: readFloat32(vectorsFile),
    }),
  );
  encoder.dispose();
  fs.rmSync(work, { recursive: true, force: true });
  report({
    unit: 'texts', count: texts.length, compared, info: runtimeInfo(), threads, json: values.json,
    extra: { shape: values.shape, texts: texts.length, tokens, batchSize },
    summary: `${values.shape}, ${texts.length} texts (${tokens} tokens), batch ${batchSize}`,
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
