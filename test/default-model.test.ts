// The model coltrast ships (default-model/, made by scripts/pretrain/run.js): it loads by the name
// 'default', is a complete sentence-transformers folder, and its embeddings carry meaning: a query finds its
// own passage among others it was never trained on (these pairs are written here, not taken from its data).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Encoder } from '../lib';
import { DEFAULT_MODEL_DIR } from '../lib/hub';

const PAIRS: [string, string][] = [
  ['compress files into an archive', 'Creates zip archives: it packs many files and folders into one compressed file and can add a password.'],
  ['show running processes', 'Lists the processes running on the system with their process id, CPU and memory use, refreshed every few seconds.'],
  ['copy files to a remote server over ssh', 'Transfers files between hosts over a secure shell connection, encrypting both the data and the password.'],
  ['check spelling of a document', 'An interactive spell checker: it reads a text file, marks misspelled words and suggests corrections from a dictionary.'],
  ['play music from the command line', 'A console audio player for MP3, Ogg and FLAC files with playlists, shuffle and an equalizer.'],
  ['manage a PostgreSQL database', 'The PostgreSQL interactive terminal: type SQL queries, see their results and run scripts against a database server.'],
  ['synchronize the system clock', 'Keeps the computer clock accurate by querying network time servers and slowly correcting the drift.'],
  ['edit images and photos', 'A raster graphics editor for retouching photographs, painting, cropping and converting between image formats.'],
  ['read email in a terminal', 'A text-based mail client: read, sort and reply to messages from IMAP or local mailboxes with the keyboard.'],
  ['find text in files', 'Searches files for lines that match a regular expression and prints each matching line with its file name.'],
];

function dot(a: Float32Array, i: number, b: Float32Array, j: number, dim: number): number {
  let s = 0;
  for (let x = 0; x < dim; x++) s += a[i * dim + x] * b[j * dim + x];
  return s;
}

test("'default' is the shipped model: a complete sentence-transformers folder with a model card", async (t) => {
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'modules.json', 'sentence_bert_config.json', 'README.md', 'pretrain.json']) {
    t.true(fs.existsSync(path.join(DEFAULT_MODEL_DIR, f)), `default-model/${f}`);
  }
  const card = fs.readFileSync(path.join(DEFAULT_MODEL_DIR, 'README.md'), 'utf8');
  t.regex(card, /nDCG@10/);
  t.regex(card, /BM25/);
  const size = fs.readdirSync(DEFAULT_MODEL_DIR, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .reduce((sum, e) => sum + fs.statSync(path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name)).size, 0);
  t.true(size < 30e6, `the package share stays under 30 MB (${(size / 1e6).toFixed(1)} MB)`);

  const enc = await Encoder.load('default', { device: 'cpu' });
  t.teardown(() => enc.dispose());
  t.is(enc.modelDir, DEFAULT_MODEL_DIR);
  const e = await enc.embed(['hello world']);
  t.is(e.dims[0], 1);
  t.is(e.dims[1], enc.dimension);
  const norm = Math.sqrt(e.data.reduce((s, x) => s + x * x, 0));
  t.true(Math.abs(norm - 1) < 1e-4, 'pooled vectors are normalized');
  const tokens = await enc.embed(['hello world'], { output: 'tokens' });
  t.is(tokens[0].dims[1], enc.tokenDimension, 'token vectors for late interaction');
});

test('its embeddings carry meaning: each query finds its own passage among ten unseen ones', async (t) => {
  const enc = await Encoder.load('default', { device: 'cpu' });
  t.teardown(() => enc.dispose());
  const q = await enc.embed(PAIRS.map((p) => p[0]));
  const d = await enc.embed(PAIRS.map((p) => p[1]));
  const dim = q.dims[1];
  let top1 = 0;
  let pairedSum = 0;
  let otherSum = 0;
  for (let i = 0; i < PAIRS.length; i++) {
    const scores = PAIRS.map((_, j) => dot(q.data, i, d.data, j, dim));
    if (scores.indexOf(Math.max(...scores)) === i) top1++;
    pairedSum += scores[i];
    otherSum += scores.reduce((s, x, j) => (j === i ? s : s + x), 0) / (PAIRS.length - 1);
  }
  t.log(`top-1 ${top1}/${PAIRS.length}; mean cosine paired ${(pairedSum / PAIRS.length).toFixed(3)}, unpaired ${(otherSum / PAIRS.length).toFixed(3)}`);
  // A random model of this shape gets ~1 of 10 right by chance.
  t.true(top1 >= 7, `top-1 ${top1}/10`);
  t.true(pairedSum / PAIRS.length > otherSum / PAIRS.length + 0.1, 'paired texts are clearly closer than unpaired ones');
});
