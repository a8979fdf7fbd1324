// Odd and broken inputs a user may give the model loaders, found by probing them: each fails with a ColtrastError that
// names the problem (or works), never with a raw Node error or a file read from outside the model's place.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ColtrastError, CrossEncoder, resolveModelDir } from '../lib';
import { repoCacheDir } from '../lib/hub';
import { FIXTURE, folderCopy, tempDir } from './helpers/fixture';
import { readSafetensors, writeSafetensors } from './helpers/safetensors';
import { rejection } from './helpers/vectors';

const FIXTURES = path.resolve(__dirname, 'fixtures');

const COMMIT = 'c0ffee0000000000000000000000000000000001';

/** A hub cache holding org/tiny-bert at COMMIT, its refs/main naming it. */
function cachedModel(): string {
  const cacheDir = tempDir();
  const repo = repoCacheDir(cacheDir, 'org/tiny-bert');
  fs.mkdirSync(path.join(repo, 'refs'), { recursive: true });
  fs.writeFileSync(path.join(repo, 'refs', 'main'), COMMIT);
  fs.cpSync(FIXTURE, path.join(repo, 'snapshots', COMMIT), { recursive: true });
  return cacheDir;
}

async function codeOf(promise: Promise<unknown>): Promise<ColtrastError> {
  const error = await promise.then(() => null, (e: unknown) => e);
  if (!(error instanceof ColtrastError)) throw new Error(`expected a ColtrastError, got ${String(error)}`);
  return error;
}

test("offline: a revision with '..' is refused by name, not followed out of refs/ (a folder there was a raw EISDIR)", async (t) => {
  const cacheDir = cachedModel();
  t.is(await resolveModelDir('org/tiny-bert', { cacheDir, offline: true }), path.join(repoCacheDir(cacheDir, 'org/tiny-bert'), 'snapshots', COMMIT));
  // refs/../../.. is the cache folder itself: reading it as a ref threw EISDIR.
  let error = await codeOf(resolveModelDir('org/tiny-bert', { cacheDir, offline: true, revision: '../..' }));
  t.is(error.code, 'INVALID_ARGUMENT');
  t.regex(error.message, /options\.revision must be a branch, tag or commit id/);
  error = await codeOf(resolveModelDir('org/tiny-bert@../../x', { cacheDir, offline: true }));
  t.regex(error.message, /model must be a branch, tag or commit id/);
  // A ref file that does not hold a commit id names no snapshot (it was taken as a path under snapshots/).
  const odd = cachedModel();
  const repo = repoCacheDir(odd, 'org/tiny-bert');
  fs.renameSync(path.join(repo, 'snapshots', COMMIT), path.join(repo, 'snapshots', 'v1'));
  fs.writeFileSync(path.join(repo, 'refs', 'main'), 'v1');
  error = await codeOf(resolveModelDir('org/tiny-bert', { cacheDir: odd, offline: true }));
  t.is(error.code, 'NETWORK');
  t.regex(error.message, /is not in the cache/);
  // Branch names with '/' (refs/pr/1) are revisions still.
  error = await codeOf(resolveModelDir('org/tiny-bert', { cacheDir, offline: true, revision: 'refs/pr/1' }));
  t.is(error.code, 'NETWORK');
});

test('CrossEncoder: sparse pairs and documents are refused by place (their holes reached the tokenizer: a TypeError)', async (t) => {
  const ce = await CrossEncoder.load(path.join(FIXTURES, 'tiny-cross-encoder', 'st'), { device: 'cpu' });
  try {
    let error = await rejection(() => ce.predict(new Array(2)));
    t.is(error.code, 'INVALID_ARGUMENT');
    t.regex(error.message, /pairs\[0\] must be a \[string, string\] pair, got undefined/);
    const holed: [string, string] = ['q', 'd'];
    delete (holed as unknown as string[])[1];
    t.regex((await rejection(() => ce.predict([holed]))).message, /pairs\[0\]\[1\] must be a string/);
    t.regex((await rejection(() => ce.rank('q', ['a', , 'b'] as string[]))).message, /documents\[1\] must be a string, got undefined/);
    t.is((await ce.predict([['q', 'd']])).dims[0], 1);
  } finally {
    ce.dispose();
  }
});

test("a causal LM's reranker: a chatTemplate given that fails says so and where to fix it; a LogitScore module without its config is named", async (t) => {
  const lm = path.join(FIXTURES, 'tiny-causal-lms', 'qwen3');
  // It read "the any (it fails: …) message's content does not reach the prompt. Save a chat_template.jinja", which the
  // template given overrides.
  let error = await rejection(() => CrossEncoder.load(lm, { device: 'cpu', chatTemplate: "{{ raise_exception('no pairs here') }}" }));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /^the chatTemplate given fails on a \(query, document\) pair: .*no pairs here.*\. Give a template that renders both roles/);
  error = await rejection(() => CrossEncoder.load(lm, { device: 'cpu', chatTemplate: '{{ messages[0].content }}' }));
  t.regex(error.message, /^the chatTemplate given cannot carry a \(query, document\) pair: the document message's content does not reach the prompt\. Give a template/);
  // It read '"true_token_id" must be a token id', of a file that is not there.
  const noConfig = folderCopy(path.join(FIXTURES, 'tiny-causal-rerankers', 'logit-score'), (d) => fs.rmSync(path.join(d, '1_LogitScore'), { recursive: true }));
  error = await rejection(() => CrossEncoder.load(noConfig, { device: 'cpu' }));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /modules\.json lists a LogitScore module but .*1_LogitScore.config\.json \(its true_token_id and false_token_id\) is missing/);
});

test("a cross-encoder's classifier weights that are not floating-point are refused by name, not run as numbers", async (t) => {
  const dir = folderCopy(path.join(FIXTURES, 'tiny-cross-encoder', 'st'));
  const file = path.join(dir, 'model.safetensors');
  const { tensors } = readSafetensors(file);
  // The same bytes called I32 (as wide as F32): converted to float32, they scored ~1e9 with no error.
  tensors.get('classifier.bias')!.dtype = 'I32';
  writeSafetensors(file, tensors);
  const error = await codeOf(CrossEncoder.load(dir, { device: 'cpu' }).then((ce) => ce.predict([['q', 'd']]).finally(() => ce.dispose())));
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /weight 'classifier\.bias' in the model's weights file is not a floating-point tensor \(Int\)/);
});
