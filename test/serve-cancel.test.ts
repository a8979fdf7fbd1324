// coltrast serve: a client that goes away before its answer takes its queued work with it. BatchQueue drops a
// request whose signal aborts (deterministically, call by call: waiting, mid-call, its later pieces), and over HTTP
// abandoned requests on every batched route leave the queues empty with their texts unembedded, counted in
// /metrics, while the clients that stay get their own answers. Assertions are on the queue gauges and on the inputs
// the model calls took, never on timings; waits are for conditions, not fixed sleeps.
import test from 'ava';
import http from 'node:http';
import path from 'node:path';
import { CrossEncoder, Encoder, Index, serve, type Server } from '../lib';
import { FIXTURE, maxAbsDiff } from './helpers/fixture';
import { heldQueue, tick } from './helpers/queue';
import { rows } from './helpers/vectors';
import { until } from './helpers/wait';

const CE = path.resolve(__dirname, 'fixtures', 'tiny-cross-encoder', 'st');

let enc: Encoder;
let ce: CrossEncoder;
test.before(async () => {
  enc = await Encoder.load(FIXTURE, { device: 'cpu' });
  ce = await CrossEncoder.load(CE, { device: 'cpu' });
});
test.after.always(() => {
  enc?.dispose();
  ce?.dispose();
});

test('BatchQueue: a request whose signal aborts leaves the queue; a call under way still answers the others in it', async (t) => {
  const { queue, calls, release } = heldQueue(4, 100);
  const signals = Array.from({ length: 5 }, () => new AbortController());
  const outcome = (p: Promise<number[]>) => p.then((out) => out, (e: { status?: number; message: string }) => `${e.status}: ${e.message}`);
  const a = outcome(queue.submit('k', [1], signals[0].signal)); // starts a call at once
  const b = outcome(queue.submit('k', [2, 3], signals[1].signal));
  const c = queue.submit('k', [4]);
  const d = outcome(queue.submit('k', [5, 6, 7, 8, 9, 10], signals[2].signal)); // two pieces
  await tick();
  t.deepEqual(calls, [[1]]);
  t.is(queue.stats().waiting, 10);
  // a's client goes while a runs: its input is in the call already, so nothing leaves the queue.
  signals[0].abort();
  t.is(await a, '499: the client went away before its answer was ready');
  t.like(queue.stats(), { waiting: 10, cancelled: 0 });
  release();
  await tick();
  t.deepEqual(calls[1], [2, 3, 4], 'b and c share a call');
  // b's client goes during the call it shares with c: c gets its own output, not b's.
  signals[1].abort();
  release();
  t.deepEqual(await c, [40]);
  t.is(await b, '499: the client went away before its answer was ready');
  await tick();
  t.deepEqual(calls[2], [5, 6, 7, 8], "d's first piece");
  // e waits behind it; d's client goes mid-call (its second piece, [9, 10], never runs), then e's (never runs).
  const e = outcome(queue.submit('k', [11, 12], signals[3].signal));
  t.is(queue.stats().waiting, 8);
  signals[2].abort();
  t.like(queue.stats(), { waiting: 6, cancelled: 2 }, "d's second piece is gone; its first is in the call");
  signals[3].abort();
  t.like(queue.stats(), { waiting: 4, cancelled: 4 });
  t.is(await e, '499: the client went away before its answer was ready');
  release();
  t.is(await d, '499: the client went away before its answer was ready');
  await tick();
  t.is(calls.length, 3, 'no call for the inputs of clients that went away');
  // A signal aborted before submit: refused at once, nothing queued.
  signals[4].abort();
  t.is(await outcome(queue.submit('k', [13], signals[4].signal)), '499: the client went away before its answer was ready');
  t.deepEqual(queue.stats(), { calls: 3, inputs: 8, largestCall: 4, waiting: 0, cancelled: 4 });
  // The queue goes on.
  const f = queue.submit('k', [14]);
  await tick();
  release();
  t.deepEqual(await f, [140]);
});

