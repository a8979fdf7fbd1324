/**
 * Standard retrieval metrics over a ranked run and relevance judgements (qrels), with trec_eval's
 * definitions, which sentence-transformers' InformationRetrievalEvaluator shares except where noted:
 *
 * - Recall@k = relevant documents in the top k / relevant documents.
 * - Precision@k = relevant documents in the top k / k.
 * - MRR@k = 1 / rank of the first relevant document within the top k (0 if none).
 * - nDCG@k (graded, trec_eval's ndcg_cut): DCG = sum over the top k of grade / log2(rank + 1), divided by
 *   the DCG of the ideal ordering of the judged grades. sentence-transformers uses binary gains; with
 *   0/1 qrels (BEIR's usual case) the two agree.
 * - MAP@k (trec_eval's map_cut): sum of Precision@rank over relevant documents within the top k, divided
 *   by all relevant documents. (sentence-transformers divides by min(k, relevant) instead.)
 *
 * A document is relevant when its grade is > 0. Queries without any relevant document are left out, as
 * BEIR and trec_eval do. Ties in score are broken by document id, ascending, so results are repeatable.
 */
import { ColtrastError } from './errors';
import { inTurns } from './turns';
import { invalid, positiveInteger } from './validate';

export type Qrels = Map<string, Map<string, number>>;
/** Per query, documents with scores (any order; rank() sorts them). */
export type Run = Map<string, { id: string; score: number }[]>;

export const METRICS = ['ndcg', 'recall', 'mrr', 'map', 'precision'] as const;
export type MetricName = (typeof METRICS)[number];
/** metric -> k -> mean over the evaluated queries. */
export type MetricTable = Record<MetricName, Record<number, number>>;

export function rank(hits: { id: string; score: number }[]): string[] {
  return hits
    .slice()
    .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map((h) => h.id);
}

function checkCutoffs(ks: unknown): number[] {
  if (!Array.isArray(ks) || ks.length === 0) throw invalid('ks', 'a non-empty array of positive integers (the cut-offs k)', ks);
  ks.forEach((k, i) => positiveInteger(`ks[${i}]`, k));
  return ks;
}

function checkJudged(name: string, judged: unknown): Map<string, number> {
  if (!(judged instanceof Map)) throw invalid(name, 'a Map of document id to relevance grade (a number; > 0 is relevant)', judged);
  for (const [id, grade] of judged) {
    if (typeof grade !== 'number' || !Number.isFinite(grade)) throw invalid(`${name}.get(${JSON.stringify(id)})`, 'a relevance grade (a finite number)', grade);
  }
  return judged;
}

/**
 * Refuses a document that a ranking holds twice (`name`: the ranking's name in the message, `idOf` its ids): it would
 * count as relevant twice (recall over 1), as trec_eval refuses a run that repeats a document.
 */
function checkDistinct<T>(name: string, items: T[], idOf: (item: T) => string): void {
  const first = new Map<string, number>();
  items.forEach((item, i) => {
    const id = idOf(item);
    const earlier = first.get(id);
    if (earlier !== undefined) {
      throw new ColtrastError('INVALID_ARGUMENT', `${name} must hold each document once, got the document ${JSON.stringify(id)} at ${earlier} and ${i} (a run that repeats a document counts it twice)`);
    }
    first.set(id, i);
  });
}

/** Metrics of one query's ranking (document ids, best first, each once) against its judgements. */
export function queryMetrics(ranking: string[], judged: Map<string, number>, ks: number[]): MetricTable {
  if (!Array.isArray(ranking) || !ranking.every((id) => typeof id === 'string')) throw invalid('ranking', 'an array of document ids (strings), best first', ranking);
  checkDistinct('ranking', ranking, (id) => id);
  return metricsOf(ranking, checkJudged('judged', judged), checkCutoffs(ks));
}

