// POST /tokenize and POST /decode, text-embeddings-inference's routes for counting and inspecting tokens: each
// against the model's tokenizer (Encoder.tokenize's ids), UTF-8 byte offsets on non-ASCII text (Rust's offsets, which
// TEI answers with; the tokenizers package gives code points) checked by construction and against Python's
// tokenizers, untruncated long texts, special tokens, prompts and tasks (a multi-vector model's [Q] / [D] markers and
// query expansion, against the ids embed() gives the model), batches, decoding both ways, and the refusals; and huge
// /tokenize requests, on a worker of their own: they must not hold up the other routes' tokenizing, nor be tokenized
// for a client gone.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CrossEncoder, Encoder, Generator, serve, type Server } from '../lib';
import { heldTokenizers, setSendCharacters } from '../lib/tokenizer';
import { FIXTURE, editJson, fixtureCopy } from './helpers/fixture';
import { writeSafetensors } from './helpers/safetensors';
import { makeSmallMultiVector } from './helpers/vectors';

const ROOT = path.resolve(__dirname, '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures');
const XLMR = path.join(FIXTURES, 'tiny-encoders', 'xlm-roberta');
const ROBERTA = path.join(FIXTURES, 'tiny-encoders', 'roberta');
const NON_ASCII = 'Café au lait, 中文 😀 ok';

interface Token {
  id: number;
  text: string;
  special: boolean;
  start: number | null;
  stop: number | null;
}

let bert: Encoder;
let xlmr: Encoder;
let server: Server;
let xlmrServer: Server;

test.before(async () => {
  bert = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  xlmr = await Encoder.load(XLMR, { device: 'cpu', threads: 1 });
  server = await serve({ encoder: bert, port: 0, maxInputs: 4 });
  xlmrServer = await serve({ encoder: xlmr, port: 0 });
});

test.after.always(async () => {
  await server?.close();
  await xlmrServer?.close();
  bert?.dispose();
  xlmr?.dispose();
});

