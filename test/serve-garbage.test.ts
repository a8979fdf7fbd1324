// coltrast serve given garbage: every route's valid request body mutated one field at a time (wrong types, empty,
// huge and nested values), bodies that are not objects, and bodies that are not JSON. Each answer is a 4xx with an
// error or a 200 (a value the route takes), never a 5xx or a dropped connection, and the server keeps serving.
// test/serve.test.ts checks each refusal's message; this checks that none is missed.
import test from 'ava';
import path from 'node:path';
import { CrossEncoder, Encoder, Generator, Index, Rag, serve } from '../lib';
import { FIXTURE } from './helpers/fixture';

const FIXTURES = path.resolve(__dirname, 'fixtures');
const GARBAGE: [string, unknown][] = [
  ['null', null], ['0', 0], ['-1', -1], ['1.5', 1.5], ['1e300', 1e300], ['2^53', 2 ** 53], ["''", ''], ["'x'", 'x'], ['true', true], ['{}', {}],
  ['[]', []], ['[1,2]', [1, 2]], ['[[1]]', [[1]]], ['[null]', [null]], ['["a",3]', ['a', 3]], ['a long text', 'w '.repeat(5000)], ['nested', { a: { b: [1] } }],
];
// A valid body per route, every field it takes set.
const BODIES: Record<string, Record<string, unknown>> = {
  '/v1/embeddings': { input: ['hello', 'world'], model: 'm', encoding_format: 'float', dimensions: 8, user: 'u' },
  '/embed': { inputs: ['hello'], normalize: true, truncate: true, truncation_direction: 'Right' },
  '/embed_all': { inputs: ['hello'] },
  '/rerank': { query: 'q', texts: ['a', 'b'], raw_scores: false, return_text: true, truncate: true },
  '/similarity': { inputs: { source_sentence: 'q', sentences: ['a', 'b'] }, parameters: { truncate: true, truncation_direction: 'Right' } },
  '/tokenize': { inputs: ['hello', 'wörld 😀'], add_special_tokens: true, prompt_name: null },
  '/decode': { ids: [[2, 5, 3], [7]], skip_special_tokens: false },
  '/v1/rerank': { query: 'q', documents: ['a', 'b'], top_n: 1, return_documents: true, model: 'm' },
  '/search': { query: 'hello', k: 2, mode: 'dense', rerank: 'maxsim', filter: { id: 'a' }, mmr_lambda: 0.5, fusion: 'rrf', hybrid_weight: 0.5, candidates: 4 },
  '/documents': { documents: [{ id: 'z', text: 'new doc', metadata: { a: 1 } }] },
  '/documents/delete': { ids: ['z'] },
  '/documents/get': { ids: ['a'] },
  '/v1/chat/completions': { messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, temperature: 0, top_p: 1, top_k: 1, seed: 1, stop: ['x'], stream: false },
  '/v1/completions': { prompt: 'hi', max_tokens: 2, temperature: 0, stream: false, stop: 'x' },
  '/ask': { question: 'what?', k: 2, max_new_tokens: 2, num_beams: 1 },
};

test('garbage request bodies on every route: 4xx or 200, never a 5xx, and the server keeps serving', async (t) => {
  const enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  const reranker = await CrossEncoder.load(path.join(FIXTURES, 'tiny-cross-encoder', 'st'), { device: 'cpu' });
  const generator = await Generator.load(path.join(FIXTURES, 'tiny-causal-lms', 'llama'), { device: 'cpu' });
  const corpus = ['hello world', 'a cat', 'the dog'];
  const index = await Index.build(enc, corpus.map((text, i) => ({ id: 'abc'[i], text })), { lateInteraction: true });
  const rag = await Rag.create({ retriever: enc, generator, corpus });
  const server = await serve({ encoder: enc, reranker, index, generator, rag, port: 0, writable: true, modelName: 'm' });
  try {
    const failures: string[] = [];
    const statuses = new Map<number, number>();
    const post = async (route: string, body: string, label: string) => {
      try {
        const response = await fetch(server.url + route, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(30_000) });
        const text = await response.text();
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        if (response.status >= 500 || (response.status !== 200 && !/"error"/.test(text))) failures.push(`${label}: ${response.status} ${text.slice(0, 200)}`);
        return response.status;
      } catch (error) {
        failures.push(`${label}: ${(error as Error).message}`);
        return 0;
      }
    };
    for (const [route, body] of Object.entries(BODIES)) {
      t.is(await post(route, JSON.stringify(body), `${route} valid`), 200, `${route}: the valid body is answered`);
      for (const key of Object.keys(body)) {
        for (const [label, value] of GARBAGE) await post(route, JSON.stringify({ ...body, [key]: value }), `${route} ${key}=${label}`);
      }
      for (const [label, value] of GARBAGE) await post(route, JSON.stringify(value), `${route} body ${label}`);
      for (const raw of ['', '{', '"', '{"a":1}{', '\u0000', '['.repeat(10_000)]) await post(route, raw, `${route} body ${JSON.stringify(raw.slice(0, 8))}`);
    }
    t.deepEqual(failures, []);
    const refused = [...statuses].filter(([status]) => status >= 400).reduce((sum, [, count]) => sum + count, 0);
    t.true(refused > 900, `${refused} requests refused (${JSON.stringify([...statuses])})`);
    t.is((await fetch(`${server.url}/health`)).status, 200);
    t.is(await post('/embed', JSON.stringify({ inputs: ['still here'] }), 'after'), 200);
  } finally {
    await server.close();
  }
});
