/**
 * Synthetic queries for an unlabelled corpus: a decoder LLM writes queries that each document answers, and the
 * (query, document) pairs train an embedding model for that corpus's domain. This is the first step of GPL
 * (Wang et al. 2022, "GPL: Generative Pseudo Labeling for Unsupervised Domain Adaptation of Dense Retrieval"),
 * which samples 3 queries per passage (top-k 25, top-p 0.95) from a doc2query T5; coltrast's generators are
 * decoder LLMs, prompted as InPars and Promptagator prompt theirs. The pairs are what `mineHardNegatives` and
 * `train()` read: GPL's next steps are mining with a cross-encoder's scores and training with MarginMSE.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError } from './errors';
import { checkOutputFile, writeJsonLinesAtomic, writeLines, writeTextAtomic } from './files';
import { fileLines } from './data-files';
import { Encoder } from './encoder';
import { Generator, MIN_TEMPERATURE, type Prompt } from './generator';
import { checkChatFormat, formatAnswer, promptOf, readPromptFormat, type PromptFormat } from './prompt-format';
import { Index } from './search-index';
import { quantizeOption, type Device, type DType, type Quantize } from './native-model';
import { readCorpus } from './train-data';
import { booleanValue, checkOptions, invalid, numberValue, positiveInteger } from './validate';

/** The default prompt: the document, then the request; the model continues after "Query:". */
export const DEFAULT_QUERY_TEMPLATE = 'Passage: {document}\n\nA search query that this passage answers.\nQuery:';
/** With `chat`: the user's message (an instruction-tuned model answers with the query). */
export const DEFAULT_CHAT_QUERY_TEMPLATE = 'Write one search query that the passage below answers. Reply with the query only.\n\nPassage: {document}';

