#!/usr/bin/env node
// A causal LM's throughput: coltrast's Generator against transformers (scripts/bench/python/generator.py, as a
// Python user writes it) on the same random-weight Qwen3ForCausalLM (Qwen3-0.6B's shape, 4 layers by default, with
// coltrast's default-model tokenizer), the same inputs, batch size and thread count:
//   - log-likelihoods of prompt + completion pairs (pairs/s): logLikelihood() against model(...).logits,
//     log_softmax and a gather over right-padded batches;
//   - greedy generation of exactly --max-new-tokens tokens per prompt (new tokens/s): generate() against
//     model.generate(do_sample=False) over left-padded batches;
//   - beam search (--beams, default 4) of the first --beam-prompts prompts (8), as many tokens each (new tokens/s):
//     generate({ numBeams }) against model.generate(num_beams), both searching a batch's prompts together.
// Each side runs --rounds times, alternating, after one warm-up batch; each side's fastest round is reported, and
// the two sides' outputs are compared (the log-likelihoods' largest difference, the share of prompts whose tokens
// are all equal).
//
//   node scripts/bench/generator.js [--shape qwen3-small|qwen3-0.6b|phi4-mini-small] [--pairs 64] [--prompts 16] [--max-new-tokens 32]
//       [--batch-size 8] [--beams 4] [--beam-prompts 8] [--device cpu|cuda] [--dtype float32|bfloat16] [--threads 2] [--rounds 2]
//       [--quantize int8 (both sides: Generator.load({ quantize: 'int8' }); transformers' decoder under quantize_dynamic)]
//       [--json out.json]
// On a GPU (--device cuda) both sides run there, in --dtype; each side's peak GPU memory is reported. In bfloat16
// the two sides' tokens may part where two candidates are within rounding of each other; the counts say how often.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { ROOT, stPython, runPython, wordSampler, readFloat32, residentMiB } = require('./st-compare');

const { Generator, cudaMemory, runtimeInfo } = require(path.join(ROOT, 'dist'));

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'qwen3-small' },
    pairs: { type: 'string', default: '64' },
    prompts: { type: 'string', default: '16' },
    'max-new-tokens': { type: 'string', default: '32' },
    'batch-size': { type: 'string', default: '8' },
    beams: { type: 'string', default: '4' },
    'beam-prompts': { type: 'string', default: '8' },
    device: { type: 'string', default: 'cpu' },
    dtype: { type: 'string', default: 'float32' },
    quantize: { type: 'string' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    rounds: { type: 'string', default: '2' },
    json: { type: 'string' },
  },
});
const SCRIPT = path.join(__dirname, 'python', 'generator.py');

/** Both sides `rounds` times, alternating; each side's fastest round, and every round's seconds ([coltrast, transformers]). */
async function alternate(rounds, ours, theirs) {
  const best = { coltrast: Infinity, python: null, rounds: [] };
  let outputs;
  for (let round = 0; round < rounds; round++) {
    const t0 = process.hrtime.bigint();
    const mine = await ours();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const py = theirs();
    console.error(`round ${round + 1}: coltrast ${seconds.toFixed(2)} s, transformers ${py.result.seconds.toFixed(2)} s`);
    best.rounds.push([seconds, py.result.seconds]);
    if (seconds < best.coltrast) best.coltrast = seconds;
    if (!best.python || py.result.seconds < best.python.seconds) best.python = py.result;
    outputs = { mine, theirs: py.outputs };
  }
  return { ...best, outputs };
}

