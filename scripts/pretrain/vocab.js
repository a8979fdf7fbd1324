// The default model's WordPiece vocabulary, trained with Hugging Face's `tokenizers` on the training split's
// texts (queries and positives of every source). Why our own and not BERT's: no public tokenizer.json can be
// fetched here, and a vocabulary fitted to package and manual-page text spends fewer pieces on its words.
// The trainer of the Node binding takes no options (it learns up to 30,000 pieces, alphabet first, then merges
// in order of frequency), so the list is cut to `size` after the five BERT specials: a prefix of the merges
// still spells every word, as the alphabet comes first.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Tokenizer, WordPiece, bertNormalizer, bertPreTokenizer } = require('tokenizers');
const { SPECIALS } = require('../fixtures/bert-files');

/** Tokens by id: the BERT specials, then the first `size - 5` learned pieces. */
function trainVocabulary(texts, size) {
  const tokenizer = new Tokenizer(WordPiece.empty());
  tokenizer.setNormalizer(bertNormalizer({ lowercase: true }));
  tokenizer.setPreTokenizer(bertPreTokenizer());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coltrast-vocab-'));
  try {
    const file = path.join(dir, 'texts.txt');
    fs.writeFileSync(file, texts.join('\n'));
    tokenizer.train([file]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const learned = Object.entries(tokenizer.getVocab()).sort((a, b) => a[1] - b[1]).map(([token]) => token);
  return [...SPECIALS, ...learned.filter((t) => !SPECIALS.includes(t)).slice(0, size - SPECIALS.length)];
}

module.exports = { trainVocabulary };
