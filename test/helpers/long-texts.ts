// Huge texts and what the tokenizer's worker is sent: the tests of the tokenizer's long lane and of the server's
// tokenizing before its queues (tokenizer-lanes, serve-long-texts, -queries, -questions, -prompts).
import { Worker } from 'node:worker_threads';

const WORDS = ['model', 'token', 'vector', 'search', 'query', 'the', 'bank', 'river'];

/** A text of exactly `n` characters, two words repeated (`i` picks them). */
export function longText(n: number, i: number): string {
  const unit = `${WORDS[i % WORDS.length]} ${WORDS[(i * 3) % WORDS.length]} `;
  return unit.repeat(Math.ceil(n / unit.length)).slice(0, n);
}

/** A JSON POST to `url`: its status, its body (JSON, else text), its Content-Type and how long it took. */
export async function postJson(url: string, body: unknown, signal?: AbortSignal): Promise<{ status: number; json: any; contentType: string | null; ms: number }> {
  const started = performance.now();
  const res = await fetch(url, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' }, signal });
  const contentType = res.headers.get('content-type');
  const json = contentType?.startsWith('application/json') ? await res.json() : await res.text();
  return { status: res.status, json, contentType, ms: performance.now() - started };
}

/**
 * Watches what the tokenizer's worker is sent while `body` runs: the length of each message's texts, and of each
 * pair's second text (a document to re-rank).
 */
export async function watchingTokenizer<T>(body: (sent: number[]) => Promise<T>): Promise<T> {
  const sent: number[] = [];
  const postMessage = Worker.prototype.postMessage;
  Worker.prototype.postMessage = function (this: Worker, message: any, ...rest: any[]) {
    for (const x of message?.texts ?? []) sent.push(x.length);
    for (const [, b] of message?.pairs ?? []) sent.push(b.length);
    return postMessage.call(this, message, ...(rest as []));
  };
  try {
    return await body(sent);
  } finally {
    Worker.prototype.postMessage = postMessage;
  }
}

/** `body`'s result and the messages the tokenizer's worker was sent meanwhile: each one's op and its texts' (pairs') lengths. */
export async function watchingMessages<T>(body: () => Promise<T>): Promise<{ result: T; messages: { op: string; lengths: number[] }[] }> {
  const messages: { op: string; lengths: number[] }[] = [];
  const postMessage = Worker.prototype.postMessage;
  Worker.prototype.postMessage = function (this: Worker, message: any, ...rest: any[]) {
    if (message?.texts) messages.push({ op: message.op, lengths: message.texts.map((x: string) => x.length) });
    if (message?.pairs) messages.push({ op: message.op, lengths: message.pairs.map(([a, b]: [string, string]) => a.length + b.length) });
    return postMessage.call(this, message, ...(rest as []));
  };
  try {
    return { result: await body(), messages };
  } finally {
    Worker.prototype.postMessage = postMessage;
  }
}
