// The generation routes' stop strings (lib/serve-generation.ts): a streamed choice (StopFilter, fed the text in
// pieces) ends where a plain one (finished(), on the whole text) does, at the start of the first stop string to be
// completed (as vLLM and transformers stop), however the text is cut into pieces; overlapping stop strings included.
// No model: crafted texts, cut at every position.
import test from 'ava';
import { StopFilter, finished } from '../lib/serve-generation';

/** The text a StopFilter hands on for `pieces`, each piece's share, and whether a stop string ended it. */
function streamed(pieces: string[], stops: string[]): { text: string; given: string[]; stopped: boolean } {
  const given: string[] = [];
  const filter = new StopFilter(stops, (text) => given.push(text));
  for (const piece of pieces) filter.push(piece);
  filter.end();
  return { text: given.join(''), given, stopped: filter.stopped };
}

const plain = (text: string, stops: string[]) => finished({ text, tokenIds: [1], finishReason: 'length', promptTokens: 1 }, stops);

/** Every way to cut `text` into pieces at up to two places, and one character a piece. */
function cuts(text: string): string[][] {
  const out: string[][] = [[text], [...text]];
  for (let i = 0; i <= text.length; i++) {
    for (let j = i; j <= text.length; j++) out.push([text.slice(0, i), text.slice(i, j), text.slice(j)]);
  }
  return out;
}

// [text, stops, the text before the first stop string to be completed]
const CASES: [string, string[], string][] = [
  // A shorter stop string completes first, inside a longer one that starts earlier: the shorter ends the text, as
  // vLLM and transformers' StopStringCriteria end it (they stop at the first one generated), whatever the list's order.
  ['xabcdy', ['abcd', 'c'], 'xab'],
  ['xabcdy', ['c', 'abcd'], 'xab'],
  ['xabcd', ['abcd', 'bc'], 'xa'],
  ['-<<a>>-', ['a>', '<<a>>', '<a'], '-<'],
  // The longer one never completes: the shorter one ends the text.
  ['xabcey', ['abcd', 'c'], 'xab'],
  ['xabc', ['abcd', 'c'], 'xab'],
  // Several completed by the same character: the one that starts earliest (the longest) ends the text.
  ['aab', ['ab', 'aab'], ''],
  ['xabcd', ['cd', 'abcd'], 'x'],
  ['a😀b', ['😀', 'a😀'], ''],
  // Stop strings that are prefixes of each other: the shorter is complete first.
  ['12abc3', ['abc', 'ab'], '12'],
  ['12ab3', ['abc', 'ab'], '12'],
  // One that starts earlier but completes later loses to one that starts later and completes first.
  ['xyzzy', ['yzzy', 'zz'], 'xy'],
  ['café 😀 ok', ['😀 ok', ' o'], 'café 😀'],
  // A partial stop string at the end that never completes is text.
  ['hello wor', ['world'], 'hello wor'],
  ['hello', ['lo!', 'xyz'], 'hello'],
  // Repeats: the first occurrence counts.
  ['a.b.c', ['.'], 'a'],
  ['ab ab ab', ['b a'], 'a'],
  // A stop string at the very start or the very end.
  ['stop here', ['stop'], ''],
  ['the end', ['end'], 'the '],
  // Overlapping occurrences of one stop string.
  ['aaab', ['aab'], 'a'],
  ['xyzzy', ['zzy', 'yz'], 'x'],
  // Characters beyond one UTF-16 unit.
  ['café 😀 ok', ['😀 o', 'é'], 'caf'],
  // No stop string in it.
  ['nothing to see', ['xyz'], 'nothing to see'],
];

test('a streamed choice ends where the plain one does, at the first stop string completed, however its text is cut into pieces', (t) => {
  for (const [text, stops, expected] of CASES) {
    const whole = plain(text, stops);
    t.is(whole.text, expected, `plain: ${JSON.stringify(text)} ${JSON.stringify(stops)}`);
    t.is(whole.finishReason, expected.length < text.length ? 'stop' : 'length');
    for (const pieces of cuts(text)) {
      const s = streamed(pieces, stops);
      t.is(s.text, expected, `streamed ${JSON.stringify(pieces)} ${JSON.stringify(stops)}`);
      t.is(s.stopped, whole.finishReason === 'stop', `stopped ${JSON.stringify(pieces)} ${JSON.stringify(stops)}`);
    }
  }
});

test('a streamed choice hands text on as soon as no stop string can start in it, and stops at the first one completed', (t) => {
  const given: string[] = [];
  const filter = new StopFilter(['abcd', 'c'], (text) => given.push(text));
  filter.push('xy');
  t.deepEqual(given, ['xy'], 'no stop string can start in "xy"');
  filter.push('zab');
  t.deepEqual(given, ['xy', 'z'], '"ab" may grow into "abcd"');
  t.false(filter.stopped);
  filter.push('c');
  t.true(filter.stopped, '"c" is complete: the generation can stop here, before "abcd" could be');
  t.deepEqual(given, ['xy', 'z', 'ab']);
  filter.push('d and more');
  filter.end();
  t.deepEqual(given, ['xy', 'z', 'ab'], 'the text ends at "c"');
});

test('a stop string completed across pieces stops the choice at the piece that completes it, not before', (t) => {
  const given: string[] = [];
  const filter = new StopFilter(['world'], (text) => given.push(text));
  filter.push('hello wor');
  t.deepEqual(given, ['hello '], '"wor" may grow into "world"');
  t.false(filter.stopped);
  filter.push('l');
  t.false(filter.stopped);
  filter.push('d!');
  t.true(filter.stopped);
  filter.end();
  t.deepEqual(given, ['hello ']);
});
