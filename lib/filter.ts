/**
 * Search filters: which documents a search may find. A filter is a MongoDB query over the document
 * `{ id, text, metadata }` (`{ 'metadata.lang': 'en', 'metadata.year': { $gte: 2020 } }`), or a function of the
 * document for API callers. Queries are evaluated by the `sift` package, which implements MongoDB's query
 * language in JavaScript (a well-kept library: its operators are MongoDB's, tested there, so ours need not be
 * written and specified again). `$where` is not taken: it evaluates a string as JavaScript, which a filter that
 * came over HTTP or the command line must not do; a function does the same from the API.
 *
 * A `$regex` given as a string, as every filter that came over HTTP or the command line gives it, is matched by the
 * `re2js` package (RE2, ported to JavaScript), in time linear in the text: JavaScript's own engine backtracks, and a
 * pattern such as `^(a+)+$` over 40 characters holds the thread for hours (measured here: 26 characters took 2.6 s, and
 * each one more doubles it); in `coltrast serve` that was one request stopping the server. RE2's syntax is that of
 * JavaScript's and MongoDB's (PCRE's) patterns less backreferences and lookarounds, which are refused with the reason.
 * A RegExp object (from the API only) is the caller's own and matched by JavaScript's engine as before.
 */
import { RE2JS } from 're2js';
import * as sift from 'sift';
import { ColtrastError } from './errors';
import { invalid } from './validate';

/** A MongoDB query over `{ id, text, metadata }`, or a predicate of the document. */
export type Filter = Record<string, unknown> | ((doc: { id: string; text: string; metadata?: Record<string, unknown> }) => boolean);

/** The query operators a filter may use (MongoDB's, less $where). */
export const FILTER_OPERATORS = ['$eq', '$ne', '$gt', '$gte', '$lt', '$lte', '$in', '$nin', '$exists', '$type', '$regex', '$options', '$mod', '$all', '$size', '$elemMatch', '$and', '$or', '$nor', '$not'] as const;

/** MongoDB's `$options` letters that RE2 takes (u: Unicode, which RE2 always is), and its flags for them. */
const REGEX_OPTIONS: Record<string, number> = { i: RE2JS.CASE_INSENSITIVE, m: RE2JS.MULTILINE, s: RE2JS.DOTALL, u: 0 };

/** `$regex` as sift takes an operation: a string pattern compiled by RE2 (see above), a RegExp as sift's own does. */
function regexOperation(pattern: unknown, ownerQuery: Record<string, unknown>, options: Parameters<typeof sift.createEqualsOperation>[2]) {
  const letters = Object.hasOwn(ownerQuery, '$options') ? ownerQuery.$options : undefined;
  if (pattern instanceof RegExp) return sift.createEqualsOperation(new RegExp(pattern, letters as string | undefined), ownerQuery, options);
  if (typeof pattern !== 'string') throw new Error(`$regex takes a pattern string, not ${JSON.stringify(pattern)}`);
  if (letters !== undefined && typeof letters !== 'string') throw new Error(`$options takes letters (i, m, s, u), not ${JSON.stringify(letters)}`);
  let flags = 0;
  for (const letter of letters ?? '') {
    if (!Object.hasOwn(REGEX_OPTIONS, letter)) throw new Error(`$options ${JSON.stringify(letters)}: ${JSON.stringify(letter)} is not one of i, m, s, u`);
    flags |= REGEX_OPTIONS[letter];
  }
  let re: RE2JS;
  try {
    re = RE2JS.compile(pattern, flags);
  } catch (error) {
    throw new Error(`$regex ${JSON.stringify(pattern)} is not a pattern RE2 takes (${(error as Error).message}): patterns are matched in linear time, without backreferences or lookarounds`);
  }
  return sift.createEqualsOperation((value: unknown) => typeof value === 'string' && re.test(value), ownerQuery, options);
}

const operations = { ...Object.fromEntries(FILTER_OPERATORS.map((name) => [name, (sift as unknown as Record<string, unknown>)[name]])), $regex: regexOperation };

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

/**
 * Which of a document's fields `filter` reads, so that a search need not decode the others for every document: a
 * query's field paths by their first segment, through $and, $or and $nor; a function, or anything else, reads all.
 */
export function filterFields(filter: unknown): { id: boolean; text: boolean } {
  const all = { id: true, text: true };
  if (typeof filter !== 'object' || filter === null || Array.isArray(filter)) return all;
  const fields = { id: false, text: false };
  const walk = (query: Record<string, unknown>): boolean => {
    for (const [key, value] of Object.entries(query)) {
      if (key === '$and' || key === '$or' || key === '$nor') {
        if (!Array.isArray(value) || !value.every((q) => typeof q === 'object' && q !== null && !Array.isArray(q) && walk(q as Record<string, unknown>))) return false;
      } else if (key.startsWith('$')) {
        return false; // another operator at the top: read everything rather than guess
      } else {
        const field = key.split('.')[0];
        if (field === 'id' || field === 'text') fields[field] = true;
      }
    }
    return true;
  };
  return walk(filter as Record<string, unknown>) ? fields : all;
}

/**
 * A key that two query objects share only when they are the same query: what a search's cache of filter matches is
 * kept by. JSON.stringify is not one: it writes a RegExp as {} (/sqlite/ and /pgvector/ collide), drops keys whose
 * value is undefined (a query on a missing field and a query without it collide) and writes NaN as null. Here every
 * value is written with its kind: RegExps by source and flags, Dates by their time, undefined, NaN, ±Infinity and
 * bigints as themselves. Undefined (not to be cached) for anything else: a function, a class instance, a cycle.
 */
export function filterKey(filter: unknown): string | undefined {
  const seen = new Set<object>();
  const write = (value: unknown): string | undefined => {
    switch (typeof value) {
      case 'undefined':
        return 'u';
      case 'boolean':
        return value ? 't' : 'f';
      case 'number':
        return `n${Object.is(value, -0) ? '-0' : String(value)}`;
      case 'bigint':
        return `b${String(value)}`;
      case 'string':
        return JSON.stringify(value);
      case 'object':
        break;
      default:
        return undefined; // a function or a symbol
    }
    if (value === null) return 'z';
    if (value instanceof RegExp) return `r${JSON.stringify(value.source)}/${value.flags}`;
    if (value instanceof Date) return `d${value.getTime()}`;
    if (seen.has(value)) return undefined;
    seen.add(value);
    let out: string | undefined;
    if (Array.isArray(value)) {
      const items = value.map(write);
      out = items.includes(undefined) ? undefined : `[${items.join(',')}]`;
    } else {
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) out = undefined;
      else if (Object.getOwnPropertySymbols(value).length > 0) out = undefined;
      else {
        const entries = Object.entries(value).map(([k, v]) => {
          const w = write(v);
          return w === undefined ? undefined : `${JSON.stringify(k)}:${w}`;
        });
        out = entries.includes(undefined) ? undefined : `{${entries.join(',')}}`;
      }
    }
    seen.delete(value);
    return out;
  };
  return write(filter);
}
