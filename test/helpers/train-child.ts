// Runs train() (trainRag() with `rag: true`) in its own process for the kill-and-resume test: argv[2] is a JSON
// TrainOptions or RagTrainOptions (without callbacks); with killAtStep set, the process kills itself with SIGKILL
// right after that step, as a crash or an OOM kill would, without any chance to clean up.
import { train, trainRag } from '../../lib';

const { killAtStep, rag, ...options } = JSON.parse(process.argv[2]);
const run = (rag ? trainRag : train) as (o: typeof options) => Promise<{ history: { steps: unknown[] }; best: { epoch: number } }>;
run({
  ...options,
  onProgress: (p: { step: number }) => {
    if (p.step === killAtStep) process.kill(process.pid, 'SIGKILL');
  },
}).then(
  (result) => console.log(JSON.stringify({ steps: result.history.steps.length, best: result.best.epoch })),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
