#!/usr/bin/env node
/**
 * The `coltrast` command line. Each command validates its flags (node:util parseArgs, strict: unknown
 * flags are errors) and exits non-zero with a one-line reason on bad input.
 */
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import type { CrossEncoder, CrossEncoderLoadOptions } from './cross-encoder';
import type { Device, DType, Encoder, Quantize } from './encoder';
import type { SparseEncoder } from './sparse-encoder';
import type { TripletDistance } from './native';
import { ColtrastError } from './errors';
import { ProgressBar } from './progress';
import type { EvalMode, EvaluateResult } from './evaluate';
import { atomicOutput, checkWritable, fileSystemErrorMessage, notAFile, removeTemporaryFiles, writtenInPlace } from './files';
import { CSV, countLines, fileLines, parseCsv, parseJsonLines } from './data-files';
import { METRICS } from './ir-metrics';
import type { Fusion, Index, IndexDoc, Storage, TokenStorage } from './search-index';
import type { DownloadProgress } from './hub';
import type { BuiltModelOptions } from './index-manifest';
import type { MineOptions } from './mining';
import type { GenerateQueriesOptions } from './query-generation';
import type { RetrievalMetrics, SimilarityMetrics, TrainOptions } from './train';
import { JSONL } from './train-data';
import { sparseVectorWriter, vectorFormat, vectorWriter } from './vector-files';
import type { RagTrainOptions } from './rag';

/*
 * The modules of some commands only, required where a command first uses them rather than at start: loading them all
 * took ~0.2 s of every run (Ajv compiling the train config's schema alone ~0.1 s), `coltrast --help`, a flag's error
 * and `embed` included. Their types are imported above, which loads nothing.
 */
/* eslint-disable @typescript-eslint/no-require-imports */
const encoderModule = () => require('./encoder') as typeof import('./encoder');
const runtimeModule = () => require('./runtime') as typeof import('./runtime');
const hubModule = () => require('./hub') as typeof import('./hub');
const crossEncoderModule = () => require('./cross-encoder') as typeof import('./cross-encoder');
const evaluateModule = () => require('./evaluate') as typeof import('./evaluate');
const pairMetricsModule = () => require('./pair-metrics') as typeof import('./pair-metrics');
const communitiesModule = () => require('./communities') as typeof import('./communities');
const configSchemaModule = () => require('./config-schema') as typeof import('./config-schema');
const searchIndexModule = () => require('./search-index') as typeof import('./search-index');
const indexManifestModule = () => require('./index-manifest') as typeof import('./index-manifest');
const exportModule = () => require('./export') as typeof import('./export');
const modelLayersModule = () => require('./model-layers') as typeof import('./model-layers');
const miningModule = () => require('./mining') as typeof import('./mining');
const modelDirModule = () => require('./model-dir') as typeof import('./model-dir');
const queryGenerationModule = () => require('./query-generation') as typeof import('./query-generation');
const indexDocsModule = () => require('./index-docs') as typeof import('./index-docs');
const trainModule = () => require('./train') as typeof import('./train');
const generatorModule = () => require('./generator') as typeof import('./generator');
const ragModule = () => require('./rag') as typeof import('./rag');
const serveModule = () => require('./serve') as typeof import('./serve');
const sparseEncoderModule = () => require('./sparse-encoder') as typeof import('./sparse-encoder');
/* eslint-enable @typescript-eslint/no-require-imports */

/** Commands without --model use the model coltrast ships (see default-model/README.md). */
const DEFAULT_MODEL = 'default';

export const USAGE = `usage: coltrast <command> [options]

commands:
  info                       the addon loaded and why, libtorch, devices, threads and BLAS in use
  bench [--quick] [--out d] [--suites ops,embed,train,index,multivector,crossencoder,decoder,encoders,generator,serve,python,parity]
                             run the benchmark suites that fit this machine (CPU, CUDA where present, the plain-PyTorch
                             baseline where a python3 with torch is): JSON, a Markdown table and an SVG chart per suite
                             in bench-results/ (from a clone of the repository)
  build [cmake-js args]      build the native addon from source against the libtorch here (cmake, C++17 compiler)
  embed <texts>              embed a text file (one text per line), JSONL ({"text": ...} per line) or .csv/.tsv (a header row
                             naming a "text" column, a text a row; gzipped too); - reads the standard input. A vector a
                             row, in order: blank lines are skipped, an empty or blank text in a row is refused
    --model <dir|hub id>     model folder or Hugging Face id (default: coltrast's shipped model)
    --output <file>          write JSONL {"index", "embedding"} here (default: stdout; written to a temporary file, renamed when complete);
                             a .npy file: one float32 row a text (numpy.load); .safetensors: "embeddings", or with token
                             vectors "tokens" and int64 "offsets" (text i: tokens[offsets[i]:offsets[i+1]])
    --batch-size <n>         texts per forward pass (default 32)
    --task query|document    embed as the model's queries or documents (its prompts; a multi-vector model's query
                             expansion and skiplist), as sentence-transformers' encode_query / encode_document
    --prompt-name <name>     one of the model's named prompts; --prompt <text>: a prompt of your own
    --tokens                 one vector per token: JSONL {"index", "tokens": [[...], ...]} (always for a multi-vector model)
    --sparse                 --model is a masked language model (*ForMaskedLM) to read as a sparse (SPLADE) encoder (a
                             sentence-transformers SparseEncoder folder is one without it). A sparse encoder's vectors are
                             JSONL {"index", "indices", "values"} (the non-zero entries), or .safetensors compressed sparse
                             rows: "values", int64 "indices" and "offsets", the width in the metadata's "dimension"
    --max-active-dims <n>    a sparse encoder: keep each vector's n largest entries
    --truncate-dim <n>       cut each vector to its first n entries (normalized again): a Matryoshka model's smaller vectors
    --layers <n>             run the model's first n layers alone (a model trained with adaptive layers; coltrast truncate
                             writes such a model)
    --adapter <dir>          add a LoRA adapter (PEFT's adapter_config.json and adapter_model.safetensors) to --model
    --no-adapter-base-check  load --adapter on this model even when the adapter records another base (coltrast's adapters
                             record the base they were trained on, and are refused on one whose adapted weights differ)
    --device <d>             auto | cpu | cuda | cuda:N (default auto)
    --dtype <t>              float32 (default) | bfloat16 (CPU or CUDA; about 2x faster on CPUs with AVX-512 BF16 or AMX) | float16 (CUDA)
    --quantize int8          run the model's projections in int8 on the CPU (PyTorch's dynamic quantization): faster
                             embedding, vectors a little changed (BENCHMARKS.md has both)
    --threads <n>            CPU threads (default: OMP_NUM_THREADS, else every core)
    --json                   print a JSON summary instead of text
  cluster <texts>            the communities of a text file's texts (as embed reads it): each a text with at least --min-size
                             texts (itself included) at cosine similarity --threshold or more, largest first, a text in one
                             at most; JSON lines {"community", "size", "rows", "texts"} (rows: the texts' 0-based places)
    --model <dir|hub id>     the embedding model (default: coltrast's shipped model)
    --threshold <x>          cosine similarity at which texts are close (default 0.75)
    --min-size <n>           the fewest texts a community holds (default 10)
    --pairs                  near-duplicate pairs instead: each text with its --top-k (100) nearest, each pair once, best
                             first, at most --max-pairs (500000), those at --min-score <x> or above; JSON lines
                             {"score", "i", "j", "text1", "text2"}
    --output <file.jsonl>    write there (default: the standard output; the summary goes to stderr)
    --task query|document --batch-size <n> --device <d> --dtype <t> --quantize int8 --threads <n> --json
  train                      fine-tune a model (ColTrast: contrastive + late interaction)
    --config <file.json>     options as JSON (the keys of train(), checked against --print-schema); flags override them
    --model <dir|hub id>     starting model (default: coltrast's shipped model)
    --data <file>            ColTrast .json (projects, readme_content, qa_pairs) or .jsonl pairs/triplets (or .csv/.tsv
                             with a header row: query or anchor, positive, negative_1, ...)
                             (with --contrastive-tension: sentences, .txt one per line)
    --output <dir>           where the trained model goes
    --epochs <n> --batch-size <n> --learning-rate <x> --warmup-ratio <x> --schedule linear|cosine|constant
    --weight-decay <x> --max-grad-norm <x> --gradient-accumulation <n> --val-split <x|n> --seed <n>
    --contrastive-weight <x> --late-interaction-weight <x> --temperature <x> --late-interaction cross_entropy|bce
    --symmetric --patience <n> --metric loss|recall@1|mrr@10|spearman --max-negatives <n> --hard-negatives <n>
    --pair-loss cosent|angle|cosine|contrastive|online_contrastive   labeled pairs (sentence1, sentence2, score or label:
                             STS-style scores, or 1/0 for the contrastive losses) trained with sentence-transformers' CoSENT,
                             AnglE, CosineSimilarity, Contrastive or OnlineContrastive loss; validated by Spearman correlation
    --margin <x>             the contrastive pair losses' margin (default 0.5)
    --triplet                triplets (query, positive, negative) trained with sentence-transformers' TripletLoss instead:
                             relu(d(query, positive) - d(query, negative) + margin); --triplet-distance
                             euclidean|cosine|manhattan (default euclidean), --triplet-margin <x> (default 5)
    --batch-triplet all|hard|semi_hard|hard_soft_margin   texts of classes (text, label) trained with sentence-transformers'
                             BatchAll/BatchHard/BatchSemiHard/BatchHardSoftMargin TripletLoss, 2 texts of a class at a time
                             in a batch; --batch-triplet-distance euclidean|cosine (euclidean), --batch-triplet-margin <x> (5)
    --projection-dim <n> --projection-activation identity|tanh   (a trained Dense head on the pooled vector)
    --matryoshka <widths>    Matryoshka: the pooled losses also at these widths, e.g. 768,512,256,128,64, so the vectors can
                             be cut (--truncate-dim); weights and dimensionsPerStep through --config (loss.matryoshka)
    --adaptive-layers        adaptive layers (AdaptiveLayerLoss; with --matryoshka, Matryoshka2dLoss): the pooled losses also
                             after fewer layers, so the model's first layers alone work (cut it: coltrast truncate);
                             --layers-per-step <n|all> (default 1); other settings through --config (loss.adaptiveLayers)
    --gor                    add global orthogonal regularization (GlobalOrthogonalRegularizationLoss): spreads the vectors
                             out; weights and aggregation through --config (loss.gor)
    --mega-batch-margin      pairs trained with MegaBatchMarginLoss (each anchor against the batch's most similar other
                             positive; large batches, with --mini-batch-size); margins through --config (loss.megaBatchMargin)
    --freeze-base            train only the head on the frozen transformer (CoTrEnD: a head on a decoder LLM's states)
    --mine-negatives         pairs: mine 3 hard negatives each with the starting model first (relative margin 0.05, as
                             coltrast mine); other settings through --config (mineNegatives)
    --contrastive-tension    self-supervised: --data is unlabeled sentences (.txt, one per line); a twin copy of the
                             model encodes each as the query, the model as the document (Contrastive Tension)
    --precision float32|bfloat16|float16   (mixed precision: bfloat16 on CPU or CUDA, float16 on CUDA)
    --mini-batch-size <n>    gradient caching: encode each batch n texts at a time (large batches in little memory)
    --gradient-checkpointing recompute each layer's activations in backward instead of keeping them (less memory)
    --lora                   train LoRA adapters only (rank 8 on the attention's query and value projections; with
                             --cross-encoder, the classifier too); the output holds the merged model and the adapter
                             (adapter/, PEFT's format)
    --lora-rank <n>  --lora-alpha <x>  --lora-targets <a,b,...>   the adapters' rank, alpha and projections (imply --lora)
    --no-prompts             train without the model's query/document prompts (a multi-vector model keeps its markers)
    --teacher <dir|hub id>   distill a cross-encoder: it scores each query's positive and hard negatives before training
                             (or give "scores" in the triplets); --distillation margin_mse|kl --distillation-weight <x> (1)
                             --teacher-temperature <x> (1: the teacher's scores are divided by it)
                             --distillation mse: --teacher is an embedding model, --data parallel sentences (english,
                             non_english), and the model learns its vectors (multilingual knowledge distillation)
    --guide <dir|hub id>     GISTEmbed: an embedding model whose scores leave likely false negatives out of the losses;
                             --guide-margin <x> (0) --guide-margin-strategy absolute|relative
    --cross-encoder          train a cross-encoder (reranker) instead, from a cross-encoder or an embedding model / BERT;
                             --cross-encoder-loss cross_entropy|bce --cross-encoder-scale <x> (10); or from a decoder LLM's
                             *ForCausalLM (Qwen3-Reranker's set-up): --cross-encoder-template <file> (a Jinja chat template
                             over "query" and "document" messages; default the model's own) --cross-encoder-tokens yes,no (or yes alone)
    --sparse                 train a sparse (SPLADE) encoder instead, from a SparseEncoder or any masked language model
                             (*ForMaskedLM): SPLADE vectors, dot products, FLOPS regularizers --query-regularizer <x>
                             (5e-5) --document-regularizer <x> (3e-5; larger: sparser vectors), rising from 0 over
                             --regularizer-warmup <ratio> (1/3) of the steps by --regularizer-schedule quadratic|linear
    --mlm                    masked-language-model training instead (BERT's objective) on unlabeled text (--data: .txt one
                             a line, .jsonl or .json): --mlm-probability <x> (0.15) of the tokens chosen; from a *ForMaskedLM
                             or an embedding/base model (a new head); the output is a *ForMaskedLM folder (domain adaptation,
                             or the start of a --sparse model)
    --multi-vector <dim>     make the model multi-vector (ColBERT-style: a token projection to dim, MaxSim) and train it so;
                             its other settings (queryLength, documentLength, queryExpansion, ...) through --config
    --checkpoint-every <steps> --resume --device <d> --threads <n> --json
  generate-queries           write search queries for each document of a corpus with a decoder LLM: (query, positive) pairs
                             for a domain without labels (GPL's first step; then mine --cross-encoder --output-scores, and train)
    --generator <dir|hub id> the causal LM that writes them (an instruction-tuned one with --chat)
    --corpus <file>          the documents: .txt (one per line), .jsonl or .json of strings or {text}, .csv/.tsv (text column)
    --output <file.jsonl>    {"query", "positive"} per line (written to a temporary file, renamed when complete)
    --per-document <n> (3)   queries sampled per document, at most 1000; duplicates and empty ones are dropped
    --template <text with {document}> --chat [--system <text>] --max-document-tokens <n> (256) --max-new-tokens <n> (32)
    --temperature <x> (1; 0: greedy, one per document) --top-k <n> (25) --top-p <x> (0.95) --seed <n> --batch-size <n> (16)
    --consistency-model <dir|hub id> [--consistency-k <n> (1)]   keep a query only where this embedding model, searching the
                             corpus, ranks its document within the first k (Promptagator's round-trip filter)
    --keep-likeliest <x>     keep this fraction of the queries, those the generator finds likeliest (InPars' filter)
    --resume                 go on from where an interrupted run with the same corpus and options stopped
    --quantize int8          the generator's (and --consistency-model's) projections in int8 on the CPU (see generate)
    --device <d> --dtype <t> --threads <n> --json
  mine                       add hard negatives to (query, positive) pairs, as sentence-transformers' mine_hard_negatives
    --data <file>            .jsonl or .json of {"query", "positive"} (a query may repeat, with several positives), or .csv/.tsv
    --output <file.jsonl>    the rows (written to a temporary file, renamed when complete); train --data reads them
    --model <dir|hub id>     the embedding model that ranks the candidates (default: coltrast's shipped model)
    --corpus <file>          more candidates beside the positives: .txt (one per line), .jsonl or .json of strings or {text},
                             .csv/.tsv (text column)
    --cross-encoder <dir|hub id>   rescore every candidate and positive with a reranker (its scores filter, rank and are written)
    --num-negatives <n> (3) --range-min <n> (0: skip the n best candidates) --range-max <n> (how deep to look)
    --absolute-margin <x> --relative-margin <x>   strike candidates within a margin of the positive's score (NV-Retriever: --relative-margin 0.05)
    --max-score <x> --min-score <x>   strike candidates scoring above / below
    --sampling-strategy top|random (top) --seed <n>   the best survivors, or a seeded sample of them
    --output-format triplet|n-tuple|labeled-pair|labeled-list (triplet) --output-scores (scores in each row: teacher scores for train)
    --include-positives      keep the positives among the candidates (n-tuple rows in ranking order, for re-ranking evaluation)
    --query-prompt <t> --query-prompt-name <name> --corpus-prompt <t> --corpus-prompt-name <name>   (default: the model's query / document prompts)
    --plaid                  a multi-vector model: search a PLAID index of the corpus (token vectors compressed as ColBERTv2's)
                             instead of exact MaxSim over every token vector held in memory; --residual-bits 1|2|4 (4)
                             --centroids <n> --nprobe <n> (1) --full-scores <n>   as for index build and search
    --quantize int8          the embedding model's and the cross-encoder's projections in int8 on the CPU (see embed)
    --batch-size <n> --device <d> --threads <n> --json
  rag-train                  ContextFlow: train a retriever and a decoder LLM generator together on questions and answers
    --retriever <dir|hub id> the embedding model that retrieves (default: coltrast's shipped model)
    --generator <dir|hub id> the causal LM that answers (Llama, Mistral, Qwen2, Qwen3, Gemma, Phi-3; a *ForCausalLM folder)
    --data <file>            ColTrast .json (its READMEs, chunked, are the corpus) or .jsonl / .json of {question, answer}, or
                             .csv/.tsv (question or query, answer and optionally group columns)
    --corpus <file>          the documents retrieved from: .txt (one per line), .jsonl or .json of strings or {text}, .csv/.tsv
    --output <dir>           writes retriever/, generator/, rag_history.json and training_curves.svg
    --k <n> (4) --epochs <n> --batch-size <n> --learning-rate <x> --warmup-ratio <x> --weight-decay <x>
    --max-grad-norm <x> --temperature <x> --val-split <x|n> --seed <n> --template <text with {context} and {question}>
    --chat [--system <text>] the prompt is the user's message in the generator's chat template (instruction-tuned models)
    --gradient-checkpointing recompute the layers' activations in backward (both models; less memory)
    --freeze-generator       train the retriever only --precision float32|bfloat16|float16 --checkpoint-every <steps>
    --resume --overwrite --device <d> --threads <n> --json
  ask <question>...          answer questions from a corpus: retrieve, generate from each document, keep the likeliest
    --retriever <dir|hub id> --generator <dir|hub id> --corpus <file> --k <n> (4) --max-new-tokens <n> (64)
    --template <text> --chat [--system <text>] --num-beams <n> (1: greedy; above: beam search from each document)
    --device <d> --dtype <t> (the generator's) --threads <n> --json
    --quantize int8          the retriever's and the generator's projections in int8 on the CPU (see embed, generate)
  generate <prompt>...       continue each prompt with a causal LM (greedy, or sampled with --temperature); one prompt's text
                             is printed as it is generated
    --model <dir|hub id> --max-new-tokens <n> (64) --chat (each prompt a user message in the model's chat template)
    --system <text> --temperature <x> (0: greedy) --top-k <n> --top-p <x> --seed <n>
    --num-beams <n> (beam search, as transformers' num_beams) --length-penalty <x> (1) --early-stopping true|false|never
    --quantize int8          the decoder's projections in int8 on the CPU (PyTorch's dynamic quantization): faster
                             generation, the projections in a quarter to a half of their float32 memory (BENCHMARKS.md),
                             log-probabilities a little changed
    --device <d> --dtype <t> --threads <n> --json
  serve                      an HTTP server: embeddings, re-ranking, search and generation for other programs, batched across
                             clients (OpenAI: POST /v1/embeddings, /v1/rerank, /v1/chat/completions, /v1/completions, GET /v1/models;
                             text-embeddings-inference: POST /embed, /embed_all, /embed_sparse, /rerank, /similarity, /tokenize, /decode, GET /info, /health, /metrics;
                             coltrast: POST /search over an index, POST /ask over a corpus)
    --model <dir|hub id>     the embedding model (default: the index's model, else coltrast's shipped model); a sparse (SPLADE)
                             encoder's folder (or --sparse: a masked language model read as one) serves /embed_sparse
    --sparse-model <dir|hub id>  a sparse encoder beside the embedding model: /embed_sparse, and an index's second model
                             (default: the one --index was built with, if any)
    --adapter <dir>          a LoRA adapter (PEFT's files) added to the embedding model
    --reranker <dir|hub id>  a cross-encoder for /rerank, /v1/rerank and /search's "rerank": "cross-encoder"
    --reranker-adapter <dir> a LoRA adapter (PEFT's files) added to the cross-encoder
    --no-adapter-base-check  load the adapters even when one records another base than its model (see embed)
    --index <dir>            an index folder for /search
    --mmap                   map the index's vector files instead of reading them (fast start, the page cache's memory)
    --writable               let clients change the index: POST /documents (add or replace), /documents/delete; changes are
                             saved to the --index folder (atomically) --save-interval <s> after them (default 10) and at exit
    --generator <dir|hub id> a causal LM (Llama, Mistral, Qwen2, Qwen3, Gemma, Phi-3) for /v1/chat/completions and /v1/completions
    --corpus <file>          with --generator: documents for /ask (ContextFlow: the embedding model retrieves, the generator
                             answers; .txt one per line, .jsonl or .json); --template <t> --chat [--system <t>] as coltrast ask
    --no-model               no embedding model (serve a reranker or a generator alone)
    --host <addr>            address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)
    --port <n>               port (default 8080; 0: any free one, printed at start)
    --api-key <key>          require "Authorization: Bearer <key>" on every route but /health (or COLTRAST_API_KEY)
    --cors-allow-origin <origin,...|*>   let web pages on these origins (https://app.example.com: as browsers send them,
                             no trailing slash) or on any (*) call the server from a browser (CORS; default: none)
    --max-batch <n>          texts one model call takes from the waiting requests (default 256)
    --batch-size <n>         texts per forward pass (default 32)
    --max-inputs <n>         texts one request may hold (default 2048) --max-queue <n> texts waiting before 503 (65536)
    --generation-batch <n>   prompts generated together, from the waiting requests (default 8)
    --name <text>            the model name responses carry (default: --model's)
    --truncate-dim <n>       the embedding model's vectors cut to n entries (default: as --index was built, else whole)
    --quantize int8|none     every model's projections (the embedding model's, the reranker's, the generator's) in int8
                             on the CPU (see embed); none: float32 where --index records int8 (see search)
    --device <d> --dtype <t> --threads <n> --verbose (a line per request on stderr)
  index                      build a search index
    --data <file>            ColTrast .json (each README cut into semantic chunks), .jsonl of {id, text, metadata?}, or
                             .csv/.tsv with id and text columns (each other column a metadata string, empty cells left out)
    --output <dir>           the index folder
    --model <dir|hub id>     the embedding model (default: coltrast's shipped model)
    --late-interaction       keep token vectors for MaxSim re-ranking
    --truncate-dim <n>       store each vector's first n entries (a Matryoshka model; search and serve then cut queries alike)
    --storage float32|float16|int8|binary   how vectors are kept (default float32; int8: a quarter of the memory, binary: a
                             32nd, searched by Hamming distance and rescored) --device <d> --dtype <t> --threads <n> --json
    --quantize int8          the model's projections in int8 on the CPU (see embed)
    --token-storage float16|residual   how token vectors are kept (default float16; residual: ColBERTv2's centroid + quantized
                             residual, about a seventh, and a multi-vector index searched as PLAID does)
    --residual-bits 1|2|4 --centroids <n>   residual storage's bits per dimension (default 2) and k-means centroids (default auto)
    --pool-factor <n>        keep about 1/n of each document's token vectors: cluster means (hierarchical token pooling)
    --sparse                 --model is a masked language model (*ForMaskedLM) to read as a sparse (SPLADE) encoder (a
                             sentence-transformers SparseEncoder folder is one without it): its sparse vectors in an
                             inverted index, searched exactly by its similarity (the hybrid mode, filters and re-ranking as usual)
    --sparse-model <dir|hub id>  a sparse (SPLADE) encoder whose vectors the index keeps beside --model's: search's
                             sparse mode ranks by them, its hybrid mode fuses the two models' rankings (instead of BM25's)
    --update                 add to the index at --output instead (documents with its ids are replaced), with its model(s)
                             and settings
  search <question>...       search an index
    --index <dir>            the index folder (--mmap: mapped, not read)
    --model <dir|hub id>     default: the model recorded in the index (--sparse-model: its second, sparse one)
    --k <n> --mode dense|bm25|hybrid|sparse (an index of a sparse encoder: sparse or dense, its vectors; with a second,
                             sparse model: sparse ranks by it, hybrid fuses it with the dense model) --rerank none|maxsim
                             --device <d> --threads <n> --json
    --reranker <dir|hub id>  re-rank the first stage's candidates with a cross-encoder (e.g. cross-encoder/ms-marco-MiniLM-L6-v2)
    --reranker-adapter <dir> a LoRA adapter (PEFT's files) added to the cross-encoder
    --no-adapter-base-check  load it even when it records another base than --reranker (see embed)
    --quantize int8|none     the query models' and the reranker's projections in int8 on the CPU (see embed); without it, the
                             query models run as index.json says they did (int8, bfloat16) where the device can; none: not
    --candidates <n>         first-stage candidates re-ranked (default 100)
    --rescore-multiplier <n> a binary index: rows kept by Hamming distance per hit, then rescored (default 4)
    --nprobe <n> --full-scores <n>   a multi-vector index with residual tokens: centroids probed per query token (default 1),
                             candidates scored exactly (default max(256, 4 k))
    --filter <json>          only documents matching a MongoDB query over { id, text, metadata },
                             e.g. '{"metadata.lang": "en", "metadata.year": {"$gte": 2020}}'
    --mmr <λ>                varied hits: maximal marginal relevance over the --candidates, λ in [0, 1] (1: plain ranking)
    --fusion rrf|relative --hybrid-weight <x>   hybrid: reciprocal-rank fusion (default) or min-max scaled scores; the dense share (0.5)
  eval                       retrieval metrics on a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); on a .jsonl or
                             .csv/.tsv of labeled pairs (sentence1, sentence2, score), Spearman and Pearson correlation of
                             cosine and label (sentence-transformers' EmbeddingSimilarityEvaluator; a sparse encoder's
                             similarity, a cross-encoder's score; 1/0 labels classified by a threshold too: accuracy, F1,
                             average precision); on triplets (query or anchor, positive, negative), the share ranked right
                             (TripletEvaluator); --model, --compare, --truncate-dim, --quantize, --batch-size, --device,
                             --threads, --json)
    --data <dir>             the BEIR folder (gzipped files and qrels-<split>.tsv are read too)
    --model <dir|hub id>     model for dense / hybrid / late_interaction (default: coltrast's shipped model; --mode bm25 needs none),
                             or a sparse encoder (SPLADE) for --mode sparse (the default for a SparseEncoder folder) or hybrid (with BM25)
    --mode dense|bm25|hybrid|late_interaction|sparse --split <name> --k 1,3,5,10,100 --hybrid-weight <x> --stem
    --fusion rrf|relative    hybrid: reciprocal-rank fusion (default) or min-max scaled scores, weighted
    --sparse-model <dir|hub id>  hybrid (its default then): a sparse encoder whose ranking fuses with --model's, in BM25's place
    --reranker <dir|hub id>  re-rank each query's top --candidates (default 100) with a cross-encoder
    --reranker-adapter <dir> a LoRA adapter (PEFT's files) added to the cross-encoder
    --no-adapter-base-check  load it even when it records another base than --reranker (see embed)
    --compare <model|bm25>   a second system evaluated the same way, side by side (without the reranker or --model's index flags)
    --truncate-dim <n>       evaluate --model's vectors cut to n entries (a Matryoshka model's smaller vectors)
    --layers <n>             evaluate --model's first n layers alone (a model trained with adaptive layers; a BEIR folder)
    --quantize int8          evaluate --model run in int8 on the CPU (see embed): what the faster embedding costs
    --storage float32|float16|int8|binary --rescore-multiplier <n>   the dense index's storage (what quantization costs)
    --token-storage float16|residual --residual-bits <n> --nprobe <n> --full-scores <n>   token vectors' storage and PLAID search
    --pool-factor <n>        token pooling of the documents' token vectors (what it costs)
    --device <d> --batch-size <n> --threads <n> --json
  export                     write an index to a vector database: a SQL file for PostgreSQL + pgvector
    --index <dir>            the index folder
    --format pgvector        PostgreSQL with the pgvector extension (CREATE EXTENSION vector; any version)
    --output <file.sql>      the SQL file (written to a temporary file, renamed when complete)
    --table <name>           the table (default coltrast_docs): id text, text, metadata jsonb, embedding vector(dim)
    --vector-index auto|hnsw|ivfflat|none   approximate index (auto: HNSW on pgvector >= 0.5, else IVFFlat)
    --replace                drop an existing table of that name first
    --json
    Load it, then query with a question embedded by the index's model (coltrast embed, or Encoder.embed):
      psql -v ON_ERROR_STOP=1 -d mydb -f docs.sql
      SELECT id, text, -(embedding <#> '[0.0123,-0.0456,...]') AS score
        FROM coltrast_docs ORDER BY embedding <#> '[0.0123,-0.0456,...]' LIMIT 10;
    Vectors are L2-normalized and coltrast scores by inner product: <#> (negative inner product) orders
    best first and -(embedding <#> q) is coltrast's score. With IVFFlat, SET ivfflat.probes = 10 for recall;
    with HNSW, SET hnsw.ef_search = 100. An index with sparse (SPLADE) vectors (a sparse encoder's, or a second
    sparse model's) writes them as sparsevec (pgvector 0.7.0 or later) in "embedding", or in "sparse_embedding" beside
    the dense ones: ORDER BY sparse_embedding <#> '{index:value,...}/width' (indices from 1), HNSW-indexed.
  truncate                   a model cut to its first layers (one trained with adaptive layers): a smaller, faster model
                             that coltrast, sentence-transformers and transformers load
    --model <dir|hub id>     the model (an embedding model, cross-encoder or sparse encoder)
    --layers <n>             how many of its first layers to keep
    --output <dir>           the new model's folder (written whole, then renamed into place)
    --overwrite              replace a non-empty --output
    --json
  help                       this text
  --version                  coltrast's version (the package's)`;

