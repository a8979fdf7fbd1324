/**
 * What train() leaves beside the model for people: training_curves.svg (loss per step and per epoch,
 * validation loss and retrieval metrics per epoch) and a README model card.
 *
 * The SVG is written by hand: two line panels need ~80 lines, while the charting libraries that render
 * SVG in Node without a browser (vega + vega-lite, chart.js + a canvas) would add tens of megabytes and a
 * native canvas build to an addon that must install offline.
 */
import type { LoraConfig } from './lora';
import type { SimilarityMetrics, TrainResult } from './train';

interface Series {
  label: string;
  color: string;
  points: [number, number][];
  dashed?: boolean;
  faint?: boolean;
}

const WIDTH = 460;
const HEIGHT = 300;
const PAD = { left: 56, right: 16, top: 34, bottom: 44 };

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const step = 10 ** Math.floor(Math.log10((hi - lo) / count));
  const unit = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= count) ?? step * 10;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / unit) * unit; v <= hi + 1e-12; v += unit) ticks.push(+v.toPrecision(12));
  return ticks;
}

/** One panel at (x0, 0): axes, ticks, a legend and one polyline per series. */
function panel(x0: number, title: string, xLabel: string, series: Series[]): string {
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return '';
  const [xs, ys] = [all.map((p) => p[0]), all.map((p) => p[1])];
  let [xMin, xMax, yMin, yMax] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (xMax === xMin) xMax = xMin + 1;
  if (yMax === yMin) [yMin, yMax] = [yMin - 0.5, yMax + 0.5];
  const pad = (yMax - yMin) * 0.05;
  [yMin, yMax] = [yMin - pad, yMax + pad];
  const w = WIDTH - PAD.left - PAD.right;
  const h = HEIGHT - PAD.top - PAD.bottom;
  const sx = (x: number) => x0 + PAD.left + ((x - xMin) / (xMax - xMin)) * w;
  const sy = (y: number) => PAD.top + h - ((y - yMin) / (yMax - yMin)) * h;
  const parts = [
    `<text x="${x0 + WIDTH / 2}" y="20" text-anchor="middle" font-weight="bold">${escape(title)}</text>`,
    `<rect x="${x0 + PAD.left}" y="${PAD.top}" width="${w}" height="${h}" fill="none" stroke="#999"/>`,
  ];
  for (const t of niceTicks(yMin, yMax)) {
    parts.push(`<line x1="${x0 + PAD.left}" x2="${x0 + PAD.left + w}" y1="${sy(t)}" y2="${sy(t)}" stroke="#eee"/>`);
    parts.push(`<text x="${x0 + PAD.left - 6}" y="${sy(t) + 4}" text-anchor="end">${t}</text>`);
  }
  for (const t of niceTicks(xMin, xMax)) {
    parts.push(`<text x="${sx(t)}" y="${PAD.top + h + 16}" text-anchor="middle">${t}</text>`);
  }
  parts.push(`<text x="${x0 + PAD.left + w / 2}" y="${HEIGHT - 8}" text-anchor="middle">${escape(xLabel)}</text>`);
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const path = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
    const style = `stroke="${s.color}" stroke-width="${s.faint ? 1 : 2}"${s.dashed ? ' stroke-dasharray="5,3"' : ''}${s.faint ? ' opacity="0.35"' : ''}`;
    parts.push(`<polyline fill="none" ${style} points="${path}"/>`);
    if (s.points.length < 40) {
      for (const [x, y] of s.points) parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5" fill="${s.color}"/>`);
    }
    const ly = PAD.top + 12 + i * 14;
    parts.push(`<line x1="${x0 + PAD.left + w - 120}" x2="${x0 + PAD.left + w - 104}" y1="${ly - 4}" y2="${ly - 4}" ${style}/>`);
    parts.push(`<text x="${x0 + PAD.left + w - 100}" y="${ly}">${escape(s.label)}</text>`);
  });
  return parts.join('\n');
}

