/**
 * An HTTP server for embeddings, re-ranking, search and generation: `serve()` and `coltrast serve`.
 *
 * The routes speak the two protocols clients already have: OpenAI's (`POST /v1/embeddings`, `GET /v1/models`,
 * the Jina / Cohere / vLLM `POST /v1/rerank`, and `/v1/chat/completions` and `/v1/completions` in
 * lib/serve-generation.ts) and Hugging Face's text-embeddings-inference (`POST /embed`, `/embed_all`, `/embed_sparse`, `/rerank`,
 * `/similarity`, `/tokenize`, `/decode`, `GET /info`, `/health`, `/metrics`), plus coltrast's own `POST /search` over
 * an `Index` (and, when it is writable, `/documents` and `/documents/delete` to change it; `/documents/get` to read it)
 * and `POST /ask` over a `Rag`.
 * Node's own `http` module carries them: the routes are a handful of JSON bodies and one event stream, and a
 * framework would add a dependency without removing any of the code below (validation and the wire formats are
 * ours either way).
 *
 * Requests are batched across clients (continuous batching, as text-embeddings-inference does; BatchQueue in
 * lib/serve-common.ts): texts wait in a queue while the model works, and the next model call takes every waiting
 * text that shares its options, up to `maxBatchTexts`. One client alone waits for nothing; many clients share
 * forward passes. A large request runs a piece at a time, so that small requests are not stuck behind it. A client
 * that goes away before its answer takes its waiting texts out of the queue (the pieces no model call has taken yet):
 * no work for nobody, and no room in maxQueue taken from the clients still there.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { createHash, timingSafeEqual } from 'node:crypto';
import { CrossEncoder, type PreparedPair, type ScoreActivation } from './cross-encoder';
import { Encoder, matrixRows, normalizeRow, type Matrix, type PreparedText } from './encoder';
import { SparseEncoder, type SparseVector } from './sparse-encoder';
import { ColtrastError } from './errors';
import { compileFilter } from './filter';
import { runtimeInfo } from './runtime';
import { similarityMatrix } from './similarity';
import { Index, checkIndexFolder, type Hit, type PreparedQuery, type SearchOptions } from './search-index';
import { Generator } from './generator';
import { Rag } from './rag';
import { generationRoutes } from './serve-generation';
import { booleanValue, checkOptions, invalid, nonEmptyString, numberValue, positiveInteger } from './validate';
import { BatchQueue, Cors, HttpError, checkJsonContentType, fields, optional, requiredTexts, stringValue, textList, tokenIdLists, tokenizeAnswer, ANSWER_CHUNK, jsonPieces, type AppendedTokens, type Body, type CorsOptions, type QueueStats, type Route } from './serve-common';
import type { TokenOffsets } from './tokenizer';
import { nextTurn } from './turns';

export { BatchQueue, type CorsOptions, type QueueStats } from './serve-common';

export interface ServeOptions {
  /** The embedding model: /v1/embeddings, /embed, /embed_all (and /search with `index`). */
  encoder?: Encoder;
  /** A sparse (SPLADE) encoder: /embed_sparse (and /search with an `index` built with it). */
  sparseEncoder?: SparseEncoder;
  /** A one-label cross-encoder: /rerank and /v1/rerank, and `rerank: true` in /search. */
  reranker?: CrossEncoder;
  /** An index loaded with `encoder` (or, an index of sparse vectors, with `sparseEncoder`): /search. */
  index?: Index;
  /** A causal LM: /v1/chat/completions and /v1/completions. */
  generator?: Generator;
  /** A retriever, generator and corpus (Rag.create): /ask. */
  rag?: Rag;
  /** Address to listen on (default '127.0.0.1': this machine only; '0.0.0.0' for every interface). */
  host?: string;
  /** Port (default 8080; 0: any free port, see `server.port`). */
  port?: number;
  /** When set, every route but /health needs `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /**
   * Let web pages on these origins call the server from a browser (CORS): preflights answered, and
   * Access-Control-Allow-Origin on every answer to them. Off by default: no CORS headers, and OPTIONS answered 405.
   */
  cors?: CorsOptions;
  /** Texts (or pairs, or queries) one model call takes from the queue (default 256). */
  maxBatchTexts?: number;
  /** Texts per forward pass inside a model call (default 32). */
  batchSize?: number;
  /** Texts one request may hold (default 2048, OpenAI's limit). */
  maxInputs?: number;
  /** Texts waiting in a queue before requests are refused with 503 (default 65536). */
  maxQueue?: number;
  /** Largest request body in bytes (default 16 MiB); larger ones get 413. */
  maxBodyBytes?: number;
  /** The model names responses carry (default: the model folders' names). */
  modelName?: string;
  rerankerName?: string;
  generatorName?: string;
  /** Prompts one generation call takes from the queue, generated together (default 8). */
  generationBatchSize?: number;
  /** Called after each request. */
  onRequest?: (entry: RequestLog) => void;
  /**
   * Let clients change the index: POST /documents adds or replaces documents, POST /documents/delete removes them.
   * Off by default (the routes answer 403). Searches never see half a change.
   */
  writable?: boolean;
  /** With `writable`: save the changed index to this folder, at most every `saveInterval` seconds, and at close(). */
  saveTo?: string;
  /** Seconds from a change to the save that includes it (default 10): what a crash can lose. */
  saveInterval?: number;
  /**
   * Called when a save of the index fails (it is tried again at the next change or at close()) with a ColtrastError
   * that names the folder and the reason (the original error as its `cause`); default: stderr.
   */
  onSaveError?: (error: Error) => void;
}

export interface RequestLog {
  method: string;
  path: string;
  /** The status answered; 499 (nginx's "client closed request") when the client went away before its answer. */
  status: number;
  milliseconds: number;
  /** Texts, pairs or queries the request held (0 for GET routes). */
  inputs: number;
}

export interface Server {
  /** e.g. 'http://127.0.0.1:8080' */
  readonly url: string;
  readonly port: number;
  /** Per queue ('embed', 'rerank', 'search'): how the requests were batched. */
  stats(): Record<string, QueueStats>;
  /**
   * Stops accepting connections and resolves once the requests in progress have been answered (and a writable
   * index's last changes saved). The models stay loaded. Calling it again returns the same promise.
   */
  close(): Promise<void>;
}

const SERVE_KEYS = [
  'encoder', 'sparseEncoder', 'reranker', 'index', 'generator', 'rag', 'host', 'port', 'apiKey', 'cors', 'maxBatchTexts', 'batchSize', 'maxInputs', 'maxQueue',
  'maxBodyBytes', 'modelName', 'rerankerName', 'generatorName', 'generationBatchSize', 'onRequest', 'writable', 'saveTo', 'saveInterval', 'onSaveError',
] as const;

/** onRequest's status for a request whose client went away before its answer (nothing is sent). */
const CLIENT_GONE = 499;

/** The first `dimensions` entries of `v`, normalized again if `v` was (Matryoshka truncation, as OpenAI's `dimensions`). */
function shorten(v: Float32Array, dimensions: number | undefined, renormalize: boolean): Float32Array {
  if (dimensions === undefined || dimensions === v.length) return v;
  const out = v.slice(0, dimensions);
  return renormalize ? normalizeRow(out) : out;
}

function base64(v: Float32Array): string {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64');
}

interface EmbedJob {
  output: 'pooled' | 'tokens';
  task?: 'query' | 'document';
  promptName?: string;
  prompt?: string;
  normalize?: boolean;
}

/** A /search request's options, its batch queue's key (rerank: a cross-encoder is the server's reranker). */
type SearchJob = Omit<SearchOptions, 'rerank'> & { rerank: 'none' | 'maxsim' | 'cross-encoder' };

interface Embedded {
  value: Float32Array | Matrix;
  tokens: number;
}

/**
 * Starts an HTTP server over loaded models (see the module comment for the routes). Resolves once it listens.
 * The caller keeps ownership of the models: dispose them after `close()`.
 */