async function post(url: string, body: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(url, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
  return { status: res.status, json: await res.json() };
}

/** Each non-special token's text is its bytes start..stop of `input`; a special one has null offsets. */
function checkOffsets(t: import('ava').ExecutionContext, input: string, tokens: Token[]): void {
  const bytes = Buffer.from(input);
  for (const token of tokens) {
    if (token.special) {
      t.is(token.start, null);
      t.is(token.stop, null);
    } else {
      t.true(Number.isInteger(token.start) && Number.isInteger(token.stop) && token.start! <= token.stop! && token.stop! <= bytes.length, JSON.stringify(token));
      t.is(bytes.subarray(token.start!, token.stop!).toString(), token.text, JSON.stringify(token));
      // Offsets that cut a character (code points taken for bytes) would show as U+FFFD.
      if (!input.includes('\uFFFD')) t.false(token.text.includes('\uFFFD'), `${JSON.stringify(token)} cuts a character of ${JSON.stringify(input)}`);
    }
  }
}

test('/tokenize answers each input\'s tokens with the ids Encoder.tokenize gives, special tokens marked, a string as a list of one', async (t) => {
  const texts = ['hello world', 'the cat sat'];
  const { status, json } = await post(`${server.url}/tokenize`, { inputs: texts });
  t.is(status, 200);
  t.is(json.length, 2);
  const want = await bert.tokenize(texts);
  json.forEach((tokens: Token[], i: number) => {
    t.deepEqual(tokens.map((x) => x.id), want[i]);
    t.deepEqual(tokens.map((x) => x.special), want[i].map((_, k) => k === 0 || k === want[i].length - 1));
    t.deepEqual([tokens[0].text, tokens[tokens.length - 1].text], ['[CLS]', '[SEP]']);
    checkOffsets(t, texts[i], tokens);
  });
  const one = await post(`${server.url}/tokenize`, { inputs: 'hello world' });
  t.is(one.status, 200);
  t.deepEqual(one.json, [json[0]]);
});

test('/tokenize gives UTF-8 byte offsets into the input, as TEI (Rust) does, not code points', async (t) => {
  // tiny-bert: 'café' is 5 bytes, 中 and 文 3 each, the emoji 4 (and 2 UTF-16 units).
  const input = 'café 中文 😀 ok';
  const { json } = await post(`${server.url}/tokenize`, { inputs: input });
  const plain = (json[0] as Token[]).filter((x) => !x.special).map((x) => [x.text, x.start, x.stop]);
  t.deepEqual(plain, [['café', 0, 5], ['中', 6, 9], ['文', 9, 12], ['😀', 13, 17], ['o', 18, 19], ['k', 19, 20]]);
  checkOffsets(t, input, json[0]);
  // A sentencepiece tokenizer whose pieces are whole characters of several bytes.
  const x = await post(`${xlmrServer.url}/tokenize`, { inputs: [NON_ASCII, 'ÉÀ 😀😀'] });
  t.is(x.status, 200);
  t.deepEqual(x.json.map((tokens: Token[]) => tokens.map((k) => k.id)), await xlmr.tokenize([NON_ASCII, 'ÉÀ 😀😀']));
  checkOffsets(t, NON_ASCII, x.json[0]);
  checkOffsets(t, 'ÉÀ 😀😀', x.json[1]);
  const pieces = (x.json[0] as Token[]).filter((k) => k.text === '中文' || k.text === '😀').map((k) => [k.text, k.start, k.stop]);
  t.deepEqual(pieces, [['中文', 15, 21], ['😀', 22, 26]]);
});

test('/tokenize maps offsets back to the input when the model lowercases a character into two (do_lower_case)', async (t) => {
  const dir = fixtureCopy((d) => editJson(path.join(d, 'sentence_bert_config.json'), (c) => ({ ...c, do_lower_case: true })));
  const enc = await Encoder.load(dir, { device: 'cpu', threads: 1 });
  const lower = await serve({ encoder: enc, port: 0 });
  try {
    // 'İ' lowercases to 'i' and a combining dot: the offsets after it would be one code point off.
    const input = 'İstanbul ok';
    const { status, json } = await post(`${lower.url}/tokenize`, { inputs: input });
    t.is(status, 200);
    t.deepEqual(json[0].map((x: Token) => x.id), (await enc.tokenize([input]))[0]);
    const tokens = (json[0] as Token[]).filter((x) => !x.special);
    t.deepEqual(tokens[0].start, 0);
    t.deepEqual(tokens.slice(-2).map((x) => [x.text, x.start, x.stop]), [['o', 10, 11], ['k', 11, 12]]);
  } finally {
    await lower.close();
    enc.dispose();
  }
});

test('/tokenize returns every token of a text longer than the model takes, which /embed cuts', async (t) => {
  const long = Array.from({ length: 100 }, (_, i) => ['hello', 'world', 'cat'][i % 3]).join(' ');
  const { status, json } = await post(`${server.url}/tokenize`, { inputs: long });
  t.is(status, 200);
  t.is(json[0].length, 102, 'every word and [CLS], [SEP]');
  t.is((await bert.tokenize([long]))[0].length, bert.maxSeqLength, 'the model itself cuts it');
  checkOffsets(t, long, json[0]);
});

test('/tokenize writes a text of many thousand tokens, and several, whole and in order, however they are sent to the worker', async (t) => {
  const words = (n: number) => Array.from({ length: n }, (_, i) => ['hello', 'world'][i % 2]).join(' ');
  const texts = [words(2000), 'the cat', words(3500)]; // ~11,000 and ~19,000 tokens: answers written in slices of 8192
  const whole = await post(`${xlmrServer.url}/tokenize`, { inputs: texts });
  t.is(whole.status, 200);
  t.deepEqual(whole.json.map((tokens: Token[]) => tokens.map((x) => x.id)), (await Promise.all(texts.map((x) => post(`${xlmrServer.url}/tokenize`, { inputs: x })))).map((r) => r.json[0].map((x: Token) => x.id)));
  texts.forEach((text, i) => checkOffsets(t, text, whole.json[i]));
  const before = setSendCharacters(1000);
  try {
    const parts = await post(`${xlmrServer.url}/tokenize`, { inputs: texts });
    t.deepEqual(parts.json, whole.json);
  } finally {
    setSendCharacters(before);
  }
});

test('/tokenize with add_special_tokens false leaves out the template\'s tokens', async (t) => {
  const { status, json } = await post(`${xlmrServer.url}/tokenize`, { inputs: [NON_ASCII, ''], add_special_tokens: false });
  t.is(status, 200);
  const all = (await xlmr.tokenize([NON_ASCII]))[0];
  t.deepEqual(json[0].map((x: Token) => x.id), all.slice(1, -1));
  t.false(json[0].some((x: Token) => x.special));
  checkOffsets(t, NON_ASCII, json[0]);
  t.deepEqual(json[1], [], 'an empty text without special tokens has none');
});

test('/tokenize puts the named prompt (else the model\'s default one) before each input, offsets into the prompted text', async (t) => {
  const dir = fixtureCopy((d) =>
    editJson(path.join(d, 'config_sentence_transformers.json'), (c) => ({ ...c, prompts: { query: 'query: ', passage: 'passage: ' }, default_prompt_name: 'passage' })),
  );
  const enc = await Encoder.load(dir, { device: 'cpu', threads: 1 });
  const prompted = await serve({ encoder: enc, port: 0 });
  try {
    const query = await post(`${prompted.url}/tokenize`, { inputs: 'the cat', prompt_name: 'query' });
    t.is(query.status, 200);
    t.deepEqual(query.json[0].map((x: Token) => x.id), (await enc.tokenize(['query: the cat']))[0]);
    t.deepEqual(query.json[0].slice(1, 3).map((x: Token) => [x.text, x.start, x.stop]), [['query', 0, 5], [':', 5, 6]]);
    checkOffsets(t, 'query: the cat', query.json[0]);
    const byDefault = await post(`${prompted.url}/tokenize`, { inputs: 'the cat', prompt_name: null });
    t.deepEqual(byDefault.json[0].map((x: Token) => x.id), (await enc.tokenize(['passage: the cat']))[0]);
    // The embedding routes' task and prompt, chosen as embed() chooses: the task's prompt, or the one given.
    const byTask = await post(`${prompted.url}/tokenize`, { inputs: 'the cat', task: 'query' });
    t.deepEqual(byTask.json, query.json);
    const given = await post(`${prompted.url}/tokenize`, { inputs: 'the cat', task: 'query', prompt: 'cat ' });
    t.deepEqual(given.json[0].map((x: Token) => x.id), (await enc.tokenize(['cat the cat']))[0]);
    const both = await post(`${prompted.url}/tokenize`, { inputs: 'the cat', prompt: 'a', prompt_name: 'query' });
    t.is(both.status, 400);
    t.is(both.json.error, 'give "prompt" or "prompt_name", not both');
    const unknown = await post(`${prompted.url}/tokenize`, { inputs: 'the cat', prompt_name: 'doc' });
    t.is(unknown.status, 400);
    t.is(unknown.json.error, '"prompt_name" must be one of the model\'s prompts (query, passage)');
  } finally {
    await prompted.close();
    enc.dispose();
  }
  const none = await post(`${server.url}/tokenize`, { inputs: 'a', prompt_name: 'query' });
  t.is(none.status, 400);
  t.is(none.json.error, '"prompt_name" must be one of the model\'s prompts (it has none)');
});

const HIDDEN = 32; // the fixture's hidden size
const QUERY_LENGTH = 12;

/**
 * The fixture as the folder PyLate 1.x saves (scripts/fixtures/st_multi_vector.py --format pylate, by hand): the
 * Transformer and PyLate's Dense only, and the ColBERT settings in config_sentence_transformers.json, the markers
 * "[unused0]" / "[unused1]" two renamed vocabulary pieces.
 */
function pylateCopy(): string {
  return fixtureCopy((dir) => {
    fs.rmSync(path.join(dir, '1_Pooling'), { recursive: true });
    const vocab = fs.readFileSync(path.join(dir, 'vocab.txt'), 'utf8').split('\n').filter((w) => w);
    const renamed = new Map([[vocab[vocab.length - 2], '[unused0]'], [vocab[vocab.length - 1], '[unused1]']]);
    fs.writeFileSync(path.join(dir, 'vocab.txt'), vocab.map((w) => renamed.get(w) ?? w).join('\n') + '\n');
    editJson(path.join(dir, 'tokenizer.json'), (tk) => {
      tk.model.vocab = Object.fromEntries(Object.entries(tk.model.vocab).map(([w, id]) => [renamed.get(w) ?? w, id]));
    });
    fs.mkdirSync(path.join(dir, '1_Dense'));
    const weight = Float32Array.from({ length: 16 * HIDDEN }, (_, i) => Math.sin(i + 1) / Math.sqrt(HIDDEN));
    writeSafetensors(path.join(dir, '1_Dense', 'model.safetensors'), new Map([['linear.weight', { dtype: 'F32', shape: [16, HIDDEN], data: Buffer.from(weight.buffer) }]]));
    fs.writeFileSync(path.join(dir, '1_Dense', 'config.json'), JSON.stringify({ in_features: HIDDEN, out_features: 16, bias: false, activation_function: 'torch.nn.modules.linear.Identity' }));
    fs.writeFileSync(
      path.join(dir, 'modules.json'),
      JSON.stringify([
        { idx: 0, name: '0', path: '', type: 'sentence_transformers.models.Transformer' },
        { idx: 1, name: '1', path: '1_Dense', type: 'pylate.models.Dense.Dense' },
      ]),
    );
    fs.writeFileSync(path.join(dir, 'sentence_bert_config.json'), JSON.stringify({ max_seq_length: 40, do_lower_case: false }));
    fs.writeFileSync(
      path.join(dir, 'config_sentence_transformers.json'),
      JSON.stringify({
        prompts: {}, default_prompt_name: null, similarity_fn_name: 'MaxSim', model_type: 'ColBERT', query_prefix: '[unused0]', document_prefix: '[unused1]',
        query_length: QUERY_LENGTH, document_length: 30, attend_to_expansion_tokens: false, do_query_expansion: true,
      }),
    );
  });
}

/**
 * The ids embed() gives the model for `texts` with `task` (its prompt, a multi-vector model's query expansion): its own
 * preparation, a private method read by name.
 */
async function embeddedIds(enc: Encoder, texts: string[], task: 'query' | 'document' | undefined): Promise<number[][]> {
  const inputs = await enc['prepareTexts'](texts, task, enc.resolvePrompt(undefined, undefined, task), false);
  return inputs.map((x) => x.ids);
}

/** deepEqual for lists too long for AVA's diff (its recursion overflows the stack): the first difference, if any. */
function sameList<T>(t: import('ava').ExecutionContext, actual: T[], expected: T[]): void {
  const at = actual.findIndex((x, i) => x !== expected[i]);
  t.is(actual.length, expected.length);
  t.is(at, -1, at < 0 ? '' : `at ${at}: ${String(actual[at])}, expected ${String(expected[at])}`);
}

test('/tokenize of a multi-vector model shows what embed() gives it: the task\'s [Q] / [D] marker, and a query\'s expansion tokens', async (t) => {
  const enc = await Encoder.load(pylateCopy(), { device: 'cpu', threads: 1 });
  const mv = await serve({ encoder: enc, port: 0 });
  try {
    const texts = ['the cat sat', 'hello world'];
    const [mask, q, d] = (await enc.textTokenizer.tokenToIds(['[MASK]', '[unused0]', '[unused1]'])) as number[];
    const query = await post(`${mv.url}/tokenize`, { inputs: texts, task: 'query' });
    t.is(query.status, 200);
    const queryIds = await embeddedIds(enc, texts, 'query');
    t.deepEqual(query.json.map((tokens: Token[]) => tokens.map((x) => x.id)), queryIds);
    // [CLS] [Q] the cat sat [SEP], then [MASK] up to the query length: special, no offsets, as the template's tokens.
    const first = query.json[0] as Token[];
    t.is(first.length, QUERY_LENGTH);
    t.is(first[0].id, queryIds[0][0]);
    // The marker is prompt text: its offsets are its bytes of the prompted input, as a prompt's tokens have.
    t.deepEqual(first[1], { id: q, text: '[unused0]', special: false, start: 0, stop: 9 });
    const own = first.findIndex((x) => x.text === '[SEP]') + 1;
    t.true(own > 3 && own < QUERY_LENGTH, JSON.stringify(first));
    t.deepEqual(first.slice(own), new Array(QUERY_LENGTH - own).fill({ id: mask, text: '[MASK]', special: true, start: null, stop: null }));
    texts.forEach((text, i) => checkOffsets(t, '[unused0]' + text, query.json[i]));
    // The model's token vectors: one per token /tokenize shows (a query's, none skiplisted).
    t.deepEqual((await enc.embed(texts, { output: 'tokens', task: 'query' })).map((m) => m.dims[0]), queryIds.map((ids) => ids.length));

    const document = await post(`${mv.url}/tokenize`, { inputs: texts, task: 'document' });
    const documentIds = await embeddedIds(enc, texts, 'document');
    t.deepEqual(document.json.map((tokens: Token[]) => tokens.map((x) => x.id)), documentIds);
    t.is(documentIds[0][1], d);
    t.false(documentIds[0].includes(mask), 'a document is not expanded');
    texts.forEach((text, i) => checkOffsets(t, '[unused1]' + text, document.json[i]));

    // No task: as embed() without one, neither marker nor expansion.
    const plain = await post(`${mv.url}/tokenize`, { inputs: texts });
    t.deepEqual(plain.json.map((tokens: Token[]) => tokens.map((x) => x.id)), await embeddedIds(enc, texts, undefined));
    t.deepEqual(plain.json.map((tokens: Token[]) => tokens.map((x) => x.id)), await enc.tokenize(texts));
    // Without the template's special tokens, nothing to expand: the marker and the text only.
    const bare = await post(`${mv.url}/tokenize`, { inputs: 'the cat sat', task: 'query', add_special_tokens: false });
    t.deepEqual(bare.json[0].map((x: Token) => x.id), queryIds[0].slice(1, own - 1));
  } finally {
    await mv.close();
    enc.dispose();
  }
});

test('/tokenize of a multi-vector model made in memory expands its queries to their length, and leaves a query that long as it is', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  await makeSmallMultiVector(enc); // queries expanded to 10, no markers
  const mv = await serve({ encoder: enc, port: 0 });
  try {
    const texts = ['cat', 'hello world the cat sat hello world the cat sat'];
    const { status, json } = await post(`${mv.url}/tokenize`, { inputs: texts, task: 'query' });
    t.is(status, 200);
    const want = await embeddedIds(enc, texts, 'query');
    t.is(want[0].length, 10);
    t.deepEqual(json.map((tokens: Token[]) => tokens.map((x) => x.id)), [want[0], (await enc.tokenize([texts[1]]))[0]]);
    t.deepEqual(json[0].slice(3).map((x: Token) => [x.text, x.special]), new Array(7).fill(['[MASK]', true]));
    t.true(json[1].length > 10, 'every token of a long query, which the model cuts');
    // Longer than the first tokens the server asks the expansion rule about (8192): none added either.
    const long = Array.from({ length: 5000 }, () => 'hello world').join(' ');
    const tokens = (await post(`${mv.url}/tokenize`, { inputs: long, task: 'query' })).json[0] as Token[];
    t.is(tokens.length, 10002);
    sameList(t, tokens.map((x) => JSON.stringify(x)), (await post(`${mv.url}/tokenize`, { inputs: long })).json[0].map((x: Token) => JSON.stringify(x)));
  } finally {
    await mv.close();
    enc.dispose();
  }
  // An expansion longer than that (not a model one could run: the fixture has 40 positions): a query of 9000 tokens
  // is padded to 9500.
  const wide = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  await wide.makeMultiVector({ dimension: 12, queryLength: 9500, queryExpansion: 'fixed', attendExpansion: false, skiplist: [] }, 3);
  const wideServer = await serve({ encoder: wide, port: 0 });
  try {
    const text = Array.from({ length: 4499 }, () => 'hello world').join(' ');
    const tokens = (await post(`${wideServer.url}/tokenize`, { inputs: text, task: 'query' })).json[0] as Token[];
    const own = (await post(`${wideServer.url}/tokenize`, { inputs: text })).json[0] as Token[];
    t.is(own.length, 9000);
    const mask = (await wide.textTokenizer.tokenToId('[MASK]'))!;
    sameList(t, tokens.map((x) => JSON.stringify(x)), [...own, ...new Array(500).fill({ id: mask, text: '[MASK]', special: true, start: null, stop: null })].map((x) => JSON.stringify(x)));
  } finally {
    await wideServer.close();
    wide.dispose();
  }
});

