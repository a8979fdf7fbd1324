// Runs train() in its own process for the kill-and-resume test: argv[2] is a JSON TrainOptions (without
// callbacks); with killAtStep set, the process kills itself with SIGKILL right after that step, as a
// crash or an OOM kill would, without any chance to clean up.
import { train } from '../../lib';

const { killAtStep, ...options } = JSON.parse(process.argv[2]);
train({
  ...options,
  onProgress: (p) => {
    if (p.step === killAtStep) process.kill(process.pid, 'SIGKILL');
  },
}).then(
  (result) => console.log(JSON.stringify({ steps: result.history.steps.length, best: result.best.epoch })),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
