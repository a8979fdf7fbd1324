/**
 * The server's generation routes (lib/serve.ts): OpenAI's `POST /v1/chat/completions` and `POST /v1/completions`
 * over a `Generator`, streamed as server-sent events when asked (`stream: true`), and coltrast's `POST /ask` over a
 * `Rag` (ContextFlow: retrieve, generate from each document, keep the likeliest answer). Requests with the same
 * sampling settings share a model call, one generation batch at most.
 */
import { randomInt, randomUUID } from 'node:crypto';
import { ColtrastError } from './errors';
import { MIN_TEMPERATURE, type Generated, type Generator, type Prompt } from './generator';
import type { Rag, RagAnswer } from './rag';
import { BatchQueue, HttpError, fields, optional, requiredTexts, stringValue, type Body, type Route } from './serve-common';
import { booleanValue, numberValue, positiveInteger } from './validate';

export interface GenerationServing {
  generator?: Generator;
  rag?: Rag;
  generatorName?: string;
  /** Prompts one model call takes (its generation batch). */
  batchSize: number;
  maxInputs: number;
  maxQueue: number;
}

interface GenerationItem {
  prompt: Prompt;
  /** The prompt's streamed text, as it comes. */
  onText?: (text: string) => void;
  /** Aborts when the client goes away: the prompt's generation stops. */
  signal: AbortSignal;
}

/**
 * A prompt as its request hands it to the generate queue: checked there (the queue's prepare step) before it waits
 * for a model call.
 */
interface PromptInput extends GenerationItem {
  /** The request's field that holds it (what a refusal names). */
  field: string;
}

interface AskItem {
  question: string;
  /** The request's field that holds it (what a refusal names). */
  field: string;
  /** Aborts when the client goes away: the question's generation stops, and it is not answered. */
  signal: AbortSignal;
}

interface Sampling {
  maxNewTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  /** null: a fresh random seed for each model call (OpenAI's behaviour); a number: that seed. */
  seed: number | null;
}

const IGNORED_IF_DEFAULT: [string, unknown][] = [
  ['frequency_penalty', 0],
  ['presence_penalty', 0],
  ['n', 1],
  ['logprobs', false],
  ['echo', false],
];

/** OpenAI's fields that coltrast takes at their default only: anything else is refused, not silently ignored. */
function defaultsOnly(body: Body): void {
  for (const [key, value] of IGNORED_IF_DEFAULT) {
    const given = body[key];
    if (given !== undefined && given !== null && given !== value) throw new HttpError(400, `"${key}": ${JSON.stringify(given)} is not supported (only ${JSON.stringify(value)})`);
  }
  if (body.logit_bias !== undefined && body.logit_bias !== null && Object.keys(body.logit_bias as object).length > 0) throw new HttpError(400, '"logit_bias" is not supported');
}

function sampling(body: Body, defaultMaxTokens: number): Sampling {
  const maxTokens = optional(body, 'max_completion_tokens', positiveInteger) ?? optional(body, 'max_tokens', positiveInteger) ?? defaultMaxTokens;
  return {
    maxNewTokens: maxTokens,
    // Above 0, at least MIN_TEMPERATURE: smaller ones make the logits overflow (Generator.generate refuses them).
    temperature: optional(body, 'temperature', (n, v) => numberValue(n, v, (x) => x === 0 || (x >= MIN_TEMPERATURE && x <= 2), `a number from 0 to 2 (above 0, at least ${MIN_TEMPERATURE})`)) ?? 0,
    topP: optional(body, 'top_p', (n, v) => numberValue(n, v, (x) => x > 0 && x <= 1, 'a number in (0, 1]')) ?? 1,
    // Within what Generator.generate takes (32-bit top_k, seeds up to 2^53), so that a refusal names the request's field.
    topK: optional(body, 'top_k', (n, v) => numberValue(n, v, (x) => Number.isInteger(x) && x >= -1 && x < 2 ** 31, 'an integer >= 0 (0 or -1: no cut)')) ?? 0,
    seed: optional(body, 'seed', (n, v) => numberValue(n, v, (x) => Number.isSafeInteger(x) && x >= 0, `an integer from 0 to ${Number.MAX_SAFE_INTEGER}`)) ?? null,
  };
}

function stopStrings(body: Body): string[] {
  const stop = body.stop;
  if (stop === undefined || stop === null) return [];
  const list = typeof stop === 'string' ? [stop] : stop;
  if (!Array.isArray(list) || list.length > 4 || list.some((s) => typeof s !== 'string' || s.length === 0)) {
    throw new HttpError(400, '"stop" must be a non-empty string or an array of up to 4 of them');
  }
  return list as string[];
}