/** training_curves.svg: loss (per step, per epoch, validation) and validation retrieval metrics per epoch. */
export function trainingCurvesSvg(result: Pick<TrainResult, 'history' | 'before' | 'similarity'>): string {
  const { steps, epochs } = result.history;
  const stepsPerEpoch = steps.length / Math.max(1, epochs.length);
  const lossSeries: Series[] = [
    { label: 'train (step)', color: '#1f77b4', faint: true, points: steps.map((s) => [s.step / stepsPerEpoch, s.loss]) },
    { label: 'train (epoch)', color: '#1f77b4', points: epochs.map((e) => [e.epoch, e.trainLoss]) },
    { label: 'validation', color: '#d62728', dashed: true, points: epochs.filter((e) => e.valLoss !== undefined).map((e) => [e.epoch, e.valLoss!]) },
  ];
  const withMetrics = epochs.filter((e) => e.metrics);
  const start = result.before ? [[0, result.before['recall@1']] as [number, number]] : [];
  const startMrr = result.before ? [[0, result.before['mrr@10']] as [number, number]] : [];
  const metricSeries: Series[] = [
    { label: 'Recall@1', color: '#2ca02c', points: [...start, ...withMetrics.map((e) => [e.epoch, e.metrics!['recall@1']] as [number, number])] },
    { label: 'MRR@10', color: '#9467bd', dashed: true, points: [...startMrr, ...withMetrics.map((e) => [e.epoch, e.metrics!['mrr@10']] as [number, number])] },
  ];
  const panels = [panel(0, 'Loss', 'epoch', lossSeries)];
  if (withMetrics.length > 0) panels.push(panel(WIDTH, 'Validation retrieval', 'epoch (0 = before training)', metricSeries));
  const withSimilarity = epochs.filter((e) => e.similarity);
  if (withSimilarity.length > 0) {
    const first = result.similarity?.before;
    const correlation = (key: 'spearman' | 'pearson'): [number, number][] => [...(first ? [[0, first[key]] as [number, number]] : []), ...withSimilarity.map((e) => [e.epoch, e.similarity![key]] as [number, number])];
    panels.push(panel(WIDTH, 'Validation similarity', 'epoch (0 = before training)', [
      { label: 'Spearman', color: '#2ca02c', points: correlation('spearman') },
      { label: 'Pearson', color: '#9467bd', dashed: true, points: correlation('pearson') },
    ]));
  }
  const width = WIDTH * panels.length;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${HEIGHT}" viewBox="0 0 ${width} ${HEIGHT}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${HEIGHT}" fill="white"/>`,
    ...panels,
    '</svg>',
    '',
  ].join('\n');
}

function similarityLine(m: SimilarityMetrics | undefined): string {
  if (!m) return 'n/a (no validation split)';
  // Pairs labeled 1 or 0: their classification by a threshold too (BinaryClassificationEvaluator's accuracy, F1, AP).
  const c = m.classification;
  const classified = c ? `; accuracy ${c.accuracy.toFixed(3)}, F1 ${c.f1.toFixed(3)}, average precision ${c.averagePrecision.toFixed(3)}` : '';
  return `Spearman ${m.spearman.toFixed(3)}, Pearson ${m.pearson.toFixed(3)} (${m.pairs} pairs)${classified}`;
}

function metricsLine(m: TrainResult['before']): string {
  const triplets = m?.tripletAccuracy === undefined ? '' : `, triplet accuracy ${m.tripletAccuracy.toFixed(3)}`;
  return m ? `Recall@1 ${m['recall@1'].toFixed(3)}, MRR@10 ${m['mrr@10'].toFixed(3)} (${m.queries} questions)${triplets}` : 'n/a (no validation split)';
}

/**
 * A Matryoshka model's card: the widths it was trained at, validation metrics with the vectors cut to each
 * (before training and the kept model), and how to load it cut.
 */
function matryoshkaSection(result: TrainResult, widths: number[] | undefined): string {
  if (!widths) return '';
  const before = new Map(result.before?.dimensions?.map((d) => [d.dimension, d]));
  const after = new Map(result.after?.dimensions?.map((d) => [d.dimension, d]));
  const cell = (d: { 'recall@1': number; 'mrr@10': number } | undefined) => (d ? `${d['recall@1'].toFixed(3)} / ${d['mrr@10'].toFixed(3)}` : 'n/a');
  const rows = widths.map((w) => `| ${w} | ${cell(before.get(w))} | ${cell(after.get(w))} |`).join('\n');
  const smallest = widths[widths.length - 1];
  return `
## Matryoshka widths

Trained with Matryoshka representation learning at widths ${widths.join(', ')}: its vectors can be cut to their
first entries (normalized again) at a small loss of quality. Validation Recall@1 / MRR@10 at each width:

| width | before training | kept model |
|---|---|---|
${rows}

\`Encoder.load('./this-folder', { truncateDim: ${smallest} })\` in coltrast,
\`SentenceTransformer("./this-folder", truncate_dim=${smallest})\` in sentence-transformers.
`;
}