/** The part of USAGE about one command: its line and the indented option lines under it. */
export function commandHelp(command: string): string {
  const lines = USAGE.split('\n');
  const start = lines.findIndex((l) => l.startsWith(`  ${command} `) || l === `  ${command}`);
  if (start < 0) return USAGE;
  let end = start + 1;
  while (end < lines.length && lines[end].startsWith('    ')) end++;
  return [`usage: coltrast ${command} [options]`, '', ...lines.slice(start, end)].join('\n');
}

function fail(message: string): never {
  process.stderr.write(`coltrast: ${message}\n`);
  process.exit(2); // the 'exit' handler main() sets removes temporary files
}

/**
 * How the running command's flags reach the library. The library's argument errors name its options
 * (`options.loss.temperature must be a number > 0, got number -1`); a user of the command line typed flags, and
 * main() names those instead (flagNamed): `--temperature must be a number > 0, got -1`.
 */
export interface FlagNames {
  /** The flag (without --) that sets each option path: { 'loss.temperature': 'temperature' }. */
  options: Record<string, string>;
  /** The flags given, as parseArgs read them: a string, or true for a boolean flag. */
  typed: Record<string, string | boolean | undefined>;
  /** The boolean flags among the command's. */
  booleans: ReadonlySet<string>;
  /** Flags whose value the command splits at commas into a list (--matryoshka 768,512): the option holds an array. */
  lists?: ReadonlySet<string>;
}

/** The running command's FlagNames (nameFlags sets them once its flags are parsed). */
let flagNames: FlagNames | undefined;

/** A flag's kind in either form the commands' tables use ({ type: 'string' } or 'string'). */
type FlagKind = string | { type: string };

/**
 * Records the running command's FlagNames: each of its `flags` sets the option of its name in camelCase (--batch-size:
 * batchSize) unless `paths` says otherwise: other option paths, or null for a flag that sets no option by a name of its own.
 */