function streamOptions(body: Body): { stream: boolean; includeUsage: boolean } {
  const stream = optional(body, 'stream', booleanValue) ?? false;
  const options = body.stream_options;
  if (options === undefined || options === null) return { stream, includeUsage: false };
  if (!stream) throw new HttpError(400, '"stream_options" is for "stream": true');
  const o = fields(options, ['include_usage']);
  return { stream, includeUsage: optional(o, 'include_usage', booleanValue) ?? false };
}

/**
 * Where the text ends with `stops` applied, or -1: at the start of the first stop string to be *completed*, reading
 * the text a character at a time; of several completed by the same character, the one that starts earliest. That is
 * what the servers users compare with do: vLLM checks the text after each token (check_stop_strings in
 * vllm/v1/engine/detokenizer.py, formerly vllm/engine/output_processor/stop_checker.py: the new text and the
 * `len(stop) - 1` characters before it are searched, and the first stop string found there ends the text at its
 * start), transformers' StopStringCriteria (src/transformers/generation/stopping_criteria.py) ends generation at the
 * first token after which the text ends in a stop string, and OpenAI's API reference has the stop sequences as
 * those "where the API will stop generating further tokens". So with stops ["abcd", "c"], "xabcd" ends as "xab":
 * "c" is complete one character before "abcd" is. Deciding by character rather than by token (vLLM breaks ties
 * within one token by the list's order) makes the answer the same however the text is cut into pieces, streamed or
 * not. `searched`: the length of a prefix of `text` already searched, in which no stop string was complete.
 */
function firstStop(text: string, stops: string[], searched = 0): number {
  let start = -1;
  let end = Infinity;
  for (const stop of stops) {
    const at = text.indexOf(stop, Math.max(0, searched - stop.length + 1));
    if (at >= 0 && (at + stop.length < end || (at + stop.length === end && at < start))) {
      start = at;
      end = at + stop.length;
    }
  }
  return start;
}

/** The first position from `from` on where `text`'s end could still grow into one of `stops`, or text.length. */
function openStop(text: string, stops: string[], longest: number, from: number): number {
  for (let at = Math.max(from, text.length - longest + 1); at < text.length; at++) {
    const tail = text.slice(at);
    if (stops.some((s) => s.length > tail.length && s.startsWith(tail))) return at;
  }
  return text.length;
}

/**
 * One choice's text with `stops` applied as it comes: the same text as `finished` gives from the whole, however the
 * text is cut into pieces. Text is handed on as soon as no stop string can start in it (what could still grow into
 * one is held back); the first stop string completed ends the text at its start, and `stopped` turns true then, so
 * that the caller can stop the prompt's generation.
 */
export class StopFilter {
  private text = '';
  private given = 0;
  stopped = false;
  private readonly longest: number;

  constructor(
    private readonly stops: string[],
    private readonly onText: (text: string) => void,
  ) {
    this.longest = Math.max(0, ...stops.map((s) => s.length));
  }

  push(piece: string): void {
    if (this.stopped) return;
    const searched = this.text.length;
    this.text += piece;
    // A stop string completed now starts at or after `given`: what could still grow into one was held back.
    const at = firstStop(this.text, this.stops, searched);
    this.stopped = at >= 0;
    this.give(this.stopped ? at : openStop(this.text, this.stops, this.longest, this.given));
  }

  /** The end of generation: the rest of the text, unless a stop string ended it. */
  end(): void {
    if (!this.stopped) this.give(this.text.length);
  }

  private give(upTo: number): void {
    if (upTo > this.given) {
      this.onText(this.text.slice(this.given, upTo));
      this.given = upTo;
    }
  }
}

/** The final text of a generation with `stops` applied, and why it ended. */
export function finished(g: Generated, stops: string[]): { text: string; finishReason: 'stop' | 'length' } {
  const at = firstStop(g.text, stops);
  return at >= 0 ? { text: g.text.slice(0, at), finishReason: 'stop' } : { text: g.text, finishReason: g.finishReason };
}

function messagesOf(value: unknown): Prompt {
  if (!Array.isArray(value) || value.length === 0) throw new HttpError(400, '"messages" must be a non-empty array of { role, content }');
  return value.map((m, i) => {
    if (m === null || typeof m !== 'object' || typeof m.role !== 'string') throw new HttpError(400, `"messages[${i}]" must be an object with a "role" string`);
    let content = m.content;
    // OpenAI's content parts: text parts only.
    if (Array.isArray(content)) {
      content = content
        .map((part: unknown, j: number) => {
          const p = part as { type?: unknown; text?: unknown };
          if (p?.type !== 'text' || typeof p.text !== 'string') throw new HttpError(400, `"messages[${i}].content[${j}]": only text parts are supported`);
          return p.text;
        })
        .join('');
    }
    if (typeof content !== 'string') throw new HttpError(400, `"messages[${i}].content" must be a string (or an array of text parts)`);
    return { role: m.role, content };
  });
}