export async function serve(options: ServeOptions): Promise<Server> {
  const o = checkOptions('options', options, SERVE_KEYS);
  const { encoder, sparseEncoder, reranker, index, generator, rag } = o;
  if (encoder !== undefined && !(encoder instanceof Encoder)) throw invalid('options.encoder', `an Encoder${(encoder as unknown) instanceof SparseEncoder ? ' (a SparseEncoder is options.sparseEncoder)' : ''}`, encoder);
  if (sparseEncoder !== undefined && !(sparseEncoder instanceof SparseEncoder)) throw invalid('options.sparseEncoder', 'a SparseEncoder', sparseEncoder);
  if (reranker !== undefined && !(reranker instanceof CrossEncoder)) throw invalid('options.reranker', 'a CrossEncoder', reranker);
  if (index !== undefined && !(index instanceof Index)) throw invalid('options.index', 'an Index', index);
  if (generator !== undefined && !(generator instanceof Generator)) throw invalid('options.generator', 'a Generator', generator);
  if (rag !== undefined && !(rag instanceof Rag)) throw invalid('options.rag', 'a Rag (Rag.create)', rag);
  if (!encoder && !sparseEncoder && !reranker && !generator && !rag) throw new ColtrastError('INVALID_ARGUMENT', 'serve() needs a model: options.encoder, sparseEncoder, reranker, generator or rag');
  if (index && !index.sparse && !encoder) throw new ColtrastError('INVALID_ARGUMENT', 'options.index needs options.encoder: the model the index was loaded with');
  if (index && index.sparse && !sparseEncoder) throw new ColtrastError('INVALID_ARGUMENT', "options.index holds a sparse encoder's vectors: it needs options.sparseEncoder, the model the index was loaded with");
  if (reranker && reranker.numLabels !== 1) {
    throw new ColtrastError('INVALID_ARGUMENT', `options.reranker must be a one-label cross-encoder (a relevance score); this one has ${reranker.numLabels} labels`);
  }
  const host = o.host === undefined ? '127.0.0.1' : nonEmptyString('options.host', o.host);
  const port = o.port ?? 8080;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw invalid('options.port', 'an integer port from 0 to 65535', port);
  const apiKey = o.apiKey === undefined ? undefined : nonEmptyString('options.apiKey', o.apiKey);
  // A client sends the key as one word of an HTTP header (`Bearer <key>`): one with a space, or outside printable
  // ASCII, could never match what arrives, and every request would get 401. (The key itself is not repeated here.)
  if (apiKey !== undefined && !/^[\x21-\x7e]+$/.test(apiKey)) {
    throw new ColtrastError('INVALID_ARGUMENT', 'options.apiKey must be printable ASCII without spaces or line breaks: clients send it as one word, "Authorization: Bearer <key>", and no request could match this one');
  }
  const cors = Cors.from(o.cors);
  const maxBatchTexts = positiveInteger('options.maxBatchTexts', o.maxBatchTexts ?? 256);
  const batchSize = positiveInteger('options.batchSize', o.batchSize ?? 32);
  const maxInputs = positiveInteger('options.maxInputs', o.maxInputs ?? 2048);
  const maxQueue = positiveInteger('options.maxQueue', o.maxQueue ?? 65536);
  const maxBodyBytes = positiveInteger('options.maxBodyBytes', o.maxBodyBytes ?? 16 * 2 ** 20);
  if (maxQueue < maxInputs) throw new ColtrastError('INVALID_ARGUMENT', `options.maxQueue (${maxQueue}) must be at least options.maxInputs (${maxInputs})`);
  if (o.onRequest !== undefined && typeof o.onRequest !== 'function') throw invalid('options.onRequest', 'a function', o.onRequest);
  const writable = booleanValue('options.writable', o.writable ?? false);
  if (writable && !index) throw new ColtrastError('INVALID_ARGUMENT', 'options.writable lets clients change an index: give options.index too');
  if (o.saveTo !== undefined && !writable) throw new ColtrastError('INVALID_ARGUMENT', 'options.saveTo saves the changes clients make: give options.writable: true too');
  const saveTo = o.saveTo === undefined ? undefined : path.resolve(nonEmptyString('options.saveTo', o.saveTo));
  if (saveTo !== undefined) checkIndexFolder(saveTo, 'options.saveTo');
  const saveInterval = o.saveInterval === undefined ? 10 : numberValue('options.saveInterval', o.saveInterval, (x) => x >= 0, 'a number of seconds >= 0');
  if (o.onSaveError !== undefined && typeof o.onSaveError !== 'function') throw invalid('options.onSaveError', 'a function', o.onSaveError);
  const saver = new IndexSaver(index, saveTo, saveInterval * 1000, o.onSaveError ?? ((e) => process.stderr.write(`coltrast serve: ${e.message}\n`)));
  // A name is what clients choose a model by (/v1/models' ids): an empty one names nothing.
  const name = (option: string, given: unknown, model: { modelDir: string } | undefined) => (given === undefined ? (model ? path.basename(model.modelDir) : undefined) : nonEmptyString(`options.${option}`, given));
  const modelName = name('modelName', o.modelName, encoder ?? sparseEncoder);
  const rerankerName = name('rerankerName', o.rerankerName, reranker);
  const generatorName = name('generatorName', o.generatorName, generator);
  const generation = generationRoutes({
    generator,
    rag,
    generatorName,
    batchSize: positiveInteger('options.generationBatchSize', o.generationBatchSize ?? 8),
    maxInputs,
    maxQueue,
  });

  // Each request's texts (pairs) are tokenized as it arrives, before the queue (BatchQueue's prepare), concurrently
  // with the others and with the model: a model call only pads and runs them. Tokenized inside the call, a short
  // /embed batched with four of 2 million characters waited for all their tokenizing (7.5-11 s; 7-11 ms alone).
  const embedQueue = new BatchQueue<PreparedText, Embedded, string>(
    async (key, prepared) => {
      const job = JSON.parse(key) as EmbedJob;
      const { result, tokens } = await encoder!.embedCounting({ prepared }, { ...job, batchSize });
      const values = job.output === 'pooled' ? matrixRows(result as Matrix) : (result as Matrix[]);
      return values.map((value, i) => ({ value, tokens: tokens[i] }));
    },
    maxBatchTexts,
    maxQueue,
    (key, texts, signal) => encoder!.prepare(texts, { ...(JSON.parse(key) as EmbedJob), signal }),
  );
  // A sparse encoder's texts are tokenized inside its call (SparseEncoder.encode), as a cross-encoder's pairs are.
  const sparseQueue = new BatchQueue<string, SparseVector, string>(
    async (key, texts) => sparseEncoder!.encode(texts, { ...(JSON.parse(key) as Omit<EmbedJob, 'output' | 'normalize'>), batchSize }),
    maxBatchTexts,
    maxQueue,
  );
  const rerankQueue = new BatchQueue<PreparedPair, number, [string, string]>(
    async (activation, pairs) => Array.from((await reranker!.predictPrepared(pairs, { batchSize, activation: activation as ScoreActivation })).data),
    maxBatchTexts,
    maxQueue,
    (_, pairs, signal) => reranker!.preparePairs(pairs, { signal }),
  );
  // A search's queries too (Index.prepareQueries: as the search embeds them), its call only embedding what is ready:
  // tokenized inside the call, a short /search sent after four with queries of a million characters waited 2.3 s for
  // their tokenizing (54 ms at worst now). A cross-encoder's re-ranking still tokenizes its pairs inside the call (the
  // query with each candidate: rerankCandidates).
  /** A search queue key's options, its rerank the server's cross-encoder where the key says 'cross-encoder'. */
  const searchOptions = (key: string): SearchOptions => {
    const { rerank, ...rest } = JSON.parse(key) as SearchJob;
    return { ...rest, rerank: rerank === 'cross-encoder' ? reranker : rerank };
  };
  const searchQueue = new BatchQueue<PreparedQuery, Hit[], string>(
    async (key, prepared) => index!.searchPrepared(prepared, searchOptions(key)),
    maxBatchTexts,
    maxQueue,
    (key, queries, signal) => index!.prepareQueries(queries, searchOptions(key), signal),
  );
  const writableIndex = (route: string): Index => {
    if (!index) throw new HttpError(404, `${route} needs an index: start the server with one (coltrast serve --index <dir>)`);
    if (!writable) throw new HttpError(403, `the index is read-only: start the server with options.writable (coltrast serve --writable) to let clients change it`);
    return index;
  };
  const queues: Record<string, { stats(): QueueStats }> = { embed: embedQueue, embed_sparse: sparseQueue, rerank: rerankQueue, search: searchQueue, ...generation.queues };
  const metrics = new Metrics();
  const runtime = runtimeInfo();

  const needEncoder = (route: string): Encoder => {
    if (!encoder) {
      throw new HttpError(404, sparseEncoder ? `${route} needs a dense embedding model, and this server's is a sparse (SPLADE) encoder: POST /embed_sparse for its vectors` : `${route} needs an embedding model: start the server with one (coltrast serve --model <dir|hub id>)`);
    }
    return encoder;
  };
  const needReranker = (route: string): CrossEncoder => {
    if (!reranker) throw new HttpError(404, `${route} needs a cross-encoder: start the server with one (coltrast serve --reranker <dir|hub id>)`);
    return reranker;
  };
  /** The model whose tokenizer /tokenize and /decode use: the embedding model (dense, else sparse), else the reranker (TEI serves one model). */
  const tokenizerModel = (route: string): Encoder | SparseEncoder | CrossEncoder => {
    const model = encoder ?? sparseEncoder ?? reranker;
    if (!model) throw new HttpError(404, `${route} uses the tokenizer of the embedding model, or else the cross-encoder: start the server with one (coltrast serve --model <dir|hub id>, or --reranker <dir|hub id>)`);
    return model;
  };
  /** The embedding model for a route of pooled vectors (a multi-vector model has none). */
  const pooledEncoder = (route: string): Encoder => {
    const enc = needEncoder(route);
    if (enc.multiVector) throw new HttpError(400, `the model is multi-vector (ColBERT-style) and has no pooled vector: use /embed_all for its token vectors (not ${route})`);
    return enc;
  };
  /** `body.prompt_name`: one of `prompts` (the model's named prompts), or absent. */
  const promptNameOf = (body: Body, prompts: Record<string, string>) =>
    optional(body, 'prompt_name', (name, v) => {
      if (typeof v !== 'string' || !(v in prompts)) {
        const names = Object.keys(prompts);
        throw new HttpError(400, `${name} must be one of the model's prompts (${names.length ? names.join(', ') : 'it has none'})`);
      }
      return v;
    });
  /** The prompt fields coltrast adds to both embedding protocols (and /tokenize, with its model's `prompts`). */
  const promptFields = (body: Body, prompts = encoder!.prompts): Pick<EmbedJob, 'task' | 'promptName' | 'prompt'> => {
    const task = optional(body, 'task', (name, v) => {
      if (v !== 'query' && v !== 'document') throw new HttpError(400, `${name} must be "query" or "document"`);
      return v;
    });
    const promptName = promptNameOf(body, prompts);
    const prompt = optional(body, 'prompt', (name, v) => {
      if (typeof v !== 'string') throw new HttpError(400, `${name} must be a string`);
      return v;
    });
    if (prompt !== undefined && promptName !== undefined) throw new HttpError(400, 'give "prompt" or "prompt_name", not both');
    return { task, promptName, prompt };
  };
  const truncateField = (body: Body) => {
    if (body.truncate === false) throw new HttpError(400, `"truncate": false is not supported: coltrast always cuts texts at the model's maximum length`);
    if (body.truncate !== undefined && body.truncate !== true) throw new HttpError(400, '"truncate" must be true or false');
    if (body.truncation_direction !== undefined && body.truncation_direction !== 'Right' && body.truncation_direction !== 'right') {
      throw new HttpError(400, '"truncation_direction" must be "Right": coltrast keeps the start of each text');
    }
  };
  const embedTexts = (texts: string[], job: EmbedJob, signal: AbortSignal) => embedQueue.submit(JSON.stringify(job), texts, signal);
  const textsOf = (body: Body, key: string) => requiredTexts(body, key, maxInputs);
  /** OpenAI's `dimensions`: how many of the vector's first entries to keep. */
  const dimensionsOf = (body: Body, enc: Encoder) =>
    optional(body, 'dimensions', (name, v) => {
      const d = positiveInteger(name, v);
      if (d > enc.dimension) throw new HttpError(400, `${name} is ${d}; the model's vectors have ${enc.dimension}`);
      return d;
    });

  const routes: Record<string, Route> = {
    '/health': { method: 'GET', style: 'tei', handle: async () => ({ json: { status: 'ok' }, inputs: 0 }) },
    '/info': {
      method: 'GET',
      style: 'tei',
      handle: async () => ({
        inputs: 0,
        json: {
          model_id: modelName ?? null,
          model_dir: encoder?.modelDir ?? null,
          dimension: encoder?.dimension ?? null,
          token_dimension: encoder?.tokenDimension ?? null,
          max_input_length: encoder?.maxSeqLength ?? null,
          pooling: encoder && !encoder.multiVector ? encoder.pooling : null,
          normalize: encoder?.normalize ?? null,
          multi_vector: encoder?.multiVector !== undefined,
          // Where a multi-vector model cuts (and pads, with query expansion) its queries and its documents: /tokenize's
          // untruncated tokens are cut there, not at max_input_length.
          ...(encoder?.multiVector && { max_query_length: encoder.maxLengthFor('query'), max_document_length: encoder.maxLengthFor('document') }),
          prompts: encoder?.prompts ?? {},
          device: encoder?.device ?? null,
          dtype: encoder?.dtype ?? null,
          quantize: encoder?.quantize ?? null,
          reranker: reranker ? { model_id: rerankerName, model_dir: reranker.modelDir, max_input_length: reranker.maxSeqLength, quantize: reranker.quantize ?? null } : null,
          index: index ? { documents: index.size, writable, sparse: index.sparse, ...(index.sparseEncoder && { sparse_model: index.sparseEncoder.modelDir }), late_interaction: index.lateInteraction, ...(index.tokenStorage && { token_storage: index.tokenStorage }), ...(index.poolFactor > 1 && { pool_factor: index.poolFactor }) } : null,
          generator: generator
            ? { model_id: generatorName, model_dir: generator.modelDir, model_type: generator.modelType, chat_template: generator.chatTemplate !== undefined, quantize: generator.quantize ?? null }
            : null,
          rag: rag ? { retriever_dir: rag.retriever.modelDir, generator_dir: rag.generator.modelDir, documents: rag.documents } : null,
          sparse: sparseEncoder
            ? {
                model_dir: sparseEncoder.modelDir, dimension: sparseEncoder.dimension, max_input_length: sparseEncoder.maxSeqLength, pooling: sparseEncoder.pooling.pooling,
                activation: sparseEncoder.pooling.activation, prompts: sparseEncoder.prompts, device: sparseEncoder.device, dtype: sparseEncoder.dtype, quantize: sparseEncoder.quantize ?? null,
              }
            : null,
          max_batch_texts: maxBatchTexts,
          max_client_batch_size: maxInputs,
          version: runtime.version,
          libtorch: runtime.torchVersion,
        },
      }),
    },
    '/v1/models': {
      method: 'GET',
      style: 'openai',
      handle: async () => ({
        inputs: 0,
        json: {
          object: 'list',
          data: [modelName, rerankerName, generatorName].filter((n) => n !== undefined).map((id) => ({ id, object: 'model', created: 0, owned_by: 'coltrast' })),
        },
      }),
    },
    '/v1/embeddings': {
      method: 'POST',
      style: 'openai',
      handle: async (raw, signal) => {
        const enc = pooledEncoder('/v1/embeddings');
        const body = fields(raw, ['input', 'model', 'encoding_format', 'dimensions', 'user', 'task', 'prompt_name', 'prompt', 'normalize']);
        const texts = textsOf(body, 'input');
        optional(body, 'model', stringValue);
        optional(body, 'user', stringValue);
        const format = body.encoding_format ?? 'float';
        if (format !== 'float' && format !== 'base64') throw new HttpError(400, '"encoding_format" must be "float" or "base64"');
        const dimensions = dimensionsOf(body, enc);
        const normalize = optional(body, 'normalize', booleanValue) ?? enc.normalize;
        const out = await embedTexts(texts, { output: 'pooled', normalize, ...promptFields(body) }, signal);
        const used = out.reduce((sum, e) => sum + e.tokens, 0);
        return {
          inputs: texts.length,
          json: {
            object: 'list',
            data: out.map((e, i) => {
              const v = shorten(e.value as Float32Array, dimensions, normalize);
              // base64 made as the answer is written (2048 vectors of 1024 take ~0.1 s to encode); a float vector is written as it is.
              return { object: 'embedding', index: i, embedding: format === 'base64' ? { toJSON: () => base64(v) } : v };
            }),
            model: modelName,
            usage: { prompt_tokens: used, total_tokens: used },
          },
        };
      },
    },
    '/embed': {
      method: 'POST',
      style: 'tei',
      handle: async (raw, signal) => {
        const enc = pooledEncoder('/embed');
        const body = fields(raw, ['inputs', 'normalize', 'truncate', 'truncation_direction', 'dimensions', 'task', 'prompt_name', 'prompt']);
        const texts = textsOf(body, 'inputs');
        truncateField(body);
        const normalize = optional(body, 'normalize', booleanValue) ?? true;
        const dimensions = dimensionsOf(body, enc);
        const out = await embedTexts(texts, { output: 'pooled', normalize, ...promptFields(body) }, signal);
        // Typed arrays: jsonPieces writes them as arrays of their numbers.
        return { inputs: texts.length, json: out.map((e) => shorten(e.value as Float32Array, dimensions, normalize)) };
      },
    },
    '/embed_sparse': {
      method: 'POST',
      style: 'tei',
      handle: async (raw, signal) => {
        if (!sparseEncoder) {
          throw new HttpError(404, '/embed_sparse needs a sparse (SPLADE) encoder: start the server with one (coltrast serve --model <SparseEncoder folder>, or --sparse with a masked language model)');
        }
        const body = fields(raw, ['inputs', 'truncate', 'truncation_direction', 'task', 'prompt_name', 'prompt']);
        const texts = textsOf(body, 'inputs');
        truncateField(body);
        const out = await sparseQueue.submit(JSON.stringify(promptFields(body, sparseEncoder.prompts)), texts, signal);
        // As text-embeddings-inference answers: each text's non-zero entries, {index, value}, by index.
        return { inputs: texts.length, json: out.map((v) => Array.from(v.indices, (index, k) => ({ index, value: v.values[k] }))) };
      },
    },
    '/embed_all': {
      method: 'POST',
      style: 'tei',
      handle: async (raw, signal) => {
        needEncoder('/embed_all');
        const body = fields(raw, ['inputs', 'truncate', 'truncation_direction', 'normalize', 'task', 'prompt_name', 'prompt']);
        const texts = textsOf(body, 'inputs');
        truncateField(body);
        const out = await embedTexts(texts, { output: 'tokens', normalize: optional(body, 'normalize', booleanValue), ...promptFields(body) }, signal);
        return { inputs: texts.length, json: out.map((e) => matrixRows(e.value as Matrix)) };
      },
    },
    '/similarity': {
      method: 'POST',
      style: 'tei',
      handle: async (raw, signal) => {
        const enc = needEncoder('/similarity');
        const body = fields(raw, ['inputs', 'parameters']);
        const inputs = body.inputs;
        if (inputs === null || typeof inputs !== 'object' || Array.isArray(inputs)) {
          throw new HttpError(400, '"inputs" must be an object: {"source_sentence": "...", "sentences": ["...", ...]}');
        }
        const given = fields(inputs, ['source_sentence', 'sentences']);
        if (typeof given.source_sentence !== 'string') throw new HttpError(400, '"inputs.source_sentence" must be a string');
        if (given.sentences === undefined) throw new HttpError(400, 'missing field "inputs.sentences": an array of strings');
        if (!Array.isArray(given.sentences)) throw new HttpError(400, '"inputs.sentences" must be an array of strings');
        // The source sentence is one of the request's inputs, as TEI counts it.
        const sentences = textList('inputs.sentences', given.sentences, Math.max(1, maxInputs - 1));
        const parameters = body.parameters === undefined || body.parameters === null ? {} : body.parameters;
        if (typeof parameters !== 'object' || Array.isArray(parameters)) throw new HttpError(400, '"parameters" must be an object');
        const options = fields(parameters, ['truncate', 'truncation_direction', 'prompt_name', 'task', 'prompt']);
        truncateField(options);
        const prompts = promptFields(options);
        let scores: Float32Array;
        if (enc.multiVector) {
          // The source sentence is the query, the sentences the documents: MaxSim, as the model scores them.
          if (prompts.task !== undefined) throw new HttpError(400, '"parameters.task" is not taken by a multi-vector model here: the source sentence is embedded as a query and the sentences as documents');
          const [source] = await embedTexts([given.source_sentence], { output: 'tokens', ...prompts, task: 'query' }, signal);
          const others = await embedTexts(sentences, { output: 'tokens', ...prompts, task: 'document' }, signal);
          scores = (await enc.similarity([source.value as Matrix], others.map((e) => e.value as Matrix))).data;
        } else {
          // Cosine similarity whatever the model's similarity_fn_name, as TEI answers (Encoder.similarity() uses the model's).
          const out = await embedTexts([given.source_sentence, ...sentences], { output: 'pooled', normalize: true, ...prompts }, signal);
          const dim = enc.dimension;
          const rows = (from: number, to: number): Matrix => {
            const data = new Float32Array((to - from) * dim);
            for (let i = from; i < to; i++) data.set(out[i].value as Float32Array, (i - from) * dim);
            return { dims: [to - from, dim], data };
          };
          scores = (await similarityMatrix(rows(0, 1), rows(1, out.length), 'cosine')).data;
        }
        return { inputs: sentences.length + 1, json: Array.from(scores) };
      },
    },
    '/tokenize': {
      method: 'POST',
      style: 'tei',
      handle: async (raw, signal) => {
        const model = tokenizerModel('/tokenize');
        const body = fields(raw, ['inputs', 'add_special_tokens', 'task', 'prompt_name', 'prompt']);
        const texts = textsOf(body, 'inputs');
        const special = optional(body, 'add_special_tokens', booleanValue) ?? true;
        const { task, promptName, prompt } = promptFields(body, model.prompts);
        let given: string | undefined;
        if (model instanceof Encoder || model instanceof SparseEncoder) {
          // The prompt embed() (encode()) puts before each text for the same fields (the embedding routes'): the named
          // one, else the task's (a PyLate model's [Q] / [D] marker is its query or document prompt), else the default one.
          given = model.resolvePrompt(prompt, promptName, task);
        } else {
          if (task !== undefined) {
            throw new HttpError(400, '"task" chooses an embedding model\'s query or document side, and this server\'s tokenizer is its cross-encoder\'s: start the server with the embedding model (coltrast serve --model <dir|hub id>)');
          }
          // As TEI: the named prompt, else the model's default one, if it names one.
          const name = promptName ?? model.defaultPromptName ?? undefined;
          given = prompt ?? (name === undefined ? undefined : model.prompts[name]);
        }
        // Every token, however long the text (counting a long text's tokens is what /tokenize is for): the model
        // itself cuts at max_input_length (a multi-vector model at its query or document length). Offsets are into
        // the prompted text, as TEI's.
        const prompted = given ? texts.map((text) => given + text) : texts;
        // A client gone before its turn on the tokenizer's worker is not tokenized for (they are one at a time).
        const tokens = await model.textTokenizer.tokenOffsets(prompted, special, signal);
        // A multi-vector model's query expansion pads what the template made: none without its special tokens.
        const appended = special && model instanceof Encoder && model.multiVector ? await expansionTokens(model, tokens, task) : undefined;
        return { inputs: texts.length, pieces: tokenizeAnswer(prompted, tokens, appended) };
      },
    },
    '/decode': {
      method: 'POST',
      style: 'tei',
      handle: async (raw) => {
        const model = tokenizerModel('/decode');
        const body = fields(raw, ['ids', 'skip_special_tokens']);
        const { lists, single } = tokenIdLists('ids', body.ids, maxInputs);
        const skip = optional(body, 'skip_special_tokens', booleanValue) ?? true;
        const decoded = await model.textTokenizer.decodeIds(lists, skip);
        if ('unknown' in decoded) {
          // The tokenizers package (and so TEI) drops such an id silently: most likely the ids are another model's.
          const [i, j, id] = decoded.unknown;
          throw new HttpError(400, `"ids${single ? '' : `[${i}]`}[${j}]" is ${id}, which is no token of the model's tokenizer (its ${decoded.vocabularySize} tokens): ids from another model's tokenizer?`);
        }
        return { inputs: lists.length, json: decoded.texts };
      },
    },
    '/rerank': {
      method: 'POST',
      style: 'tei',
      handle: async (raw, signal) => {
        needReranker('/rerank');
        const body = fields(raw, ['query', 'texts', 'raw_scores', 'return_text', 'truncate', 'truncation_direction']);
        if (typeof body.query !== 'string') throw new HttpError(400, '"query" must be a string');
        const texts = textsOf(body, 'texts');
        truncateField(body);
        const raw_ = optional(body, 'raw_scores', booleanValue) ?? false;
        const withText = optional(body, 'return_text', booleanValue) ?? false;
        const scores = await rerankQueue.submit(raw_ ? 'identity' : 'default', texts.map((t) => [body.query as string, t]), signal);
        return { inputs: texts.length, json: ranked(scores).map((i) => ({ index: i, score: scores[i], ...(withText && { text: texts[i] }) })) };
      },
    },
    '/v1/rerank': {
      method: 'POST',
      style: 'openai',
      handle: async (raw, signal) => {
        needReranker('/v1/rerank');
        const body = fields(raw, ['model', 'query', 'documents', 'top_n', 'return_documents']);
        optional(body, 'model', stringValue);
        if (typeof body.query !== 'string') throw new HttpError(400, '"query" must be a string');
        if (body.documents === undefined) throw new HttpError(400, 'missing field "documents": an array of strings or of {"text": ...}');
        const documents = textList(
          'documents',
          Array.isArray(body.documents) ? body.documents.map((d) => (d !== null && typeof d === 'object' && !Array.isArray(d) && 'text' in d ? (d as { text: unknown }).text : d)) : body.documents,
          maxInputs,
        );
        const topN = optional(body, 'top_n', positiveInteger) ?? documents.length;
        const withDocuments = optional(body, 'return_documents', booleanValue) ?? true;
        const scores = await rerankQueue.submit('default', documents.map((d) => [body.query as string, d]), signal);
        return {
          inputs: documents.length,
          json: {
            model: rerankerName,
            results: ranked(scores)
              .slice(0, topN)
              .map((i) => ({ index: i, relevance_score: scores[i], ...(withDocuments && { document: { text: documents[i] } }) })),
          },
        };
      },
    },
    '/search': {
      method: 'POST',
      style: 'tei',
      handle: async (raw, signal) => {
        if (!index) throw new HttpError(404, '/search needs an index: start the server with one (coltrast serve --index <dir>)');
        const body = fields(raw, ['query', 'k', 'mode', 'rerank', 'candidates', 'hybrid_weight', 'rescore_multiplier', 'nprobe', 'full_scores', 'filter', 'mmr_lambda', 'fusion']);
        const queries = textsOf(body, 'query');
        const k = optional(body, 'k', positiveInteger) ?? 10;
        const mode = body.mode ?? 'dense';
        if (mode !== 'dense' && mode !== 'bm25' && mode !== 'hybrid' && mode !== 'sparse') throw new HttpError(400, '"mode" must be "dense", "bm25", "hybrid" or (an index with a sparse encoder\'s vectors) "sparse"');
        if (mode === 'sparse' && !index.sparse && !index.sparseEncoder) throw new HttpError(400, "\"mode\": \"sparse\" searches a sparse encoder's vectors, and this index holds an embedding model's only: \"dense\", \"bm25\" or \"hybrid\" (or build it with a second, sparse model: coltrast index --sparse-model)");
        const rerank = body.rerank ?? 'none';
        if (rerank !== 'none' && rerank !== 'maxsim' && rerank !== 'cross-encoder') throw new HttpError(400, '"rerank" must be "none", "maxsim" or "cross-encoder"');
        if (rerank === 'cross-encoder') needReranker('"rerank": "cross-encoder"');
        if (rerank === 'maxsim' && !index.lateInteraction) throw new HttpError(400, '"rerank": "maxsim" needs an index built with late interaction (coltrast index --late-interaction)');
        const candidates = optional(body, 'candidates', positiveInteger);
        const hybridWeight = optional(body, 'hybrid_weight', (name, v) => {
          if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new HttpError(400, `${name} must be a number in [0, 1]`);
          return v;
        });
        const rescoreMultiplier = optional(body, 'rescore_multiplier', positiveInteger);
        if (rescoreMultiplier !== undefined && index.storage !== 'binary') throw new HttpError(400, `"rescore_multiplier" is for an index with binary storage; this one stores ${index.storage} vectors`);
        const nprobe = optional(body, 'nprobe', positiveInteger);
        const fullScores = optional(body, 'full_scores', positiveInteger);
        if ((nprobe !== undefined || fullScores !== undefined) && !(index.multiVector && index.tokenStorage === 'residual')) {
          throw new HttpError(400, '"nprobe" and "full_scores" are for a multi-vector index with residual token storage (coltrast index --token-storage residual)');
        }
        // A MongoDB query over { id, text, metadata }, checked here (its operators; never $where) so a bad one is a 400.
        const filter = optional(body, 'filter', (name, v) => (compileFilter(name, v), v as Record<string, unknown>));
        const fusion = optional(body, 'fusion', (name, v) => {
          if (v !== 'rrf' && v !== 'relative') throw new HttpError(400, `${name} must be "rrf" or "relative"`);
          return v;
        });
        const mmrLambda = optional(body, 'mmr_lambda', (name, v) => {
          if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new HttpError(400, `${name} must be a number in [0, 1]`);
          if (index.multiVector || index.sparse) throw new HttpError(400, `${name} compares pooled vectors, and ${index.sparse ? "a sparse encoder's" : 'a multi-vector'} index has none`);
          return v;
        });
        const key = JSON.stringify({
          k, mode, rerank, ...(candidates !== undefined && { candidates }), ...(hybridWeight !== undefined && { hybridWeight }), ...(rescoreMultiplier !== undefined && { rescoreMultiplier }),
          ...(nprobe !== undefined && { nprobe }), ...(fullScores !== undefined && { fullScores }), ...(filter !== undefined && { filter }),
          ...(mmrLambda !== undefined && { mmrLambda }), ...(fusion !== undefined && { fusion }),
        });
        const hits = await searchQueue.submit(key, queries, signal);
        return { inputs: queries.length, json: { results: queries.map((query, i) => ({ query, hits: hits[i] })) } };
      },
    },
    '/documents': {
      method: 'POST',
      style: 'tei',
      handle: async (raw) => {
        const target = writableIndex('/documents');
        const body = fields(raw, ['documents', 'mode']);
        const mode = body.mode ?? 'upsert';
        if (mode !== 'upsert' && mode !== 'add') throw new HttpError(400, '"mode" must be "upsert" (add or replace) or "add" (new ids only)');
        const docs = documentList(body.documents, maxInputs);
        const replaced = mode === 'upsert' ? docs.filter((d) => target.has(d.id)).length : 0;
        if (mode === 'add') await target.add(docs, { batchSize });
        else await target.upsert(docs, { batchSize });
        saver.changed();
        return { inputs: docs.length, json: { added: docs.length - replaced, replaced, documents: target.size } };
      },
    },
    '/documents/delete': {
      method: 'POST',
      style: 'tei',
      handle: async (raw) => {
        const target = writableIndex('/documents/delete');
        const ids = idList(fields(raw, ['ids']).ids, maxInputs);
        const missing = ids.filter((id) => !target.has(id));
        if (missing.length > 0) throw new HttpError(404, `no document ${missing.slice(0, 5).map((id) => JSON.stringify(id)).join(', ')}${missing.length > 5 ? ` (and ${missing.length - 5} more)` : ''} in the index; nothing was deleted`);
        await target.remove([...new Set(ids)]);
        saver.changed();
        return { inputs: ids.length, json: { deleted: new Set(ids).size, documents: target.size } };
      },
    },
    '/documents/get': {
      method: 'POST',
      style: 'tei',
      handle: async (raw) => {
        if (!index) throw new HttpError(404, '/documents/get needs an index: start the server with one (coltrast serve --index <dir>)');
        const ids = idList(fields(raw, ['ids']).ids, maxInputs);
        return { inputs: ids.length, json: { documents: index.get(ids).map((d) => d ?? null) } };
      },
    },
    ...generation.routes,
    '/metrics': {
      method: 'GET',
      style: 'tei',
      handle: async () => ({ inputs: 0, json: metrics.text(queues, generation.counters()), contentType: 'text/plain; version=0.0.4' }),
    },
  };

  // The key compared in constant time, as digests of equal length (a key's length is not given away either).
  const expectedKey = apiKey === undefined ? undefined : createHash('sha256').update(apiKey).digest();
  /** `Authorization: Bearer <key>`; the scheme's name is case-insensitive (RFC 7235), so `bearer` is as good. */
  const authorized = (req: http.IncomingMessage): boolean => {
    if (!expectedKey) return true;
    const credentials = /^\s*bearer +(\S+)\s*$/i.exec(String(req.headers.authorization ?? ''));
    return credentials !== null && timingSafeEqual(createHash('sha256').update(credentials[1]).digest(), expectedKey);
  };

  /** close() has begun: answers say `Connection: close`, so that no client sends more on a connection about to end. */
  let stopping = false;

  const server = http.createServer((req, res) => {
    const started = process.hrtime.bigint();
    const pathname = requestPath(req.url ?? '/');
    const route = pathname !== undefined && Object.hasOwn(routes, pathname) ? routes[pathname] : undefined;
    const label = route ? pathname! : 'other';
    let inputs = 0;
    const origin = typeof req.headers.origin === 'string' ? req.headers.origin : undefined;
    // Every answer (errors, 401s and event streams too) carries them: a page cannot read an answer without them.
    if (cors) for (const [name, value] of Object.entries(cors.headers(origin))) res.setHeader(name, value);
    /** An OPTIONS request with cors on (a preflight): /metrics counts it apart, not as a request of its route. */
    const preflight = req.method === 'OPTIONS' && cors !== undefined;
    // The client going away before its answer is complete: its queued work leaves the queues (BatchQueue), its
    // generation stops (lib/serve-generation.ts), and it is counted as cancelled rather than answered.
    const gone = new AbortController();
    /** An answer under way failed after its status was sent, and its connection was closed: not the client going. */
    let cutShort = false;
    res.on('close', () => {
      if (res.writableFinished || cutShort) return;
      gone.abort();
      metrics.cancel(label);
    });
    /** Logs the request: answered with `status`, or (the client gone) 499 for onRequest only. */
    const log = (status: number) => {
      const milliseconds = Number(process.hrtime.bigint() - started) / 1e6;
      if (gone.signal.aborted) status = CLIENT_GONE;
      else if (preflight) metrics.preflight(label, status);
      else metrics.record(label, status, milliseconds / 1000);
      o.onRequest?.({ method: req.method ?? '', path: pathname ?? req.url ?? '', status, milliseconds, inputs });
    };
    /**
     * The next turn of the event loop, then the socket's buffer drained if a write filled it (or the client gone). A
     * turn first even when the buffer is full: 'drain' alone comes back in libuv's pending phase, where one chunk after
     * another ran with timers held for the whole answer.
     */
    const turn = async () => {
      await nextTurn();
      if (!res.writableNeedDrain || gone.signal.aborted) return;
      await new Promise<void>((resolve) => {
        const done = () => {
          res.off('drain', done);
          gone.signal.removeEventListener('abort', done);
          resolve();
        };
        res.on('drain', done);
        gone.signal.addEventListener('abort', done);
      });
    };
    /**
     * Writes an answer given in pieces of text; resolves with the status it answered. Up to ANSWER_CHUNK characters
     * go whole, with their Content-Length; a longer answer goes in chunks of about that size (Transfer-Encoding:
     * chunked), one per turn of the event loop, waiting while the socket's buffer is full: an /embed answer of 40 MB
     * held the event loop (every other client, /health, Ctrl-C) for over a second as one JSON.stringify and one
     * write, and /embed_all's token vectors could pass V8's longest string. Writing stops when the client goes away.
     * A failure before the first chunk is answered as an error; after it the status is sent, and the answer can only
     * be cut short (the connection closed with its last chunk missing, which HTTP clients report as an error).
     */
    const write = async (status: number, pieces: Iterable<string> | AsyncIterable<string>, headers: Record<string, string>, contentType: string): Promise<number> => {
      const iterator: Iterator<string> | AsyncIterator<string> = Symbol.asyncIterator in pieces ? pieces[Symbol.asyncIterator]() : pieces[Symbol.iterator]();
      const head = (length?: number) => ({ 'Content-Type': contentType, ...(length !== undefined && { 'Content-Length': length }), ...(stopping && { Connection: 'close' }), ...headers });
      let held: string[] = [];
      let size = 0;
      let started = false;
      try {
        while (!gone.signal.aborted) {
          // A sync iterator's pieces without a microtask each (an answer may have millions).
          const step = iterator.next();
          const next = step instanceof Promise ? await step : step;
          if (!next.done) {
            held.push(next.value);
            size += next.value.length;
            if (size < ANSWER_CHUNK) continue;
          }
          if (gone.signal.aborted) break;
          const text = held.join('');
          held = [];
          size = 0;
          if (next.done && !started) {
            // HEAD: the same headers, and Node's http sends no body.
            res.writeHead(status, head(Buffer.byteLength(text))).end(text);
            break;
          }
          if (!started) res.writeHead(status, head());
          started = true;
          if (next.done) {
            res.end(text);
            break;
          }
          res.write(text);
          await turn();
        }
      } catch (error) {
        if (!started) {
          const e = errorOf(error);
          return write(e.status, jsonPieces(e.payload), error instanceof HttpError ? error.headers : {}, 'application/json');
        }
        cutShort = true;
        res.destroy();
        return 500;
      } finally {
        // A generator's finally blocks run, whether it was written to its end or not.
        await iterator.return?.();
      }
      return status;
    };
    const reply = async (status: number, body: { json: unknown } | { pieces: Iterable<string> | AsyncIterable<string> }, headers: Record<string, string> = {}, contentType = 'application/json') => {
      const pieces = 'pieces' in body ? body.pieces : typeof body.json === 'string' ? [body.json] : jsonPieces(body.json);
      log(await write(status, pieces, headers, contentType));
    };
    const errorOf = (error: unknown) => {
      const status = error instanceof HttpError ? error.status : error instanceof ColtrastError && error.code === 'INVALID_ARGUMENT' ? 400 : 500;
      const message = error instanceof Error ? error.message : String(error);
      const type = status === 401 ? 'authentication_error' : status >= 500 ? (status === 503 ? 'overloaded' : 'server_error') : 'invalid_request_error';
      const payload = route?.style === 'openai' ? { error: { message, type, param: null, code: status } } : { error: message, error_type: type };
      return { status, payload };
    };
    const fail = (error: unknown) => {
      const { status, payload } = errorOf(error);
      return reply(status, { json: payload }, error instanceof HttpError ? error.headers : {});
    };
    /**
     * Server-sent events, as OpenAI streams: `data: <JSON>` each, then `data: [DONE]`; an error midway is an event
     * too. Nothing is written once the client has gone.
     */
    const stream = async (events: (send: (data: unknown) => void) => Promise<number>) => {
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: stopping ? 'close' : 'keep-alive' });
      const send = (data: unknown) => {
        if (!gone.signal.aborted) res.write(`data: ${JSON.stringify(data)}\n\n`);
      };
      let status = 200;
      try {
        inputs = await events(send);
      } catch (error) {
        const e = errorOf(error);
        status = e.status;
        send(e.payload);
      }
      if (!gone.signal.aborted) res.end('data: [DONE]\n\n');
      log(status);
    };
    if (pathname === undefined) {
      req.resume();
      fail(new HttpError(400, `the request target ${JSON.stringify(req.url)} is not a URL path: send a path such as /v1/embeddings`));
      return;
    }
    if (!route) {
      req.resume();
      fail(new HttpError(404, `no route ${pathname} (routes: ${Object.keys(routes).join(', ')})`));
      return;
    }
    const allowed = route.method === 'GET' ? 'GET, HEAD' : route.method;
    // Before the API key: a browser never sends credentials with a preflight.
    if (req.method === 'OPTIONS' && cors) {
      req.resume();
      const method = req.headers['access-control-request-method'];
      if (method !== undefined && !cors.allows(origin)) {
        fail(new HttpError(403, `CORS: the origin ${origin === undefined ? '(none sent)' : JSON.stringify(origin)} is not one this server allows (its cors.origins, --cors-allow-origin)`));
        return;
      }
      // A preflight gets the route's methods and the headers asked for; a plain OPTIONS, what the route takes.
      const headers = method === undefined ? {} : cors.preflight(origin!, allowed, req.headers['access-control-request-headers'], req.headers['access-control-request-private-network'] === 'true');
      if (!gone.signal.aborted) {
        res.writeHead(204, { Allow: allowed, ...headers, ...(stopping && { Connection: 'close' }) });
        res.end();
      }
      log(204);
      return;
    }
    // HEAD is GET without the body (RFC 9110), on every GET route.
    if (req.method !== route.method && !(req.method === 'HEAD' && route.method === 'GET')) {
      req.resume();
      // Without cors an OPTIONS is refused as any other method: a preflight's answer would lack what the browser needs.
      const hint = req.method === 'OPTIONS' ? '; OPTIONS is a browser\'s CORS preflight: start the server with cors.origins (coltrast serve --cors-allow-origin <origin>) to let pages on other origins call it' : '';
      fail(new HttpError(405, `${pathname} takes ${allowed}, not ${req.method}${hint}`, { Allow: allowed }));
      return;
    }
    if (pathname !== '/health' && !authorized(req)) {
      req.resume();
      fail(new HttpError(401, 'missing or wrong API key: send "Authorization: Bearer <key>"', { 'WWW-Authenticate': 'Bearer' }));
      return;
    }
    // A compressed body would reach JSON.parse as bytes of gzip and be refused as "not valid JSON": name the reason.
    const encoding = String(req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
    // Refused before the body is read, the connection closed after the answer (as a Content-Type's 415 below): a
    // refused body is not read to its end, however long.
    if (route.method === 'POST' && encoding !== 'identity' && encoding !== '') {
      req.resume();
      fail(new HttpError(415, `Content-Encoding ${encoding} is not supported: send the request body uncompressed`, { 'Accept-Encoding': 'identity', Connection: 'close' }));
      return;
    }
    // Every POST route reads a JSON body. Refused before the body is read (it may be 16 MiB), and the connection
    // closed after the answer rather than drained for the next request; what arrives meanwhile is thrown away.
    if (route.method === 'POST') {
      try {
        checkJsonContentType(req.headers['content-type']);
      } catch (error) {
        req.resume();
        fail(error);
        return;
      }
    }
    readBody(req, route.method === 'POST' ? maxBodyBytes : 0)
      .then(async (text) => {
        let body: unknown;
        if (route.method === 'POST') {
          try {
            // A byte order mark (some Windows tools write one) is not JSON, and RFC 8259 lets a parser ignore it.
            body = JSON.parse(text.replace(/^\uFEFF/, ''));
          } catch (error) {
            throw new HttpError(400, `the request body is not valid JSON: ${(error as Error).message}`);
          }
        }
        const result = await route.handle(body, gone.signal);
        if ('events' in result) return stream(result.events);
        inputs = result.inputs;
        await reply(200, result, {}, result.contentType);
      })
      .catch(fail);
  });
  server.requestTimeout = 0; // a large request may take minutes in the queue; clients choose their own timeout

  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => reject(listenError(error, host, port)));
    server.listen(port, host, resolve);
  });
  let closing: Promise<void> | undefined;
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${shown}:${address.port}`,
    port: address.port,
    stats: () => Object.fromEntries(Object.entries(queues).map(([name, q]) => [name, q.stats()])),
    close: () =>
      (closing ??= (async () => {
        stopping = true;
        await new Promise<void>((resolve, reject) => {
          server.close((error) => (error ? reject(error) : resolve()));
          server.closeIdleConnections();
        });
        await saver.flush();
      })()),
  };
}

/** Why the server could not listen on `host`:`port`, as a ColtrastError that names them and what to do. */
function listenError(error: NodeJS.ErrnoException, host: string, port: number): ColtrastError {
  const where = `options.host ${JSON.stringify(host)} (--host)`;
  const reason: Record<string, string> = {
    EADDRINUSE: `port ${port} on ${host} is in use: choose another (options.port, --port), or 0 for any free port`,
    ENOTFOUND: `${where} is neither an IP address nor a name this machine resolves: give an address such as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface), or a resolvable host name`,
    EAI_AGAIN: `${where} could not be resolved now (the name service did not answer): give an IP address such as 127.0.0.1 or 0.0.0.0`,
    EADDRNOTAVAIL: `${where} is not an address of this machine, so nothing can listen on it: give one of its own addresses, 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)`,
    EACCES: `port ${port} on ${host} needs privileges this process lacks: choose a port above 1023 (options.port, --port)`,
  };
  const known = error.code !== undefined ? reason[error.code] : undefined;
  const message = known ? `${known} (${error.code})` : `cannot listen on port ${port} of ${where}: ${error.message}`;
  return new ColtrastError('INVALID_ARGUMENT', message, { cause: error });
}

/**
 * Saves a writable index some time after it changes (not after every change: a save writes the whole index), and
 * once more at close() when a change is not saved yet. Saves run one at a time; a failed one is reported and tried
 * again at the next change or at close().
 */
class IndexSaver {
  private timer: NodeJS.Timeout | undefined;
  private dirty = false;
  private saving: Promise<void> = Promise.resolve();

  constructor(
    private readonly index: Index | undefined,
    private readonly dir: string | undefined,
    private readonly delayMs: number,
    private readonly onError: (error: Error) => void,
  ) {}

  changed(): void {
    if (!this.dir) return;
    this.dirty = true;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.save();
    }, this.delayMs);
  }

  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.save();
  }

  private save(): Promise<void> {
    this.saving = this.saving.then(async () => {
      if (!this.dirty || !this.index || !this.dir) return;
      this.dirty = false;
      try {
        await this.index.save(this.dir, { overwrite: true });
      } catch (error) {
        this.dirty = true;
        this.onError(saveError(error, this.dir));
      }
    });
    return this.saving;
  }
}

/**
 * A failed save of a writable index as a ColtrastError that names the folder and the reason, the original as its
 * `cause`: a ColtrastError keeps its code; a file system error (ENOTDIR, EACCES, ENOSPC, ...) is INVALID_ARGUMENT,
 * saveTo being where it cannot be written.
 */
function saveError(error: unknown, dir: string): ColtrastError {
  const reason = error instanceof Error ? error.message : String(error);
  const code = error instanceof ColtrastError ? error.code : 'INVALID_ARGUMENT';
  return new ColtrastError(code, `saving the index to ${dir} failed: ${reason}; the changes stay in memory, saved again at the next change or at close()`, { cause: error });
}

/** `"documents"`: a non-empty array of { id, text, metadata? }, at most `max`. */
function documentList(value: unknown, max: number): { id: string; text: string; metadata?: Record<string, unknown> }[] {
  if (!Array.isArray(value) || value.length === 0) throw new HttpError(400, '"documents" must be a non-empty array of {"id", "text", "metadata"?}');
  if (value.length > max) throw new HttpError(400, `"documents" holds ${value.length} documents; this server takes at most ${max} per request (maxInputs)`);
  return value.map((d, i) => {
    if (d === null || typeof d !== 'object' || Array.isArray(d)) throw new HttpError(400, `"documents[${i}]" must be an object {"id", "text", "metadata"?}`);
    const { id, text, metadata, ...rest } = d as Record<string, unknown>;
    const extra = Object.keys(rest);
    if (extra.length > 0) throw new HttpError(400, `"documents[${i}]" has unknown field "${extra[0]}" (a document has id, text and metadata)`);
    if (typeof id !== 'string' || id.length === 0) throw new HttpError(400, `"documents[${i}].id" must be a non-empty string`);
    if (typeof text !== 'string') throw new HttpError(400, `"documents[${i}].text" must be a string`);
    // null is no metadata, as Index.add takes it.
    if (metadata !== undefined && metadata !== null && (typeof metadata !== 'object' || Array.isArray(metadata))) throw new HttpError(400, `"documents[${i}].metadata" must be an object (or null)`);
    return { id, text, ...(metadata !== undefined && metadata !== null && { metadata: metadata as Record<string, unknown> }) };
  });
}

/** `"ids"`: a non-empty array of document ids, at most `max`. */
function idList(value: unknown, max: number): string[] {
  if (!Array.isArray(value) || value.length === 0 || !value.every((id) => typeof id === 'string')) throw new HttpError(400, '"ids" must be a non-empty array of document ids (strings)');
  if (value.length > max) throw new HttpError(400, `"ids" holds ${value.length} ids; this server takes at most ${max} per request (maxInputs)`);
  return value;
}

/**
 * The path of a request's target: of an origin-form one (`/embed?x`) the path as sent, `//embed` included (new URL()
 * with a base reads `//embed` as a host named embed); of an absolute-form one (`http://host/embed`, as proxies send)
 * its path; undefined for a target that is not a URL (it must not throw: a throw here would end the server).
 */