function nameFlags(flags: Record<string, FlagKind>, typed: FlagNames['typed'], paths: Record<string, string | string[] | null> = {}, lists: string[] = []): FlagNames {
  const options: Record<string, string> = {};
  for (const flag of Object.keys(flags)) {
    const set = flag in paths ? paths[flag] : flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    for (const option of set === null ? [] : Array.isArray(set) ? set : [set]) options[option] = flag;
  }
  const booleans = new Set(Object.keys(flags).filter((flag) => (typeof flags[flag] === 'string' ? flags[flag] : (flags[flag] as { type: string }).type) === 'boolean'));
  return (flagNames = { options, typed, booleans, lists: new Set(lists) });
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * `message` (a library error's) with the options it names that a flag of the command sets named by the flag:
 * `options.batchSize must be a positive integer, got number 0` is `--batch-size must be a positive integer, got 0`. A
 * value the flag was typed with is said as typed; one the command converted (a list, a file's text) is left as the
 * library saw it. An option no flag sets keeps its name, and so does one a negating flag (--no-prompts: prompts false)
 * sets, except where the message says it false: the flag's name would say the opposite.
 */
export function flagNamed(message: string, names: FlagNames): string {
  const flagOf = (path: string) => (Object.hasOwn(names.options, path) ? names.options[path] : undefined);
  let said = message.replace(/(?<![\w$.])options((?:\.[A-Za-z_$][\w$]*)+)(:? (?:true|false)\b)?/g, (whole, dotted: string, value: string | undefined) => {
    const flag = flagOf(dotted.slice(1));
    if (flag === undefined) return whole;
    if (flag.startsWith('no-')) return value?.endsWith('false') ? `--${flag}` : whole;
    // "give options.writable: true too": a boolean flag given is the true.
    if (value?.endsWith('true') && names.booleans.has(flag)) return `--${flag}`;
    return `--${flag}${value ?? ''}`;
  });
  // Checks of values passed on as they are (threads) name them bare: a message that starts with one names its flag.
  said = said.replace(/^([A-Za-z_$][\w$]*)(?= must be )/, (name: string) => {
    const flag = flagOf(name);
    return flag === undefined || flag.startsWith('no-') ? name : `--${flag}`;
  });
  // So do advice ("set perDocument to 1") and reasons ("it is for tokenStorage 'residual'") by a camelCase name, never
  // an English word; not within braces, where a name is code ("train({ crossEncoder })"), nor in a path, a dotted
  // field (index.json's "sparseEncoder.quantize") or quotes.
  said = said.replace(/(?<![\w$.\-/\\"'`])([a-z]+[A-Z][\w$]*)(?![\w$(/\\"'`]|\.[\w$])/g, (name: string, _: string, at: number, text: string) => {
    const flag = flagOf(name);
    const braces = [...text.slice(0, at)].reduce((depth, c) => depth + (c === '{' ? 1 : c === '}' ? -1 : 0), 0);
    return flag === undefined || flag.startsWith('no-') || braces > 0 ? name : `--${flag}`;
  });
  for (const [flag, raw] of Object.entries(names.typed)) {
    if (raw === undefined || raw === false || !Object.values(names.options).includes(flag)) continue;
    const checked = new RegExp(`(--${escapeRegExp(flag)} must be .*?), got `);
    if (raw === true) {
      // A boolean flag given that must not be: its value as the library describes it (validate.ts's describe: boolean true, or
      // an object or class instance the flag stands for) says nothing more; what follows it stays.
      said = said.replace(new RegExp(`${checked.source}(?:boolean true|an? [A-Z]?\\w*(?: of length \\d+)?)(?=$|\\W)`), '$1');
      continue;
    }
    // The library's description of the value (validate.ts's describe) of the flag's value as typed, or of the list it became.
    const described = [`the string ${JSON.stringify(raw.length > 60 ? `${raw.slice(0, 60)}…` : raw)}`];
    if (raw.trim() !== '' && Number.isFinite(Number(raw))) described.push(`number ${String(Number(raw))}`);
    const lists = names.lists?.has(flag) ? '|an array of length \\d+' : '';
    const shown = /^[^\s"']+$/.test(raw) ? raw : JSON.stringify(raw);
    said = said.replace(new RegExp(`${checked.source}(?:${described.map(escapeRegExp).join('|')}${lists})(?![\\w.])`), (_, head: string) => `${head}, got ${shown}`);
  }
  // "(options.port, --port)" named twice.
  return said.replace(/(--[a-z][a-z0-9-]*)(?:, \1(?![\w-]))+/g, '$1');
}

/** `work`, whose library errors name `options` as the flags given there (a reranker's adapter is --reranker-adapter). */
async function withFlags<T>(work: Promise<T>, options: Record<string, string>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    if (error instanceof ColtrastError && flagNames) error.message = flagNamed(error.message, { ...flagNames, options: { ...flagNames.options, ...options } });
    throw error;
  }
}

/**
 * `text` from documents or data, safe to print on a terminal: C0 and C1 control characters other than tab and
 * newline (an escape sequence that clears the screen, a carriage return that overwrites the line) as \u001b.
 */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** The file or folder the running command writes: named in a file system error that names none (a failed write to an open file). */
let writing: string | undefined;

/**
 * The output location `target` of a command (--output), checked before any work (files.ts checkWritable). `inputs`
 * are the files the command reads ([how the user named it, its path]): an output that is one of them (the same file,
 * by any path) is refused, as the finished output would replace the input the user still has.
 */
function outputTo(target: string, what: string, kind: 'file' | 'folder', inputs: [string, string | undefined][] = []): void {
  checkWritable(target, what, kind); // a ColtrastError: main() prints it and exits 2
  const out = fs.statSync(target, { throwIfNoEntry: false });
  for (const [name, input] of inputs) {
    const read = out?.isFile() && input !== undefined ? fs.statSync(input, { throwIfNoEntry: false }) : undefined;
    if (read && read.dev === out!.dev && read.ino === out!.ino) fail(`${what} ${target} is ${name} ${input}: writing it would replace what the command reads; give another path`);
  }
  writing = target;
}

/**
 * A file system error on a file in the hidden staging folder or temporary file an atomic writer puts beside the output
 * (`.<name>.saving-XXXXXX/docs.jsonl`, gone by now), made to name the output instead.
 */
function stagedAs(error: unknown): unknown {
  const e = error as NodeJS.ErrnoException;
  if (writing === undefined || typeof e?.path !== 'string') return error;
  const target = path.resolve(writing);
  if (path.resolve(e.path).startsWith(path.join(path.dirname(target), `.${path.basename(target)}.`))) e.path = writing;
  return error;
}

/**
 * How a command that writes `output` prints its summary: on stderr when `output` is a device or pipe written in place
 * (--output /dev/stdout), where a summary printed on stdout would end up in the output; else on stdout.
 */
function summaryPrinter(output: string | undefined): (line: string) => void {
  return output !== undefined && writtenInPlace(output) ? (line) => console.error(line) : (line) => console.log(line);
}

/** A line said on stderr when SIGINT or SIGTERM interrupts the command (train: where its checkpoint is), or undefined. */
let interruptNote: (() => string | undefined) | undefined;

/**
 * The signal of a run that stops cleanly (train, rag-train: they write a checkpoint, see interruptedRun): the first SIGINT
 * or SIGTERM aborts it, with the signal's name as the reason; a second ends the process at once.
 */
let interruptAbort: AbortController | undefined;
/** Whether the run of interruptAbort has taken a step: before its first, a signal ends the process at once (a download or
 * the models' loading would otherwise go on to its end, with nothing to checkpoint). */
let interruptStepped = false;

/** The options that let a run's first step be seen (interruptStepped), `onProgress` wrapped. */
function steppedProgress<T extends { onProgress?: (p: any) => void }>(options: T): T {
  const given = options.onProgress;
  return { ...options, onProgress: (p: unknown) => {
    interruptStepped = true;
    given?.(p);
  } };
}

/**
 * A run's rejection, passed on, unless it is the ABORTED of the first SIGINT or SIGTERM (interruptAbort): then the run
 * has stopped, its checkpoint written, and the process ends by that signal after the command's interruptNote (or, no
 * checkpoint there, a note that nothing was written), as a second signal would have ended it.
 */
function interruptedRun(error: unknown): Promise<never> {
  const signal = interruptAbort?.signal;
  if (!signal?.aborted || !(error instanceof ColtrastError) || error.code !== 'ABORTED') throw error;
  endByInterrupt(signal.reason as NodeJS.Signals, 'training interrupted before its first step; nothing was written');
  return new Promise<never>(() => undefined); // the signal ends the process
}

/** A training command's interruptNote: where its checkpoint is and how to resume, once there is one. */
function checkpointNote(output: string): () => string | undefined {
  const checkpoint = `${path.resolve(output)}.checkpoint`;
  return () =>
    fs.existsSync(checkpoint) ? `training interrupted; its checkpoint is at ${checkpoint}: run the same command with --resume to continue from it` : undefined;
}

/** --system is the chat's system message: without --chat there is none to put it in. */
function systemNeedsChat(o: { system?: unknown; chat?: unknown }): void {
  if (o.system !== undefined && !o.chat) fail('--system goes with --chat');
}

/** A file's whole text (a flag that names a file, e.g. a chat template). */
function readTextFile(file: string, flag: string): string {
  const problem = notAFile(file);
  if (problem) fail(`${flag}: ${file} ${problem}`);
  return fs.readFileSync(file, 'utf8');
}

/**
 * A text of embed's input, read at `where` (`what` names it there): an empty or blank one is refused. The output's
 * rows are the input's, in order, so skipping it would move every later vector up a row without a word, and its
 * vector would be the model's for no text at all. Blank lines are no rows, in every format (as Python's csv module,
 * pandas and JSON Lines readers skip them): they are skipped.
 */
function inputText(text: string, where: string, what: string): string {
  if (text.trim() === '') {
    fail(`${where}: ${what} is ${text === '' ? 'empty' : 'blank (only whitespace)'}: embed writes a vector a row, in order, and neither skips a row (every later vector would move up one) nor embeds no text; write the text there, or remove the row`);
  }
  return text;
}

/** An input file named `-` is the standard input, as Unix tools read it (`cat texts.txt | coltrast embed -`): one text a line. */
async function readTexts(file: string): Promise<string[]> {
  if (file === '-') {
    const texts: string[] = [];
    for await (const line of readline.createInterface({ input: process.stdin, crlfDelay: Infinity })) if (line.trim().length > 0) texts.push(line);
    return texts;
  }
  const problem = notAFile(file);
  if (problem) fail(`input file ${file} ${problem}`);
  if (CSV.test(file)) {
    // A table's "text" column, a text a row: a quoted cell may hold line breaks and commas. Its other columns (an id)
    // are not read; the output's "index" is the text's row among the rows read. A row of empty cells is read too
    // (Python's csv module and pandas give it back as a row), and refused with the others whose text is empty.
    const texts = await parseCsv(
      file,
      (columns, where) => {
        const i = columns.indexOf('text');
        if (i < 0) fail(`${where}: no "text" column (columns found: ${columns.join(', ')}): embed reads a CSV or TSV file whose header row names a "text" column, a text a row`);
        return (fields, at) => inputText(fields[i], at, 'the "text" cell');
      },
      { keepBlankRows: true },
    );
    if (texts.length === 0) fail(`input file ${file} holds no texts (it is empty or has only a header row): give a header row naming a "text" column, then a text a row`);
    return texts;
  }
  if (!JSONL.test(file)) {
    const texts: string[] = [];
    for await (const lines of fileLines(file)) for (const line of lines) if (line.trim().length > 0) texts.push(line);
    return texts;
  }
  return parseJsonLines(file, (value, where) => {
    const text = (value as { text?: unknown })?.text;
    if (typeof text !== 'string') fail(`${where}: expected an object with a "text" string`);
    return inputText(text, where, '"text"');
  });
}

const INFO_OPTIONS = { json: { type: 'boolean' } } as const;

async function info(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: INFO_OPTIONS, strict: true });
  const { cpuMemory, runtimeInfo } = runtimeModule();
  const r = runtimeInfo();
  if (values.json) {
    console.log(JSON.stringify({ ...r, cpuMemory: cpuMemory() }, null, 2));
    return;
  }
  console.log(`coltrast ${r.version}`);
  console.log(`libtorch ${r.torchVersion} (${r.torchSource ?? 'unknown source'})`);
  const b = r.binary;
  console.log(`addon: ${b.kind === 'prebuild' ? `prebuild ${b.variant}` : 'local build'} (${b.file})`);
  if (b.libtorch) console.log(`  runs on libtorch ${b.libtorch.version} from ${b.libtorch.source} (${b.libtorch.libDir})`);
  console.log(`  chosen because: ${b.reason}`);
  const gpus = r.cudaCapabilities?.map((c, i) => `cuda:${i} sm_${c}`).join(', ');
  console.log(`CUDA: ${r.cudaAvailable ? `${r.cudaDeviceCount} device(s)${gpus ? ` (${gpus})` : ''}` : 'not available'}${r.cudaArchs ? `; kernels built for ${r.cudaArchs}` : ''}`);
  if (r.cudaRuntime || r.nvidiaDriver) {
    console.log(`  CUDA runtime ${r.cudaRuntime ?? '-'}; NVIDIA driver ${r.nvidiaDriver ?? 'not loaded'}${r.cudaDriver ? ` (supports CUDA up to ${r.cudaDriver})` : ''}`);
  }
  console.log(`CPU threads: ${r.threads}; CPU work runs on ${r.cpuWorkThread === 'own' ? "one thread of coltrast's own" : "libuv's thread pool (OpenBLAS has threads of its own)"}`);
  console.log(
    `attention: ${r.attention === 'eager' ? 'eager (matmul, softmax, matmul)' : 'libtorch scaled_dot_product_attention (fused kernels)'}` +
      (r.cudaAvailable && r.attention !== 'eager' ? `; cuDNN's attention kernels ${r.cudnnAttention ? 'allowed (COLTRAST_CUDNN_ATTENTION)' : 'off (COLTRAST_CUDNN_ATTENTION=1 allows them)'}` : ''),
  );
  console.log(`model types: ${r.modelTypes.join(', ')}`);
  const cpu = cpuMemory();
  console.log(
    cpu.caching
      ? `CPU tensors of 1 MiB and more: coltrast's caching allocator (keeps up to ${(cpu.cacheLimitBytes / 2 ** 30).toFixed(1)} GiB; COLTRAST_CPU_ALLOCATOR=system turns it off)`
      : 'CPU tensors: libtorch\'s default allocator (COLTRAST_CPU_ALLOCATOR=system)',
  );
  console.log(`BLAS: ${r.blas.kind}${r.blas.libraries.length ? ` (${r.blas.libraries.join(', ')})` : r.blas.builtIn ? ' (linked into libtorch)' : ''}`);
  if (r.blas.warning) console.log(`warning: ${r.blas.warning}`);
}

/** Texts `coltrast embed` embeds and writes before it embeds the next ones. */
const EMBED_PART = 16384;

const EMBED_OPTIONS = {
  model: { type: 'string' },
  output: { type: 'string' },
  'batch-size': { type: 'string' },
  task: { type: 'string' },
  'prompt-name': { type: 'string' },
  prompt: { type: 'string' },
  tokens: { type: 'boolean' },
  'truncate-dim': { type: 'string' },
  layers: { type: 'string' },
  adapter: { type: 'string' },
  'no-adapter-base-check': { type: 'boolean' },
  device: { type: 'string' },
  dtype: { type: 'string' },
  quantize: { type: 'string' },
  threads: { type: 'string' },
  json: { type: 'boolean' },
  sparse: { type: 'boolean' },
  'max-active-dims': { type: 'string' },
} as const;

async function embed(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: EMBED_OPTIONS,
  });
  // --output is the file written (the library's output: 'tokens' is --tokens).
  nameFlags(EMBED_OPTIONS, values, { output: null, tokens: null, model: null, json: null, sparse: null, 'no-adapter-base-check': 'checkAdapterBase' });
  if (positionals.length !== 1) fail('embed takes one input file (see coltrast help)');
  if (values.task !== undefined && values.task !== 'query' && values.task !== 'document') fail(`--task must be query or document, not ${values.task}`);
  if (values.output) outputTo(values.output, '--output', 'file', [['the input file', positionals[0]]]);
  if (values.tokens && values.output && vectorFormat(values.output) === 'npy') fail(`--tokens gives each text several vectors, and a .npy file holds one array of rows: write ${values.output.replace(/\.npy$/i, '.safetensors')} ("tokens" and "offsets") or a .jsonl file`);
  const say = summaryPrinter(values.output);
  const texts = await readTexts(positionals[0]);
  if (texts.length === 0) fail(`input file ${positionals[0]} holds no texts: give one text a line (a .jsonl file: one {"text": ...} a line)`);
  const started = Date.now();
  const model = values.model ?? DEFAULT_MODEL;
  const kindFlags = { tokens: values.tokens, 'truncate-dim': values['truncate-dim'], layers: values.layers, adapter: values.adapter, 'no-adapter-base-check': values['no-adapter-base-check'], 'max-active-dims': values['max-active-dims'] };
  if (await readsAsSparse(model, values.sparse, kindFlags)) return embedSparse(model, values, texts, say);
  const enc = await encoderModule().Encoder.load(model, {
    device: (values.device ?? 'auto') as Device,
    dtype: values.dtype as DType | undefined,
    threads: numberFlag('threads', values.threads, 'count'),
    truncateDim: numberFlag('truncate-dim', values['truncate-dim'], 'count'),
    layers: numberFlag('layers', values.layers, 'count'),
    adapter: values.adapter,
    ...(values['no-adapter-base-check'] && { checkAdapterBase: false }),
    ...quantizeFlag(values.quantize),
  });
  const bar = values.json ? undefined : new ProgressBar('embed', 'texts');
  const tokens = values.tokens === true || enc.multiVector !== undefined;
  const options = embedFlags(values);
  const write = values.output !== undefined || !values.json;
  const format = values.output ? vectorFormat(values.output) : 'jsonl';
  const dimension = tokens ? enc.tokenDimension : enc.dimension;
  // .npy / .safetensors: float32 as the model gave them, a part at a time behind a header that says their count.
  const binary = format === 'jsonl' ? undefined : vectorWriter(values.output!, format, texts.length, dimension, tokens ? 'tokens' : 'pooled');
  const lines = binary ? undefined : jsonLinesOut(values.output);
  const round = (v: Float32Array) => Array.from(v, (x) => +x.toFixed(6));
  // A part of the input at a time, its lines written (waiting while the output's buffer is full) before the next part
  // is embedded: the vectors of a large input are never all in memory, nor all its JSON lines in the stream's buffer.
  try {
    for (let start = 0; start < texts.length; start += EMBED_PART) {
      const part = texts.slice(start, start + EMBED_PART);
      const partOptions = { ...options, onProgress: (done: number) => bar?.update(start + done, texts.length) };
      const rows = tokens ? await enc.embed(part, { ...partOptions, output: 'tokens' }) : undefined;
      const pooled = tokens ? undefined : await enc.embed(part, partOptions);
      if (!write) continue;
      if (binary) {
        if (rows) for (const m of rows) await binary.tokens(m.data.subarray(0, m.dims[0] * m.dims[1]));
        else await binary.pooled(pooled!.data);
        continue;
      }
      for (let i = 0; i < part.length; i++) {
        let line: string;
        if (rows) {
          const m = rows[i];
          const vectors = Array.from({ length: m.dims[0] }, (_, r) => round(m.data.subarray(r * m.dims[1], (r + 1) * m.dims[1])));
          line = JSON.stringify({ index: start + i, tokens: vectors });
        } else {
          line = JSON.stringify({ index: start + i, embedding: round(pooled!.data.subarray(i * dimension, (i + 1) * dimension)) });
        }
        await lines!.put(`${line}\n`);
      }
    }
    await (binary ?? lines!).commit();
  } catch (error) {
    (binary ?? lines!).abort();
    throw error;
  }
  const seconds = (Date.now() - started) / 1000;
  const summary = { texts: texts.length, dimension, vectors: tokens ? 'tokens' : 'pooled', device: enc.device, seconds, output: values.output ?? null };
  if (values.json) say(JSON.stringify(summary));
  else if (values.output) console.error(`embedded ${texts.length} texts (${tokens ? 'token vectors, ' : ''}dim ${dimension}, ${enc.device}) in ${seconds.toFixed(2)} s -> ${values.output}`);
  enc.dispose();
}