test('/decode turns /tokenize\'s ids back into text, special tokens skipped by default and kept on request', async (t) => {
  const texts = ['hello world', NON_ASCII];
  const tokens = (await post(`${xlmrServer.url}/tokenize`, { inputs: texts })).json as Token[][];
  const ids = tokens.map((list) => list.map((x) => x.id));
  const skipped = await post(`${xlmrServer.url}/decode`, { ids });
  t.is(skipped.status, 200);
  t.is(skipped.json[0], 'hello world');
  t.is(skipped.json.length, 2);
  const kept = await post(`${xlmrServer.url}/decode`, { ids, skip_special_tokens: false });
  t.is(kept.json[0], '<s> hello world</s>');
  // The tiny vocabulary lacks 'C' and the CJK: <unk>, a special token, skipped or kept as the rest.
  t.regex(kept.json[1], /^<s> <unk>af.*<\/s>$/);
  t.false(/<s>|<unk>|<\/s>/.test(skipped.json[1]), skipped.json[1]);
  const one = await post(`${xlmrServer.url}/decode`, { ids: ids[0], skip_special_tokens: true });
  t.deepEqual(one.json, ['hello world'], 'one list alone: a list of one text');
  const bertIds = (await bert.tokenize(['hello world']))[0];
  t.deepEqual((await post(`${server.url}/decode`, { ids: bertIds, skip_special_tokens: false })).json, ['[CLS] hello world [SEP]']);
});

