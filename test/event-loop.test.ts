// Model work runs off the JS thread: timers keep firing while one large native forward pass runs.
import test from 'ava';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Encoder } from '../lib';
import { tempDir } from './helpers/fixture';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { makeRandomBert } = require('../scripts/fixtures/random-bert.js');

test('the event loop stays responsive during a long embed()', async (t) => {
  const dir = makeRandomBert(path.join(tempDir(), 'small'), { shape: 'small', vocabSize: 512, seed: 7 });
  const enc = await Encoder.load(dir, { device: 'cpu' });
  // One batch, so the whole job is a single native call: if it ran on the JS thread no timer could fire.
  const texts = Array.from({ length: 256 }, (_, i) => 'the quick brown fox jumps over the lazy dog '.repeat(4 + (i % 5)));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const start = performance.now();
  const e = await enc.embed(texts, { batchSize: texts.length });
  const elapsed = performance.now() - start;
  clearInterval(timer);
  t.deepEqual(e.dims, [256, 256]);
  t.log(`embed took ${elapsed.toFixed(0)} ms; the timer fired ${ticks} times meanwhile`);
  t.true(elapsed > 50, 'the job is long enough to tell');
  t.true(ticks >= 3, `timer fired ${ticks} times during a ${elapsed.toFixed(0)} ms embed`);
  enc.dispose();
});