type EmbedFlags = { [K in keyof typeof EMBED_OPTIONS]?: (typeof EMBED_OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

/** coltrast embed's batch and prompt flags, as embed() and encode() take them. */
function embedFlags(values: EmbedFlags): { batchSize?: number; task?: 'query' | 'document'; promptName?: string; prompt?: string } {
  return { batchSize: numberFlag('batch-size', values['batch-size'], 'count'), task: values.task as 'query' | 'document' | undefined, promptName: values['prompt-name'], prompt: values.prompt };
}

/**
 * Where coltrast embed writes its JSON lines: `output` through a temporary file renamed over it at the end (an error
 * or Ctrl-C leaves the old file), else stdout, waiting while its buffer is full.
 */
function jsonLinesOut(output: string | undefined): { put(text: string): Promise<void>; commit(): Promise<void>; abort(): void } {
  const file = output === undefined ? undefined : atomicOutput(output);
  return {
    put: file
      ? file.write
      : async (text) => {
          if (!process.stdout.write(text)) await once(process.stdout, 'drain');
        },
    commit: async () => file?.commit(),
    abort: () => file?.abort(),
  };
}

const CLUSTER_OPTIONS = {
  model: { type: 'string' },
  output: { type: 'string' },
  threshold: { type: 'string' },
  'min-size': { type: 'string' },
  pairs: { type: 'boolean' },
  'top-k': { type: 'string' },
  'min-score': { type: 'string' },
  'max-pairs': { type: 'string' },
  task: { type: 'string' },
  'batch-size': { type: 'string' },
  device: { type: 'string' },
  dtype: { type: 'string' },
  quantize: { type: 'string' },
  threads: { type: 'string' },
  json: { type: 'boolean' },
} as const;

/**
 * `coltrast cluster <texts>`: the texts' communities (communityDetection over the model's vectors), or with --pairs
 * their near-duplicate pairs (paraphraseMining, those at --min-score or above), as JSON lines: on stdout, or --output.
 */
async function cluster(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, strict: true, options: CLUSTER_OPTIONS });
  nameFlags(CLUSTER_OPTIONS, values, {
    output: null, model: null, json: null, pairs: null, 'min-score': null, 'batch-size': 'batchSize', task: null, device: null, dtype: null, quantize: null, threads: null,
    'min-size': 'minCommunitySize', 'top-k': 'topK', 'max-pairs': 'maxPairs',
  });
  if (positionals.length !== 1) fail('cluster takes one input file (see coltrast help)');
  if (values.task !== undefined && values.task !== 'query' && values.task !== 'document') fail(`--task must be query or document, not ${values.task}`);
  const communityFlags = (['threshold', 'min-size'] as const).filter((f) => values[f] !== undefined);
  const pairFlags = (['top-k', 'min-score', 'max-pairs'] as const).filter((f) => values[f] !== undefined);
  if (values.pairs && communityFlags.length > 0) fail(`--pairs lists near-duplicate pairs: ${communityFlags.map((f) => `--${f}`).join(', ')} ${communityFlags.length > 1 ? 'are' : 'is'} for communities (without --pairs)`);
  if (!values.pairs && pairFlags.length > 0) fail(`${pairFlags.map((f) => `--${f}`).join(', ')} ${pairFlags.length > 1 ? 'go' : 'goes'} with --pairs (near-duplicate pairs)`);
  const minScore = numberFlag('min-score', values['min-score'], 'number');
  if (values.output) outputTo(values.output, '--output', 'file', [['the input file', positionals[0]]]);
  const say = values.output ? summaryPrinter(values.output) : (line: string) => console.error(line);
  const texts = await readTexts(positionals[0]);
  if (texts.length === 0) fail(`input file ${positionals[0]} holds no texts: give one text a line (a .jsonl file: one {"text": ...} a line)`);
  const started = Date.now();
  const model = values.model ?? DEFAULT_MODEL;
  if (await isSparseModel(model)) fail(`${model} is a sparse encoder: cluster compares the cosine similarities of an embedding model's vectors`);
  const enc = await encoderModule().Encoder.load(model, {
    device: (values.device ?? 'auto') as Device,
    dtype: values.dtype as DType | undefined,
    threads: numberFlag('threads', values.threads, 'count'),
    ...quantizeFlag(values.quantize),
  });
  let lines: ReturnType<typeof jsonLinesOut> | undefined;
  try {
    if (enc.multiVector) fail(`${model} is a multi-vector model: cluster compares one vector a text`);
    const bar = values.json ? undefined : new ProgressBar('embed', 'texts');
    const batchSize = numberFlag('batch-size', values['batch-size'], 'count');
    const vectors = await enc.embed(texts, { ...(batchSize && { batchSize }), ...(values.task && { task: values.task as 'query' | 'document' }), onProgress: (done) => bar?.update(done, texts.length) });
    lines = jsonLinesOut(values.output);
    let found: number;
    if (values.pairs) {
      const all = await communitiesModule().paraphraseMining(vectors, { topK: numberFlag('top-k', values['top-k'], 'count'), maxPairs: numberFlag('max-pairs', values['max-pairs'], 'count') });
      const kept = minScore === undefined ? all : all.filter((p) => p.score >= minScore);
      for (const p of kept) await lines.put(`${JSON.stringify({ score: +p.score.toFixed(6), i: p.i, j: p.j, text1: texts[p.i], text2: texts[p.j] })}\n`);
      found = kept.length;
    } else {
      const communities = await communitiesModule().communityDetection(vectors, { threshold: numberFlag('threshold', values.threshold, 'number'), minCommunitySize: numberFlag('min-size', values['min-size'], 'count') });
      for (const [k, rows] of communities.entries()) await lines.put(`${JSON.stringify({ community: k, size: rows.length, rows, texts: rows.map((i) => texts[i]) })}\n`);
      found = communities.length;
    }
    await lines.commit();
    const seconds = (Date.now() - started) / 1000;
    const what = values.pairs ? 'pairs' : 'communities';
    if (values.json) say(JSON.stringify({ texts: texts.length, [what]: found, device: enc.device, seconds, output: values.output ?? null }));
    else say(`${found} ${what} among ${texts.length} texts (${enc.device}) in ${seconds.toFixed(2)} s${values.output ? ` -> ${values.output}` : ''}`);
  } catch (error) {
    lines?.abort();
    throw error;
  } finally {
    enc.dispose();
  }
}

/**
 * `coltrast embed` with a sparse (SPLADE) encoder: JSONL {"index", "indices", "values"} (each text's non-zero entries),
 * or a .safetensors file of compressed sparse rows (lib/vector-files.ts); a part of the texts at a time, as embed().
 */
async function embedSparse(model: string, values: EmbedFlags, texts: string[], say: (line: string) => void): Promise<void> {
  const format = values.output ? vectorFormat(values.output) : 'jsonl';
  if (format === 'npy') fail(`${values.output}: a .npy file holds dense rows, and a sparse encoder's vectors are as wide as its vocabulary: write ${values.output!.replace(/\.npy$/i, '.safetensors')} (compressed sparse rows: "values", "indices", "offsets") or a .jsonl file`);
  const started = Date.now();
  const enc = await sparseEncoderModule().SparseEncoder.load(model, {
    device: (values.device ?? 'auto') as Device,
    dtype: values.dtype as DType | undefined,
    threads: numberFlag('threads', values.threads, 'count'),
    maxActiveDims: numberFlag('max-active-dims', values['max-active-dims'], 'count'),
    ...quantizeFlag(values.quantize),
  });
  const bar = values.json ? undefined : new ProgressBar('embed', 'texts');
  const options = embedFlags(values);
  const write = values.output !== undefined || !values.json;
  const binary = format === 'safetensors' ? sparseVectorWriter(values.output!, texts.length, enc.dimension) : undefined;
  const lines = binary ? undefined : jsonLinesOut(values.output);
  let entries = 0;
  try {
    for (let start = 0; start < texts.length; start += EMBED_PART) {
      const part = texts.slice(start, start + EMBED_PART);
      const vectors = await enc.encode(part, { ...options, onProgress: (done: number) => bar?.update(start + done, texts.length) });
      for (const v of vectors) entries += v.indices.length;
      if (!write) continue;
      if (binary) {
        await binary.write(vectors);
        continue;
      }
      for (let i = 0; i < part.length; i++) {
        await lines!.put(`${JSON.stringify({ index: start + i, indices: Array.from(vectors[i].indices), values: Array.from(vectors[i].values, (x) => +x.toFixed(6)) })}\n`);
      }
    }
    await (binary ?? lines!).commit();
  } catch (error) {
    (binary ?? lines!).abort();
    throw error;
  } finally {
    enc.dispose();
  }
  const seconds = (Date.now() - started) / 1000;
  const perText = texts.length > 0 ? entries / texts.length : 0;
  const summary = { texts: texts.length, dimension: enc.dimension, vectors: 'sparse', meanActiveDims: perText, device: enc.device, seconds, output: values.output ?? null };
  if (values.json) say(JSON.stringify(summary));
  else if (values.output) console.error(`embedded ${texts.length} texts (sparse, ${perText.toFixed(1)} of ${enc.dimension} entries a text, ${enc.device}) in ${seconds.toFixed(2)} s -> ${values.output}`);
}

const TRAIN_FLAGS = {
  config: 'string', model: 'string', data: 'string', output: 'string', epochs: 'int', 'batch-size': 'int', 'learning-rate': 'number',
  'warmup-ratio': 'number', schedule: 'string', 'weight-decay': 'number', 'max-grad-norm': 'number', 'gradient-accumulation': 'int',
  'val-split': 'number', seed: 'int', 'contrastive-weight': 'number', 'late-interaction-weight': 'number', temperature: 'number',
  'late-interaction': 'string', symmetric: 'boolean', patience: 'int', metric: 'string', 'max-negatives': 'int', 'hard-negatives': 'int',
  device: 'string', threads: 'int', 'checkpoint-every': 'int', resume: 'boolean', json: 'boolean', 'print-schema': 'boolean',
  'projection-dim': 'int', 'projection-activation': 'string', precision: 'string', 'mini-batch-size': 'int', 'no-prompts': 'boolean', 'multi-vector': 'int',
  'cross-encoder': 'boolean', 'cross-encoder-loss': 'string', 'cross-encoder-scale': 'number', 'cross-encoder-template': 'string', 'cross-encoder-tokens': 'string',
  teacher: 'string', distillation: 'string', 'distillation-weight': 'number', 'teacher-temperature': 'number',
  guide: 'string', 'guide-margin': 'number', 'guide-margin-strategy': 'string', 'freeze-base': 'boolean', 'contrastive-tension': 'boolean', 'gradient-checkpointing': 'boolean', 'mine-negatives': 'boolean',
  lora: 'boolean', 'lora-rank': 'number', 'lora-alpha': 'number', 'lora-targets': 'string',
  matryoshka: 'string', sparse: 'boolean', 'query-regularizer': 'number', 'document-regularizer': 'number', 'regularizer-warmup': 'number', 'regularizer-schedule': 'string',
  mlm: 'boolean', 'mlm-probability': 'number', 'pair-loss': 'string', margin: 'number', triplet: 'boolean', 'triplet-distance': 'string', 'triplet-margin': 'number',
  'batch-triplet': 'string', 'batch-triplet-distance': 'string', 'batch-triplet-margin': 'number',
  'adaptive-layers': 'boolean', 'layers-per-step': 'string', gor: 'boolean', 'mega-batch-margin': 'boolean',
} as const;

/** The option of train() each flag sets where that is not the flag's name in camelCase (null: none); see nameFlags. */
const TRAIN_FLAG_OPTIONS: Record<string, string | string[] | null> = {
  'contrastive-weight': 'loss.contrastiveWeight', 'late-interaction-weight': 'loss.lateInteractionWeight', temperature: 'loss.temperature',
  'late-interaction': 'loss.lateInteraction', symmetric: 'loss.symmetric', distillation: 'loss.distillation', 'distillation-weight': 'loss.distillationWeight',
  'teacher-temperature': 'loss.teacherTemperature', 'pair-loss': 'loss.pairs', margin: 'loss.margin', triplet: 'loss.triplet', 'triplet-distance': 'loss.triplet.distance', 'triplet-margin': 'loss.triplet.margin',
  'batch-triplet': ['loss.batchTriplet', 'loss.batchTriplet.kind'], 'batch-triplet-distance': 'loss.batchTriplet.distance', 'batch-triplet-margin': 'loss.batchTriplet.margin', matryoshka: 'loss.matryoshka.dimensions',
  'adaptive-layers': 'loss.adaptiveLayers', 'layers-per-step': 'loss.adaptiveLayers.layersPerStep', gor: 'loss.gor', 'mega-batch-margin': 'loss.megaBatchMargin', patience: 'earlyStopping.patience', metric: 'earlyStopping.metric',
  'hard-negatives': 'mining.hardNegatives', 'no-prompts': 'prompts', 'lora-rank': 'lora.rank', 'lora-alpha': 'lora.alpha', 'lora-targets': 'lora.targetModules',
  'multi-vector': ['multiVector', 'multiVector.dimension'], 'projection-dim': ['projection', 'projection.dimension'], 'projection-activation': 'projection.activation',
  guide: ['guide', 'guide.model'], 'guide-margin': 'guide.margin', 'guide-margin-strategy': 'guide.marginStrategy', 'cross-encoder-loss': 'crossEncoder.loss',
  'cross-encoder-scale': 'crossEncoder.scale', 'cross-encoder-template': 'crossEncoder.chatTemplate', 'cross-encoder-tokens': 'crossEncoder.tokens',
  'query-regularizer': 'sparse.queryRegularizer', 'document-regularizer': 'sparse.documentRegularizer',
  'regularizer-warmup': 'sparse.warmupRatio', 'regularizer-schedule': 'sparse.schedule', 'mlm-probability': 'mlm.probability',
  config: null, json: null, 'print-schema': null,
};

/** Whether `config` sets the option at `path` ('loss.temperature'), or a value above it that is not an object of options. */
function configSets(config: object, path: string): boolean {
  let value: unknown = config;
  for (const key of path.split('.')) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return value !== undefined && value !== config;
    value = (value as Record<string, unknown>)[key];
  }
  return value !== undefined;
}

/** A numeric flag (undefined when absent): 'number' any finite number, 'int' an integer, 'count' a positive integer. */
function numberFlag(flag: string, raw: string | undefined, kind: 'number' | 'int' | 'count'): number | undefined {
  if (raw === undefined) return undefined;
  const n = raw.trim() === '' ? NaN : Number(raw); // Number('') is 0: an empty value is no number
  const ok = Number.isFinite(n) && (kind === 'number' || (Number.isInteger(n) && (kind === 'int' || n > 0)));
  const expected = { number: 'a number', int: 'an integer', count: 'a positive integer' }[kind];
  if (!ok) fail(`--${flag} must be ${expected}, got ${raw}`);
  return n;
}

/**
 * --quantize as a load option: { quantize } when given (the library checks the value, naming the flag), else none;
 * 'none' says none outright (an index's recorded int8 then does not apply: builtNumerics).
 */
function quantizeFlag(raw: string | undefined): { quantize?: Quantize } {
  return raw === undefined || raw === 'none' ? {} : { quantize: raw as Quantize };
}

/**
 * The dtype and quantize of a model that embeds an index's queries (or new documents): --dtype and --quantize as given
 * where either is (`given`: the raw flags; --quantize none is none, --dtype float32 unquantized unless --quantize says
 * int8), else as index.json says the model ran (`built`), where `device` can run that (int8 on the CPU, float16 on a
 * GPU; 'auto' as CUDA is or is not here), else the defaults: queries embedded as the documents were.
 */
function builtNumerics(built: { dtype?: string; quantize?: string }, device: Device, given: { dtype?: string; quantize?: string }): { dtype?: DType; quantize?: Quantize } {
  if (given.dtype !== undefined || given.quantize !== undefined) {
    return { ...(given.dtype !== undefined && { dtype: given.dtype as DType }), ...quantizeFlag(given.quantize) };
  }
  const gpu = device === 'auto' ? runtimeModule().runtimeInfo().cudaAvailable : device.startsWith('cuda');
  const dtype = built.dtype === 'bfloat16' || (built.dtype === 'float16' && gpu) ? built.dtype : undefined;
  const quantize = built.quantize === 'int8' && !gpu ? built.quantize : undefined;
  return { ...(dtype !== undefined && { dtype: dtype as DType }), ...(quantize !== undefined && { quantize: quantize as Quantize }) };
}

function flagValue(flag: string, kind: string, raw: string | boolean): unknown {
  if (kind === 'boolean' || kind === 'string') return raw;
  return numberFlag(flag, raw as string, kind === 'int' ? 'int' : 'number');
}

/** Four decimals, or three significant digits below 0.001 (a Contrastive Tension run's losses can be ~1e-5). */
function formatLoss(x: number): string {
  return Math.abs(x) >= 1e-3 || x === 0 ? x.toFixed(4) : x.toExponential(2);
}

/** A triplet run's accuracy after its retrieval metrics, else nothing. */
function tripletPart(m: RetrievalMetrics): string {
  return m.tripletAccuracy === undefined ? '' : `, triplet accuracy ${m.tripletAccuracy.toFixed(3)}`;
}

function formatMetrics(m: RetrievalMetrics | undefined, similarity?: SimilarityMetrics): string {
  if (similarity) return `Spearman ${similarity.spearman.toFixed(3)}, Pearson ${similarity.pearson.toFixed(3)} (${similarity.pairs} pairs)`;
  return m ? `Recall@1 ${m['recall@1'].toFixed(3)}, MRR@10 ${m['mrr@10'].toFixed(3)} (${m.queries} questions)${tripletPart(m)}` : 'n/a (no validation split)';
}

