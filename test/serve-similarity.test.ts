// POST /similarity, text-embeddings-inference's route: each sentence's cosine similarity to the source sentence (a
// multi-vector model's MaxSim, source as query), against the library's Encoder.similarity() on the same vectors;
// TEI's body shape and its refusals.
import test from 'ava';
import { Encoder, serve, type Server } from '../lib';
import { FIXTURE } from './helpers/fixture';
import { makeSmallMultiVector } from './helpers/vectors';

const SOURCE = 'how are embedding models trained';
const SENTENCES = ['contrastive training of embedding models', 'a recipe for bread', 'late interaction retrieval with token vectors'];

let enc: Encoder;
let server: Server;

test.before(async () => {
  enc = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  server = await serve({ encoder: enc, port: 0, maxInputs: 4 });
});

test.after.always(async () => {
  await server?.close();
  enc?.dispose();
});

async function post(url: string, body: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(url, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
  return { status: res.status, json: await res.json() };
}

test.serial('/similarity answers each sentence\'s cosine similarity to the source sentence, as TEI does', async (t) => {
  const { status, json } = await post(`${server.url}/similarity`, { inputs: { source_sentence: SOURCE, sentences: SENTENCES } });
  t.is(status, 200);
  t.is(json.length, SENTENCES.length);
  const e = await enc.embed([SOURCE, ...SENTENCES]);
  const dim = e.dims[1];
  const source = { dims: [1, dim] as [number, number], data: e.data.slice(0, dim) };
  const others = { dims: [SENTENCES.length, dim] as [number, number], data: e.data.slice(dim) };
  const want = await enc.similarity(source, others);
  json.forEach((score: number, i: number) => t.true(Math.abs(score - want.data[i]) < 1e-6, `sentence ${i}: ${score} against ${want.data[i]}`));
  t.true(json[0] > json[1], 'the related sentence scores above the unrelated one');
});

test.serial('/similarity takes TEI\'s parameters: a prompt name the model has, truncate true', async (t) => {
  const ok = await post(`${server.url}/similarity`, { inputs: { source_sentence: SOURCE, sentences: SENTENCES.slice(0, 1) }, parameters: { truncate: true, truncation_direction: 'Right' } });
  t.is(ok.status, 200);
  t.is(ok.json.length, 1);
  const noPrompt = await post(`${server.url}/similarity`, { inputs: { source_sentence: SOURCE, sentences: ['a'] }, parameters: { prompt_name: 'nope' } });
  t.is(noPrompt.status, 400);
  t.regex(noPrompt.json.error, /"prompt_name" must be one of the model's prompts/);
});

test('/similarity refuses bodies TEI refuses, naming the field', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{ inputs: 'text' }, /"inputs" must be an object: \{"source_sentence": "\.\.\.", "sentences": \["\.\.\.", \.\.\.\]\}/],
    [{ inputs: { source_sentence: SOURCE } }, /missing field "inputs\.sentences"/],
    [{ inputs: { source_sentence: SOURCE, sentences: [] } }, /"inputs\.sentences" is empty/],
    [{ inputs: { source_sentence: 3, sentences: ['a'] } }, /"inputs\.source_sentence" must be a string/],
    [{ inputs: { source_sentence: SOURCE, sentences: 'a' } }, /"inputs\.sentences" must be an array of strings/],
    [{ inputs: { source_sentence: SOURCE, sentences: ['a', 'b', 'c', 'd'] } }, /"inputs\.sentences" holds 4 texts; this server takes at most 3/],
    [{ inputs: { source_sentence: SOURCE, sentences: ['a'], extra: 1 } }, /unknown field "extra"/],
    [{ inputs: { source_sentence: SOURCE, sentences: ['a'] }, parameters: { truncate: false } }, /"truncate": false is not supported/],
    [{ inputs: { source_sentence: SOURCE, sentences: ['a'] }, parameters: [] }, /"parameters" must be an object/],
  ];
  for (const [body, message] of cases) {
    const r = await post(`${server.url}/similarity`, body);
    t.is(r.status, 400, JSON.stringify(body));
    t.regex(r.json.error, message, JSON.stringify(body));
  }
});

test('/similarity with a multi-vector model scores the sentences by MaxSim against the source as a query', async (t) => {
  const multi = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  await makeSmallMultiVector(multi);
  const mv = await serve({ encoder: multi, port: 0 });
  try {
    const { status, json } = await post(`${mv.url}/similarity`, { inputs: { source_sentence: SOURCE, sentences: SENTENCES } });
    t.is(status, 200);
    const q = await multi.embed([SOURCE], { output: 'tokens', task: 'query' });
    const d = await multi.embed(SENTENCES, { output: 'tokens', task: 'document' });
    const want = await multi.similarity(q, d);
    json.forEach((score: number, i: number) => t.true(Math.abs(score - want.data[i]) < 1e-5, `sentence ${i}: ${score} against ${want.data[i]}`));
    const tasked = await post(`${mv.url}/similarity`, { inputs: { source_sentence: SOURCE, sentences: ['a'] }, parameters: { task: 'document' } });
    t.is(tasked.status, 400);
    t.regex(tasked.json.error, /source sentence is embedded as a query and the sentences as documents/);
  } finally {
    await mv.close();
    multi.dispose();
  }
});
