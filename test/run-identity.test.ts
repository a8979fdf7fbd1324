// runIdentity and checkSameRun: what a resume compares with the interrupted run.
import test from 'ava';
import { checkSameRun, runIdentity } from '../lib/run-identity';

test("a setting's object with its keys in another order is the same run; another value is not", async (t) => {
  // Options objects the caller writes (options.lora, options.mineNegatives) keep the caller's key order.
  const data = { examples: [{ query: 'q', positive: 'p' }] };
  const then = await runIdentity({ lora: { r: 8, alpha: 16, dropout: 0.1 }, mineNegatives: { numNegatives: 3, plaid: { nbits: 2, kmeansIters: 4 } } }, data);
  const now = await runIdentity({ mineNegatives: { plaid: { kmeansIters: 4, nbits: 2 }, numNegatives: 3 }, lora: { dropout: 0.1, alpha: 16, r: 8 } }, data);
  t.notThrows(() => checkSameRun('run.checkpoint', then, now));
  const other = await runIdentity({ lora: { r: 4, alpha: 16, dropout: 0.1 }, mineNegatives: { numNegatives: 3, plaid: { nbits: 2, kmeansIters: 4 } } }, data);
  t.throws(() => checkSameRun('run.checkpoint', then, other), { message: /options\.lora \{"alpha":16,"dropout":0\.1,"r":8\} then, \{"alpha":16,"dropout":0\.1,"r":4\} now\./ });
  // Arrays keep their order: it is the setting's.
  t.notDeepEqual(await runIdentity({ dimensions: [64, 32] }, {}), await runIdentity({ dimensions: [32, 64] }, {}));
});