async function trainCommand(argv: string[]): Promise<void> {
  const options = Object.fromEntries(
    Object.entries(TRAIN_FLAGS).map(([flag, kind]) => [flag, { type: kind === 'boolean' ? ('boolean' as const) : ('string' as const) }]),
  );
  const { values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals: false });
  if (positionals.length > 0) fail('train takes flags only (see coltrast help)');
  if (values['print-schema']) {
    console.log(JSON.stringify(configSchemaModule().TRAIN_CONFIG_SCHEMA, null, 2));
    return;
  }
  const v = Object.fromEntries(
    Object.entries(values).map(([flag, raw]) => [flag, flagValue(flag, TRAIN_FLAGS[flag as keyof typeof TRAIN_FLAGS], raw as string | boolean)]),
  ) as Record<string, any>;
  let config: Partial<TrainOptions> = {};
  if (v.config) {
    const problem = notAFile(v.config);
    if (problem) fail(`config file ${v.config} ${problem}`);
    try {
      config = JSON.parse(fs.readFileSync(v.config, 'utf8'));
    } catch (error) {
      fail(`${v.config}: not valid JSON (${(error as Error).message})`);
    }
    configSchemaModule().checkTrainConfig(config, v.config);
  }
  const names = nameFlags(TRAIN_FLAGS, values, TRAIN_FLAG_OPTIONS, ['lora-targets', 'matryoshka', 'cross-encoder-tokens']);
  // An option --config sets and no flag overrides keeps its name (the config file's key): its flag was not given.
  for (const [option, flag] of Object.entries(names.options)) if (values[flag] === undefined && configSets(config, option)) delete names.options[option];
  const set = <T>(value: T | undefined, apply: (x: T) => void) => value !== undefined && apply(value);
  const o: Record<string, any> = { ...config };
  const loss: Record<string, any> = { ...(config.loss ?? {}) };
  const flat: [string, string][] = [
    ['model', 'model'], ['data', 'data'], ['output', 'output'], ['epochs', 'epochs'], ['batch-size', 'batchSize'],
    ['learning-rate', 'learningRate'], ['warmup-ratio', 'warmupRatio'], ['schedule', 'schedule'], ['weight-decay', 'weightDecay'],
    ['max-grad-norm', 'maxGradNorm'], ['gradient-accumulation', 'gradientAccumulation'], ['val-split', 'valSplit'], ['seed', 'seed'],
    ['max-negatives', 'maxNegatives'], ['device', 'device'], ['threads', 'threads'], ['checkpoint-every', 'checkpointEvery'],
    ['resume', 'resume'], ['precision', 'precision'], ['mini-batch-size', 'miniBatchSize'], ['teacher', 'teacher'], ['freeze-base', 'freezeBase'], ['contrastive-tension', 'contrastiveTension'], ['mine-negatives', 'mineNegatives'],
    ['gradient-checkpointing', 'gradientCheckpointing'],
  ];
  for (const [flag, key] of flat) set(v[flag], (x) => (o[key] = x));
  for (const [flag, key] of [['contrastive-weight', 'contrastiveWeight'], ['late-interaction-weight', 'lateInteractionWeight'], ['temperature', 'temperature'], ['late-interaction', 'lateInteraction'], ['symmetric', 'symmetric'], ['distillation', 'distillation'], ['distillation-weight', 'distillationWeight'], ['teacher-temperature', 'teacherTemperature'], ['pair-loss', 'pairs'], ['margin', 'margin']]) {
    set(v[flag], (x) => (loss[key] = x));
  }
  const triplet = () => (typeof loss.triplet === 'object' ? loss.triplet : {});
  set(v.triplet, (x: boolean) => x && (loss.triplet = triplet()));
  set(v['triplet-distance'], (x: string) => (loss.triplet = { ...triplet(), distance: x as TripletDistance }));
  set(v['triplet-margin'], (x: number) => (loss.triplet = { ...triplet(), margin: x }));
  // --batch-triplet-distance and --batch-triplet-margin go with --batch-triplet (train() refuses them without its kind).
  const batchTriplet = () => (typeof loss.batchTriplet === 'object' ? loss.batchTriplet : typeof loss.batchTriplet === 'string' ? { kind: loss.batchTriplet } : {});
  set(v['batch-triplet'], (x: string) => (loss.batchTriplet = { ...batchTriplet(), kind: x }));
  set(v['batch-triplet-distance'], (x: string) => (loss.batchTriplet = { ...batchTriplet(), distance: x as 'euclidean' | 'cosine' }));
  set(v['batch-triplet-margin'], (x: number) => (loss.batchTriplet = { ...batchTriplet(), margin: x }));
  set(v.matryoshka, (x: string) => {
    const dimensions = x.split(',').map((w) => Number(w.trim()));
    if (dimensions.some((w) => !Number.isInteger(w) || w <= 0)) fail(`--matryoshka must be positive integers separated by commas (e.g. 768,512,256,128,64), got ${x}`);
    loss.matryoshka = { ...(loss.matryoshka ?? {}), dimensions };
  });
  const adaptive = () => (typeof loss.adaptiveLayers === 'object' ? loss.adaptiveLayers : {});
  set(v['adaptive-layers'], (x: boolean) => x && (loss.adaptiveLayers = adaptive()));
  set(v['layers-per-step'], (x: string) => {
    if (!loss.adaptiveLayers) fail('--layers-per-step goes with --adaptive-layers (or loss.adaptiveLayers in --config)');
    const perStep = x === 'all' ? 'all' : Number(x);
    if (perStep !== 'all' && !(Number.isInteger(perStep) && perStep > 0)) fail(`--layers-per-step must be a positive integer or 'all', got ${x}`);
    loss.adaptiveLayers = { ...adaptive(), layersPerStep: perStep };
  });
  set(v.gor, (x: boolean) => x && (loss.gor = typeof loss.gor === 'object' ? loss.gor : true));
  set(v['mega-batch-margin'], (x: boolean) => x && (loss.megaBatchMargin = typeof loss.megaBatchMargin === 'object' ? loss.megaBatchMargin : true));
  if (Object.keys(loss).length > 0) o.loss = loss;
  set(v.patience, (x) => (o.earlyStopping = { ...(o.earlyStopping ?? {}), patience: x }));
  set(v.metric, (x) => (o.earlyStopping = { ...(o.earlyStopping ?? {}), metric: x }));
  // --metric alone chooses the epoch kept and stops nothing early: a patience as long as the run (an epoch that is
  // not the best so far can follow at most epochs - 1 others).
  if (o.earlyStopping && o.earlyStopping.patience === undefined) o.earlyStopping.patience = o.epochs ?? 1;
  set(v['hard-negatives'], (x) => (o.mining = { ...(o.mining ?? {}), hardNegatives: x }));
  set(v['no-prompts'], (x) => x && (o.prompts = false));
  set(v.lora, (x) => x && (o.lora = o.lora === undefined || o.lora === false ? true : o.lora));
  const loraOption = (key: string, value: unknown) => (o.lora = { ...(typeof o.lora === 'object' ? o.lora : {}), [key]: value });
  set(v['lora-rank'], (x) => loraOption('rank', x));
  set(v['lora-alpha'], (x) => loraOption('alpha', x));
  set(v['lora-targets'], (x: string) => loraOption('targetModules', x.split(',').map((w) => w.trim()).filter(Boolean)));
  set(v['multi-vector'], (x) => (o.multiVector = { ...(o.multiVector ?? {}), dimension: x }));
  set(v['projection-dim'], (x) => (o.projection = { ...(o.projection ?? {}), dimension: x }));
  set(v['projection-activation'], (x) => (o.projection = { ...(o.projection ?? {}), activation: x }));
  const guide = () => (typeof o.guide === 'string' ? { model: o.guide } : (o.guide ?? {}));
  set(v.guide, (x) => (o.guide = { ...guide(), model: x }));
  set(v['guide-margin'], (x) => (o.guide = { ...guide(), margin: x }));
  set(v['guide-margin-strategy'], (x) => (o.guide = { ...guide(), marginStrategy: x }));
  const crossEncoder = () => (typeof o.crossEncoder === 'object' ? o.crossEncoder : {});
  set(v['cross-encoder'], (x) => x && (o.crossEncoder = crossEncoder()));
  set(v['cross-encoder-loss'], (x) => (o.crossEncoder = { ...crossEncoder(), loss: x }));
  set(v['cross-encoder-scale'], (x) => (o.crossEncoder = { ...crossEncoder(), scale: x }));
  set(v['cross-encoder-template'], (x: string) => (o.crossEncoder = { ...crossEncoder(), chatTemplate: readTextFile(x, '--cross-encoder-template') }));
  set(v['cross-encoder-tokens'], (x: string) => (o.crossEncoder = { ...crossEncoder(), tokens: x.split(',').map((w) => w.trim()) as [string] | [string, string] }));
  const sparse = () => (typeof o.sparse === 'object' ? o.sparse : {});
  set(v.sparse, (x) => x && (o.sparse = sparse()));
  set(v['query-regularizer'], (x) => (o.sparse = { ...sparse(), queryRegularizer: x }));
  set(v['document-regularizer'], (x) => (o.sparse = { ...sparse(), documentRegularizer: x }));
  set(v['regularizer-warmup'], (x) => (o.sparse = { ...sparse(), warmupRatio: x }));
  set(v['regularizer-schedule'], (x) => (o.sparse = { ...sparse(), schedule: x }));
  const mlm = () => (typeof o.mlm === 'object' ? o.mlm : {});
  set(v.mlm, (x) => x && (o.mlm = mlm()));
  set(v['mlm-probability'], (x) => (o.mlm = { ...mlm(), probability: x }));
  if (!o.data) fail('train needs --data (or "data" in --config)');
  if (!o.output) fail('train needs --output (or "output" in --config)');
  outputTo(o.output, '--output', 'folder');
  interruptNote = checkpointNote(o.output);
  interruptAbort = new AbortController();
  const result = await trainModule().train(steppedProgress({ ...(o as TrainOptions), progressBar: !v.json, signal: interruptAbort.signal }))
    .catch(interruptedRun)
    .finally(() => (interruptAbort = undefined)); // a signal while the results print ends the process as any command's
  if (v.json) {
    console.log(JSON.stringify({ before: result.before, after: result.after, ...(result.similarity && { similarity: result.similarity }), best: result.best, modelDir: result.modelDir, timing: result.timing }));
    return;
  }
  for (const e of result.history.epochs) {
    console.log(`epoch ${e.epoch}: train loss ${formatLoss(e.trainLoss)}` + (e.valLoss !== undefined ? `, validation loss ${formatLoss(e.valLoss)}, ${formatMetrics(e.metrics, e.similarity)}` : ''));
  }
  console.log(`before training: ${formatMetrics(result.before, result.similarity?.before)}`);
  console.log(`after training:  ${formatMetrics(result.after, result.similarity?.after)} (epoch ${result.best.epoch} kept)`);
  for (const [i, d] of (result.after?.dimensions ?? []).entries()) {
    const b = result.before?.dimensions?.[i];
    const pair = (m: { 'recall@1': number; 'mrr@10': number } | undefined) => (m ? `Recall@1 ${m['recall@1'].toFixed(3)}, MRR@10 ${m['mrr@10'].toFixed(3)}` : 'n/a');
    console.log(`  width ${String(d.dimension).padStart(4)}: before ${pair(b)}; after ${pair(d)}`);
  }
  for (const d of result.after?.layers ?? []) {
    console.log(`  first ${d.layers} layer${d.layers > 1 ? 's' : ''} alone: Recall@1 ${d['recall@1'].toFixed(3)}, MRR@10 ${d['mrr@10'].toFixed(3)}`);
  }
  const t = result.timing;
  if (t && t.batches > 0) {
    console.log(
      `steps: ${t.seconds.toFixed(1)} s for ${t.batches} batches, ${((100 * t.nativeSeconds) / t.seconds).toFixed(1)}% native, ` +
        `${((100 * t.tokenizeSeconds) / t.seconds).toFixed(1)}% tokenizing, ${(100 * t.jsFraction).toFixed(1)}% other JS`,
    );
  }
  console.log(`model saved to ${result.modelDir}`);
}

const RAG_FLAGS = {
  retriever: 'string', generator: 'string', data: 'string', corpus: 'string', output: 'string', k: 'count', epochs: 'count',
  'batch-size': 'count', 'learning-rate': 'number', 'warmup-ratio': 'number', 'weight-decay': 'number', 'max-grad-norm': 'number',
  temperature: 'number', 'val-split': 'number', seed: 'int', template: 'string', chat: 'boolean', system: 'string', 'freeze-generator': 'boolean', precision: 'string',
  'checkpoint-every': 'int', resume: 'boolean', overwrite: 'boolean', device: 'string', threads: 'count', json: 'boolean',
  'gradient-checkpointing': 'boolean',
} as const;

/** Parses flags of `kinds` (string, boolean, or a number kind) into camelCase option keys. */
function flagOptions(
  argv: string[],
  kinds: Record<string, string>,
  positionals: boolean,
  paths: Record<string, string | string[] | null> = {},
): { options: Record<string, any>; positionals: string[] } {
  const parsed = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: positionals,
    options: Object.fromEntries(Object.entries(kinds).map(([flag, kind]) => [flag, { type: kind === 'boolean' ? ('boolean' as const) : ('string' as const) }])),
  });
  nameFlags(kinds, parsed.values, { json: null, ...paths });
  const options: Record<string, any> = {};
  for (const [flag, raw] of Object.entries(parsed.values)) {
    const kind = kinds[flag];
    const key = flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    options[key] = kind === 'boolean' || kind === 'string' ? raw : numberFlag(flag, raw as string, kind as 'number' | 'int' | 'count');
  }
  return { options, positionals: parsed.positionals };
}

const MINE_FLAGS = {
  data: 'string', output: 'string', model: 'string', corpus: 'string', 'cross-encoder': 'string', 'num-negatives': 'int', 'range-min': 'int',
  'range-max': 'int', 'max-score': 'number', 'min-score': 'number', 'absolute-margin': 'number', 'relative-margin': 'number',
  'sampling-strategy': 'string', seed: 'int', 'output-format': 'string', 'output-scores': 'boolean', 'include-positives': 'boolean',
  'query-prompt': 'string', 'query-prompt-name': 'string', 'corpus-prompt': 'string', 'corpus-prompt-name': 'string', 'batch-size': 'count',
  plaid: 'boolean', 'residual-bits': 'count', centroids: 'count', nprobe: 'count', 'full-scores': 'count',
  device: 'string', threads: 'count', quantize: 'string', json: 'boolean',
} as const;
const PLAID_MINE_FLAGS = ['residualBits', 'centroids', 'nprobe', 'fullScores'] as const;

async function mineCommand(argv: string[]): Promise<void> {
  const { options: o } = flagOptions(argv, MINE_FLAGS, false, { 'residual-bits': 'plaid.residualBits', centroids: 'plaid.centroids', nprobe: 'plaid.nprobe', 'full-scores': 'plaid.fullScores' });
  if (!o.data) fail('mine needs --data (a .jsonl or .json file of {"query", "positive"} pairs)');
  if (!o.output) fail('mine needs --output <file.jsonl>');
  outputTo(o.output, '--output', 'file', [['--data', o.data], ['--corpus', o.corpus]]);
  const say = summaryPrinter(o.output);
  const { json, plaid, ...rest } = o;
  // --residual-bits, --centroids, --nprobe and --full-scores set --plaid's search.
  const settings = Object.fromEntries(PLAID_MINE_FLAGS.filter((key) => rest[key] !== undefined).map((key) => [key, rest[key]]));
  const options = Object.fromEntries(Object.entries(rest).filter(([key]) => !(PLAID_MINE_FLAGS as readonly string[]).includes(key)));
  if (Object.keys(settings).length > 0 && !plaid) fail('--residual-bits, --centroids, --nprobe and --full-scores set the PLAID search: add --plaid');
  const bars = new Map<string, ProgressBar>();
  const result = await miningModule().mineHardNegatives({
    ...(options as MineOptions),
    ...(plaid && { plaid: Object.keys(settings).length > 0 ? settings : true }),
    model: options.model ?? DEFAULT_MODEL,
    onProgress: json
      ? undefined
      : (p) => {
          if (!bars.has(p.stage)) bars.set(p.stage, new ProgressBar(p.stage, p.stage === 'search' ? 'queries' : p.stage === 'rescore' ? 'pairs' : 'texts'));
          bars.get(p.stage)!.update(p.done, p.total);
        },
  });
  const { rows, ...summary } = result;
  if (json) {
    say(JSON.stringify({ ...summary, rows: rows.length }));
    return;
  }
  say(miningModule().miningReport(result));
  say(`${rows.length} ${result.format} rows (${result.queries} queries, ${result.corpus} documents, candidates ranked to ${result.rangeMax}) -> ${result.output}`);
}

const GENERATE_QUERIES_FLAGS = {
  generator: 'string', corpus: 'string', output: 'string', 'per-document': 'count', template: 'string', chat: 'boolean', system: 'string',
  'max-document-tokens': 'count', 'max-new-tokens': 'count', temperature: 'number', 'top-k': 'int', 'top-p': 'number', seed: 'int',
  'batch-size': 'count', 'consistency-model': 'string', 'consistency-k': 'count', 'keep-likeliest': 'number', resume: 'boolean', device: 'string', dtype: 'string', quantize: 'string', threads: 'count',
  json: 'boolean',
} as const;

async function generateQueriesCommand(argv: string[]): Promise<void> {
  const { options: o } = flagOptions(argv, GENERATE_QUERIES_FLAGS, false, { 'consistency-model': ['consistency', 'consistency.model'], 'consistency-k': 'consistency.k' });
  if (!o.generator) fail('generate-queries needs --generator (a causal LM folder or hub id)');
  if (!o.corpus) fail('generate-queries needs --corpus (the documents: .txt, .jsonl or .json)');
  if (!o.output) fail('generate-queries needs --output <file.jsonl>');
  systemNeedsChat(o);
  outputTo(o.output, '--output', 'file', [['--corpus', o.corpus]]);
  const say = summaryPrinter(o.output);
  const { json, consistencyModel, consistencyK, ...options } = o;
  if (consistencyK !== undefined && !consistencyModel) fail('--consistency-k sets the consistency filter: add --consistency-model');
  const bar = json ? undefined : new ProgressBar('generate', 'documents');
  const result = await queryGenerationModule().generateQueries({
    ...(options as GenerateQueriesOptions),
    ...(consistencyModel && { consistency: { model: consistencyModel, ...(consistencyK !== undefined && { k: consistencyK }) } }),
    onProgress: bar && ((done, total) => bar.update(done, total)),
  });
  const { pairs, ...summary } = result;
  if (json) {
    say(JSON.stringify({ ...summary, pairs: pairs.length }));
    return;
  }
  const unlikely = result.unlikely !== undefined ? `, ${result.unlikely} more as the least likely` : '';
  const inconsistent = result.inconsistent !== undefined ? `, ${result.inconsistent} more whose document the consistency model did not rank within the first ${consistencyK ?? 1}` : '';
  say(`${pairs.length} (query, positive) pairs for ${result.documents} documents (${result.dropped} of ${result.generated} queries dropped: empty or repeated${unlikely}${inconsistent}) -> ${result.output}`);
}

async function ragTrainCommand(argv: string[]): Promise<void> {
  const { options: o } = flagOptions(argv, RAG_FLAGS, false);
  if (!o.generator) fail('rag-train needs --generator (a causal LM folder or hub id)');
  if (!o.data) fail('rag-train needs --data');
  if (!o.output) fail('rag-train needs --output');
  systemNeedsChat(o);
  outputTo(o.output, '--output', 'folder');
  const { json, ...options } = o;
  interruptNote = checkpointNote(o.output);
  interruptAbort = new AbortController();
  const result = await ragModule().trainRag(steppedProgress({ ...(options as RagTrainOptions), retriever: options.retriever ?? DEFAULT_MODEL, progressBar: !json, signal: interruptAbort.signal })).catch((error: unknown) => {
    // The library names its options (overwrite: true, resume: true); here they are flags.
    if (error instanceof ColtrastError) error.message = error.message.replace('pass overwrite: true to replace it, or resume: true', 'pass --overwrite to replace it, or --resume');
    return interruptedRun(error);
  }).finally(() => (interruptAbort = undefined));
  if (json) {
    console.log(JSON.stringify({ best: result.best, epochs: result.history.epochs, retrieverDir: result.retrieverDir, generatorDir: result.generatorDir }));
    return;
  }
  for (const e of result.history.epochs) {
    console.log(`epoch ${e.epoch}: train loss ${formatLoss(e.trainLoss)}` + (e.valLoss !== undefined ? `, validation loss ${formatLoss(e.valLoss)}` : ''));
  }
  console.log(`epoch ${result.best.epoch} kept: retriever saved to ${result.retrieverDir}, generator to ${result.generatorDir}`);
}

const ASK_FLAGS = {
  retriever: 'string', generator: 'string', corpus: 'string', k: 'count', 'max-new-tokens': 'count', template: 'string', chat: 'boolean', system: 'string',
  'num-beams': 'count', device: 'string', dtype: 'string', quantize: 'string', threads: 'count', json: 'boolean',
} as const;

async function askCommand(argv: string[]): Promise<void> {
  const { options: o, positionals } = flagOptions(argv, ASK_FLAGS, true);
  if (positionals.length === 0) fail('ask takes one or more questions');
  if (!o.generator) fail('ask needs --generator');
  if (!o.corpus) fail('ask needs --corpus');
  systemNeedsChat(o);
  const load = { device: (o.device ?? 'auto') as Device, threads: o.threads, ...quantizeFlag(o.quantize) };
  const retriever = await encoderModule().Encoder.load(o.retriever ?? DEFAULT_MODEL, load);
  // --dtype is the generator's (the larger model), as generate's.
  const generator = await generatorModule().Generator.load(o.generator, { ...load, dtype: o.dtype as DType | undefined }).catch((error: unknown) => {
    retriever.dispose();
    throw error;
  });
  try {
    const corpusBar = o.json ? undefined : new ProgressBar('corpus', 'documents');
    const rag = await ragModule().Rag.create({
      retriever, generator, corpus: o.corpus, template: o.template, chat: o.chat, system: o.system, onProgress: corpusBar && ((done, total) => corpusBar.update(done, total)),
    });
    const answers = await rag.answer(positionals, { k: o.k, maxNewTokens: o.maxNewTokens, numBeams: o.numBeams });
    if (o.json) {
      console.log(JSON.stringify(answers.map((a, i) => ({ question: positionals[i], ...a }))));
      return;
    }
    answers.forEach((a, i) => {
      console.log(`Q: ${printable(positionals[i])}\nA: ${printable(a.answer)}`);
      for (const s of a.sources) console.log(`   ${(100 * s.probability).toFixed(1).padStart(5)}%  ${printable(s.text.length > 100 ? `${s.text.slice(0, 97)}...` : s.text)}`);
    });
  } finally {
    generator.dispose();
    retriever.dispose();
  }
}