/** What a model card says a model is and how to use it, per kind of model. */
const KINDS = {
  embedding: {
    what: `A retrieval embedding model fine-tuned with coltrast (ColTrast: in-batch contrastive
loss on pooled embeddings plus a late-interaction MaxSim loss on token embeddings).`,
    use: `\`\`\`ts
import { Encoder } from 'coltrast';
const enc = await Encoder.load('./this-folder');
const { dims, data } = await enc.embed(['a question', 'a passage']);
\`\`\`

\`\`\`python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("./this-folder")
embeddings = model.encode(["a question", "a passage"])
\`\`\``,
  },
  similarity: {
    what: `A sentence-similarity embedding model fine-tuned with coltrast on labeled pairs, whose cosine similarities
follow the pairs' labels.`,
    use: `\`\`\`ts
import { Encoder } from 'coltrast';
const enc = await Encoder.load('./this-folder');
const scores = await enc.similarityPairwise(await enc.embed(['a sentence']), await enc.embed(['another sentence']));
\`\`\`

\`\`\`python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("./this-folder")
scores = model.similarity_pairwise(model.encode(["a sentence"]), model.encode(["another sentence"]))
\`\`\``,
  },
  'multi-vector': {
    what: `A multi-vector (ColBERT-style) retrieval model fine-tuned with coltrast: in-batch cross-entropy over
MaxSim (late-interaction) scores of its token vectors. Scoring is MaxSim of query tokens against document tokens.`,
    use: `\`\`\`ts
import { Encoder, ops } from 'coltrast';
const enc = await Encoder.load('./this-folder');
const queries = await enc.embed(['a question'], { output: 'tokens', task: 'query' });
const documents = await enc.embed(['a passage'], { output: 'tokens', task: 'document' });
\`\`\`

\`\`\`python
from sentence_transformers import MultiVectorEncoder
model = MultiVectorEncoder("./this-folder")
scores = model.similarity(model.encode_query(["a question"]), model.encode_document(["a passage"]))
\`\`\``,
  },
  'cross-encoder': {
    what: `A cross-encoder (reranker) fine-tuned with coltrast: it reads a query and a document together and scores
the pair; trained on each query's positive against the batch's other documents and hard negatives.`,
    use: `\`\`\`ts
import { CrossEncoder } from 'coltrast';
const ce = await CrossEncoder.load('./this-folder');
const ranked = await ce.rank('a question', ['a passage', 'another passage']);
\`\`\`

\`\`\`python
from sentence_transformers import CrossEncoder
model = CrossEncoder("./this-folder")
ranked = model.rank("a question", ["a passage", "another passage"])
\`\`\``,
  },
  sparse: {
    what: `A sparse (SPLADE) retrieval model fine-tuned with coltrast: a masked language model's vocabulary logits,
log(1 + relu) and pooled over the text's tokens, make one vector as wide as the vocabulary with few non-zero
entries (its terms and their expansions); trained with the in-batch contrastive loss on their dot products and the
FLOPS regularizers, which keep them sparse.`,
    use: `\`\`\`ts
import { SparseEncoder } from 'coltrast';
const model = await SparseEncoder.load('./this-folder');
const [query] = await model.encode(['a question'], { task: 'query' });
const documents = await model.encode(['a passage', 'another passage'], { task: 'document' });
const scores = await model.similarity([query], documents);
\`\`\`

\`\`\`python
from sentence_transformers import SparseEncoder
model = SparseEncoder("./this-folder")
scores = model.similarity(model.encode_query(["a question"]), model.encode_document(["a passage"]))
\`\`\``,
  },
  'masked-lm': {
    what: `A masked language model trained further with coltrast on unlabeled text (BERT's objective: 15% of the tokens
chosen, most of them masked, and predicted by its masked-LM head). A start for fine-tuning: a sparse (SPLADE) encoder
or an embedding model.`,
    use: `\`\`\`ts
import { SparseEncoder, train } from 'coltrast';
const splade = await SparseEncoder.load('./this-folder');       // its vocabulary logits, SPLADE-pooled
await train({ model: './this-folder', sparse: true, data: 'pairs.jsonl', output: './my-splade' });
\`\`\`

\`\`\`python
from transformers import AutoModelForMaskedLM
model = AutoModelForMaskedLM.from_pretrained("./this-folder")
\`\`\``,
  },
} as const;

/** The card's line on a LoRA run: what trained. */
function loraLine(lora: LoraConfig): string {
  const head = lora.modulesToSave.length > 0 ? ` and the classification head's ${lora.modulesToSave.map((m) => `\`${m}\``).join(', ')} (PEFT's modules_to_save)` : '';
  return `- LoRA: rank ${lora.rank}, alpha ${lora.alpha} on ${lora.targetModules.map((m) => `\`${m}\``).join(', ')}; only the adapters${head} trained. The weights here have them merged in; \`adapter/\` holds them in PEFT's format\n`;
}