export interface GenerateQueriesOptions {
  /** The decoder LLM that writes the queries: a causal LM folder or hub id, or a loaded `Generator`. */
  generator: string | Generator;
  /** The documents: an array of strings or `{ text }`, a .txt file (one per line), a .jsonl or .json array of those. */
  corpus: string | readonly (string | { text: string })[];
  /** Also written here as JSONL, `{ "query", "positive" }` per line, atomically. */
  output?: string;
  /** Queries sampled per document (default 3, as GPL; at most 1000); duplicates and empty ones are dropped. */
  perDocument?: number;
  /** The prompt, with `{document}` (default: DEFAULT_QUERY_TEMPLATE, or DEFAULT_CHAT_QUERY_TEMPLATE with `chat`). */
  template?: string;
  /** The template is the user's message in the generator's chat template (an instruction-tuned model). */
  chat?: boolean;
  /** With `chat`: a system message before it. */
  system?: string;
  /**
   * A document is cut to this many of the generator's tokens in the prompt (default 256), or fewer where the
   * model's positions leave less beside the template and the query; its pair keeps it whole.
   */
  maxDocumentTokens?: number;
  /** The longest query, in tokens (default 32). */
  maxNewTokens?: number;
  /** Sampling, as `Generator.generate` (defaults: GPL's temperature 1, topK 25, topP 0.95; temperature 0 is greedy, one query per document). */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** The draws' seed (default 0): the same seed, corpus and options give the same queries. */
  seed?: number;
  /**
   * Documents per `generate()` call, each `perDocument` times: at most 4096 prompts in all (default 16, or as
   * many as that allows where perDocument is above 256).
   */
  batchSize?: number;
  device?: Device;
  dtype?: DType;
  threads?: number;
  /**
   * 'int8': the models this call loads by name (the generator, `consistency.model`) run their projections in int8 on
   * the CPU (GeneratorLoadOptions.quantize): faster, the queries a little changed. A loaded Generator or Encoder runs as
   * it was loaded. A resumed run must use the same.
   */
  quantize?: Quantize;
  /**
   * Round-trip consistency (Promptagator, Dai et al. 2022): keep a query only where this embedding model (a folder,
   * hub id or loaded `Encoder`; single- or multi-vector), searching the whole corpus, ranks the query's own
   * document within its first `k` (default 1). Drops the queries that do not single out their document.
   */
  consistency?: { model: string | Encoder; k?: number };
  /**
   * InPars' filter (Bonifacio et al. 2022): keep this fraction (0 to 1) of the queries, those the generator itself
   * finds likeliest after their prompts (the mean log-probability of a query's tokens), across the corpus. Applied
   * before `consistency`.
   */
  keepLikeliest?: number;
  /**
   * With `output`: go on from where an interrupted run with the same corpus and options stopped (its pairs so far are
   * kept beside the output, `<output>.partial` and `<output>.partial.json`, after each batch); the pairs are those of
   * an uninterrupted run. Without it a partial run there is discarded.
   */
  resume?: boolean;
  /** Called after each batch of documents. */
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface GeneratedPair {
  query: string;
  positive: string;
}

export interface GenerateQueriesResult {
  pairs: GeneratedPair[];
  /** Documents in the corpus (each text once). */
  documents: number;
  /** Queries generated, before the empty and duplicate ones were dropped. */
  generated: number;
  /** Dropped: empty after cleaning, the same as another of the document's queries, or the document itself. */
  dropped: number;
  /** With `keepLikeliest`: the queries dropped as the least likely. */
  unlikely?: number;
  /** With `consistency`: the queries dropped because the model did not rank their document within the first k. */
  inconsistent?: number;
  output?: string;
}

/**
 * The most queries per document. GPL samples 3, docTTTTTquery 40, doc2query-- 80: a larger count is a typo (1e6 would
 * ask one generate() call for millions of prompts, each tokenized and held in memory at once).
 */
export const MAX_PER_DOCUMENT = 1000;
/**
 * The most prompts in one generate() call (batchSize × perDocument), all generated together: their key-value caches
 * are held at once (4096 rows of 300-token prompts take some 150 GB for a 0.6B model in 16 bits).
 */
export const MAX_GENERATE_ROWS = 4096;

const KEYS = [
  'generator', 'corpus', 'output', 'perDocument', 'template', 'chat', 'system', 'maxDocumentTokens', 'maxNewTokens', 'temperature', 'topK', 'topP', 'seed',
  'batchSize', 'device', 'dtype', 'threads', 'quantize', 'consistency', 'keepLikeliest', 'resume', 'onProgress', 'signal',
] as const;

/**
 * A generated text as a query: its first non-empty line, without a leading "Query:" label, list marker or the
 * quotes around it, whitespace collapsed. Models often go on after the query (a second query, an answer).
 */
export function cleanQuery(text: string): string {
  if (typeof text !== 'string') throw invalid('text', 'a string (a generated text)', text);
  // A reasoning model's thoughts first (Qwen3's <think>...</think>): the query follows them; thoughts cut off by
  // maxNewTokens leave none.
  const answer = text.replace(/<think>[\s\S]*?<\/think>/g, '');
  if (answer.includes('<think>')) return '';
  const line = answer.split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
  return line
    .replace(/^(?:query|search query)\s*:\s*/i, '')
    .replace(/^(?:[-*•]|\d+[.)])\s+/, '')
    .replace(/^["'“‘«](.*)["'”’»]$/s, '$1')
    .replace(/\s+/g, ' ')
    .trim();
}

/** The prompt for one (cut) document. */
function queryPrompt(format: PromptFormat, document: string): Prompt {
  return promptOf(format, format.template.replace(/\{document\}/g, () => document));
}

/**
 * The fraction `keep` (at least one) of the pairs whose queries the generator finds likeliest after their prompts:
 * the mean log-probability of the query's tokens (after a space in a plain prompt, as the assistant's turn in a
 * chat; no end-of-sequence token), in the order they came. A cleaned query can tokenize longer than it was
 * generated; one that no longer fits the model's positions after its prompt ranks last.
 */
async function likeliestPairs(generator: Generator, pairs: GeneratedPair[], prompts: Prompt[], format: PromptFormat, keep: number): Promise<GeneratedPair[]> {
  const completions = pairs.map((p, i) => ({ prompt: prompts[i], completion: formatAnswer(format, p.query) }));
  const promptLengths = await generator.promptLengths(prompts);
  const queryLengths = await generator.completionLengths(completions.map((c) => c.completion));
  const fits = completions.flatMap((_, i) => (promptLengths[i] + queryLengths[i] <= generator.maxLength ? [i] : []));
  const sums = await generator.logLikelihood(fits.map((i) => completions[i]), { endOfSequence: false });
  const mean = pairs.map(() => -Infinity);
  fits.forEach((i, j) => (mean[i] = sums[j] / Math.max(1, queryLengths[i])));
  const count = Math.max(1, Math.round(keep * pairs.length));
  const chosen = new Set(mean.map((m, i) => [m, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, count).map(([, i]) => i));
  return pairs.filter((_, i) => chosen.has(i));
}

/** The pairs whose document `model` ranks within the first `k` of the corpus for their query. */
async function consistentPairs(pairs: GeneratedPair[], documents: string[], model: string | Encoder, k: number, load: { device: Device; threads?: number; quantize?: Quantize }): Promise<GeneratedPair[]> {
  const encoder = model instanceof Encoder ? model : await Encoder.load(model, load);
  try {
    const index = await Index.build(encoder, documents.map((text, i) => ({ id: String(i), text })));
    const ids = new Map(documents.map((d, i) => [d, String(i)]));
    const hits = await index.search(pairs.map((p) => p.query), { k: Math.min(k, documents.length) });
    return pairs.filter((p, i) => hits[i].some((h) => h.id === ids.get(p.positive)));
  } finally {
    if (!(model instanceof Encoder)) encoder.dispose();
  }
}

interface PartialState {
  done: number;
  generated: number;
  dropped: number;
  pairs: { query: string; document: number }[];
}

/**
 * A run's pairs so far, kept beside its output: `<output>.partial` (JSONL, a line per pair, appended after each
 * batch) and `<output>.partial.json` (how many documents and lines are done, written atomically after the lines), so
 * lines a crash left past the count are ignored. `key` fingerprints the corpus and options: another run's partial
 * file is refused.
 */
class PartialRun {
  private constructor(
    private readonly lines: string,
    private readonly stateFile: string,
    private readonly key: string,
    private count: number,
    readonly state: PartialState | undefined,
  ) {}

  /** The run's partial files: read back when resuming, else started empty. */
  static async open(output: string, key: string, resume: boolean): Promise<PartialRun> {
    const lines = `${output}.partial`;
    const stateFile = `${output}.partial.json`;
    fs.mkdirSync(path.dirname(path.resolve(output)), { recursive: true });
    if (!resume || !fs.existsSync(stateFile)) {
      fs.writeFileSync(lines, '');
      fs.rmSync(stateFile, { force: true });
      return new PartialRun(lines, stateFile, key, 0, undefined);
    }
    let saved: { version?: unknown; key?: unknown; done?: number; generated?: number; dropped?: number; lines?: number };
    try {
      saved = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
    } catch (error) {
      throw new ColtrastError('INVALID_ARGUMENT', `${stateFile} is not valid JSON (${(error as Error).message}): delete it and ${lines} to start again`);
    }
    if (saved.version !== 1 || saved.key !== key) {
      throw new ColtrastError('INVALID_ARGUMENT', `${stateFile} is from a run with another corpus, generator or options: resume with those, or delete it and ${lines} to start again`);
    }
    const want = saved.lines ?? 0;
    const kept: string[] = [];
    if (fs.existsSync(lines) && want > 0) {
      reading: for await (const chunk of fileLines(lines)) {
        for (const line of chunk) if (kept.push(line) >= want) break reading;
      }
    }
    if (kept.length !== saved.lines) throw new ColtrastError('INVALID_ARGUMENT', `${lines} has fewer lines than ${stateFile} counts: delete both to start again`);
    // Lines past the count (a crash between the two writes) go.
    await writeLines(lines, kept);
    const state = { done: saved.done ?? 0, generated: saved.generated ?? 0, dropped: saved.dropped ?? 0, pairs: kept.map((l) => JSON.parse(l)) };
    return new PartialRun(lines, stateFile, key, kept.length, state);
  }

  add(pairs: { query: string; document: number }[], progress: { done: number; generated: number; dropped: number }): void {
    if (pairs.length > 0) fs.appendFileSync(this.lines, pairs.map((p) => `${JSON.stringify(p)}\n`).join(''));
    this.count += pairs.length;
    writeTextAtomic(this.stateFile, JSON.stringify({ version: 1, key: this.key, ...progress, lines: this.count }));
  }

  remove(): void {
    fs.rmSync(this.lines, { force: true });
    fs.rmSync(this.stateFile, { force: true });
  }
}

/** Writes queries for each document of a corpus with a decoder LLM, as (query, document) training pairs. */
export async function generateQueries(options: GenerateQueriesOptions): Promise<GenerateQueriesResult> {
  const o = checkOptions('options', options, KEYS);
  if (!(o.generator instanceof Generator) && (typeof o.generator !== 'string' || o.generator.length === 0)) {
    throw invalid('options.generator', 'a causal LM folder, a hub id or a Generator', o.generator);
  }
  if (o.corpus === undefined) throw new ColtrastError('INVALID_ARGUMENT', 'options.corpus is required: the documents to write queries for');
  if (o.output !== undefined && (typeof o.output !== 'string' || o.output.length === 0)) throw invalid('options.output', 'a file path', o.output);
  if (o.output !== undefined) checkOutputFile(o.output, 'options.output');
  const perDocument = positiveInteger('options.perDocument', o.perDocument ?? 3);
  if (perDocument > MAX_PER_DOCUMENT) throw invalid('options.perDocument', `a positive integer up to ${MAX_PER_DOCUMENT} (queries sampled per document; GPL samples 3)`, perDocument);
  const format = readPromptFormat(o, { plain: DEFAULT_QUERY_TEMPLATE, chat: DEFAULT_CHAT_QUERY_TEMPLATE }, ['{document}']);
  const maxDocumentTokens = positiveInteger('options.maxDocumentTokens', o.maxDocumentTokens ?? 256);
  const maxNewTokens = positiveInteger('options.maxNewTokens', o.maxNewTokens ?? 32);
  const temperature = numberValue('options.temperature', o.temperature ?? 1, (x) => x === 0 || x >= MIN_TEMPERATURE, `0 (greedy) or at least ${MIN_TEMPERATURE}`);
  if (temperature === 0 && perDocument > 1) {
    throw new ColtrastError('INVALID_ARGUMENT', `options.temperature 0 is greedy decoding, which writes one query per document: set perDocument to 1, or sample (temperature > 0) for ${perDocument}`);
  }
  // Checked here, before the generator loads (and whether or not greedy decoding, which does not use them, is asked).
  const topK = o.topK ?? 25;
  if (!Number.isInteger(topK) || topK < 0 || topK >= 2 ** 31) throw invalid('options.topK', 'an integer >= 0 (0: no cut)', topK);
  const topP = o.topP ?? 0.95;
  if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) throw invalid('options.topP', 'a number in (0, 1]', topP);
  const seed = o.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw invalid('options.seed', `an integer from 0 to ${Number.MAX_SAFE_INTEGER}`, seed);
  const batchSize = positiveInteger('options.batchSize', o.batchSize ?? Math.max(1, Math.min(16, Math.floor(MAX_GENERATE_ROWS / perDocument))));
  if (batchSize * perDocument > MAX_GENERATE_ROWS) {
    throw new ColtrastError(
      'INVALID_ARGUMENT',
      `options.batchSize ${batchSize} × options.perDocument ${perDocument} is ${batchSize * perDocument} prompts in one generate() call, past the limit of ${MAX_GENERATE_ROWS} (all are generated together, in memory at once): set batchSize to ${Math.floor(MAX_GENERATE_ROWS / perDocument)} or less`,
    );
  }
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalid('options.onProgress', 'a function', o.onProgress);
  const documents = await readCorpus(o.corpus as Parameters<typeof readCorpus>[0]);
  if (documents.length === 0) throw new ColtrastError('INVALID_ARGUMENT', 'options.corpus has no documents');
  // Each batch is seeded with seed + its first document's index, which generate() takes up to 2^53 - 1.
  const lastStart = Math.floor((documents.length - 1) / batchSize) * batchSize;
  if (seed > Number.MAX_SAFE_INTEGER - lastStart) {
    throw invalid('options.seed', `an integer from 0 to ${Number.MAX_SAFE_INTEGER - lastStart} for ${documents.length} documents (each batch is seeded with seed + its first document's index)`, seed);
  }
  const consistency = o.consistency === undefined ? undefined : checkOptions('options.consistency', o.consistency, ['model', 'k'] as const);
  if (consistency && !(consistency.model instanceof Encoder) && (typeof consistency.model !== 'string' || consistency.model.length === 0)) {
    throw invalid('options.consistency.model', 'an embedding model folder, a hub id or an Encoder', consistency.model);
  }
  const consistencyK = consistency ? positiveInteger('options.consistency.k', consistency.k ?? 1) : 0;
  const resume = booleanValue('options.resume', o.resume ?? false);
  if (resume && o.output === undefined) throw invalid('options.resume', 'absent without options.output (the partial run is kept beside the output)', o.resume);
  const keepLikeliest = o.keepLikeliest === undefined ? undefined : numberValue('options.keepLikeliest', o.keepLikeliest, (x) => x > 0 && x <= 1, 'a fraction above 0 and at most 1');
  const quantize = quantizeOption(o.quantize);
  if (quantize !== undefined && o.generator instanceof Generator && (!consistency || consistency.model instanceof Encoder)) {
    throw new ColtrastError('INVALID_ARGUMENT', "options.quantize applies to the models generateQueries loads by name; load the Generator (and Encoder) with { quantize: 'int8' } instead");
  }
  const int8 = quantize !== undefined ? { quantize } : {};

  const own = !(o.generator instanceof Generator);
  const generator = own
    ? await Generator.load(o.generator as string, { device: o.device ?? 'auto', ...(o.dtype !== undefined && { dtype: o.dtype }), ...(o.threads !== undefined && { threads: o.threads }), ...int8 })
    : (o.generator as Generator);
  try {
    checkChatFormat(format, generator);
    // A generator loaded here answers without thinking first where its template can (Qwen3's enable_thinking);
    // a Generator passed in keeps its own chatTemplateKwargs.
    if (own) generator.chatTemplateKwargs = { enable_thinking: false, ...generator.chatTemplateKwargs };
    // The document's share of the positions: what the prompt around it and the query leave (2 tokens spare,
    // since a document's first and last tokens may merge with the template's), at most maxDocumentTokens.
    const [frame] = await generator.promptLengths([queryPrompt(format, '')]);
    const room = generator.maxLength - frame - maxNewTokens - 2;
    if (room < 1) {
      throw new ColtrastError(
        'INVALID_ARGUMENT',
        `${generator.modelDir} takes ${generator.maxLength} positions: the prompt without its document (${frame} tokens) and maxNewTokens (${maxNewTokens}) leave no room for the document; shorten the template or lower maxNewTokens`,
      );
    }
    const documentTokens = Math.min(maxDocumentTokens, room);
    const promptsOf = async (texts: string[]) => (await generator.cutTexts(texts, documentTokens)).map((d) => queryPrompt(format, d));
    // With an output file, each batch's pairs are kept as they come (PartialRun), so an interrupted run resumes.
    // The hash of JSON.stringify([documents, ...settings]), fed a document at a time (the whole string of a corpus past
    // ~512 MiB cannot be made): the same bytes, so the same key as before.
    const hash = createHash('sha256').update('[[');
    documents.forEach((d, i) => hash.update(`${i > 0 ? ',' : ''}${JSON.stringify(d)}`));
    // An int8 generator, or one in another dtype than float32, writes other queries: its runs have keys of their own
    // (a float32 run's key is as it always was).
    const settings = [
      path.resolve(generator.modelDir), format.template, format.chat, format.system ?? null, perDocument, documentTokens, maxNewTokens, temperature, topK, topP, seed, batchSize,
      ...(generator.quantize !== undefined ? [generator.quantize] : []),
      ...(generator.dtype !== 'float32' ? [`dtype ${generator.dtype}`] : []),
    ];
    const key = hash.update(`],${JSON.stringify(settings).slice(1)}`).digest('hex');
    const partial = o.output === undefined ? undefined : await PartialRun.open(o.output as string, key, resume);
    const state = partial?.state ?? { done: 0, generated: 0, dropped: 0, pairs: [] };
    // Each query with its document's index; the pairs are made from them at the end.
    const found = state.pairs;
    let generated = state.generated;
    let dropped = state.dropped;
    o.onProgress?.(state.done, documents.length);
    for (let start = state.done; start < documents.length; start += batchSize) {
      const batch = documents.slice(start, start + batchSize);
      const batchPrompts = await promptsOf(batch);
      const rows = batchPrompts.flatMap((prompt) => Array.from({ length: perDocument }, () => prompt));
      // Each batch its own seed (the seed plus its first document's index), so that batches do not all start from
      // the same draws; the same corpus, options and seed give the same queries.
      const out = await generator.generate(rows, {
        maxNewTokens,
        temperature,
        ...(temperature > 0 && { topK, topP }),
        seed: seed + start,
        batchSize: rows.length,
        ...(o.signal !== undefined && { signal: o.signal as AbortSignal }),
      });
      const added: { query: string; document: number }[] = [];
      batch.forEach((document, d) => {
        const seen = new Set<string>([document.trim().toLowerCase()]);
        for (let k = 0; k < perDocument; k++) {
          generated++;
          const query = cleanQuery(out[d * perDocument + k].text);
          const folded = query.toLowerCase();
          if (!query || seen.has(folded)) {
            dropped++;
            continue;
          }
          seen.add(folded);
          added.push({ query, document: start + d });
        }
      });
      found.push(...added);
      const done = Math.min(start + batchSize, documents.length);
      partial?.add(added, { done, generated, dropped });
      o.onProgress?.(done, documents.length);
    }
    const pairs: GeneratedPair[] = found.map((f) => ({ query: f.query, positive: documents[f.document] }));
    if (pairs.length === 0) {
      throw new ColtrastError('INVALID_ARGUMENT', `${generator.modelDir} wrote no usable query for any of the ${documents.length} documents (all empty or repeats): check the template and the model`);
    }
    let kept = pairs;
    if (keepLikeliest !== undefined) {
      // Each pair's prompt again (its document cut as it was for generation), each document's once.
      const used = [...new Set(found.map((f) => f.document))];
      const byDocument = new Map((await promptsOf(used.map((d) => documents[d]))).map((prompt, i) => [used[i], prompt]));
      kept = await likeliestPairs(generator, pairs, found.map((f) => byDocument.get(f.document)!), format, keepLikeliest);
    }
    const likely = kept.length;
    if (consistency) {
      kept = await consistentPairs(kept, documents, consistency.model as string | Encoder, consistencyK, { device: o.device ?? 'auto', ...(o.threads !== undefined && { threads: o.threads }), ...int8 });
      if (kept.length === 0) {
        throw new ColtrastError('INVALID_ARGUMENT', `options.consistency: the model ranked no query's document within its first ${consistencyK}; raise k, or check the generator's queries`);
      }
    }
    if (o.output !== undefined) await writeJsonLinesAtomic(o.output as string, kept);
    partial?.remove();
    return {
      pairs: kept,
      documents: documents.length,
      generated,
      dropped,
      ...(keepLikeliest !== undefined && { unlikely: pairs.length - likely }),
      ...(consistency && { inconsistent: likely - kept.length }),
      ...(o.output !== undefined && { output: o.output as string }),
    };
  } finally {
    if (own) generator.dispose();
  }
}