const GENERATE_FLAGS = {
  model: 'string', 'max-new-tokens': 'count', chat: 'boolean', system: 'string', temperature: 'number', 'top-k': 'int', 'top-p': 'number', seed: 'int',
  'num-beams': 'count', 'length-penalty': 'number', 'early-stopping': 'string', device: 'string', dtype: 'string', quantize: 'string', threads: 'count', json: 'boolean',
} as const;

async function generateCommand(argv: string[]): Promise<void> {
  const { options: o, positionals } = flagOptions(argv, GENERATE_FLAGS, true);
  if (positionals.length === 0) fail('generate takes one or more prompts');
  if (!o.model) fail('generate needs --model (a causal LM folder or hub id)');
  systemNeedsChat(o);
  const generator = await generatorModule().Generator.load(o.model, {
    device: (o.device ?? 'auto') as Device, dtype: o.dtype as DType | undefined, threads: o.threads, ...quantizeFlag(o.quantize),
  });
  try {
    const system = o.system !== undefined ? [{ role: 'system', content: o.system as string }] : [];
    const prompts = o.chat ? positionals.map((p) => [...system, { role: 'user', content: p }]) : positionals;
    const early = o.earlyStopping as string | undefined;
    if (early !== undefined && !['true', 'false', 'never'].includes(early)) fail(`--early-stopping must be true, false or never, got ${early}`);
    // One prompt on a terminal: its text as it is generated (beam search knows its answer only at the end).
    const streaming = !o.json && prompts.length === 1 && (o.numBeams ?? 1) === 1;
    const out = await generator.generate(prompts, {
      maxNewTokens: o.maxNewTokens, temperature: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed,
      numBeams: o.numBeams, lengthPenalty: o.lengthPenalty, earlyStopping: early === undefined ? undefined : early === 'never' ? 'never' : early === 'true',
      ...(streaming && { onText: (_: number, piece: string) => process.stdout.write(piece) }),
    });
    if (o.json) console.log(JSON.stringify(out));
    else if (streaming) process.stdout.write('\n');
    else for (const g of out) console.log(g.text);
  } finally {
    generator.dispose();
  }
}

function metricsTable(results: { name: string; result: EvaluateResult }[]): string {
  const ks = Object.keys(results[0].result.metrics.ndcg).map(Number);
  const header = ['metric', ...results.map((r) => r.name)];
  const rows = METRICS.flatMap((m) => ks.map((k) => [`${m}@${k}`, ...results.map((r) => r.result.metrics[m][k].toFixed(4))]));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** --storage's value (undefined when absent), one of the index storages. */
function storageFlag(raw: string | undefined): Storage | undefined {
  const { STORAGES } = searchIndexModule();
  if (raw !== undefined && !(STORAGES as readonly string[]).includes(raw)) fail(`--storage must be ${STORAGES.slice(0, -1).join(', ')} or ${STORAGES.at(-1)}, got ${raw}`);
  return raw as Storage | undefined;
}

/** --token-storage's value (undefined when absent). */
function tokenStorageFlag(raw: string | undefined): TokenStorage | undefined {
  const { TOKEN_STORAGES } = searchIndexModule();
  if (raw !== undefined && !(TOKEN_STORAGES as readonly string[]).includes(raw)) fail(`--token-storage must be ${TOKEN_STORAGES.join(' or ')}, got ${raw}`);
  return raw as TokenStorage | undefined;
}

/** The PLAID search flags (--nprobe, --full-scores) as SearchOptions. */
function plaidFlags(values: { nprobe?: string; 'full-scores'?: string }): { nprobe?: number; fullScores?: number } {
  return { nprobe: numberFlag('nprobe', values.nprobe, 'count'), fullScores: numberFlag('full-scores', values['full-scores'], 'count') };
}

/** --reranker's cross-encoder, with --reranker-adapter's LoRA adapter (PEFT's files) added; undefined without --reranker. */
async function loadReranker(values: { reranker?: string; 'reranker-adapter'?: string; 'no-adapter-base-check'?: boolean }, options: CrossEncoderLoadOptions): Promise<CrossEncoder | undefined> {
  if (values['reranker-adapter'] !== undefined && !values.reranker) fail('--reranker-adapter goes on the cross-encoder: give --reranker <dir|hub id> too');
  if (!values.reranker) return undefined;
  const load = crossEncoderModule().CrossEncoder.load(values.reranker, {
    ...options,
    ...(values['reranker-adapter'] !== undefined && { adapter: values['reranker-adapter'] }),
    ...(values['no-adapter-base-check'] && { checkAdapterBase: false }),
  });
  return withFlags(load, { adapter: 'reranker-adapter' });
}

const EVAL_OPTIONS = {
  data: { type: 'string' }, model: { type: 'string' }, mode: { type: 'string' }, split: { type: 'string' }, k: { type: 'string' },
  'hybrid-weight': { type: 'string' }, fusion: { type: 'string' }, stem: { type: 'boolean' }, compare: { type: 'string' }, device: { type: 'string' },
  'batch-size': { type: 'string' }, reranker: { type: 'string' }, 'reranker-adapter': { type: 'string' }, candidates: { type: 'string' }, json: { type: 'boolean' },
  'truncate-dim': { type: 'string' }, layers: { type: 'string' }, storage: { type: 'string' }, 'rescore-multiplier': { type: 'string' },
  'token-storage': { type: 'string' }, 'residual-bits': { type: 'string' }, nprobe: { type: 'string' }, 'full-scores': { type: 'string' },
  'pool-factor': { type: 'string' }, threads: { type: 'string' }, 'no-adapter-base-check': { type: 'boolean' }, quantize: { type: 'string' },
  'sparse-model': { type: 'string' },
} as const;

async function evalCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: EVAL_OPTIONS,
  });
  nameFlags(EVAL_OPTIONS, values, { stem: 'bm25', compare: null, json: null, 'reranker-adapter': null, 'no-adapter-base-check': 'checkAdapterBase' }, ['k']);
  if (!values.data) fail('eval needs --data <BEIR folder>');
  if (JSONL.test(values.data) || CSV.test(values.data)) return evalPairs(values);
  const storage = storageFlag(values.storage);
  const k = values.k?.split(',').map((x) => {
    const n = Number(x);
    if (!Number.isInteger(n) || n <= 0) fail(`--k must be positive integers separated by commas, got ${values.k}`);
    return n;
  });
  const common = {
    data: values.data,
    split: values.split,
    k,
    hybridWeight: numberFlag('hybrid-weight', values['hybrid-weight'], 'number'),
    fusion: values.fusion as Fusion | undefined,
    bm25: values.stem ? { stem: true } : undefined,
    device: (values.device ?? 'auto') as Device,
    batchSize: numberFlag('batch-size', values['batch-size'], 'number'),
    candidates: numberFlag('candidates', values.candidates, 'count'),
    progressBar: !values.json,
    storage,
    rescoreMultiplier: numberFlag('rescore-multiplier', values['rescore-multiplier'], 'count'),
  };
  // The token storage and PLAID flags are the main model's (a --compare model is evaluated as it comes).
  const tokens = {
    tokenStorage: tokenStorageFlag(values['token-storage']),
    residualBits: numberFlag('residual-bits', values['residual-bits'], 'count'),
    poolFactor: numberFlag('pool-factor', values['pool-factor'], 'count'),
    ...plaidFlags(values),
  };
  // Without --model: the default model, unless the mode needs none (bm25).
  const model = values.model ?? (values.mode === 'bm25' ? undefined : DEFAULT_MODEL);
  const threads = numberFlag('threads', values.threads, 'count');
  if (threads !== undefined) encoderModule().setThreads(threads); // every model evaluate() loads runs on them
  const reranker = await loadReranker(values, { device: common.device });
  const systems: { name: string; model?: string; mode?: EvalMode; reranker?: CrossEncoder }[] = [
    {
      name:
        (model ? `${values.mode ?? (values['sparse-model'] ? 'hybrid' : (await isSparseModel(model)) ? 'sparse' : 'dense')}:${path.basename(model)}` : 'bm25') +
        (values['sparse-model'] ? `+${path.basename(values['sparse-model'])}` : '') +
        (values.reranker ? `+${path.basename(values.reranker)}` : ''),
      model,
      mode: values.mode as EvalMode,
      reranker,
    },
  ];
  if (values.compare) {
    const kind = values.compare === 'bm25' ? 'bm25' : (await isSparseModel(values.compare)) ? 'sparse' : 'dense';
    systems.push(kind === 'bm25' ? { name: 'bm25', mode: 'bm25' } : { name: `${kind}:${path.basename(values.compare)}`, model: values.compare, mode: kind });
  }
  const results = [];
  // --truncate-dim cuts the main model's vectors (a --compare model is evaluated whole).
  const truncateDim = numberFlag('truncate-dim', values['truncate-dim'], 'count');
  if (truncateDim !== undefined && !model) fail('--truncate-dim cuts a model\'s vectors: give --model (or a dense mode)');
  if (truncateDim !== undefined) systems[0].name += `@${truncateDim}`;
  const layers = numberFlag('layers', values.layers, 'count');
  if (layers !== undefined && !model) fail('--layers runs a model\'s first layers: give --model (or a dense mode)');
  if (layers !== undefined) systems[0].name += ` (${layers} layers)`;
  if (values.quantize !== undefined && !model) fail('--quantize runs a model in int8: give --model (or a dense mode)');
  if (values.quantize !== undefined) systems[0].name += ` (${values.quantize})`;
  try {
    for (const [i, s] of systems.entries()) {
      const cut = i === 0 && s.model ? { truncateDim, layers, ...tokens, ...quantizeFlag(values.quantize) } : {};
      if (i > 0) flagNames!.options.model = 'compare'; // the second system's model
      // evaluate() refuses options its mode does not use: a --compare system leaves out the main one's.
      const unused = i === 0 ? {} : { hybridWeight: undefined, fusion: undefined, candidates: undefined, ...(s.mode === 'bm25' ? { storage: undefined, rescoreMultiplier: undefined } : { bm25: undefined }) };
      results.push({ name: s.name, result: await evaluateModule().evaluate({ ...common, ...unused, model: s.model, mode: s.mode, reranker: s.reranker, ...(i === 0 && { sparseModel: values['sparse-model'] }), ...cut }) });
    }
  } finally {
    reranker?.dispose();
  }
  if (values.json) {
    console.log(JSON.stringify(results.map((r) => ({ name: r.name, ...r.result }))));
    return;
  }
  console.log(metricsTable(results));
  console.log(`\n${results[0].result.queries} queries, ${results[0].result.documents} documents`);
  const missing = results[0].result.missingDocuments;
  if (missing) {
    console.log(`${missing.judgements} relevant judgements name documents the corpus lacks (${missing.examples.join(', ')}${missing.judgements > missing.examples.length ? ', ...' : ''}): counted as relevant and never retrieved, as BEIR counts them`);
  }
  const lacking = results[0].result.missingQueries;
  if (lacking) {
    console.log(`${lacking.queries} judged ${lacking.queries === 1 ? 'query has' : 'queries have'} no text in the queries file (${lacking.examples.join(', ')}${lacking.queries > lacking.examples.length ? ', ...' : ''}): left out of the metrics, as trec_eval leaves out judged queries a run lacks`);
  }
}

/**
 * `coltrast eval --data <pairs file>`: labeled pairs (.jsonl or .csv/.tsv of sentence1, sentence2, score) scored by
 * Spearman and Pearson correlation of cosine and label, for --model and a --compare model. The retrieval flags are refused.
 */
async function evalPairs(values: { [K in keyof typeof EVAL_OPTIONS]?: (typeof EVAL_OPTIONS)[K]['type'] extends 'boolean' ? boolean : string }): Promise<void> {
  const allowed = new Set(['data', 'model', 'compare', 'device', 'batch-size', 'json', 'truncate-dim', 'threads', 'quantize']);
  const retrieval = Object.keys(values).filter((f) => values[f as keyof typeof values] !== undefined && !allowed.has(f));
  if (retrieval.length > 0) fail(`${values.data} is a file of labeled pairs, scored by correlation: ${retrieval.map((f) => `--${f}`).join(', ')} ${retrieval.length > 1 ? 'are' : 'is'} for retrieval on a BEIR folder`);
  if (values.compare === 'bm25') fail('--compare bm25 ranks documents; labeled pairs are scored by an embedding model\'s cosine similarity: compare another model');
  const threads = numberFlag('threads', values.threads, 'count');
  if (threads !== undefined) encoderModule().setThreads(threads);
  const common = { data: values.data!, device: (values.device ?? 'auto') as Device, batchSize: numberFlag('batch-size', values['batch-size'], 'count') };
  const model = values.model ?? DEFAULT_MODEL;
  const truncateDim = numberFlag('truncate-dim', values['truncate-dim'], 'count');
  const name = path.basename(model) + (truncateDim !== undefined ? `@${truncateDim}` : '') + (values.quantize ? ` (${values.quantize})` : '');
  // Triplets (a negative each, no labels) are scored by the share each model ranks right (TripletEvaluator's accuracy),
  // from the examples read here; labeled pairs by correlation, evaluateSimilarity reading the file (and naming what is
  // not a labeled pair in it). --model's result, then --compare's.
  const data = await (require('./train-data') as typeof import('./train-data')).readTrainingData(values.data!);
  const evaluated = async <R>(evaluate: (model: string, own: { truncateDim?: number; quantize?: Quantize }) => Promise<R>) => {
    const out = [{ name, result: await evaluate(model, { truncateDim, ...quantizeFlag(values.quantize) }) }];
    if (values.compare) {
      flagNames!.options.model = 'compare';
      out.push({ name: path.basename(values.compare), result: await evaluate(values.compare, {}) });
    }
    if (values.json) console.log(JSON.stringify(out.map((r) => ({ name: r.name, ...r.result }))));
    return out;
  };
  if ('examples' in data && data.examples.length > 0 && data.examples.every((e) => e.negatives?.length && e.label === undefined)) {
    const examples = data.examples;
    const triplets = await evaluated((m, own) => pairMetricsModule().evaluateTriplets({ ...common, data: examples, model: m, ...own }));
    if (values.json) return;
    const width = Math.max(...triplets.map((r) => r.name.length), 5);
    console.log(`${'model'.padEnd(width)}  accuracy`);
    for (const r of triplets) console.log(`${r.name.padEnd(width)}  ${r.result.accuracy.toFixed(4).padStart(8)}`);
    console.log(`\n${triplets[0].result.triplets} triplets (the share whose anchor is closer to the positive than to the negative: ${triplets.map((r) => `${r.name}: ${r.result.scoredBy}`).join(', ')})`);
    return;
  }
  const results = await evaluated((m, own) => pairMetricsModule().evaluateSimilarity({ ...common, model: m, ...own }));
  if (values.json) return;
  const width = Math.max(...results.map((r) => r.name.length), 5);
  console.log(`${'model'.padEnd(width)}  spearman  pearson`);
  for (const r of results) console.log(`${r.name.padEnd(width)}  ${r.result.spearman.toFixed(4).padStart(8)}  ${r.result.pearson.toFixed(4).padStart(7)}`);
  console.log(`\n${results[0].result.pairs} pairs (${results.map((r) => `${r.name}: ${r.result.scoredBy}`).join(', ')}, against the labels)`);
  // Labels of 1 and 0 (duplicates and not): how well a threshold on the scores separates them.
  for (const r of results) {
    const c = r.result.classification;
    if (!c) continue;
    console.log(
      `${r.name}: accuracy ${c.accuracy.toFixed(4)} (threshold ${c.accuracyThreshold.toFixed(4)}), F1 ${c.f1.toFixed(4)} (threshold ${c.f1Threshold.toFixed(4)}; precision ${c.precision.toFixed(4)}, recall ${c.recall.toFixed(4)}), average precision ${c.averagePrecision.toFixed(4)}, MCC ${c.mcc.toFixed(4)}`,
    );
  }
}

/** Whether `model` (a folder, or a hub id: its snapshot, downloaded if need be) is sentence-transformers' SparseEncoder. */
async function isSparseModel(model: string): Promise<boolean> {
  return modelDirModule().isSparseEncoderFolder(await hubModule().resolveModelDir(model));
}

/**
 * Whether `model` is read as a sparse (SPLADE) encoder: `sparse` says so (--sparse, which reads a plain *ForMaskedLM
 * folder as one, or an index built with one) or the folder (a hub id resolved, downloaded if need be) is
 * sentence-transformers' SparseEncoder's. `flags`: the command's flags that only one kind of model takes, by name, with
 * their values (undefined or false: not given); those given for the other kind are refused, all named in one error.
 * --max-active-dims is a sparse encoder's, every other one a dense embedding model's.
 */
async function readsAsSparse(model: string, sparse: boolean | undefined, flags: Record<string, unknown> = {}): Promise<boolean> {
  const isSparse = Boolean(sparse) || (await isSparseModel(model));
  const wrong = Object.keys(flags).filter((f) => flags[f] !== undefined && flags[f] !== false && (f === 'max-active-dims') !== isSparse);
  if (wrong.length === 0) return isSparse;
  if (!isSparse) fail(`--max-active-dims is for a sparse encoder, and ${model} is an embedding model (--sparse reads a masked language model as one)`);
  const hint = 'max-active-dims' in flags ? " (--max-active-dims keeps each vector's largest entries)" : '';
  fail(`${model} is a sparse (SPLADE) encoder, whose vectors are as wide as its vocabulary: ${wrong.map((f) => `--${f}`).join(', ')} ${wrong.length > 1 ? 'are' : 'is'} for a dense embedding model${hint}`);
}

/**
 * The model that embeds an index's documents or queries: a SparseEncoder where readsAsSparse says so, an Encoder
 * otherwise. `truncateDim` (--truncate-dim, or the index's) is for an Encoder only.
 */
async function loadEmbedder(
  model: string,
  sparse: boolean | undefined,
  options: { device: Device; dtype?: DType; threads?: number; truncateDim?: number; quantize?: Quantize },
): Promise<Encoder | SparseEncoder> {
  const { truncateDim, ...load } = options;
  if (await readsAsSparse(model, sparse, { 'truncate-dim': truncateDim })) return sparseEncoderModule().SparseEncoder.load(model, load);
  return encoderModule().Encoder.load(model, { ...load, ...(truncateDim !== undefined && { truncateDim }) });
}

