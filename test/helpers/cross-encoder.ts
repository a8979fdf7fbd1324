// A cross-encoder's training loss checked against its definition, for test/cross-encoder.test.ts and
// test/decoder-reranker.test.ts.
import type { ExecutionContext } from 'ava';
import type { CrossEncoder } from '../../lib';
import { STEP, wordDataset } from './fixture';

const STEP_OPTIONS = { ...STEP, learningRate: 0, lossScale: 1, apply: false };

/**
 * On a batch of three queries and five documents (their positives, then two shared negatives), the trainer's loss
 * ('cross_entropy': over each query's sigmoid(logit) × 10; 'bce': on the logits, 1 for the positive pair) equals its
 * definition computed in float64 from predict()'s logits, and `steps` steps on the batch lower it by `minDrop`.
 */
export async function checkTrainingLoss(t: ExecutionContext, ce: CrossEncoder, kind: 'cross_entropy' | 'bce', steps: number, minDrop: number): Promise<void> {
  const data = wordDataset(5, 3);
  const queries = data.slice(0, 3).map((d) => d.query);
  const documents = data.map((d) => d.positive);
  const trainer = ce.createTrainer({ learningRate: 1e-3, weightDecay: 0.01, seed: 1, precision: 'float32' }, { kind, scale: 10 });
  const { loss } = await trainer.evaluate(queries, documents, STEP_OPTIONS);
  // Query-major pairs; query i's positive is document i.
  const { data: logits } = await ce.predict(queries.flatMap((q) => documents.map((d): [string, string] => [q, d])), { activation: 'identity' });
  let expected = 0;
  queries.forEach((_, i) => {
    const row = documents.map((_, j) => logits[i * documents.length + j]);
    if (kind === 'bce') {
      row.forEach((x, j) => (expected += (Math.max(x, 0) - x * (i === j ? 1 : 0) + Math.log1p(Math.exp(-Math.abs(x)))) / (queries.length * documents.length)));
    } else {
      const scores = row.map((x) => 10 / (1 + Math.exp(-x)));
      const max = Math.max(...scores);
      expected += (max + Math.log(scores.reduce((s, x) => s + Math.exp(x - max), 0)) - scores[i]) / queries.length;
    }
  });
  t.true(Math.abs(loss - expected) < 1e-5, `native ${loss}, definition ${expected}`);
  for (let step = 0; step < steps; step++) await trainer.step(queries, documents, { ...STEP_OPTIONS, learningRate: 1e-3, apply: true });
  const after = (await trainer.evaluate(queries, documents, STEP_OPTIONS)).loss;
  t.true(after < loss - minDrop, `loss ${loss} -> ${after} after ${steps} steps on the batch`);
  trainer.dispose();
}
