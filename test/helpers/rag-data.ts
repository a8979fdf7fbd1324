// A tiny question-answering set over six documents for trainRag() runs whose point is not the data (divergence,
// abort and resume): the tiny Llama generator and the tiny BERT retriever train on it in a few steps.
import path from 'node:path';

export const TINY_GENERATOR = path.resolve(__dirname, '..', 'fixtures', 'tiny-causal-lms', 'llama');

export const TINY_RAG_CORPUS = ['the river bank has water', 'money in the bank', 'a cafe with paper', 'the quick brown fox jumps over the lazy dog', 'search that is fast and small', 'hello world'];

export const TINY_RAG_QA = [
  { question: 'what is in the river?', answer: 'water' },
  { question: 'where is the money?', answer: 'in the bank' },
  { question: 'what is fast?', answer: 'search' },
  { question: 'what does the fox do?', answer: 'jumps over the dog' },
  { question: 'what has paper?', answer: 'a cafe' },
  { question: 'hello?', answer: 'world' },
];
