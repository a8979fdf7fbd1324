#!/usr/bin/env node
// How far generate()'s streamed text (onText) runs behind the model: two prompts generate together; when the first
// one's streamed text holds the text of its first --at tokens, its signal is aborted (as a server does at a stop string
// or when a client leaves), and the tokens it generated past --at are counted. Small counts mean the text keeps up with
// the model; the tiny test models' steps take well under a millisecond, much faster than a real model's, so this is
// the hard case for the decoding that follows the steps. Uses the built package (npm run build).
//   node scripts/bench/stream-lag.js [--model test/fixtures/tiny-causal-lms/llama] [--at 40] [--rounds 30]
//                                    [--device cpu] [--json out.json]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const ROOT = path.resolve(__dirname, '..', '..');
const { values } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(ROOT, 'test', 'fixtures', 'tiny-causal-lms', 'llama') },
    at: { type: 'string', default: '40' },
    rounds: { type: 'string', default: '30' },
    device: { type: 'string', default: 'cpu' },
    json: { type: 'string' },
  },
});
const { Generator } = require(path.join(ROOT, 'dist', 'index.js'));

async function main() {
  const at = Number(values.at);
  const rounds = Number(values.rounds);
  const generator = await Generator.load(values.model, { device: values.device });
  const prompts = ['model text search', 'cat dog'];
  const maxNewTokens = Math.min(at * 3, generator.maxLength - 8);
  // The text of the first prompt's first `at` tokens (greedy, so every round generates the same).
  const [head] = await generator.generate([prompts[0]], { maxNewTokens: at, stopTokenIds: [] });
  const past = [];
  const started = performance.now();
  for (let r = 0; r <= rounds; r++) {
    const stop = new AbortController();
    let streamed = '';
    const out = await generator.generate(prompts, {
      maxNewTokens,
      stopTokenIds: [],
      promptSignals: [stop.signal, undefined],
      onText: (i, text) => {
        if (i !== 0) return;
        streamed += text;
        if (streamed.length >= head.text.length) stop.abort();
      },
    });
    if (r > 0) past.push(out[0].tokenIds.length - at); // round 0 warms up
  }
  const seconds = (performance.now() - started) / 1000;
  generator.dispose();
  const sorted = [...past].sort((a, b) => a - b);
  const quantile = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  const result = {
    model: values.model,
    at,
    maxNewTokens,
    rounds,
    tokensPast: past,
    median: quantile(0.5),
    p90: quantile(0.9),
    max: sorted[sorted.length - 1],
    seconds,
    loadAverage: os.loadavg(),
  };
  console.log(`tokens generated past the ${at}th before its streamed text stopped the prompt, ${rounds} rounds: median ${result.median}, 90th percentile ${result.p90}, max ${result.max} (of at most ${maxNewTokens - at}); load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  if (values.json) fs.writeFileSync(values.json, `${JSON.stringify(result, null, 2)}\n`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