/** A POST whose client goes away when `abandon()` is called (its socket destroyed), before any answer. */
function abandoned(url: string, route: string, body: unknown): { abandon: () => void; answered: Promise<boolean> } {
  const req = http.request(`${url}${route}`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json' } });
  const answered = new Promise<boolean>((resolve) => {
    req.on('response', () => resolve(true));
    req.on('error', () => resolve(false)); // the socket destroyed
    req.on('close', () => resolve(false));
  });
  req.end(JSON.stringify(body));
  return { abandon: () => req.destroy(), answered };
}

async function post(url: string, body: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(url, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  return { status: res.status, json: await res.json() };
}

const metric = (text: string, name: string, label: string): number => {
  const m = new RegExp(`^${name}\\{${label.replace(/[/.]/g, '\\$&')}\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
};

test('over HTTP, abandoned requests on every batched route leave the queues, unembedded; the clients that stay get their answers', async (t) => {
  const docs = ['fast search', 'a tiny bert', 'gpu kernels', 'node library', 'embedding models'].map((text, i) => ({ id: `d${i}`, text }));
  const index = await Index.build(enc, docs);
  // Calls of 4 inputs at most, and every abandoned request larger: the inputs taken plus those waiting reach the
  // total sent only once every abandoned request is in its queue (a call holds fewer than one of them).
  const logged: { path: string; status: number }[] = [];
  const server: Server = await serve({ encoder: enc, reranker: ce, index, port: 0, maxBatchTexts: 4, onRequest: (r) => logged.push(r) });
  try {
    const texts = (n: number, tag: string) => Array.from({ length: n }, (_, i) => `${tag} text number ${i} about search and models`);
    const before = server.stats();
    // Large abandoned requests on both embedding protocols fill the embed queue; small ones share calls with the
    // clients that stay (the same options: one batching key), and may be answered before their clients go.
    const gone = [
      ...Array.from({ length: 3 }, (_, i) => abandoned(server.url, '/embed', { inputs: texts(2048, `big ${i}`) })),
      abandoned(server.url, '/v1/embeddings', { input: texts(2048, 'openai') }),
      ...Array.from({ length: 6 }, (_, i) => abandoned(server.url, '/embed', { inputs: texts(5, `small ${i}`) })),
    ];
    const goneTexts = 4 * 2048 + 6 * 5;
    const stayTexts = Array.from({ length: 8 }, (_, i) => texts(3, `stay ${i}`));
    const stay = stayTexts.map((input) => post(`${server.url}/v1/embeddings`, { input }));
    const otherGone = [
      abandoned(server.url, '/rerank', { query: 'q', texts: texts(2048, 'rerank') }),
      abandoned(server.url, '/v1/rerank', { query: 'q', documents: texts(2048, 'jina') }),
      abandoned(server.url, '/search', { query: texts(2048, 'search') }),
    ];
    // Every abandoned request is in its queue, then their clients go.
    const submitted = (queue: string, total: number) => () => {
      const s = server.stats()[queue];
      return s.inputs - before[queue].inputs + s.waiting >= total;
    };
    await until('the embedding requests to be queued', submitted('embed', goneTexts + 24), { every: 2 });
    await until('the rerank requests to be queued', submitted('rerank', 2 * 2048), { every: 2 });
    await until('the search request to be queued', submitted('search', 2048), { every: 2 });
    for (const r of [...gone, ...otherGone]) r.abandon();
    await Promise.all([...gone, ...otherGone].map((r) => r.answered));

    // The clients that stayed get embed()'s vectors (to float rounding: their batches padded otherwise).
    const answers = await Promise.all(stay);
    for (const [i, answer] of answers.entries()) {
      t.is(answer.status, 200);
      const expected = rows(await enc.embed(stayTexts[i]));
      answer.json.data.forEach((d: { embedding: number[] }, j: number) => t.true(maxAbsDiff(d.embedding, expected[j]) < 1e-5));
    }

    // The queues empty without running the abandoned texts: what the model took plus what was dropped is what was
    // sent, every input once, and most of the abandoned ones were dropped.
    await until('the queues to empty', () => Object.values(server.stats()).every((s) => s.waiting === 0), { every: 2 });
    const text = await (await fetch(`${server.url}/metrics`)).text();
    for (const queue of ['embed', 'rerank', 'search']) t.is(metric(text, 'coltrast_queue_inputs', `queue="${queue}"`), 0, `${queue}'s gauge`);
    const after = server.stats();
    for (const [queue, sent, dropped] of [
      ['embed', goneTexts + 24, goneTexts / 2],
      ['rerank', 2 * 2048, 2048],
      ['search', 2048, 1024],
    ] as const) {
      const took = after[queue].inputs - before[queue].inputs;
      const cancelled = after[queue].cancelled - before[queue].cancelled;
      t.is(took + cancelled, sent, `${queue}: each input ran or was dropped, once`);
      t.true(cancelled > dropped, `${queue}: ${cancelled} of ${sent} inputs dropped unrun`);
      t.is(metric(text, 'coltrast_queue_cancelled_inputs_total', `queue="${queue}"`), after[queue].cancelled);
    }
    // Each abandoned request is counted as cancelled (status 499 in onRequest's log), unless it was answered before
    // its client went (a small one can be); the large ones all were cancelled.
    const cancelledOn = (route: string) => logged.filter((r) => r.path === route && r.status === 499).length;
    t.true(cancelledOn('/embed') >= 3);
    t.is(logged.filter((r) => r.path === '/embed').length, 9, 'each abandoned /embed request logged once');
    for (const route of ['/embed', '/v1/embeddings', '/rerank', '/v1/rerank', '/search']) {
      t.is(metric(text, 'coltrast_requests_cancelled_total', `route="${route}"`), cancelledOn(route), route);
      if (route !== '/embed') t.is(cancelledOn(route), 1, route);
    }
    t.is(metric(text, 'coltrast_requests_total', 'route="/v1/embeddings",status="200"'), 8, 'answered requests alone count as answered');

    // A request after them runs alone: its one text is all the model takes.
    const last = server.stats().embed;
    const one = await post(`${server.url}/embed`, { inputs: ['one text after them'] });
    t.is(one.status, 200);
    t.true(maxAbsDiff(one.json[0], rows(await enc.embed(['one text after them']))[0]) < 1e-6);
    t.like(server.stats().embed, { inputs: last.inputs + 1, calls: last.calls + 1, waiting: 0 });
  } finally {
    await server.close();
  }
});

test('onRequest logs an abandoned request with status 499', async (t) => {
  const logged: { path: string; status: number }[] = [];
  let seen: () => void = () => {};
  const done = new Promise<void>((resolve) => (seen = resolve));
  const server = await serve({
    encoder: enc,
    port: 0,
    maxBatchTexts: 16,
    onRequest: (r) => {
      logged.push({ path: r.path, status: r.status });
      if (r.status === 499) seen();
    },
  });
  try {
    const r = abandoned(server.url, '/embed', { inputs: Array.from({ length: 2048 }, (_, i) => `text ${i}`) });
    await until('the request to be queued', () => server.stats().embed.waiting > 0, { every: 2 });
    r.abandon();
    await done;
    t.deepEqual(logged, [{ path: '/embed', status: 499 }]);
  } finally {
    await server.close();
  }
});