/** How to add the LoRA adapter in `adapter/` to the base model instead (a causal-LM reranker's adapter: PEFT's CAUSAL_LM). */
function loraUse(kind: keyof typeof KINDS, lora: LoraConfig): string {
  if (kind === 'cross-encoder') {
    const peftBase = lora.taskType === 'CAUSAL_LM' ? 'AutoModelForCausalLM.from_pretrained(base)' : 'AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)';
    return `
Or the base model with the adapter: \`CrossEncoder.load(base, { adapter: './this-folder/adapter' })\` in coltrast;
\`CrossEncoder(base)\` then \`model.load_adapter("./this-folder/adapter")\` in sentence-transformers, or PEFT's
\`PeftModel.from_pretrained(${peftBase}, "./this-folder/adapter")\`.
`;
  }
  return `
Or the base model with the adapter: \`Encoder.load(base, { adapter: './this-folder/adapter' })\` in coltrast;
\`SentenceTransformer(base)\` then \`model.load_adapter("./this-folder/adapter")\` in sentence-transformers.
`;
}

/** A card's note on adaptive layers: the model trained to work with its first layers alone, and how to cut it. */
function adaptiveLayersSection(layers: number | undefined, after: TrainResult['after']): string {
  if (!layers) return '';
  const half = Math.max(1, Math.floor(layers / 2));
  const rows = [...(after?.layers ?? []), ...(after ? [{ layers, 'recall@1': after['recall@1'], 'mrr@10': after['mrr@10'] }] : [])];
  const table =
    rows.length > 1
      ? `Validation Recall@1 / MRR@10 of this model with its first layers alone:\n\n| layers | Recall@1 | MRR@10 |\n|---|---|---|\n${rows.map((r) => `| ${r.layers} | ${r['recall@1'].toFixed(3)} | ${r['mrr@10'].toFixed(3)} |`).join('\n')}\n\n`
      : '';
  return `
## Adaptive layers

Trained with adaptive layers (sentence-transformers' AdaptiveLayerLoss): the losses also scored the vectors after
each number of its ${layers} layers, so its first layers alone make a smaller, faster model.

${table}Run its first layers alone with \`Encoder.load('./this-folder', { layers: ${half} })\` in coltrast, or cut it into a new
folder that any library loads as a model (coltrast, sentence-transformers, transformers):

\`coltrast truncate --model ./this-folder --layers ${half} --output ./this-folder-${half}-layers\`
`;
}

/** README.md model card: what the model is, how it was trained, how well it retrieves, how to load it. */
export function modelCard(
  result: TrainResult,
  info: {
    baseModel: string; data: string; config: Record<string, unknown>; kind: keyof typeof KINDS; distillation?: string; guide?: string; frozenBase?: boolean;
    contrastiveTension?: boolean; matryoshka?: number[]; lora?: LoraConfig; loss?: string;
    /** Trained with adaptive layers: the model's layer count. */
    adaptiveLayers?: number;
  },
): string {
  const last = result.history.epochs[result.history.epochs.length - 1];
  const { what, use } = KINDS[info.kind];
  const library = info.kind === 'masked-lm' ? 'transformers' : 'sentence-transformers';
  return `---
library_name: ${library}
tags:
  - ${library}
  - coltrast
---

# ${escape(result.modelDir.split(/[\\/]/).pop() ?? 'model')}

${what}

- Base model: \`${info.baseModel}\`
- Training data: \`${info.data}\`
${info.distillation ? `- Distilled from: ${info.distillation}\n` : ''}${info.guide ? `- Negatives guided by: ${info.guide}\n` : ''}${info.frozenBase ? '- Base model frozen: only the head was trained\n' : ''}${info.loss ? `- Loss: ${info.loss}\n` : ''}${info.contrastiveTension ? '- Self-supervised: Contrastive Tension on unlabeled sentences (in-batch negatives, a twin copy of the model)\n' : ''}${info.lora ? loraLine(info.lora) : ''}- Epochs run: ${result.history.epochs.length} (kept: epoch ${result.best.epoch}); optimizer steps: ${result.history.steps.length}

${
    info.kind === 'masked-lm'
      ? ''
      : result.similarity
        ? `## Validation similarity

| | Spearman / Pearson of ${info.kind === 'cross-encoder' ? 'score' : 'cosine similarity'} and label |
|---|---|
| before training | ${similarityLine(result.similarity?.before)} |
| kept model | ${similarityLine(result.similarity?.after)} |
`
      : `## Validation retrieval

| | Recall@1 / MRR@10 |
|---|---|
| before training | ${metricsLine(result.before)} |
| kept model | ${metricsLine(result.after)} |
`
  }${last?.valLoss !== undefined ? `\nLast validation loss: ${last.valLoss.toFixed(4)}.\n` : ''}${matryoshkaSection(result, info.matryoshka)}${adaptiveLayersSection(info.adaptiveLayers, result.after)}
![training curves](training_curves.svg)

## Use

${use}
${info.lora ? loraUse(info.kind, info.lora) : ''}
## Training configuration

\`\`\`json
${JSON.stringify(info.config, (_, v) => (v === Infinity ? 'Infinity' : v), 2)}
\`\`\`
`;
}