function requestPath(target: string): string | undefined {
  try {
    return new URL(target.startsWith('/') ? `http://localhost${target}` : target).pathname;
  } catch {
    return undefined;
  }
}

/** Tokens of a text that expansionTokens gives Encoder.modelInputs (a text's first ones, if it has more). */
const EXPANSION_PROBE = 8192;

/**
 * The tokens a multi-vector model puts after each text's own for `task` (its query expansion, [MASK] up to the query
 * length), by embed()'s own rule (Encoder.modelInputs), and their strings. They depend on how many tokens the text
 * has, and none follow a text as long as the expansion: a text of more than EXPANSION_PROBE tokens is asked about by
 * its first EXPANSION_PROBE (all of a 2-million-character text's, copied, held the event loop ~0.3 s). A turn of the
 * event loop between texts.
 */
async function expansionTokens(model: Encoder, tokens: TokenOffsets, task: 'query' | 'document' | undefined): Promise<AppendedTokens> {
  const appendedTo = (own: number[]) => model.modelInputs([{ ids: own, typeIds: new Array<number>(own.length).fill(0) }], task)[0].ids.slice(own.length);
  const ids: number[][] = [];
  for (let i = 0; i < tokens.ends.length; i++) {
    if (i > 0) await nextTurn();
    const own = tokens.ids.subarray(i === 0 ? 0 : tokens.ends[i - 1], tokens.ends[i]);
    let appended = appendedTo(Array.from(own.subarray(0, EXPANSION_PROBE)));
    // An expansion longer than the probe: the whole text, then.
    if (own.length > EXPANSION_PROBE && appended.length > 0) appended = appendedTo(Array.from(own));
    ids.push(appended);
  }
  const distinct = [...new Set(ids.flat())];
  const texts = new Map<number, string>();
  if (distinct.length > 0) {
    const decoded = await model.textTokenizer.decodeIds(distinct.map((id) => [id]), false);
    if ('texts' in decoded) distinct.forEach((id, k) => texts.set(id, decoded.texts[k]));
  }
  return { ids, texts };
}