function metricsOf(ranking: string[], judged: Map<string, number>, ks: number[]): MetricTable {
  const relevant = [...judged.values()].filter((g) => g > 0).length;
  const ideal = [...judged.values()].filter((g) => g > 0).sort((a, b) => b - a);
  const table = Object.fromEntries(METRICS.map((m) => [m, {}])) as MetricTable;
  for (const k of ks) {
    let hits = 0;
    let dcg = 0;
    let idcg = 0;
    let ap = 0;
    let rr = 0;
    for (let i = 0; i < Math.min(k, ranking.length); i++) {
      const grade = judged.get(ranking[i]) ?? 0;
      if (grade > 0) {
        hits++;
        dcg += grade / Math.log2(i + 2);
        ap += hits / (i + 1);
        if (rr === 0) rr = 1 / (i + 1);
      }
    }
    for (let i = 0; i < Math.min(k, ideal.length); i++) idcg += ideal[i] / Math.log2(i + 2);
    table.recall[k] = hits / relevant;
    table.precision[k] = hits / k;
    table.mrr[k] = rr;
    table.ndcg[k] = idcg > 0 ? dcg / idcg : 0;
    table.map[k] = ap / relevant;
  }
  return table;
}

/** Mean metrics over the queries that have at least one relevant document. */
export function evaluateRun(run: Run, qrels: Qrels, ks: number[]): { metrics: MetricTable; queries: number } {
  if (!(run instanceof Map)) throw invalid('run', 'a Map of query id to its hits [{ id, score }]', run);
  if (!(qrels instanceof Map)) throw invalid('qrels', 'a Map of query id to a Map of document id to relevance grade', qrels);
  checkCutoffs(ks);
  for (const [qid, hits] of run) {
    if (!Array.isArray(hits) || !hits.every((h) => typeof h?.id === 'string' && typeof h.score === 'number')) {
      throw invalid(`run.get(${JSON.stringify(qid)})`, 'an array of { id: string, score: number }', hits);
    }
    // A NaN score has no place in the order: the sort put its document wherever the comparison left it (first, even).
    const nan = hits.findIndex((h) => Number.isNaN(h.score));
    if (nan >= 0) throw invalid(`run.get(${JSON.stringify(qid)})[${nan}].score`, 'a number, not NaN (a NaN score cannot be ranked)', hits[nan].score);
    checkDistinct(`run.get(${JSON.stringify(qid)})`, hits, (h) => h.id);
  }
  checkQrels('qrels', qrels);
  return meanMetrics(run, qrels, ks);
}

/** @internal Refuses judgements whose grades are not finite numbers, named under `name` (evaluateRun; evaluate()'s loaded data). */
export function checkQrels(name: string, qrels: Qrels): void {
  for (const [qid, judged] of qrels) checkJudged(`${name}.get(${JSON.stringify(qid)})`, judged);
}

/** @internal evaluateRun without its checks, for the runs evaluate() and train() make themselves. */
export function meanMetrics(run: Run, qrels: Qrels, ks: number[]): { metrics: MetricTable; queries: number } {
  const mean = new MeanMetrics(ks);
  for (const entry of qrels) mean.add(run, entry);
  return mean.result();
}

/** @internal meanMetrics, letting the event loop run every few milliseconds (evaluate(): thousands of queries). */
export async function meanMetricsInTurns(run: Run, qrels: Qrels, ks: number[]): Promise<{ metrics: MetricTable; queries: number }> {
  const mean = new MeanMetrics(ks);
  await inTurns(qrels, (entry) => mean.add(run, entry));
  return mean.result();
}

/** The sums of meanMetrics, a query at a time. */
class MeanMetrics {
  private readonly sum: MetricTable;
  private count = 0;

  constructor(private readonly ks: number[]) {
    this.sum = Object.fromEntries(METRICS.map((m) => [m, Object.fromEntries(ks.map((k) => [k, 0]))])) as MetricTable;
  }

  add(run: Run, [qid, judged]: [string, Map<string, number>]): void {
    if (![...judged.values()].some((g) => g > 0)) return;
    const m = metricsOf(rank(run.get(qid) ?? []), judged, this.ks);
    for (const name of METRICS) for (const k of this.ks) this.sum[name][k] += m[name][k];
    this.count++;
  }

  result(): { metrics: MetricTable; queries: number } {
    for (const name of METRICS) for (const k of this.ks) this.sum[name][k] = this.count > 0 ? this.sum[name][k] / this.count : 0;
    return { metrics: this.sum, queries: this.count };
  }
}
