/**
 * Search filters: which documents a search may find. A filter is a MongoDB query over the document
 * `{ id, text, metadata }` (`{ 'metadata.lang': 'en', 'metadata.year': { $gte: 2020 } }`), or a function of the
 * document for API callers. Queries are evaluated by the `sift` package, which implements MongoDB's query
 * language in JavaScript (a well-kept library: its operators are MongoDB's, tested there, so ours need not be
 * written and specified again). `$where` is not taken: it evaluates a string as JavaScript, which a filter that
 * came over HTTP or the command line must not do; a function does the same from the API.
 */
import * as sift from 'sift';
import { ColtrastError } from './errors';
import { invalid } from './validate';

/** A MongoDB query over `{ id, text, metadata }`, or a predicate of the document. */
export type Filter = Record<string, unknown> | ((doc: { id: string; text: string; metadata?: Record<string, unknown> }) => boolean);

/** The query operators a filter may use (MongoDB's, less $where). */
export const FILTER_OPERATORS = ['$eq', '$ne', '$gt', '$gte', '$lt', '$lte', '$in', '$nin', '$exists', '$type', '$regex', '$options', '$mod', '$all', '$size', '$elemMatch', '$and', '$or', '$nor', '$not'] as const;

const operations = Object.fromEntries(FILTER_OPERATORS.map((name) => [name, (sift as unknown as Record<string, unknown>)[name]]));

/** The predicate of `filter`, checked now: an error names an operator that is not taken and the known ones. */
export function compileFilter<D extends { id: string; text: string; metadata?: Record<string, unknown> }>(name: string, filter: unknown): (doc: D) => boolean {
  if (typeof filter === 'function') return filter as (doc: D) => boolean;
  if (filter === null || typeof filter !== 'object' || Array.isArray(filter)) {
    throw invalid(name, "a MongoDB query object over { id, text, metadata } (e.g. { 'metadata.lang': 'en' }) or a function of the document", filter);
  }
  try {
    return sift.createQueryTester(filter as sift.Query<D>, { operations: operations as never }) as (doc: D) => boolean;
  } catch (error) {
    throw new ColtrastError('INVALID_ARGUMENT', `${name}: ${(error as Error).message} (known operators: ${FILTER_OPERATORS.join(', ')}; instead of $where, pass a function)`);
  }
}