test('/tokenize and /decode refuse bad bodies, naming the field and the fix', async (t) => {
  const cases: [string, unknown, RegExp][] = [
    ['/tokenize', { inputs: [] }, /"inputs" is empty: send at least one text/],
    ['/tokenize', { inputs: ['a', 'b', 'c', 'd', 'e'] }, /"inputs" holds 5 texts; this server takes at most 4 per request \(maxInputs\)/],
    ['/tokenize', {}, /missing field "inputs"/],
    ['/tokenize', { inputs: 3 }, /"inputs" must be a string or an array of strings/],
    ['/tokenize', { inputs: ['a', 3] }, /"inputs\[1\]": token-id input is not supported/],
    ['/tokenize', { inputs: 'a', add_special_tokens: 'yes' }, /"add_special_tokens" must be true or false/],
    ['/tokenize', { inputs: 'a', prompt_name: 3 }, /"prompt_name" must be one of the model's prompts/],
    ['/tokenize', { inputs: 'a', truncate: true }, /unknown field "truncate" \(this route takes: inputs, add_special_tokens, task, prompt_name, prompt\)/],
    ['/tokenize', { inputs: 'a', task: 'passage' }, /"task" must be "query" or "document"/],
    ['/tokenize', { inputs: 'a', prompt: 3 }, /"prompt" must be a string/],
    ['/decode', {}, /missing field "ids": a list of token ids \(integers from 0 to 4294967295\) or an array of such lists/],
    ['/decode', { ids: 'hello' }, /"ids" must be a list of token ids/],
    ['/decode', { ids: [] }, /"ids" is empty: send at least one token id/],
    ['/decode', { ids: [[1], []] }, /"ids\[1\]" is empty: send at least one token id/],
    ['/decode', { ids: [[1], 2] }, /"ids\[1\]" must be a list of token ids: "ids" is one list or an array of lists, not both/],
    ['/decode', { ids: [1, [2]] }, /"ids\[1\]" must be a token id, an integer from 0 to 4294967295; got \[2\]/],
    ['/decode', { ids: [-1] }, /"ids\[0\]" must be a token id, an integer from 0 to 4294967295; got -1/],
    ['/decode', { ids: [[2, 1.5]] }, /"ids\[0\]\[1\]" must be a token id.*got 1\.5/],
    ['/decode', { ids: [2 ** 32] }, /"ids\[0\]" must be a token id.*got 4294967296/],
    ['/decode', { ids: [[1], [1], [1], [1], [1]] }, /"ids" holds 5 lists; this server takes at most 4 per request \(maxInputs\)/],
    ['/decode', { ids: [1], skip_special_tokens: 1 }, /"skip_special_tokens" must be true or false/],
    ['/decode', { ids: [2, 5, 100000] }, /"ids\[2\]" is 100000, which is no token of the model's tokenizer \(its 198 tokens\): ids from another model's tokenizer\?/],
    ['/decode', { ids: [[2], [5, 4294967295]] }, /"ids\[1\]\[1\]" is 4294967295, which is no token/],
  ];
  for (const [route, body, message] of cases) {
    const r = await post(server.url + route, body);
    t.is(r.status, 400, `${route} ${JSON.stringify(body)}`);
    t.regex(r.json.error, message, `${route} ${JSON.stringify(body)}`);
  }
});

test('/tokenize and /decode use the reranker\'s tokenizer without an embedding model, and need one of the two', async (t) => {
  const reranker = await CrossEncoder.load(path.join(FIXTURES, 'tiny-cross-encoder', 'st'), { device: 'cpu', threads: 1 });
  const generator = await Generator.load(path.join(FIXTURES, 'tiny-causal-lms', 'llama'), { device: 'cpu', threads: 1 });
  const ranking = await serve({ reranker, port: 0 });
  const generating = await serve({ generator, port: 0 });
  try {
    const { status, json } = await post(`${ranking.url}/tokenize`, { inputs: 'hello world' });
    t.is(status, 200);
    const want = await reranker.textTokenizer.encode(['hello world']);
    t.deepEqual(json[0].map((x: Token) => x.id), want[0].ids);
    const task = await post(`${ranking.url}/tokenize`, { inputs: 'hello world', task: 'query' });
    t.is(task.status, 400);
    t.regex(task.json.error, /"task" chooses an embedding model's query or document side, and this server's tokenizer is its cross-encoder's: start the server with the embedding model/);
    t.is((await post(`${ranking.url}/decode`, { ids: want[0].ids })).status, 200);
    for (const route of ['/tokenize', '/decode']) {
      const r = await post(generating.url + route, route === '/tokenize' ? { inputs: 'a' } : { ids: [1] });
      t.is(r.status, 404);
      t.is(r.json.error, `${route} uses the tokenizer of the embedding model, or else the cross-encoder: start the server with one (coltrast serve --model <dir|hub id>, or --reranker <dir|hub id>)`);
    }
  } finally {
    await ranking.close();
    await generating.close();
    reranker.dispose();
    generator.dispose();
  }
});

test('disposing a model lets the worker of /tokenize and /decode drop its tokenizer too', async (t) => {
  const dir = fixtureCopy();
  const file = path.join(dir, 'tokenizer.json');
  const enc = await Encoder.load(dir, { device: 'cpu', threads: 1 });
  const s = await serve({ encoder: enc, port: 0 });
  try {
    t.is((await post(`${s.url}/tokenize`, { inputs: 'a' })).status, 200);
    t.is((await post(`${s.url}/decode`, { ids: [5] })).status, 200);
  } finally {
    await s.close();
  }
  t.true((await heldTokenizers()).includes(file));
  enc.dispose();
  t.false((await heldTokenizers()).includes(file));
});

test('/metrics counts /tokenize and /decode requests by route', async (t) => {
  const counted = await serve({ encoder: bert, port: 0 });
  try {
    await post(`${counted.url}/tokenize`, { inputs: 'a' });
    await post(`${counted.url}/decode`, { ids: [5] });
    await post(`${counted.url}/decode`, { ids: [] });
    const text = await (await fetch(`${counted.url}/metrics`)).text();
    t.regex(text, /coltrast_requests_total\{route="\/tokenize",status="200"\} 1/);
    t.regex(text, /coltrast_requests_total\{route="\/decode",status="200"\} 1/);
    t.regex(text, /coltrast_requests_total\{route="\/decode",status="400"\} 1/);
  } finally {
    await counted.close();
  }
});

// The reference: Python's tokenizers (the same Rust library) gives the ids and special tokens, and code-point offsets
// that the test turns into UTF-8 byte offsets; build/pyenv has it (scripts/setup.sh).
const PYTHON = process.env.COLTRAST_ST_PYTHON || path.join(ROOT, 'build', 'pyenv', 'bin', 'python');
const probe = fs.existsSync(PYTHON) ? spawnSync(PYTHON, ['-c', 'import tokenizers'], { encoding: 'utf8', timeout: 240_000 }) : null;
const skip = !probe
  ? `no Python at ${PYTHON}: scripts/setup.sh makes build/pyenv from this machine's wheels (or set COLTRAST_ST_PYTHON)`
  : probe.status !== 0
    ? `${PYTHON} cannot import tokenizers: ${probe.stderr.trim().split('\n').pop()}`
    : '';
const check = skip ? test.skip : test;

check(`/tokenize's ids, special tokens and byte offsets are Python tokenizers' (its offsets in bytes)${skip ? ` [skipped: ${skip}]` : ''}`, async (t) => {
  const texts = [NON_ASCII, 'naïve façade — “quoted” ß 🇫🇷 e\u0301', 'plain ascii, words'];
  const script = `
import json, sys
from tokenizers import Tokenizer
texts = json.loads(sys.argv[2])
out = []
for text in texts:
    e = Tokenizer.from_file(sys.argv[1]).encode(text)
    out.append([[i, m == 1, tok, None if m == 1 else len(text[:s].encode()), None if m == 1 else len(text[:p].encode())]
                for i, m, tok, (s, p) in zip(e.ids, e.special_tokens_mask, e.tokens, e.offsets)])
print(json.dumps(out))
`;
  for (const dir of [FIXTURE, XLMR, ROBERTA]) {
    const python = spawnSync(PYTHON, ['-c', script, path.join(dir, 'tokenizer.json'), JSON.stringify(texts)], { encoding: 'utf8', timeout: 240_000 });
    t.is(python.status, 0, python.stderr);
    const want = JSON.parse(python.stdout) as [number, boolean, string, number | null, number | null][][];
    const enc = dir === FIXTURE ? bert : dir === XLMR ? xlmr : await Encoder.load(dir, { device: 'cpu', threads: 1 });
    const s = enc === bert ? server : enc === xlmr ? xlmrServer : await serve({ encoder: enc, port: 0 });
    try {
      const { json } = await post(`${s.url}/tokenize`, { inputs: texts });
      const got = (json as Token[][]).map((tokens) => tokens.map((x) => [x.id, x.special, x.special ? x.text : null, x.start, x.stop]));
      t.deepEqual(got, want.map((tokens) => tokens.map(([id, special, token, start, stop]) => [id, special, special ? token : null, start, stop])), path.basename(dir));
      texts.forEach((text, i) => checkOffsets(t, text, json[i]));
    } finally {
      if (s !== server && s !== xlmrServer) await s.close();
      if (enc !== bert && enc !== xlmr) enc.dispose();
    }
  }
});

/** A text of ~400,000 characters (~2.5 s to tokenize with offsets on the development VM). */
const HUGE = Array.from({ length: 400_000 / 12 }, (_, i) => ['hello world ', 'the cat sat '][i % 2]).join('');

// Serial: before this file's other tests, whose requests would share the tokenizers and the cores with it.
test.serial('a /tokenize whose client went away before its turn on the worker is not tokenized', async (t) => {
  const s = await serve({ encoder: bert, port: 0 });
  const send = (inputs: string, signal?: AbortSignal) => fetch(`${s.url}/tokenize`, { method: 'POST', body: JSON.stringify({ inputs }), headers: { 'Content-Type': 'application/json' }, signal });
  try {
    await post(`${s.url}/tokenize`, { inputs: 'warm up' });
    // The first request's tokenizing must outlast the 300 ms wait below, within which the four others are sent: HUGE
    // repeated to take about a second on this machine (one HUGE took 2.5 s on the development VM some days and 0.18 s on
    // others; then two requests were answered within the wait, before their clients went away).
    const once = performance.now();
    await post(`${s.url}/tokenize`, { inputs: HUGE });
    const text = HUGE.repeat(Math.min(8, Math.max(1, Math.ceil(1000 / (performance.now() - once)))));
    const started = performance.now();
    const first = send(text).then(async (res) => {
      await res.body?.cancel();
      return performance.now() - started;
    });
    // Four more behind it, whose clients go away while the first one is tokenized, then a short one.
    const gone = new AbortController();
    const abandoned = [1, 2, 3, 4].map(() => send(text, gone.signal).then(() => 'answered', (e: Error) => e.name));
    await new Promise((resolve) => setTimeout(resolve, 300));
    gone.abort();
    const short = await post(`${s.url}/tokenize`, { inputs: 'the cat' });
    const shortDone = performance.now() - started;
    t.is(short.status, 200);
    const firstDone = await first;
    t.deepEqual(await Promise.all(abandoned), new Array(4).fill('AbortError'));
    t.log(`the first huge /tokenize: ${firstDone.toFixed(0)} ms; the short one after four abandoned: ${shortDone.toFixed(0)} ms`);
    // Tokenized for nobody, the four would have come first: ~3 times the first one's time (they are not written).
    t.true(shortDone < firstDone * 2, `the short /tokenize took ${shortDone.toFixed(0)} ms, behind one of ${firstDone.toFixed(0)} ms`);
  } finally {
    await s.close();
  }
});

// Serial: before this file's other tests, whose requests would share the tokenizers and the cores with it.
test.serial('huge /tokenize requests do not hold up the other routes\' tokenizing: an /embed meanwhile waits far less than one of them takes', async (t) => {
  // /tokenize is untruncated, so a client can send millions of characters (~13 s for 2 million here). Its tokenizing
  // goes to a worker of its own, a request at a time. On the models' worker, four at once took all of libuv's pool
  // (the worker tokenizes on it, and the models' calls run on it), and a one-text /embed waited for them: 42 s behind
  // four of 2 million characters (one alone held the worker ~2 s, while it made the offsets). On a worker of its own
  // without the one-at-a-time, this test's /embed still waited 2.4 s, as long as one of the /tokenize requests.
  const s = await serve({ encoder: bert, port: 0 });
  const big = HUGE;
  /** Milliseconds to a /tokenize's status (its tokens are made by then); the body is not read. */
  const tokenize = async () => {
    const started = performance.now();
    const res = await fetch(`${s.url}/tokenize`, { method: 'POST', body: JSON.stringify({ inputs: big }), headers: { 'Content-Type': 'application/json' } });
    t.is(res.status, 200);
    await res.body?.cancel();
    return performance.now() - started;
  };
  const embed = async () => {
    const started = performance.now();
    t.is((await post(`${s.url}/embed`, { inputs: 'the cat sat' })).status, 200);
    return performance.now() - started;
  };
  try {
    await embed();
    await post(`${s.url}/tokenize`, { inputs: 'warm up' });
    const alone = await tokenize(); // the same-run baseline: one huge /tokenize, nothing else running
    let answered = false;
    const four = Promise.all([tokenize(), tokenize(), tokenize(), tokenize()]).finally(() => (answered = true));
    const waits: number[] = [];
    while (!answered) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      waits.push(await embed());
    }
    await four;
    const worst = Math.max(...waits);
    t.log(`one /tokenize of ${big.length} characters: ${alone.toFixed(0)} ms; /embed while four ran: ${waits.length} requests, the slowest ${worst.toFixed(0)} ms`);
    t.true(waits.length > 0);
    t.true(worst < alone / 3, `an /embed waited ${worst.toFixed(0)} ms behind /tokenize requests that take ${alone.toFixed(0)} ms each`);
  } finally {
    await s.close();
  }
});

test('concurrent /tokenize and /decode requests are each answered with their own text, as when sent alone', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  const s = await serve({ encoder: enc, port: 0 });
  const post = async (route: string, body: unknown) => (await fetch(`${s.url}${route}`, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } })).json();
  try {
    const texts = Array.from({ length: 12 }, (_, i) => `text number ${i} ${'word '.repeat(i * 40)}`.trim());
    const alone: any[] = [];
    for (const inputs of texts) alone.push(await post('/tokenize', { inputs }));
    const ids = alone.map((answer) => answer[0].map((token: { id: number }) => token.id));
    const [tokenized, decoded] = await Promise.all([Promise.all(texts.map((inputs) => post('/tokenize', { inputs }))), Promise.all(ids.map((list) => post('/decode', { ids: list })))]);
    t.deepEqual(tokenized, alone);
    t.deepEqual(decoded, texts.map((text) => [text]));
  } finally {
    await s.close();
    enc.dispose();
  }
});