/** Indices of `scores`, best first (ties: lower index first). */
function ranked(scores: number[]): number[] {
  return scores.map((_, i) => i).sort((a, b) => scores[b] - scores[a] || a - b);
}

/** The body as text; 413 past `limit` bytes (a GET's body is drained and ignored). */
function readBody(req: http.IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (chunk: Buffer) => {
      if (refused || limit === 0) return;
      size += chunk.length;
      if (size > limit) {
        refused = true;
        reject(new HttpError(413, `the request body is over ${limit} bytes (maxBodyBytes): send fewer or shorter texts per request`, { Connection: 'close' }));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!refused) resolve(Buffer.concat(chunks).toString('utf8'));
    });
    req.on('error', reject);
  });
}

/** Counters for /metrics, in Prometheus' text format. */
class Metrics {
  private readonly requests = new Map<string, number>();
  private readonly seconds = new Map<string, { sum: number; count: number }>();
  private readonly cancelled = new Map<string, number>();
  private readonly preflights = new Map<string, number>();

  /** An OPTIONS request answered for CORS: counted apart, so that requests_total and request_seconds stay the route's work. */
  preflight(route: string, status: number): void {
    const key = `route="${route}",status="${status}"`;
    this.preflights.set(key, (this.preflights.get(key) ?? 0) + 1);
  }

