// Quality parity with the plain-PyTorch baseline (scripts/bench/python/coltrast_train.py): ten ColTrast
// steps of a tiny random BERT in coltrast and in Python, on the same token ids, batch order, weights,
// hyper-parameters and threads, must give the same per-step losses. Both sides run the same libtorch build
// on Debian (libtorch-dev and python3-torch), so they agree to float rounding (about 1e-6 relative; the
// fused loss ops sum in another order than eager PyTorch), dropout included: coltrast seeds its generator
// as torch.manual_seed does, so the dropout masks are the same. The assertion is 1e-4, a hundred times
// tighter than the 1%. Needs a python3 with torch (scripts/setup.sh installs python3-torch);
// reported as skipped, with the reason in its title, where there is none. The full 50-step run is
// `node scripts/bench/parity.js` (BENCHMARKS.md).
import test from 'ava';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { runParity, findPython } = require('../scripts/bench/parity.js') as {
  findPython(): string | null;
  runParity(options: Record<string, unknown>): Promise<any>;
};

const python = findPython();
const skipped = python ? '' : ' [skipped: no python3 with torch here; apt-get install python3-torch (scripts/setup.sh does)]';

for (const variant of [
  { name: "late interaction 'cross_entropy', one hard negative each", options: {} },
  { name: "late interaction 'bce', symmetric, two hard negatives each", options: { lateInteraction: 'bce', symmetric: true, negatives: 2 } },
]) {
  (python ? test.serial : test.serial.skip)(`10 steps match plain PyTorch within 1e-4 per step: ${variant.name}${skipped}`, async (t) => {
    const report = await runParity({
      python,
      shape: 'tiny',
      steps: 10,
      batchSize: 4,
      batchesPerEpoch: 5,
      learningRate: 1e-3,
      threads: 2,
      tolerance: 1e-4,
      ...variant.options,
    });
    t.is(report.steps.length, 10);
    for (const s of report.steps) {
      t.true(Number.isFinite(s.coltrast.loss) && Number.isFinite(s.python.loss), `step ${s.step}: finite losses`);
      t.true(s.relDiff.loss <= 1e-4, `step ${s.step}: coltrast ${s.coltrast.loss}, python ${s.python.loss} (relative ${s.relDiff.loss})`);
      t.true(s.relDiff.contrastive <= 1e-4 && s.relDiff.lateInteraction <= 1e-4, `step ${s.step}: loss parts ${JSON.stringify(s.relDiff)}`);
      t.true(s.relDiff.learningRate <= 1e-12, `step ${s.step}: the same learning rate`);
    }
    // The steps compared are the ones train() takes on the same data.
    t.deepEqual(report.trainCheck, { steps: 10, identical: true, firstDifferentStep: null });
    // The losses move over the steps (a learning rate of 1e-3), so agreement is not two frozen models agreeing.
    const losses = report.steps.map((s: any) => s.coltrast.loss);
    t.true(Math.max(...losses) - Math.min(...losses) > 1e-3, `losses vary: ${losses.join(', ')}`);
    t.log(`max relative difference: ${JSON.stringify(report.maxRelDiff)}`);
  });
}