async function main() {
  const python = stPython();
  const threads = Number(values.threads);
  const batchSize = Number(values['batch-size']);
  const maxNewTokens = Number(values['max-new-tokens']);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-generator-'));
  const model = path.join(work, 'model');
  runPython(python, [SCRIPT, 'make', model, '--shape', values.shape, '--tokenizer', path.join(ROOT, 'default-model')]);
  const text = wordSampler();
  const pairs = Array.from({ length: Number(values.pairs) }, () => ({ prompt: text(20, 120), completion: text(5, 30) }));
  const prompts = Array.from({ length: Number(values.prompts) }, () => text(10, 60));
  const pairsFile = path.join(work, 'pairs.json');
  const promptsFile = path.join(work, 'prompts.json');
  fs.writeFileSync(pairsFile, JSON.stringify(pairs));
  fs.writeFileSync(promptsFile, JSON.stringify(prompts));
  const rounds = Number(values.rounds);
  const device = values.device;
  const dtype = values.dtype;
  const common = ['--threads', String(threads), '--batch-size', String(batchSize), '--device', device, '--dtype', dtype, ...(values.quantize ? ['--quantize', values.quantize] : [])];

  const generator = await Generator.load(model, { device, dtype, threads, ...(values.quantize && { quantize: values.quantize }) });
  // Resident memory once loaded (and quantized), and the peak until then, as generator.py reports its own.
  const loaded = {
    loadedRssMiB: Math.round(residentMiB()),
    loadPeakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
  };
  await generator.logLikelihood(pairs.slice(0, batchSize), { batchSize });
  const llFile = path.join(work, 'll.bin');
  const ll = await alternate(
    rounds,
    () => generator.logLikelihood(pairs, { batchSize }),
    () => ({ result: runPython(python, [SCRIPT, 'll', model, pairsFile, ...common, '--out', llFile]), outputs: readFloat32(llFile) }),
  );
  let llDiff = 0;
  ll.outputs.mine.forEach((x, i) => (llDiff = Math.max(llDiff, Math.abs(x - ll.outputs.theirs[i]))));

  await generator.generate(prompts.slice(0, batchSize), { maxNewTokens: 2, batchSize, stopTokenIds: [] });
  const tokensFile = path.join(work, 'tokens.json');
  const gen = await alternate(
    rounds,
    () => generator.generate(prompts, { maxNewTokens, batchSize, stopTokenIds: [] }),
    () => ({
      result: runPython(python, [SCRIPT, 'gen', model, promptsFile, ...common, '--max-new-tokens', String(maxNewTokens), '--out', tokensFile]),
      outputs: JSON.parse(fs.readFileSync(tokensFile, 'utf8')),
    }),
  );
  const same = gen.outputs.mine.filter((g, i) => JSON.stringify(g.tokenIds) === JSON.stringify(gen.outputs.theirs[i])).length;

  const beams = Number(values.beams);
  const beamPrompts = prompts.slice(0, Number(values['beam-prompts']));
  const beamPromptsFile = path.join(work, 'beam-prompts.json');
  fs.writeFileSync(beamPromptsFile, JSON.stringify(beamPrompts));
  const beam = await alternate(
    rounds,
    () => generator.generate(beamPrompts, { maxNewTokens, numBeams: beams, stopTokenIds: [] }),
    () => ({
      result: runPython(python, [SCRIPT, 'beam', model, beamPromptsFile, ...common, '--beams', String(beams), '--max-new-tokens', String(maxNewTokens), '--out', tokensFile]),
      outputs: JSON.parse(fs.readFileSync(tokensFile, 'utf8')),
    }),
  );
  const sameBeams = beam.outputs.mine.filter((g, i) => JSON.stringify(g.tokenIds) === JSON.stringify(beam.outputs.theirs[i])).length;
  generator.dispose();
  fs.rmSync(work, { recursive: true, force: true });

  const info = runtimeInfo();
  const gpuPeakMiB = device === 'cpu' ? undefined : Math.round(cudaMemory(device).peakAllocatedBytes / 2 ** 20);
  const newTokens = prompts.length * maxNewTokens;
  const coltrastSide = `coltrast (libtorch ${info.torchVersion})`;
  const pythonSide = `transformers ${gen.python.transformers} (torch ${gen.python.torch})`;
  const rows = [
    { measure: 'log-likelihood', side: coltrastSide, rate: pairs.length / ll.coltrast, unit: 'pairs/s', seconds: ll.coltrast },
    { measure: 'log-likelihood', side: pythonSide, rate: ll.python.pairsPerSecond, unit: 'pairs/s', seconds: ll.python.seconds },
    { measure: 'greedy generation', side: coltrastSide, rate: newTokens / gen.coltrast, unit: 'tokens/s', seconds: gen.coltrast },
    { measure: 'greedy generation', side: pythonSide, rate: gen.python.tokensPerSecond, unit: 'tokens/s', seconds: gen.python.seconds },
    { measure: `beam search (${beams} beams)`, side: coltrastSide, rate: (beamPrompts.length * maxNewTokens) / beam.coltrast, unit: 'tokens/s', seconds: beam.coltrast },
    { measure: `beam search (${beams} beams)`, side: pythonSide, rate: beam.python.tokensPerSecond, unit: 'tokens/s', seconds: beam.python.seconds },
  ];
  const result = {
    date: new Date().toISOString(),
    cpu: `${os.cpus()[0]?.model} (${os.cpus().length} cores)`,
    device,
    dtype,
    threads,
    versions: { libtorch: info.torchVersion, blas: info.blas, torchPython: gen.python.torch, transformers: gen.python.transformers },
    shape: values.shape,
    pairs: pairs.length,
    prompts: prompts.length,
    maxNewTokens,
    batchSize,
    rows,
    beams,
    beamPrompts: beamPrompts.length,
    rounds: { logLikelihood: ll.rounds, generation: gen.rounds, beamSearch: beam.rounds },
    logLikelihoodMaxAbsDifference: llDiff,
    generationsEqual: `${same}/${prompts.length}`,
    beamSearchesEqual: `${sameBeams}/${beamPrompts.length}`,
    peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    memoryMiB: { coltrast: loaded, transformers: { loadedRssMiB: ll.python.loadedRssMiB, loadPeakRssMiB: ll.python.loadPeakRssMiB, logLikelihoodPeakRssMiB: ll.python.peakRssMiB } },
    ...(gpuPeakMiB !== undefined && { peakGpuMiB: { coltrast: gpuPeakMiB, transformers: [ll.python, gen.python, beam.python].map((r) => r.peakGpuMiB) } }),
  };
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(result, null, 2));
  console.log('| measure | side | seconds | rate |\n|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.measure} | ${r.side} | ${r.seconds.toFixed(2)} | ${r.rate.toFixed(1)} ${r.unit} |`);
  console.log(
    `\n${values.shape} (${device}, ${dtype}${values.quantize ? `, ${values.quantize}` : ''}), ${pairs.length} pairs, ${prompts.length} prompts x ${maxNewTokens} new tokens, batch ${batchSize}, ${threads} threads; ` +
      `log-likelihoods max |difference| ${llDiff.toExponential(2)}; ${same}/${prompts.length} generations and ${sameBeams}/${beamPrompts.length} beam searches token for token equal; ` +
      `resident memory once loaded (peak while loading): coltrast ${loaded.loadedRssMiB} MiB (${loaded.loadPeakRssMiB}), transformers ${ll.python.loadedRssMiB} MiB (${ll.python.loadPeakRssMiB})`,
  );
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
