// coltrast serve counts each /v1/completions and /v1/chat/completions request's prompts in the generate queue's
// prepare step, as it arrives, with its client's signal: a client gone while its huge prompt waits on the tokenizer's
// long lane leaves nothing queued, its prompt is never tokenized, and the queue and /metrics count it as cancelled;
// prompts being counted count towards maxQueue, so a flood of huge prompts is refused (503) while they are counted;
// a prompt too long for the model is still refused with a 400 naming its field, streamed or not (before a stream
// starts, not as a stream that fails).
import test from 'ava';
import path from 'node:path';
import { Encoder, Generator, serve } from '../lib';
import { FIXTURE } from './helpers/fixture';
import { longText as text, postJson as post, watchingTokenizer } from './helpers/long-texts';
import { until } from './helpers/wait';

const LLAMA = path.resolve(__dirname, 'fixtures', 'tiny-causal-lms', 'llama'); // 96 positions, a chat template
const refusal = (field: string) => `${field} is 96 tokens or more: the model's 96 positions leave no room to generate; shorten it`;

let tokenizing: Encoder;
let generator: Generator;
test.before(async () => {
  tokenizing = await Encoder.load(FIXTURE, { device: 'cpu', threads: 1 });
  generator = await Generator.load(LLAMA, { device: 'cpu', threads: 1 });
});
test.after.always(() => {
  generator?.dispose();
  tokenizing?.dispose();
});


// Serial: the long lane is the process's, and the texts sent to the tokenizer's worker are watched.
for (const [route, stream] of [['/v1/completions', false], ['/v1/chat/completions', true]] as const) {
  test.serial(`a client gone while its huge prompt waits on the tokenizer's long lane leaves nothing queued, and its prompt is never tokenized (${route}${stream ? ', streamed' : ''})`, async (t) => {
    const server = await serve({ generator, port: 0 });
    const url = `${server.url}${route}`;
    const huge = text(300_001, 2);
    const body = route === '/v1/completions' ? { prompt: huge, max_tokens: 4, stream } : { messages: [{ role: 'user', content: huge }], max_tokens: 4, stream };
    try {
      await watchingTokenizer(async (sent) => {
        const holder = tokenizing.tokenize([text(800_000, 1)]); // holds the long lane
        const client = new AbortController();
        const leaving = post(url, body, client.signal);
        await until('the prompt to be counted', () => server.stats().generate.waiting === 1, { every: 2 });
        client.abort();
        t.is(await leaving.then(() => 'answered', (e: Error) => e.name), 'AbortError');
        await until('the prompt to leave the queue', () => server.stats().generate.waiting === 0, { every: 2 });
        t.like(server.stats().generate, { calls: 0, inputs: 0, cancelled: 1 });
        await holder;
        // The long lane takes its requests in turn: once one sent after the prompt's is answered, it has had its turn.
        await tokenizing.tokenize([text(200_000, 3)]);
        t.true(sent.includes(800_000) && sent.includes(200_000), `sent: ${sent}`);
        t.deepEqual(sent.filter((n) => n > 300_000 && n < 301_000), [], 'the prompt, alone or in its chat template, was never sent to the tokenizer');
      });
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      t.regex(metrics, new RegExp(`^coltrast_requests_cancelled_total\\{route="${route.replace(/\//g, '\\/')}"\\} 1$`, 'm'));
      t.regex(metrics, /^coltrast_generations_cancelled_total 1$/m);
      // The server goes on answering.
      const short = route === '/v1/completions' ? { prompt: 'model', max_tokens: 2 } : { messages: [{ role: 'user', content: 'model' }], max_tokens: 2 };
      t.is((await post(url, short)).status, 200);
    } finally {
      await server.close();
    }
  });
}

// Serial: the long lane is the process's.
test.serial('prompts being counted count towards maxQueue: a request is refused with 503 while huge ones are counted, streamed or not; the huge ones are refused with 400 before a stream starts', async (t) => {
  const server = await serve({ generator, port: 0, maxInputs: 2, maxQueue: 2 });
  const completions = `${server.url}/v1/completions`;
  try {
    const holder = tokenizing.tokenize([text(800_000, 1)]); // holds the long lane: the huge prompts wait there
    const huge = post(completions, { prompt: [text(300_001, 2), text(300_002, 3)], max_tokens: 4, stream: true });
    await until('the huge prompts to be counted', () => server.stats().generate.waiting === 2, { every: 2 });
    const busy = /^the server is busy: 2 inputs are waiting \(maxQueue 2\); retry shortly$/;
    for (const stream of [false, true]) {
      const refused = await post(completions, { prompt: 'model', max_tokens: 2, stream });
      t.is(refused.status, 503, `stream: ${stream}`);
      t.regex(refused.json.error.message, busy, `stream: ${stream}`);
    }
    const chat = await post(`${server.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'model' }], max_tokens: 2 });
    t.is(chat.status, 503);
    t.regex(chat.json.error.message, busy);
    // Streamed, the huge request is still answered with a 400 naming the prompt, not a stream that fails.
    const { status, json, contentType } = await huge;
    t.is(status, 400);
    t.regex(contentType ?? '', /^application\/json/);
    t.is(json.error.message, refusal('"prompt[0]"'));
    await holder;
    t.like(server.stats().generate, { calls: 0, inputs: 0, waiting: 0, cancelled: 0 });
    // Room again: the same requests are answered, the streamed one as a stream.
    t.is((await post(completions, { prompt: 'model', max_tokens: 2 })).status, 200);
    const streamed = await post(completions, { prompt: 'model', max_tokens: 2, stream: true });
    t.is(streamed.status, 200);
    t.is(streamed.contentType, 'text/event-stream');
    t.true((streamed.json as string).endsWith('data: [DONE]\n\n'));
    t.like(server.stats().generate, { calls: 2, inputs: 2, waiting: 0 });
  } finally {
    await server.close();
  }
});

test('a streamed prompt too long for the model gets its 400 naming the field, not a stream; the prompts beside it are not generated', async (t) => {
  const server = await serve({ generator, port: 0 });
  const words = Array.from({ length: 300 }, () => 'model').join(' ');
  try {
    for (const [route, body, field] of [
      ['/v1/completions', { prompt: words, stream: true }, '"prompt"'],
      ['/v1/completions', { prompt: ['model', words], stream: true, stream_options: { include_usage: true } }, '"prompt[1]"'],
      ['/v1/chat/completions', { messages: [{ role: 'user', content: words }], stream: true }, '"messages" (with the chat template)'],
    ] as const) {
      const { status, json, contentType } = await post(`${server.url}${route}`, body);
      t.is(status, 400, `${route} ${field}`);
      t.regex(contentType ?? '', /^application\/json/);
      t.is(json.error.message, refusal(field));
    }
    t.like(server.stats().generate, { calls: 0, inputs: 0, waiting: 0, cancelled: 0 });
  } finally {
    await server.close();
  }
});