const INDEX_OPTIONS = {
  data: { type: 'string' }, output: { type: 'string' }, model: { type: 'string' }, 'late-interaction': { type: 'boolean' },
  storage: { type: 'string' }, device: { type: 'string' }, dtype: { type: 'string' }, json: { type: 'boolean' }, 'truncate-dim': { type: 'string' },
  'token-storage': { type: 'string' }, 'residual-bits': { type: 'string' }, centroids: { type: 'string' }, 'pool-factor': { type: 'string' },
  update: { type: 'boolean' }, threads: { type: 'string' }, quantize: { type: 'string' }, sparse: { type: 'boolean' }, 'sparse-model': { type: 'string' },
} as const;

/**
 * The second, sparse model of an index (Index BuildOptions.sparseEncoder): --sparse-model (`given`), else the one the
 * index at hand records (`built`: its index.json's sparseEncoder.source), loaded as `load` says (a SparseEncoder folder,
 * or a plain *ForMaskedLM read as one) and, where the flags leave them out, with the dtype and quantize it ran with
 * when the index was built (its vectors and the queries' then come from the same numbers); none without either.
 * Refused beside a sparse encoder, whose own vectors are the sparse ones, and a multi-vector model.
 */
async function loadSparseModel(
  given: string | undefined,
  built: BuiltModelOptions,
  main: Encoder | SparseEncoder | undefined,
  load: { device: Device; threads?: number },
  flags: { dtype?: string; quantize?: string },
): Promise<SparseEncoder | undefined> {
  const source = given ?? built.sparseSource;
  if (source === undefined) return undefined;
  if (main instanceof sparseEncoderModule().SparseEncoder) fail(`--sparse-model adds a sparse encoder's vectors beside an embedding model's, and ${main.modelDir} is a sparse encoder itself: drop --sparse-model, or give an embedding model with --model`);
  if (main instanceof encoderModule().Encoder && main.multiVector !== undefined) fail(`--sparse-model goes beside a single-vector embedding model, and ${main.modelDir} is a multi-vector one`);
  const numerics = builtNumerics({ dtype: built.sparseDtype, quantize: built.sparseQuantize }, load.device, flags);
  return sparseEncoderModule().SparseEncoder.load(source, { device: load.device, threads: load.threads, ...numerics });
}

async function indexCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: INDEX_OPTIONS,
  });
  nameFlags(INDEX_OPTIONS, values, { output: null, update: null, json: null, sparse: null, 'sparse-model': 'sparseEncoder' });
  if (!values.data) fail('index needs --data');
  if (!values.output) fail('index needs --output <dir>');
  const storage = storageFlag(values.storage);
  const update = values.update ?? false;
  outputTo(values.output, '--output', 'folder');
  searchIndexModule().checkIndexFolder(values.output, '--output'); // before the model loads; a ColtrastError: main() prints it and exits 2
  if (update) {
    const fixed = ['late-interaction', 'storage', 'token-storage', 'residual-bits', 'centroids', 'pool-factor', 'truncate-dim', 'sparse'].filter((f) => values[f as keyof typeof values] !== undefined);
    if (fixed.length > 0) fail(`--update adds to the index as it was built: drop ${fixed.map((f) => `--${f}`).join(', ')}`);
    if (!fs.existsSync(path.join(values.output, 'index.json'))) fail(`--update needs an index at --output: ${values.output} has no index.json (build one first, without --update)`);
  }
  // A .jsonl's (or .jsonl.gz's) documents are counted before the model loads: an empty file is refused first. A
  // .csv's (or .tsv's) rows are read to count them (a quoted cell may hold line breaks), each checked as a document,
  // so that its header's columns and a bad row are refused before the model loads too.
  const table = CSV.test(values.data);
  const noDocuments = () =>
    fail(
      `data file ${values.data} holds no documents${table ? ' (it is empty or has only a header row)' : ''}: give a .jsonl with one {"id": "...", "text": "..."} a line, a .json array of them, a .csv/.tsv with "id" and "text" columns, or a ColTrast project file`,
    );
  let counted: number | undefined;
  if (JSONL.test(values.data) || table) {
    const problem = notAFile(values.data);
    if (problem) fail(`data file ${values.data} ${problem}`);
    counted = table ? await indexDocsModule().countCsvDocuments(values.data) : await countLines(values.data);
    if (counted === 0) noDocuments();
  }
  const built = update ? builtWith(values.output, values.model) : {};
  const load = { device: (values.device ?? 'auto') as Device, dtype: values.dtype as DType | undefined, threads: numberFlag('threads', values.threads, 'count'), ...quantizeFlag(values.quantize) };
  // --update embeds the new documents as the index's were (its dtype and quantize, unless the flags say otherwise).
  const numerics = update ? builtNumerics(built, load.device, { dtype: values.dtype, quantize: values.quantize }) : {};
  const enc = await loadEmbedder(values.model ?? built.source ?? DEFAULT_MODEL, update ? built.sparse : values.sparse, {
    ...load,
    ...numerics,
    truncateDim: update ? built.truncateDim : numberFlag('truncate-dim', values['truncate-dim'], 'count'),
  });
  let second: SparseEncoder | undefined;
  try {
    second = await loadSparseModel(values['sparse-model'], built, enc, load, { dtype: values.dtype, quantize: values.quantize });
    const { total, slices } = await indexDocsModule().indexDocumentSlices(values.data, enc, !update && values['token-storage'] === 'residual', counted);
    if (total === 0) noDocuments();
    const bar = values.json ? undefined : new ProgressBar('index', 'docs');
    let done = 0;
    // Progress of one slice (done of n, as build or add counts it; build counts a k-means sample too) on the whole.
    const progress = (size: number) => (d: number, n: number) => bar?.update(done + (n > 0 ? Math.round((d * size) / n) : 0), total);
    /** A slice's documents, refused with their line where an id repeats one already given. */
    const seen = update ? new Set<string>() : undefined;
    const checked = (slice: { doc: IndexDoc; where: string }[], has: (id: string) => boolean) => {
      const ids = new Set<string>();
      for (const { doc, where } of slice) {
        if (ids.has(doc.id) || has(doc.id)) fail(`${where}: the id "${doc.id}" is repeated (ids must be unique)`);
        ids.add(doc.id);
        seen?.add(doc.id);
      }
      return slice.map((d) => d.doc);
    };
    if (update) {
      // Documents whose ids the index holds are replaced, the others added (Index.upsert); the folder is replaced whole.
      const index = await searchIndexModule().Index.load(values.output, enc, { sparseEncoder: second });
      const before = index.size;
      let replaced = 0;
      for await (const slice of slices) {
        const docs = checked(slice, (id) => seen!.has(id));
        replaced += docs.filter((d) => index.has(d.id)).length;
        await index.upsert(docs, { onProgress: progress(docs.length) });
        done += docs.length;
      }
      await index.save(values.output, { overwrite: true });
      const summary = { documents: index.size, added: index.size - before, replaced, output: path.resolve(values.output) };
      console.log(values.json ? JSON.stringify(summary) : `updated ${summary.output}: ${summary.added} added, ${replaced} replaced, ${summary.documents} documents`);
      return;
    }
    const options = {
      lateInteraction: values['late-interaction'] ?? false,
      sparseEncoder: second,
      storage: storage ?? 'float32',
      tokenStorage: tokenStorageFlag(values['token-storage']),
      residualBits: numberFlag('residual-bits', values['residual-bits'], 'count'),
      centroids: numberFlag('centroids', values.centroids, 'count'),
      poolFactor: numberFlag('pool-factor', values['pool-factor'], 'count'),
    };
    // The first slice builds the index (a residual store's centroids come from it), the others are added.
    let index: Index | undefined;
    for await (const slice of slices) {
      const docs = checked(slice, (id) => index?.has(id) ?? false);
      if (!index) index = await searchIndexModule().Index.build(enc, docs, { ...options, onProgress: progress(docs.length) });
      else await index.add(docs, { onProgress: progress(docs.length) });
      done += docs.length;
    }
    index ??= await searchIndexModule().Index.build(enc, [], options);
    await index.save(values.output, { overwrite: true });
    const summary = {
      documents: index.size,
      lateInteraction: index.lateInteraction,
      ...(index.tokenStorage === 'residual' ? { centroids: index.centroids } : {}),
      ...(second && { sparseModel: second.modelDir }),
      output: path.resolve(values.output),
    };
    console.log(values.json ? JSON.stringify(summary) : `indexed ${summary.documents} documents -> ${summary.output}`);
  } finally {
    second?.dispose();
    enc.dispose();
  }
}

const SEARCH_OPTIONS = {
  index: { type: 'string' }, model: { type: 'string' }, k: { type: 'string' }, mode: { type: 'string' }, rerank: { type: 'string' },
  reranker: { type: 'string' }, 'reranker-adapter': { type: 'string' }, candidates: { type: 'string' }, device: { type: 'string' }, json: { type: 'boolean' },
  'rescore-multiplier': { type: 'string' }, nprobe: { type: 'string' }, 'full-scores': { type: 'string' }, filter: { type: 'string' }, mmr: { type: 'string' },
  fusion: { type: 'string' }, 'hybrid-weight': { type: 'string' }, mmap: { type: 'boolean' }, threads: { type: 'string' },
  'no-adapter-base-check': { type: 'boolean' }, quantize: { type: 'string' }, 'sparse-model': { type: 'string' },
} as const;

/**
 * The model an index folder was built with (its source, and the width its vectors were cut to), its index.json read
 * and checked first: a folder that is no index, or whose index.json is damaged, is refused before any model loads (it
 * was found by Index.load only after the model had loaded: a second or more, or a download). `model`: the --model
 * given, if any (then index.json's model.source is not what loads). A ColtrastError: main() prints it and exits 2.
 */
function builtWith(dir: string, model: string | undefined): BuiltModelOptions {
  const { readIndexManifest, builtModelOptions } = indexManifestModule();
  const built = builtModelOptions(readIndexManifest(path.resolve(dir)));
  // Without --model, index.json's model.source is what loads. Another value than a folder or hub id (a hand edit)
  // was reported as --model's, a flag not given, or (null) taken for none: the default model loaded, a second or a
  // download, to be refused as another model.
  const source: unknown = built.source;
  if (model === undefined && source !== undefined && (typeof source !== 'string' || source.trim() === '')) {
    throw new ColtrastError('INVALID_ARGUMENT', `index ${dir}: index.json says model.source ${JSON.stringify(source)}, not the folder or Hugging Face id of the model that built it; give that model with --model <dir|hub id>`);
  }
  return built;
}

async function searchCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: SEARCH_OPTIONS,
  });
  // A cross-encoder is search()'s rerank.
  nameFlags(SEARCH_OPTIONS, values, { 'sparse-model': 'sparseEncoder', mmr: 'mmrLambda', rerank: values.reranker ? null : 'rerank', reranker: values.reranker ? 'rerank' : null, 'reranker-adapter': null, json: null, 'no-adapter-base-check': 'checkAdapterBase' });
  if (!values.index) fail('search needs --index <dir>');
  let filter: Record<string, unknown> | undefined;
  if (values.filter !== undefined) {
    try {
      filter = JSON.parse(values.filter) as Record<string, unknown>;
    } catch (error) {
      fail(`--filter must be a JSON MongoDB query over { id, text, metadata }, e.g. '{"metadata.lang": "en"}': ${(error as Error).message}`);
    }
  }
  if (positionals.length === 0) fail('search needs at least one question');
  const k = numberFlag('k', values.k, 'count') ?? 5;
  const built = builtWith(values.index, values.model);
  const model = values.model ?? built.source ?? DEFAULT_MODEL;
  const candidates = numberFlag('candidates', values.candidates, 'count');
  if (values.reranker && values.rerank && values.rerank !== 'none') fail('give --rerank maxsim or --reranker <cross-encoder>, not both');
  const device = (values.device ?? 'auto') as Device;
  const threads = numberFlag('threads', values.threads, 'count');
  const quantize = quantizeFlag(values.quantize);
  const enc = await loadEmbedder(model, built.sparse, { device, truncateDim: built.truncateDim, threads, ...builtNumerics(built, device, { quantize: values.quantize }) });
  let reranker: CrossEncoder | undefined;
  let second: SparseEncoder | undefined;
  try {
    second = await loadSparseModel(values['sparse-model'], built, enc, { device, threads }, { quantize: values.quantize });
    reranker = await loadReranker(values, { device, threads, ...quantize });
    const index = await searchIndexModule().Index.load(values.index, enc, { mmap: values.mmap ?? false, sparseEncoder: second });
    const rescoreMultiplier = numberFlag('rescore-multiplier', values['rescore-multiplier'], 'count');
    const hits = await index.search(positionals, { k, mode: values.mode as 'dense', rerank: reranker ?? (values.rerank as 'none'), candidates, rescoreMultiplier, ...plaidFlags(values), ...(filter !== undefined && { filter }),
      mmrLambda: numberFlag('mmr', values.mmr, 'number'),
      fusion: values.fusion as Fusion | undefined,
      hybridWeight: numberFlag('hybrid-weight', values['hybrid-weight'], 'number'),
    });
    if (values.json) {
      console.log(JSON.stringify(positionals.map((query, i) => ({ query, hits: hits[i] }))));
      return;
    }
    positionals.forEach((query, i) => {
      console.log(printable(query));
      hits[i].forEach((h, r) => console.log(`  ${r + 1}. ${printable(h.id)}  ${h.score.toFixed(4)}  ${printable(h.text.replace(/\s+/g, ' ').slice(0, 90))}`));
    });
  } finally {
    enc.dispose();
    second?.dispose();
    reranker?.dispose();
  }
}

const EXPORT_OPTIONS = {
  index: { type: 'string' }, format: { type: 'string' }, output: { type: 'string' }, table: { type: 'string' },
  'vector-index': { type: 'string' }, replace: { type: 'boolean' }, json: { type: 'boolean' },
} as const;

async function exportCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: EXPORT_OPTIONS,
  });
  nameFlags(EXPORT_OPTIONS, values, { index: 'indexDir', json: null });
  if (positionals.length > 0) fail('export takes flags only (see coltrast export --help)');
  if (!values.index) fail('export needs --index <dir>');
  if (!values.output) fail('export needs --output <file.sql>');
  outputTo(values.output, '--output', 'file');
  const toPipe = writtenInPlace(values.output);
  const say = summaryPrinter(values.output);
  const format = values.format ?? 'pgvector';
  if (format !== 'pgvector') fail(`--format must be pgvector, got ${format}`);
  const vectorIndex = values['vector-index'] ?? 'auto';
  if (!['auto', 'hnsw', 'ivfflat', 'none'].includes(vectorIndex)) fail(`--vector-index must be auto, hnsw, ivfflat or none, got ${vectorIndex}`);
  const bar = values.json ? undefined : new ProgressBar('export', 'rows');
  const r = await exportModule().exportIndex(values.index, values.output, {
    format,
    table: values.table,
    vectorIndex: vectorIndex as 'auto',
    replace: values.replace ?? false,
    onProgress: (d, n) => bar?.update(d, n),
  });
  // Written to stdout (--output /dev/stdout) or another pipe: the summary goes to stderr (summaryPrinter), and without
  // the psql line.
  const widths = [...(r.dimension ? [`dimension ${r.dimension}`] : []), ...(r.sparseDimension ? [`sparse vectors of width ${r.sparseDimension}`] : [])].join(', ');
  if (values.json) say(JSON.stringify(r));
  else say(`exported ${r.rows} documents (${widths}) to table ${r.table} -> ${r.output}${toPipe ? '' : `\nload it with: psql -v ON_ERROR_STOP=1 -d <database> -f ${r.output}`}`);
}

const TRUNCATE_OPTIONS = {
  model: { type: 'string' }, layers: { type: 'string' }, output: { type: 'string' }, overwrite: { type: 'boolean' }, json: { type: 'boolean' },
} as const;

async function truncateCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, strict: true, allowPositionals: true, options: TRUNCATE_OPTIONS });
  nameFlags(TRUNCATE_OPTIONS, values, { json: null });
  if (positionals.length > 0) fail('truncate takes flags only (see coltrast truncate --help)');
  if (!values.model) fail('truncate needs --model <dir|hub id>');
  if (!values.output) fail('truncate needs --output <dir>');
  if (values.layers === undefined) fail('truncate needs --layers <n>');
  const r = await modelLayersModule().truncateLayers({ model: values.model, layers: numberFlag('layers', values.layers, 'count')!, output: values.output, overwrite: values.overwrite ?? false });
  if (values.json) console.log(JSON.stringify(r));
  else console.log(`kept ${r.layers} of ${r.from} layers (${r.droppedTensors} tensors left out, ${(r.weightBytes / 2 ** 20).toFixed(1)} MiB of weights) -> ${r.output}`);
}

const SERVE_OPTIONS = {
  model: { type: 'string' }, reranker: { type: 'string' }, index: { type: 'string' }, 'no-model': { type: 'boolean' }, host: { type: 'string' },
  generator: { type: 'string' }, corpus: { type: 'string' }, template: { type: 'string' }, chat: { type: 'boolean' }, system: { type: 'string' },
  'generation-batch': { type: 'string' }, writable: { type: 'boolean' }, 'save-interval': { type: 'string' },
  port: { type: 'string' }, 'api-key': { type: 'string' }, 'max-batch': { type: 'string' }, 'batch-size': { type: 'string' }, mmap: { type: 'boolean' },
  'max-inputs': { type: 'string' }, 'max-queue': { type: 'string' }, name: { type: 'string' }, device: { type: 'string' },
  dtype: { type: 'string' }, threads: { type: 'string' }, verbose: { type: 'boolean' }, 'truncate-dim': { type: 'string' },
  adapter: { type: 'string' }, 'reranker-adapter': { type: 'string' }, 'cors-allow-origin': { type: 'string' },
  'no-adapter-base-check': { type: 'boolean' }, quantize: { type: 'string' }, sparse: { type: 'boolean' }, 'sparse-model': { type: 'string' },
} as const;

