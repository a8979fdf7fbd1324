// The native trainer's step options of the Python comparisons (compare.js on the CPU, compare-gpu.js on a
// GPU): 'coltrast' is both losses at 0.5, 'contrastive' the in-batch contrastive loss alone, as the
// baselines' --loss options set them (coltrast_train.py, st_baseline.py); temperature 0.05, clipping at 1,
// learning rate 2e-5. miniBatchSize > 0 turns on coltrast's gradient caching.
'use strict';

function stepOptions(loss, miniBatchSize = 0) {
  if (loss !== 'coltrast' && loss !== 'contrastive') throw new Error(`--loss is coltrast or contrastive, not ${loss}`);
  return {
    contrastiveWeight: loss === 'contrastive' ? 1 : 0.5,
    lateInteractionWeight: loss === 'contrastive' ? 0 : 0.5,
    temperature: 0.05,
    symmetric: false,
    lateInteractionKind: 'cross_entropy',
    maxGradNorm: 1,
    learningRate: 2e-5,
    lossScale: 1,
    apply: true,
    miniBatchSize,
  };
}

module.exports = { stepOptions };
