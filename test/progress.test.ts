// The progress bar of long work: rate and ETA measured over this process's work, a resumed run included.
import test from 'ava';
import { ProgressBar, formatSeconds } from '../lib/progress';

function sink(tty: boolean) {
  const lines: string[] = [];
  return { lines, stream: { isTTY: tty, write: (s: string) => lines.push(s) } as unknown as NodeJS.WriteStream };
}

test('a resumed run: the steps done before it are not counted in the rate', async (t) => {
  const { lines, stream } = sink(false);
  const bar = new ProgressBar('train', 'steps', stream);
  bar.update(500, 1000); // resumed at step 500
  await new Promise((r) => setTimeout(r, 250));
  bar.update(1000, 1000);
  const last = lines.at(-1)!;
  const rate = Number(/\| ([\d.]+) steps\/s/.exec(last)![1]);
  t.true(rate > 500 && rate < 2100, `500 steps in ~0.25 s, not 1000 (${last.trim()})`);
  t.regex(last, /^train 100% 1000\/1000 steps/);
});

test('on a terminal the bar redraws one line with rate and ETA, and ends it', (t) => {
  const { lines, stream } = sink(true);
  const bar = new ProgressBar('embed', 'texts', stream);
  bar.update(0, 4);
  bar.update(4, 4);
  t.regex(lines[0], /^\rembed \[-{24}\] 0\/4 texts \| 0\.0 texts\/s \| ETA \?/, 'no rate yet: no ETA');
  t.regex(lines[1], /^\rembed \[#{24}\] 4\/4 texts/);
  t.is(lines[2], '\n');
  t.is(formatSeconds(125), '2m5s');
  t.is(formatSeconds(Infinity), '?');
});