async function serveCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: SERVE_OPTIONS,
  });
  nameFlags(SERVE_OPTIONS, values, {
    model: ['encoder', 'sparseEncoder'], sparse: 'sparseEncoder', 'sparse-model': 'sparseEncoder', 'no-model': null, name: 'modelName', 'max-batch': 'maxBatchTexts', 'generation-batch': 'generationBatchSize',
    index: ['index', 'saveTo'], verbose: null, 'reranker-adapter': null, 'cors-allow-origin': 'cors.origins', 'no-adapter-base-check': 'checkAdapterBase',
  }, ['cors-allow-origin']);
  if (positionals.length > 0) fail('serve takes flags only (see coltrast serve --help)');
  if (values['no-model'] && values.adapter) fail('--adapter goes on the embedding model: --no-model has none');
  if (values['no-model'] && (values.model || values.index || values.corpus)) fail('--no-model serves a reranker or a generator alone: it takes no --model, --index or --corpus');
  if (values.writable && !values.index) fail('--writable lets clients change an index: give --index <dir> too');
  // Flags that would otherwise do nothing, silently.
  if (values['save-interval'] !== undefined && !values.writable) fail('--save-interval is how soon --writable saves the changes clients make: give --writable (and --index <dir>) too');
  if (values.mmap && !values.index) fail('--mmap maps an index\'s files instead of reading them: give --index <dir> too');
  if (values['no-model'] && !values.reranker && !values.generator) fail('--no-model needs --reranker <cross-encoder> or --generator <causal LM>');
  if (values.corpus && !values.generator) fail('--corpus needs --generator <causal LM>: /ask answers from the corpus with it');
  if (!values.corpus && (values.template || values.chat || values.system)) fail('--template, --chat and --system shape /ask\'s prompts: give --corpus too');
  const port = numberFlag('port', values.port, 'int') ?? 8080; // --port '' is no port (Number('') is 0: any free one)
  if (port < 0 || port > 65535) fail(`--port must be an integer from 0 to 65535, got ${values.port}`);
  const host = values.host ?? '127.0.0.1'; // serve()'s default
  if (values.writable) checkWritable(values.index!, '--index', 'folder'); // saves write beside it
  await checkListen(host, port); // before the models load
  const load = { device: (values.device ?? 'auto') as Device, dtype: values.dtype as DType | undefined, threads: numberFlag('threads', values.threads, 'count') };
  const built = values.index ? builtWith(values.index, values['no-model'] ? '--no-model' : values.model) : {}; // --no-model loads none
  const modelSource = values['no-model'] ? undefined : (values.model ?? built.source ?? DEFAULT_MODEL);
  // The vectors' width: --truncate-dim, else the index's (an index built with cut vectors is searched with them).
  const truncateDim = numberFlag('truncate-dim', values['truncate-dim'], 'count') ?? built.truncateDim;
  if (values['no-model'] && values['truncate-dim'] !== undefined) fail('--truncate-dim cuts the embedding model\'s vectors: --no-model has none');
  // --quantize: every model served.
  const int8 = quantizeFlag(values.quantize);
  if (values.sparse && !modelSource) fail('--sparse reads --model as a sparse encoder: --no-model has none');
  // A sparse (SPLADE) encoder: --sparse, an index built with one, or a SparseEncoder folder.
  const sparse =
    modelSource !== undefined &&
    (await readsAsSparse(modelSource, values.sparse || built.sparse, {
      adapter: values.adapter,
      'no-adapter-base-check': values['no-adapter-base-check'],
      'truncate-dim': values['truncate-dim'],
      corpus: values.corpus,
    }));
  // The embedding model of an index embeds its queries as its documents were (index.json's dtype and quantize, unless
  // the flags say otherwise).
  const embedding = { ...load, ...int8, ...builtNumerics(built, load.device, { dtype: values.dtype, quantize: values.quantize }) };
  const sparseEncoder = sparse ? await sparseEncoderModule().SparseEncoder.load(modelSource, embedding) : undefined;
  const enc = modelSource && !sparse
    ? await encoderModule().Encoder.load(modelSource, {
        ...embedding,
        truncateDim,
        adapter: values.adapter,
        ...(values['no-adapter-base-check'] && { checkAdapterBase: false }),
      })
    : undefined;
  if (values['sparse-model'] !== undefined && !modelSource) fail('--sparse-model goes beside an embedding model: --no-model has none');
  const second = await loadSparseModel(values['sparse-model'], built, enc ?? sparseEncoder, load, { dtype: values.dtype, quantize: values.quantize });
  const reranker = await loadReranker(values, { ...load, ...int8 });
  const indexModel = enc ?? sparseEncoder;
  const index = values.index && indexModel ? await searchIndexModule().Index.load(values.index, indexModel, { mmap: values.mmap ?? false, sparseEncoder: second }) : undefined;
  const generator = values.generator ? await generatorModule().Generator.load(values.generator, { ...load, ...int8 }) : undefined;
  const bar = values.corpus ? new ProgressBar('corpus', 'documents') : undefined;
  const rag =
    values.corpus && enc && generator
      ? await ragModule().Rag.create({
          retriever: enc,
          generator,
          corpus: values.corpus,
          template: values.template,
          chat: values.chat,
          system: values.system,
          onProgress: (d, n) => bar?.update(d, n),
        })
      : undefined;
  // The index's saves that failed (each said on stderr): one at shutdown makes the exit status 1.
  let saveFailures = 0;
  const saveTo = values.index && path.resolve(values.index);
  const onSaveError = (error: Error) => {
    saveFailures++;
    const said = /^saving the index to /.test(error.message) ? error.message : `saving the index to ${saveTo} failed: ${fileSystemErrorMessage(error, saveTo) ?? error.message}`;
    process.stderr.write(`coltrast serve: ${said}\n`);
  };
  const server = await serveModule().serve({
    encoder: enc,
    sparseEncoder: sparseEncoder ?? second,
    reranker,
    index,
    generator,
    rag,
    host: values.host,
    port,
    apiKey: values['api-key'] ?? process.env.COLTRAST_API_KEY,
    // As text-embeddings-inference's --cors-allow-origin: origins separated by commas, or * for any.
    ...(values['cors-allow-origin'] !== undefined && {
      cors: { origins: values['cors-allow-origin'].trim() === '*' ? '*' : values['cors-allow-origin'].split(',').map((origin) => origin.trim()).filter((origin) => origin !== '') },
    }),
    maxBatchTexts: numberFlag('max-batch', values['max-batch'], 'count'),
    batchSize: numberFlag('batch-size', values['batch-size'], 'count'),
    maxInputs: numberFlag('max-inputs', values['max-inputs'], 'count'),
    maxQueue: numberFlag('max-queue', values['max-queue'], 'count'),
    modelName: values.name ?? modelSource,
    rerankerName: values.reranker,
    generatorName: values.generator,
    generationBatchSize: numberFlag('generation-batch', values['generation-batch'], 'count'),
    writable: values.writable ?? false,
    ...(values.writable && values.index && { saveTo: values.index, onSaveError }),
    saveInterval: numberFlag('save-interval', values['save-interval'], 'number'),
    onRequest: values.verbose
      ? (r) => process.stderr.write(`${new Date().toISOString()} ${r.method} ${r.path} ${r.status} ${r.milliseconds.toFixed(1)} ms${r.inputs ? ` ${r.inputs} inputs` : ''}\n`)
      : undefined,
  }).catch((error: unknown) => {
    const problem = listenProblem(error, host, port);
    if (problem) fail(problem);
    throw error;
  });
  const serving = [
    enc && `model ${modelSource} (${enc.device})`,
    sparseEncoder && `sparse model ${modelSource} (${sparseEncoder.device})`,
    second && `sparse model ${second.modelDir} (${second.device})`,
    reranker && `reranker ${values.reranker}`,
    index && `index ${values.index} (${index.size} documents)`,
    generator && `generator ${values.generator}`,
    rag && `corpus ${values.corpus} (${rag.documents} documents)`,
  ];
  console.log(`coltrast serve: listening on ${server.url} (${serving.filter(Boolean).join(", ")})`);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      process.stderr.write(`coltrast serve: ${signal}, finishing the requests in progress (again to stop at once)\n`);
      process.once(signal, () => process.exit(130));
      saveFailures = 0; // only the final save (close() saves unsaved changes) decides the exit status
      server.close().then(resolve, (error: Error) => {
        process.stderr.write(`coltrast serve: closing failed: ${error.message}\n`);
        process.exitCode = 1;
        resolve();
      });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  if (saveFailures > 0) {
    process.stderr.write(`coltrast serve: the index's last changes are not saved to ${saveTo}\n`);
    process.exitCode = 1;
  }
  enc?.dispose();
  sparseEncoder?.dispose();
  reranker?.dispose();
  generator?.dispose();
}

/** Why the server cannot listen on `host`:`port`, in a line, or undefined for an error that is not about listening. */
function listenProblem(error: unknown, host: string, port: number): string | undefined {
  const e = error as NodeJS.ErrnoException;
  if (!e || typeof e !== 'object' || (e.syscall !== 'listen' && e.syscall !== 'getaddrinfo' && e.syscall !== 'bind')) return undefined;
  const where = `cannot listen on ${host}:${port}`;
  switch (e.code) {
    case 'EADDRINUSE':
      return `port ${port} on ${host} is in use: choose another (--port), or --port 0 for any free port`;
    case 'ENOTFOUND':
    case 'EAI_NONAME':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
      return `${where}: no address is known by the name ${host}; give an address of this machine (127.0.0.1, the default; 0.0.0.0 for all of them) or a name for one`;
    case 'EADDRNOTAVAIL':
      return `${where}: ${host} is not an address of this machine; give one of its addresses (127.0.0.1, the default; 0.0.0.0 for all of them)`;
    case 'EACCES':
    case 'EPERM':
      return `${where}: permission denied${port > 0 && port < 1024 ? ' (ports below 1024 need privileges: choose --port 1024 or above)' : ''}`;
    default:
      return `${where}: ${e.message}`;
  }
}

/** Fails (exit 2) when the server could not listen on `host`:`port`: tried with a server of no routes, closed at once. */
async function checkListen(host: string, port: number): Promise<void> {
  const net = await import('node:net');
  const problem = await new Promise<string | undefined>((resolve) => {
    const probe = net.createServer();
    probe.once('error', (error) => resolve(listenProblem(error, host, port) ?? `cannot listen on ${host}:${port}: ${error.message}`));
    probe.listen(port, host, () => probe.close(() => resolve(undefined)));
  });
  if (problem) fail(problem);
}

/** Runs one of the package's scripts with `argv`, its output on this terminal, its exit status ours. */
async function runScript(relative: string, argv: string[], cwd?: string): Promise<void> {
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(process.execPath, [path.resolve(__dirname, '..', relative), ...argv], { stdio: 'inherit', cwd });
  process.exitCode = r.status ?? 1;
}

/** Builds the addon from source (scripts/build-native.js): for machines no prebuild fits. */
async function build(argv: string[]): Promise<void> {
  await runScript(path.join('scripts', 'build-native.js'), argv, path.resolve(__dirname, '..'));
}

/** The benchmark suites (scripts/bench/run.js; they live in the repository, not in the npm package). */
async function bench(argv: string[]): Promise<void> {
  if (!fs.existsSync(path.resolve(__dirname, '..', 'scripts', 'bench', 'run.js'))) {
    fail('coltrast bench runs from a clone of the repository (its suites and data are not in the npm package): git clone the coltrast repository, then npm run bench there');
  }
  await runScript(path.join('scripts', 'bench', 'run.js'), argv);
}

const COMMANDS: Record<string, (argv: string[]) => Promise<void>> = {
  info,
  build,
  bench,
  embed,
  cluster,
  train: trainCommand,
  index: indexCommand,
  search: searchCommand,
  eval: evalCommand,
  export: exportCommand,
  'generate-queries': generateQueriesCommand,
  mine: mineCommand,
  'rag-train': ragTrainCommand,
  ask: askCommand,
  generate: generateCommand,
  serve: serveCommand,
  truncate: truncateCommand,
};

/**
 * The flags each command accepts (\`build\` and \`bench\` hand theirs to their scripts). One table, so that a
 * test can hold the help text and the README to what the parsers take.
 */
export const COMMAND_FLAGS: Record<string, readonly string[]> = {
  info: Object.keys(INFO_OPTIONS),
  embed: Object.keys(EMBED_OPTIONS),
  cluster: Object.keys(CLUSTER_OPTIONS),
  train: Object.keys(TRAIN_FLAGS),
  index: Object.keys(INDEX_OPTIONS),
  search: Object.keys(SEARCH_OPTIONS),
  eval: Object.keys(EVAL_OPTIONS),
  export: Object.keys(EXPORT_OPTIONS),
  'generate-queries': Object.keys(GENERATE_QUERIES_FLAGS),
  mine: Object.keys(MINE_FLAGS),
  'rag-train': Object.keys(RAG_FLAGS),
  ask: Object.keys(ASK_FLAGS),
  generate: Object.keys(GENERATE_FLAGS),
  serve: Object.keys(SERVE_OPTIONS),
  truncate: Object.keys(TRUNCATE_OPTIONS),
};

/**
 * A bar on stderr for each weights file or file of 1 MiB and more that a command downloads (a model given as a Hugging
 * Face id that is not cached yet): every command's loads, and those train(), evaluate() and the others make inside.
 */
function downloadBars(): (p: DownloadProgress) => void {
  const bars = new Map<string, ProgressBar>();
  return (p) => {
    if (p.total === undefined || (p.total < 2 ** 20 && !p.file.endsWith('.safetensors'))) return;
    let bar = bars.get(p.file);
    if (!bar) bars.set(p.file, (bar = new ProgressBar(`download ${p.file}`, 'MB')));
    bar.update(p.downloaded / 2 ** 20, p.total / 2 ** 20);
    if (p.downloaded >= p.total) bars.delete(p.file); // another model's file of that name gets its own bar
  };
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    console.log(USAGE);
    return;
  }
  if (command === '--version' || command === '-V' || command === 'version') {
    // From package.json beside lib/ or dist/, without loading the native addon.
    console.log((JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version);
    return;
  }
  const run = COMMANDS[command];
  if (!run) {
    const near = nearest(command, Object.keys(COMMANDS));
    fail(`unknown command ${command}${near ? `: did you mean ${near}?` : ''} (commands: ${Object.keys(COMMANDS).join(', ')}, help)`);
  }
  runningCommand = command;
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(commandHelp(command));
    return;
  }
  hubModule().setDefaultDownloadProgress(downloadBars());
  handleInterrupts(command);
  await run(rest);
}

/**
 * What every command does when it is stopped from outside: temporary files (of the atomic writers, files.ts
 * trackTemporaryFile) are removed at any exit; SIGINT and SIGTERM (serve handles its own: it finishes the requests
 * in progress) say the command's interruptNote, if any, and end the process by the signal (a shell sees 130 for
 * Ctrl-C, as before), but first abort a run that stops cleanly (interruptAbort: train's, which writes a checkpoint
 * and then ends the same way) and end the process only at a second; and a closed stdout (`coltrast embed big.txt |
 * head`) ends the command quietly with status 0, as Unix tools do.
 */
function handleInterrupts(command: string): void {
  process.on('exit', removeTemporaryFiles);
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    fail(`cannot write to the standard output: ${fileSystemErrorMessage(error)?.replace(/^cannot \w+: /, '') ?? error.message}`);
  });
  process.stderr.on('error', () => undefined); // nowhere left to say anything
  if (command === 'serve') return;
  process.on('SIGINT', interrupted);
  process.on('SIGTERM', interrupted);
}

function interrupted(signal: NodeJS.Signals): void {
  if (interruptAbort && interruptStepped && !interruptAbort.signal.aborted) {
    process.stderr.write(`${process.stderr.isTTY ? '\n' : ''}coltrast: ${signal}: stopping after the step under way to write a checkpoint (again to stop at once)\n`);
    interruptAbort.abort(signal);
    return;
  }
  endByInterrupt(signal);
}

/** Ends the process by `signal` after the command's interruptNote (else `otherwise`), its temporary files removed. */
function endByInterrupt(signal: NodeJS.Signals, otherwise?: string): void {
  removeTemporaryFiles();
  const note = interruptNote?.() ?? otherwise;
  if (note) process.stderr.write(`${process.stderr.isTTY ? '\n' : ''}coltrast: ${note}\n`);
  process.off('SIGINT', interrupted);
  process.off('SIGTERM', interrupted);
  process.exitCode = 130; // should the process outlive its signal
  process.kill(process.pid, signal); // no handler left: the default, ending the process by the signal
}

/** The command main() runs (an unknown flag's error suggests one of its flags). */
let runningCommand: string | undefined;

/**
 * The candidate `word` was most likely meant as: one it begins or that begins it (--epoch, --epochs), or one within two
 * edits (a third of its length for short words), the closest first; undefined when none is near. Written here: a
 * dozen lines of edit distance over a few dozen names, where a dependency would bring no more.
 */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  // Edits: a letter added, dropped, changed, or two neighbours swapped (trian, train).
  const distance = (a: string, b: string) => {
    const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
    for (let i = 1; i <= a.length; i++) {
      for (let j = 1; j <= b.length; j++) {
        d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
        if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
    return d[a.length][b.length];
  };
  const limit = Math.min(2, Math.floor(word.length / 3));
  const scored = candidates
    .map((c) => ({ c, d: c.startsWith(word) || word.startsWith(c) ? Math.min(1, Math.abs(c.length - word.length)) : distance(word, c) }))
    .filter(({ c, d }) => c !== word && (d <= limit || (d <= 1 && word.length >= 3)))
    .sort((a, b) => a.d - b.d);
  return scored[0]?.c;
}

/** parseArgs' error for an unknown flag, with the flag of the command it was most likely meant as. */
function unknownFlagMessage(error: Error & { code?: unknown }): string {
  if (error.code !== 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || runningCommand === undefined) return error.message;
  const typed = /'(--?[^'=]+)/.exec(error.message)?.[1];
  const flags = COMMAND_FLAGS[runningCommand];
  if (!typed || !flags) return error.message;
  const near = nearest(typed.replace(/^--?/, ''), flags);
  return `${error.message.replace(/\. To specify a positional argument[\s\S]*$/, '')}${near ? `: did you mean --${near}?` : ''} (coltrast ${runningCommand} --help lists its flags)`;
}

// Run as the \`coltrast\` command; imported (the docs test reads USAGE and COMMAND_FLAGS), nothing runs.
if (require.main === module) {
  main().catch((error: unknown) => {
    // The library's argument errors name its options; here they were flags (the error and its code are kept).
    if (error instanceof ColtrastError && flagNames) error.message = flagNamed(error.message, flagNames);
    if (error instanceof ColtrastError || String((error as { code?: unknown })?.code).startsWith('ERR_PARSE_ARGS_')) {
      fail(unknownFlagMessage(error as Error));
    }
    // The reader of what the command writes has gone (an output that is a pipe): stop quietly, as Unix tools do.
    if ((error as NodeJS.ErrnoException)?.code === 'EPIPE') process.exit(0);
    // A file that cannot be written or read (a full disk, a path through a file, no permission): a line, not a trace.
    const message = fileSystemErrorMessage(stagedAs(error), writing);
    if (message) fail(message);
    throw error;
  });
}