  /** A request whose client went away before its answer was complete. */
  cancel(route: string): void {
    this.cancelled.set(route, (this.cancelled.get(route) ?? 0) + 1);
  }

  record(route: string, status: number, seconds: number): void {
    const key = `route="${route}",status="${status}"`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
    const s = this.seconds.get(route) ?? { sum: 0, count: 0 };
    s.sum += seconds;
    s.count++;
    this.seconds.set(route, s);
  }

  text(queues: Record<string, { stats(): QueueStats }>, counters: [name: string, help: string, value: number][] = []): string {
    const lines = ['# HELP coltrast_requests_total HTTP requests answered, by route and status.', '# TYPE coltrast_requests_total counter'];
    for (const [labels, n] of this.requests) lines.push(`coltrast_requests_total{${labels}} ${n}`);
    lines.push('# HELP coltrast_request_seconds Time from request to response, by route.', '# TYPE coltrast_request_seconds summary');
    for (const [route, s] of this.seconds) lines.push(`coltrast_request_seconds_sum{route="${route}"} ${s.sum}`, `coltrast_request_seconds_count{route="${route}"} ${s.count}`);
    lines.push('# HELP coltrast_requests_cancelled_total Requests whose client went away before their answer, by route; their inputs still queued were dropped.', '# TYPE coltrast_requests_cancelled_total counter');
    for (const [route, n] of this.cancelled) lines.push(`coltrast_requests_cancelled_total{route="${route}"} ${n}`);
    lines.push('# HELP coltrast_cors_preflights_total OPTIONS requests (CORS preflights) answered, by route and status; not in coltrast_requests_total.', '# TYPE coltrast_cors_preflights_total counter');
    for (const [labels, n] of this.preflights) lines.push(`coltrast_cors_preflights_total{${labels}} ${n}`);
    const gauges: [string, string, string, keyof QueueStats][] = [
      ['coltrast_model_calls_total', 'counter', 'Model calls, each serving every queued input it took.', 'calls'],
      ['coltrast_model_inputs_total', 'counter', 'Inputs (texts, pairs, queries) the model calls took.', 'inputs'],
      ['coltrast_queue_inputs', 'gauge', 'Inputs waiting or in a model call now.', 'waiting'],
      ['coltrast_queue_cancelled_inputs_total', 'counter', 'Inputs dropped from the queue before any model call took them: their client went away.', 'cancelled'],
    ];
    for (const [name, type, help, field] of gauges) {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [queue, q] of Object.entries(queues)) lines.push(`${name}{queue="${queue}"} ${q.stats()[field]}`);
    }
    for (const [name, help, value] of counters) lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`, `${name} ${value}`);
    return lines.join('\n') + '\n';
  }
}