/** The routes and their queues, for the models given. */
export function generationRoutes(s: GenerationServing): {
  routes: Record<string, Route>;
  queues: Record<string, BatchQueue<unknown, unknown>>;
  counters: () => [string, string, number][];
} {
  const { generator, rag } = s;
  let cancelled = 0;
  /** `run`'s outcome, its `n` prompts or questions counted as cancelled when the client goes away before it settles. */
  const counting = async <T>(n: number, signal: AbortSignal, run: () => Promise<T>): Promise<T> => {
    const count = () => (cancelled += n);
    signal.addEventListener('abort', count, { once: true });
    try {
      return await run();
    } finally {
      signal.removeEventListener('abort', count);
    }
  };
  const generateQueue = new BatchQueue<GenerationItem, Generated, PromptInput>(
    async (key, items) => {
      const o = JSON.parse(key) as Sampling;
      return generator!.generate(
        items.map((i) => i.prompt),
        {
          maxNewTokens: o.maxNewTokens,
          temperature: o.temperature,
          topP: o.topP,
          topK: Math.max(0, o.topK),
          seed: o.seed ?? randomInt(2 ** 47),
          batchSize: s.batchSize,
          ...(items.some((i) => i.onText) && { onText: (index: number, text: string) => items[index].onText?.(text) }),
          promptSignals: items.map((i) => i.signal),
        },
      );
    },
    s.batchSize,
    s.maxQueue,
    // Each request's prompts are counted as it arrives, before the queue, rather than by generate(): a refusal names
    // the request's field, and one client's prompt too long for the model does not fail the model call it would share
    // with other clients' prompts. (The tokenizer cuts a prompt at the model's length, so a prompt that long is "at
    // least" that long.) Counted in the queue's prepare step, with the client's signal: prompts being counted count
    // towards maxQueue, and a huge one whose client goes away while it waits on the tokenizer's long lane is never
    // tokenized. Runs per request (the key groups requests by their sampling), so each input names its own field.
    async (_key, inputs, signal) => {
      const max = generator!.maxLength;
      (await generator!.promptLengths(inputs.map((i) => i.prompt), signal)).forEach((length, i) => {
        if (length === 0) throw new HttpError(400, `${inputs[i].field} has no tokens: generation needs one to start from`);
        if (length >= max) throw new HttpError(400, `${inputs[i].field} is ${max} tokens or more: the model's ${max} positions leave no room to generate; shorten it`);
      });
      return inputs.map(({ prompt, onText, signal: own }): GenerationItem => ({ prompt, onText, signal: own }));
    },
  );
  // A refusal is its question's own: when a call's questions are refused (one of one client's does not fit the
  // generator with its documents), each is answered alone, so that the refusal fails that client's request only,
  // not those of the other clients whose questions shared the call. Each question carries its client's signal: a
  // client that goes away stops its question's generation (at the next step) and its questions not begun, while the
  // other clients' questions in the call are answered.
  const askQueue = new BatchQueue<AskItem, RagAnswer | ColtrastError>(
    async (key, items) => {
      const options = JSON.parse(key) as { k: number; maxNewTokens: number; numBeams: number };
      const refusal = (error: unknown) => {
        if (error instanceof ColtrastError && error.code === 'INVALID_ARGUMENT') return error;
        throw error;
      };
      // Rag names a question by its place in the call (questions[0], alone); the client's request names it otherwise.
      const named = (error: ColtrastError, item: AskItem) => ((error.message = error.message.replace(/^questions\[\d+\]/, item.field)), error);
      const answer = (some: AskItem[]) => rag!.answerEach(some.map((i) => i.question), options, some.map((i) => i.signal));
      const all = await answer(items).catch(refusal);
      if (!(all instanceof ColtrastError)) return all;
      if (items.length === 1) return [named(all, items[0])];
      const out: (RagAnswer | ColtrastError)[] = [];
      for (const item of items) out.push(await answer([item]).then(([a]) => a, (error: unknown) => named(refusal(error), item)));
      return out;
    },
    s.batchSize,
    s.maxQueue,
    // Each request's questions are counted as it arrives, before the queue (as /v1's prompts are, generateQueue's): a
    // question that fits the generator with no document is refused here, its own request only, before a model call
    // would embed it for retrieval and tokenize it in each of its k prompts; a huge one waits on the tokenizer's long
    // lane meanwhile, not in a call that other clients' questions share.
    async (_key, items, signal) => {
      const max = rag!.generator.maxLength;
      (await rag!.questionLengths(items.map((i) => i.question), signal)).forEach((length, i) => {
        if (length >= max) {
          throw new HttpError(400, `${items[i].field} is ${max} tokens or more in /ask's prompt with no document: the generator's ${max} positions leave no room to generate; shorten it`);
        }
      });
      return items;
    },
  );
  const needGenerator = (route: string): Generator => {
    if (!generator) throw new HttpError(404, `${route} needs a causal language model: start the server with one (coltrast serve --generator <dir|hub id>)`);
    return generator;
  };
  const created = () => Math.floor(Date.now() / 1000);

  /** Generates for `prompts`, as one response or as a stream of chunks made by `chunk`. */
  const complete = async (
    body: Body,
    signal: AbortSignal,
    prompts: Prompt[],
    defaultMaxTokens: number,
    shape: {
      /** The request's field that holds prompt `index` (what a refusal names). */
      field: (index: number) => string;
      id: string;
      object: string;
      chunkObject: string;
      choice: (index: number, text: string, finishReason: string | null) => unknown;
      delta: (index: number, text: string | null, finishReason: string | null, first: boolean) => unknown;
    },
  ) => {
    defaultsOnly(body);
    optional(body, 'model', stringValue);
    optional(body, 'user', stringValue);
    const options = sampling(body, defaultMaxTokens);
    const stops = stopStrings(body);
    const { stream, includeUsage } = streamOptions(body);
    const key = JSON.stringify(options);
    const base = { id: shape.id, created: created(), model: s.generatorName };
    const usage = (out: Generated[]) => {
      const prompt = out.reduce((sum, g) => sum + g.promptTokens, 0);
      const completion = out.reduce((sum, g) => sum + g.tokenIds.length, 0);
      return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
    };
    /**
     * Each prompt's item: its text goes through a StopFilter as it comes (given on by `onText` when streamed), and the
     * first stop string completed stops its generation, as vLLM and transformers stop there; without stop strings a
     * plain request needs no text before the end. Ending a prompt this way aborts its own signal only: the client's
     * is untouched, so it counts as no cancellation, and the tokens generated so far are its usage.
     */
    const itemsFor = (onText?: (index: number, text: string) => void) =>
      prompts.map((prompt, i) => {
        if (!onText && stops.length === 0) return { filter: undefined, item: { prompt, signal } };
        const ended = new AbortController();
        const filter = new StopFilter(stops, (text) => onText?.(i, text));
        const item: GenerationItem = {
          prompt,
          signal: AbortSignal.any([signal, ended.signal]),
          onText: (text) => {
            filter.push(text);
            if (filter.stopped) ended.abort();
          },
        };
        return { filter, item };
      });
    /** The stream's events for a prompt's text, once the stream has started; text that comes before waits in `early`. */
    let streamed: ((index: number, text: string) => void) | undefined;
    const early: [number, string][] = [];
    const items = itemsFor(stream ? (i, text) => (streamed ? streamed(i, text) : early.push([i, text])) : undefined);
    let queued!: () => void;
    const lengthsChecked = new Promise<void>((resolve) => (queued = resolve));
    // The prompts are checked in the queue (its prepare step); the generations are counted as cancelled when the
    // client goes away before they end, while the prompts are counted too.
    const generated = counting(prompts.length, signal, () =>
      generateQueue.submit(key, items.map(({ item }, i) => ({ ...item, field: shape.field(i) })), signal, queued),
    );
    if (!stream) {
      const out = await generated;
      return {
        inputs: prompts.length,
        json: {
          ...base,
          object: shape.object,
          choices: out.map((g, i) => {
            const f = finished(g, stops);
            return shape.choice(i, f.text, f.finishReason);
          }),
          usage: usage(out),
        },
      };
    }
    // A stream starts once its prompts are checked: a prompt refused (400), a full queue (503) or a client gone
    // before then answers as a plain request does, not with a stream that fails.
    await Promise.race([lengthsChecked, generated]);
    return {
      events: async (send: (data: unknown) => void) => {
        const chunk = (choices: unknown[]) => send({ ...base, object: shape.chunkObject, choices });
        prompts.forEach((_, i) => chunk([shape.delta(i, null, null, true)]));
        streamed = (i, text) => chunk([shape.delta(i, text, null, false)]);
        for (const [i, text] of early.splice(0)) streamed(i, text);
        const out = await generated;
        out.forEach((g, i) => {
          const filter = items[i].filter!;
          filter.end();
          chunk([shape.delta(i, null, filter.stopped ? 'stop' : g.finishReason, false)]);
        });
        if (includeUsage) send({ ...base, object: shape.chunkObject, choices: [], usage: usage(out) });
        return prompts.length;
      },
    };
  };

  const routes: Record<string, Route> = {
    '/v1/chat/completions': {
      method: 'POST',
      style: 'openai',
      handle: async (raw, signal) => {
        const model = needGenerator('/v1/chat/completions');
        if (model.chatTemplate === undefined) {
          throw new HttpError(400, `the generator ${s.generatorName ?? model.modelDir} has no chat template (tokenizer_config.json's chat_template or chat_template.jinja): send text to /v1/completions`);
        }
        const body = fields(raw, [
          'model', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'stop', 'stream', 'stream_options',
          'n', 'user', 'frequency_penalty', 'presence_penalty', 'logit_bias', 'logprobs',
        ]);
        const messages = messagesOf(body.messages);
        return complete(body, signal, [messages], 256, {
          field: () => '"messages" (with the chat template)',
          id: `chatcmpl-${randomUUID()}`,
          object: 'chat.completion',
          chunkObject: 'chat.completion.chunk',
          choice: (index, content, finishReason) => ({ index, message: { role: 'assistant', content }, logprobs: null, finish_reason: finishReason }),
          delta: (index, content, finishReason, first) => ({
            index,
            delta: first ? { role: 'assistant', content: '' } : content === null ? {} : { content },
            logprobs: null,
            finish_reason: finishReason,
          }),
        });
      },
    },
    '/v1/completions': {
      method: 'POST',
      style: 'openai',
      handle: async (raw, signal) => {
        needGenerator('/v1/completions');
        const body = fields(raw, [
          'model', 'prompt', 'max_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'stop', 'stream', 'stream_options', 'n', 'user', 'echo',
          'logprobs', 'frequency_penalty', 'presence_penalty', 'logit_bias',
        ]);
        const prompts = requiredTexts(body, 'prompt', s.maxInputs);
        return complete(body, signal, prompts, 16, {
          field: (i) => (Array.isArray(body.prompt) ? `"prompt[${i}]"` : '"prompt"'),
          id: `cmpl-${randomUUID()}`,
          object: 'text_completion',
          chunkObject: 'text_completion',
          choice: (index, text, finishReason) => ({ index, text, logprobs: null, finish_reason: finishReason }),
          // A completion stream has no role chunk: its first event carries text already.
          delta: (index, text, finishReason, first) => (first ? { index, text: '', logprobs: null, finish_reason: null } : { index, text: text ?? '', logprobs: null, finish_reason: finishReason }),
        });
      },
    },
    '/ask': {
      method: 'POST',
      style: 'tei',
      handle: async (raw, signal) => {
        if (!rag) throw new HttpError(404, '/ask needs a generator and a corpus: start the server with them (coltrast serve --generator <dir|hub id> --corpus <file>)');
        const body = fields(raw, ['question', 'k', 'max_new_tokens', 'num_beams']);
        const questions = requiredTexts(body, 'question', s.maxInputs);
        const key = JSON.stringify({ k: optional(body, 'k', positiveInteger) ?? 4, maxNewTokens: optional(body, 'max_new_tokens', positiveInteger) ?? 64, numBeams: optional(body, 'num_beams', positiveInteger) ?? 1 });
        const field = (i: number) => (Array.isArray(body.question) ? `"question[${i}]"` : '"question"');
        const answers = await counting(questions.length, signal, () => askQueue.submit(key, questions.map((question, i) => ({ question, field: field(i), signal })), signal));
        const refused = answers.find((a): a is ColtrastError => a instanceof ColtrastError);
        if (refused) throw refused;
        return {
          inputs: questions.length,
          json: { answers: (answers as RagAnswer[]).map((a, i) => ({ question: questions[i], answer: a.answer, log_likelihood: a.logLikelihood, sources: a.sources })) },
        };
      },
    },
  };
  return {
    routes,
    queues: { generate: generateQueue as BatchQueue<unknown, unknown>, ask: askQueue as BatchQueue<unknown, unknown> },
    counters: () => [['coltrast_generations_cancelled_total', 'Prompts, and /ask questions, whose client went away before their generation ended (it stops at its next step).', cancelled]],
  };
}
