// A pretraining work folder (scripts/pretrain/run.js --work) as the follow-up experiments read it: its stage-2
// triplets and its held-out test splits (data/<source>/test, BEIR folders).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

/** The parseArgs options every follow-up experiment takes, with its own learning rate by default. */
function workOptions(learningRate) {
  return {
    work: { type: 'string', default: path.resolve(__dirname, '..', '..', 'models', 'pretrain-v2') },
    out: { type: 'string' },
    epochs: { type: 'string', default: '1' },
    'learning-rate': { type: 'string', default: learningRate },
    threads: { type: 'string', default: String(os.availableParallelism()) },
  };
}

/** The folder's stage-2 triplets and held-out splits; exits with a message naming run.js when they are missing. */
function stage2Work(workDir, script) {
  const work = path.resolve(workDir);
  const triplets = path.join(work, 'stage2-triplets.jsonl');
  for (const needed of [triplets, path.join(work, 'data')]) {
    if (!fs.existsSync(needed)) {
      console.error(`${script}: ${needed} is missing: run scripts/pretrain/run.js --work ${workDir} first`);
      process.exit(2);
    }
  }
  const heldOut = fs
    .readdirSync(path.join(work, 'data'))
    .filter((s) => fs.existsSync(path.join(work, 'data', s, 'test')))
    .map((source) => ({ source, data: path.join(work, 'data', source, 'test') }));
  return { work, triplets, heldOut };
}

module.exports = { stage2Work, workOptions };
