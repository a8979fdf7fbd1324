// coltrast's caching allocator for large CPU tensors (native/cpu_allocator.h): the second pass over the
// same work takes its blocks from the cache, nothing leaks once a model is disposed, the cache empties on
// request, and the numbers are bit-for-bit those of libtorch's default allocator
// (COLTRAST_CPU_ALLOCATOR=system, in a child process, since the allocator is chosen when the addon loads).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cpuMemory, Encoder, train } from '../lib';
import { tempDir } from './helpers/fixture';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const { makeRandomBert } = require('../scripts/fixtures/random-bert.js');

// Hidden 256, 4 layers: attention scores and activations of 48 long texts are tensors of several MiB.
const model = makeRandomBert(path.join(tempDir(), 'small'), { shape: 'small', vocabSize: 512, seed: 3 });
const TEXTS = Array.from({ length: 48 }, (_, i) => `text ${i} ` + 'model token vector search query document '.repeat(8 + (i % 5)));

// Embeds TEXTS in a fresh process with the given allocator and writes the vectors and cpuMemory() there.
function embedInChild(allocator: 'system' | 'caching') {
  const out = path.join(tempDir(), 'out.json');
  const script = `
    const { Encoder, cpuMemory } = require(${JSON.stringify(path.resolve(__dirname, '..', 'lib'))});
    (async () => {
      const enc = await Encoder.load(${JSON.stringify(model)}, { device: 'cpu' });
      const e = await enc.embed(${JSON.stringify(TEXTS)}, { batchSize: 16 });
      require('node:fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify({ data: Array.from(e.data), memory: cpuMemory() }));
      enc.dispose();
    })();`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, COLTRAST_CPU_ALLOCATOR: allocator } });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(fs.readFileSync(out, 'utf8'));
}

test.serial('large tensors come from the cache on the second pass, and nothing leaks', async (t) => {
  const start = cpuMemory();
  t.true(start.caching);
  t.true(start.cacheLimitBytes > 0);
  const enc = await Encoder.load(model, { device: 'cpu' });
  const loaded = cpuMemory({ resetPeak: true });
  const first = await enc.embed(TEXTS, { batchSize: 16 });
  const afterFirst = cpuMemory();
  t.true(afterFirst.misses > loaded.misses, 'the first pass allocated large blocks');
  t.true(afterFirst.cachedBytes > 0, 'and gave them to the cache when its tensors died');
  t.true(afterFirst.peakAllocatedBytes > loaded.allocatedBytes, 'the peak counts the activations');
  t.is(afterFirst.allocatedBytes, loaded.allocatedBytes, 'no large tensor of the pass is still alive');
  const second = await enc.embed(TEXTS, { batchSize: 16 });
  const afterSecond = cpuMemory();
  t.deepEqual(second.data, first.data);
  t.true(afterSecond.hits > afterFirst.hits);
  t.is(afterSecond.misses, afterFirst.misses, 'the same work again needs no new memory');
  enc.dispose();
  t.true(cpuMemory().allocatedBytes <= start.allocatedBytes, "the disposed model's weights are freed");
  t.is(cpuMemory({ emptyCache: true }).cachedBytes > 0, true);
  t.is(cpuMemory().cachedBytes, 0, 'emptyCache gives the kept blocks back');
});

test.serial('train() frees the model, gradients and optimizer state when it returns, not when V8 collects them', async (t) => {
  const before = cpuMemory().allocatedBytes;
  const data = TEXTS.map((text, i) => ({ query: `query ${i}`, positive: text }));
  await train({ model, data, output: path.join(tempDir(), 'out'), epochs: 1, batchSize: 8, valSplit: 0, device: 'cpu' });
  // Adam's moments and the gradients of the 1 MiB weight matrices are large tensors: none may be left.
  t.is(cpuMemory().allocatedBytes, before);
});

test('the caching allocator computes exactly what libtorch\'s default allocator does', (t) => {
  const caching = embedInChild('caching');
  const system = embedInChild('system');
  t.true(caching.memory.caching);
  t.false(system.memory.caching, 'COLTRAST_CPU_ALLOCATOR=system turns it off');
  t.is(system.memory.misses, 0);
  t.true(caching.memory.misses > 0);
  t.is(caching.data.length, TEXTS.length * 256);
  t.deepEqual(caching.data, system.data);
});

test('coltrast info says which allocator serves CPU tensors', (t) => {
  const cli = path.resolve(__dirname, '..', 'lib', 'cli.ts');
  const info = (allocator: string) =>
    spawnSync(process.execPath, ['--import', 'tsx', cli, 'info'], { encoding: 'utf8', timeout: 240_000, env: { ...process.env, COLTRAST_CPU_ALLOCATOR: allocator } }).stdout;
  t.regex(info('caching'), /CPU tensors of 1 MiB and more: coltrast's caching allocator \(keeps up to [\d.]+ GiB/);
  t.regex(info('system'), /CPU tensors: libtorch's default allocator/);
});
