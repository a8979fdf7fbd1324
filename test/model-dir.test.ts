// Bad model folders and bad options fail before any native work, with a message naming the problem; and a save
// writes the tokenizer files the model loaded, whatever its source folder holds by then.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { CrossEncoder, Encoder, ColtrastError } from '../lib';
import { readModelDirectory, writeModelFiles, type ModelDirectory } from '../lib/model-dir';
import { loadedTokenizerFile } from '../lib/tokenizer';
import { STEP, editJson, fixtureCopy, folderCopy, tempDir } from './helpers/fixture';

async function loadError(dir: string, options: object = { device: 'cpu' }) {
  const error = await (Encoder.load(dir, options as never).then(
    () => null,
    (e: unknown) => e,
  ) as Promise<unknown>);
  if (!(error instanceof ColtrastError)) throw new Error(`expected a ColtrastError, got ${String(error)}`);
  return error;
}

test('a folder that does not exist', async (t) => {
  const e = await loadError(path.join(tempDir(), 'missing', 'model'));
  t.is(e.code, 'MODEL_FILES');
  t.regex(e.message, /missing[/\\]model/);
});

test('a folder without config.json', async (t) => {
  const e = await loadError(fixtureCopy((d) => fs.rmSync(path.join(d, 'config.json'))));
  t.is(e.code, 'MODEL_FILES');
  t.regex(e.message, /has no config\.json/);
});

test('config.json that is not JSON', async (t) => {
  const e = await loadError(fixtureCopy((d) => fs.writeFileSync(path.join(d, 'config.json'), '{"model_type": "bert",')));
  t.is(e.code, 'MODEL_FILES');
  t.regex(e.message, /config\.json .* is not valid JSON/);
});

test('config.json with a field of the wrong type', async (t) => {
  const e = await loadError(fixtureCopy((d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, hidden_size: '32' }))));
  t.is(e.code, 'MODEL_FILES');
  t.regex(e.message, /"hidden_size" must be a positive integer/);
});

test('an unsupported model_type', async (t) => {
  const e = await loadError(fixtureCopy((d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, model_type: 'gpt2' }))));
  t.is(e.code, 'UNSUPPORTED_MODEL');
  t.regex(e.message, /unsupported model_type gpt2 \(coltrast runs: bert, roberta, xlm-roberta, camembert, mpnet, distilbert, electra, deberta-v2, modernbert, t5, mt5, llama, mistral, qwen2, qwen3, gemma3_text, gemma2, gemma, phi3\)/);
});

test('relative position embeddings are refused, not silently run as absolute', async (t) => {
  const e = await loadError(
    fixtureCopy((d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, position_embedding_type: 'relative_key' }))),
  );
  t.is(e.code, 'UNSUPPORTED_MODEL');
  t.regex(e.message, /position_embedding_type "relative_key"/);
});

test('an unknown activation', async (t) => {
  const e = await loadError(fixtureCopy((d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, hidden_act: 'mish' }))));
  t.is(e.code, 'UNSUPPORTED_MODEL');
  t.regex(e.message, /hidden_act mish/);
});

test('pickle weights only: refused, with the conversion to run', async (t) => {
  const dir = fixtureCopy((d) => {
    fs.renameSync(path.join(d, 'model.safetensors'), path.join(d, 'pytorch_model.bin'));
  });
  const e = await loadError(dir);
  t.is(e.code, 'MODEL_FILES');
  t.regex(e.message, /pytorch_model\.bin but no model\.safetensors: coltrast loads safetensors only/);
  t.regex(e.message, /safe_serialization=True/);
});

test('no tokenizer.json', async (t) => {
  const e = await loadError(fixtureCopy((d) => fs.rmSync(path.join(d, 'tokenizer.json'))));
  t.is(e.code, 'MODEL_FILES');
  t.regex(e.message, /has no tokenizer\.json/);
});

test('a corrupt tokenizer.json', async (t) => {
  const e = await loadError(fixtureCopy((d) => fs.writeFileSync(path.join(d, 'tokenizer.json'), '{"version": "1.0"}')));
  t.is(e.code, 'MODEL_FILES');
  t.regex(e.message, /cannot load tokenizer .*tokenizer\.json: Model missing\..*as Hugging Face tokenizers saves one/);
  t.notRegex(e.message, /Error loading from file/, "the tokenizers package's prefix, run into its cause, is left out");
  // Cut short (a download or copy that stopped): the parser's place in the file.
  const cut = await loadError(fixtureCopy((d) => fs.writeFileSync(path.join(d, 'tokenizer.json'), '{"version": "1.0", "model": {')));
  t.regex(cut.message, /tokenizer\.json: EOF while parsing an object at line 1/);
});

test("a tokenizer.json with a token beyond the model's embeddings: embed() and training name the mismatch", async (t) => {
  // Tokens added to the tokenizer without resizing the model's embedding matrix (198 rows in the fixture).
  const dir = fixtureCopy((d) =>
    editJson(path.join(d, 'tokenizer.json'), (tokenizer) => {
      (tokenizer.added_tokens as object[]).push({ id: 198, content: '[NEW]', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    }),
  );
  const enc = await Encoder.load(dir, { device: 'cpu' });
  t.is((await enc.embed(['hello world'])).data.length, 32, 'texts without the token embed');
  const embedError = await t.throwsAsync(enc.embed(['hello [NEW] world']));
  t.is((embedError as ColtrastError).code, 'MODEL_FILES');
  t.regex(embedError!.message, /token id 198 \(in inputIds\) is outside the model's vocabulary of 198 tokens: the tokenizer does not match the model's weights/);
  const trainer = await enc.createTrainer({});
  const stepError = await t.throwsAsync(trainer.step(['a [NEW] query'], ['a document'], { ...STEP }));
  t.regex(stepError!.message, /token id 198 \(in queries\.inputIds\) is outside the model's vocabulary of 198 tokens/);
  trainer.dispose();
  enc.dispose();
});

test('modules.json naming an unsupported module', async (t) => {
  const e = await loadError(
    fixtureCopy((d) =>
      editJson(path.join(d, 'modules.json'), (m) => [...m, { idx: 3, name: '3', path: '3_X', type: 'sentence_transformers.models.LSTM' }]),
    ),
  );
  t.is(e.code, 'UNSUPPORTED_MODEL');
  t.regex(e.message, /module type sentence_transformers\.models\.LSTM/);
});

test('modules.json without a Pooling module, or out of order, is refused, not run with a mean pooling it does not name', async (t) => {
  // [Transformer] alone (token embeddings) or [Transformer, Normalize] loaded with mean pooling, which save() then wrote
  // into the model; [Pooling, Transformer, Normalize] and a second Pooling ran as the usual order.
  const [T, P, N] = JSON.parse(fs.readFileSync(path.join(fixtureCopy(), 'modules.json'), 'utf8'));
  for (const [modules, order] of [
    [[T], 'Transformer \\(it has no Pooling module'],
    [[T, N], 'Transformer → Normalize \\(it has no Pooling module'],
    [[P, T, N], 'Pooling → Transformer → Normalize'],
    [[T, P, P, N], 'Transformer → Pooling → Pooling → Normalize'],
  ] as const) {
    const e = await loadError(fixtureCopy((d) => editJson(path.join(d, 'modules.json'), () => modules)));
    t.is(e.code, 'UNSUPPORTED_MODEL');
    t.regex(e.message, new RegExp(`Transformer → Pooling → \\[Dense …\\] → \\[Normalize\\] is supported, not ${order}`));
  }
  const plain = await Encoder.load(fixtureCopy((d) => editJson(path.join(d, 'modules.json'), () => [T, P])), { device: 'cpu' });
  t.false(plain.normalize);
  plain.dispose();
});

test('modules.json that lists a Pooling module whose config is missing', async (t) => {
  const e = await loadError(fixtureCopy((d) => fs.rmSync(path.join(d, '1_Pooling'), { recursive: true })));
  t.is(e.code, 'MODEL_FILES');
  t.regex(e.message, /1_Pooling[/\\]config\.json is missing/);
});

test('a pooling config with two modes on', async (t) => {
  const e = await loadError(
    fixtureCopy((d) => editJson(path.join(d, '1_Pooling', 'config.json'), (c) => ({ ...c, pooling_mode_cls_token: true }))),
  );
  t.is(e.code, 'UNSUPPORTED_MODEL');
  t.regex(e.message, /cls \+ mean/);
});

// sentence-transformers 6.x saves where its classes live now and a single "pooling_mode"; no max_seq_length
// (the tokenizer's model_max_length holds it). test/python-interop.test.ts loads real 6.x saves.
function st6Layout(d: string, pooling: unknown = 'max') {
  editJson(path.join(d, 'modules.json'), () => [
    { idx: 0, name: '0', path: '', type: 'sentence_transformers.base.modules.transformer.Transformer' },
    { idx: 1, name: '1', path: '1_Pooling', type: 'sentence_transformers.sentence_transformer.modules.pooling.Pooling' },
    { idx: 2, name: '2', path: '2_Normalize', type: 'sentence_transformers.base.modules.normalize.Normalize' },
  ]);
  editJson(path.join(d, '1_Pooling', 'config.json'), () => ({ embedding_dimension: 32, pooling_mode: pooling, include_prompt: true }));
  fs.mkdirSync(path.join(d, '2_Normalize'), { recursive: true });
  fs.writeFileSync(path.join(d, '2_Normalize', 'config.json'), JSON.stringify({ module_input_name: 'sentence_embedding', module_output_name: 'sentence_embedding' }));
}

test("sentence-transformers 6.x's layout: module paths, pooling_mode, no max_seq_length", async (t) => {
  const dir = fixtureCopy((d) => {
    st6Layout(d, 'mean_sqrt_len_tokens');
    editJson(path.join(d, 'sentence_bert_config.json'), () => ({ transformer_task: 'feature-extraction', module_output_name: 'token_embeddings' }));
    editJson(path.join(d, 'tokenizer_config.json'), (c) => ({ ...c, model_max_length: 20 }));
  });
  const enc = await Encoder.load(dir, { device: 'cpu' });
  try {
    t.is(enc.pooling, 'mean_sqrt_len');
    t.true(enc.normalize);
    t.is(enc.maxSeqLength, 20);
  } finally {
    enc.dispose();
  }
});

test('a max_seq_length or model_max_length that is not a whole number of tokens ≥ 2 is refused, naming the file and value', async (t) => {
  // 20.5 loaded (maxSeqLength 20.5 reached the tokenizer and was saved back); 0, 1 and -1 were refused as a length
  // that "cannot be told", and told to set the very max_seq_length that was set.
  for (const value of [20.5, 1, 0, -1]) {
    const st = await loadError(fixtureCopy((d) => editJson(path.join(d, 'sentence_bert_config.json'), (c) => ({ ...c, max_seq_length: value }))));
    t.is(st.code, 'MODEL_FILES');
    t.regex(st.message, new RegExp(`sentence_bert_config\\.json: max_seq_length must be a whole number of tokens, at least 2; got ${value}`));
    const tok = await loadError(
      fixtureCopy((d) => {
        fs.rmSync(path.join(d, 'sentence_bert_config.json'));
        editJson(path.join(d, 'tokenizer_config.json'), (c) => ({ ...c, model_max_length: value }));
      }),
    );
    t.regex(tok.message, new RegExp(`tokenizer_config\\.json: model_max_length must be a whole number of tokens, at least 2; got ${value}`));
  }
  const two = await Encoder.load(fixtureCopy((d) => editJson(path.join(d, 'sentence_bert_config.json'), (c) => ({ ...c, max_seq_length: 2 }))), { device: 'cpu' });
  t.is(two.maxSeqLength, 2);
  two.dispose();
});

test('sentence-transformers 6.x pooling_mode: a list of one, concatenated modes, unknown and weighted modes', async (t) => {
  const one = await Encoder.load(fixtureCopy((d) => st6Layout(d, ['cls'])), { device: 'cpu' });
  t.is(one.pooling, 'cls');
  one.dispose();
  const two = await loadError(fixtureCopy((d) => st6Layout(d, ['cls', 'mean'])));
  t.is(two.code, 'UNSUPPORTED_MODEL');
  t.regex(two.message, /cls \+ mean: concatenated pooling modes/);
  const weighted = await loadError(fixtureCopy((d) => st6Layout(d, 'weightedmean')));
  t.is(weighted.code, 'UNSUPPORTED_MODEL');
  t.regex(weighted.message, /weighted-mean pooling is not supported/);
  const unknown = await loadError(fixtureCopy((d) => st6Layout(d, 'median')));
  t.is(unknown.code, 'MODEL_FILES');
  t.regex(unknown.message, /pooling_mode "median" is not one of cls, mean, max, mean_sqrt_len_tokens/);
});

test('modules that sentence-transformers 6.x runs on other inputs, or a residual Dense, are refused', async (t) => {
  const tokens = await loadError(
    fixtureCopy((d) => {
      st6Layout(d);
      editJson(path.join(d, '2_Normalize', 'config.json'), (c) => ({ ...c, module_input_name: 'token_embeddings' }));
    }),
  );
  t.is(tokens.code, 'UNSUPPORTED_MODEL');
  t.regex(tokens.message, /Normalize config .*module_input_name "token_embeddings" is not supported/);
  const residual = await loadError(
    fixtureCopy((d) => {
      st6Layout(d);
      editJson(path.join(d, 'modules.json'), (m) => [m[0], m[1], { idx: 2, name: '2', path: '2_Dense', type: 'sentence_transformers.base.modules.dense.Dense' }]);
      fs.mkdirSync(path.join(d, '2_Dense'));
      fs.writeFileSync(
        path.join(d, '2_Dense', 'config.json'),
        JSON.stringify({ in_features: 32, out_features: 8, bias: true, activation_function: 'torch.nn.modules.activation.Tanh', use_residual: true }),
      );
    }),
  );
  t.is(residual.code, 'UNSUPPORTED_MODEL');
  t.regex(residual.message, /use_residual is not supported/);
  // A class of the same name from another package is not sentence-transformers' module.
  const foreign = await loadError(
    fixtureCopy((d) => editJson(path.join(d, 'modules.json'), (m) => [m[0], { ...m[1], type: 'my_package.Pooling' }, m[2]])),
  );
  t.is(foreign.code, 'UNSUPPORTED_MODEL');
  t.regex(foreign.message, /module type my_package\.Pooling is not supported/);
});

test('unknown and malformed options', async (t) => {
  const dir = fixtureCopy();
  let e = await loadError(dir, { device: 'cpu', dtpye: 'float32' });
  t.is(e.code, 'INVALID_ARGUMENT');
  t.regex(e.message, /unknown option options\.dtpye/);
  e = await loadError(dir, { device: 'tpu' });
  t.regex(e.message, /options\.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got the string "tpu"/);
  e = await loadError(dir, { device: 'cpu', dtype: 'float16' });
  t.regex(e.message, /'float16' needs a CUDA device/);
  e = await loadError(dir, { device: 'cpu', threads: 0 });
  t.regex(e.message, /threads must be a positive integer, got number 0/);
  e = await loadError(dir, { device: 'cpu', threads: 1e300 });
  t.regex(e.message, /threads must be a positive integer up to 65536, got number 1e\+300/);
});

test('asking for a GPU that is not there says so', async (t) => {
  const { runtimeInfo } = await import('../lib');
  const { cudaAvailable, cudaDeviceCount } = runtimeInfo();
  // Without CUDA any GPU is missing; with it, one past the last index is.
  const device = cudaAvailable ? `cuda:${cudaDeviceCount}` : 'cuda';
  const e = await loadError(fixtureCopy(), { device });
  t.is(e.code, 'DEVICE');
  t.regex(e.message, cudaAvailable ? /only \d+ GPU\(s\) are visible/ : /CUDA is not available.*Use device 'cpu' or 'auto'/);
});

test('embed() rejects bad arguments by name', async (t) => {
  const enc = await Encoder.load(fixtureCopy(), { device: 'cpu' });
  await t.throwsAsync(enc.embed('hello' as never), { message: /texts must be an array of strings, got the string "hello"/ });
  await t.throwsAsync(enc.embed(['a', 3 as never]), { message: /texts\[1\] must be a string, got number 3/ });
  await t.throwsAsync(enc.embed(['a'], { batchSize: 0 }), { message: /options\.batchSize must be a positive integer/ });
  await t.throwsAsync(enc.embed(['a'], { output: 'words' as never }), { message: /options\.output must be one of 'pooled', 'tokens'/ });
  await t.throwsAsync(enc.embed(['a'], { pooling: 'median' as never }), { message: /options\.pooling must be one of/ });
  await t.throwsAsync(enc.embed(['a'], { batchsize: 4 } as never), { message: /unknown option options\.batchsize/ });
  enc.dispose();
});

// Every config.json field of a BERT, a DeBERTa-v3 and a Qwen3 causal LM replaced, one at a time, by garbage: the model
// loads and runs (a value it takes, or a field it does not read) or the load fails with a ColtrastError of its own
// code. A size of 2^31 (layers, heads, vocabulary) used to build modules for as long as it took, and an out-of-range
// dropout probability failed in libtorch without the key's name. Sizes of a million still allocate terabytes and fail
// with libtorch's out-of-memory error (code OUT_OF_MEMORY, the next test); they are left out here.
// A model too large for memory: libtorch's CPU allocator fails (here on a 2^24-wide attention projection, a PiB; the
// embeddings before it are kept small) and the error says what ran out and what to change, with its own code.
test('a model that does not fit in memory is an OUT_OF_MEMORY error that says what to change', async (t) => {
  const dir = fixtureCopy((d) => {
    editJson(path.join(d, 'config.json'), (c) => ({ ...c, hidden_size: 2 ** 24, num_attention_heads: 1, vocab_size: 1, max_position_embeddings: 2, type_vocab_size: 1 }));
    editJson(path.join(d, 'sentence_bert_config.json'), (c) => ({ ...c, max_seq_length: 2 }));
  });
  const e = await loadError(dir);
  t.is(e.code, 'OUT_OF_MEMORY');
  t.regex(e.message, /^out of memory \(libtorch's CPU allocator: can't allocate memory: you tried to allocate 1125899906842624 bytes\..*\): use smaller batches \(batchSize\)/);
});

test('config.json fields replaced by garbage: the model runs or a ColtrastError names the problem', async (t) => {
  const garbage: [string, unknown][] = [
    ['null', null], ['0', 0], ['-1', -1], ['1.5', 1.5], ['1e300', 1e300], ['2^31', 2 ** 31], ['3', 3], ["'x'", 'x'], ['true', true], ['{}', {}], ['[]', []], ['[1]', [1]],
  ];
  const { Generator } = await import('../lib');
  const fixtures = path.resolve(__dirname, 'fixtures');
  const refusedBy: Record<string, number> = {};
  for (const [family, source] of [['bert', path.join(fixtures, 'tiny-bert')], ['deberta-v3', path.join(fixtures, 'tiny-encoders', 'deberta-v3')], ['qwen3', path.join(fixtures, 'tiny-causal-lms', 'qwen3')]]) {
    const dir = path.join(tempDir(), family);
    fs.cpSync(source, dir, { recursive: true });
    const config = JSON.parse(fs.readFileSync(path.join(source, 'config.json'), 'utf8')) as Record<string, unknown>;
    const wrong: string[] = [];
    for (const key of Object.keys(config).filter((k) => !['architectures', 'transformers_version', 'torch_dtype'].includes(k))) {
      for (const [label, value] of garbage) {
        fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, [key]: value }));
        try {
          if (family === 'qwen3') {
            const generator = await Generator.load(dir, { device: 'cpu' });
            await generator.logLikelihood([{ prompt: 'hello', completion: ' world' }]);
            generator.dispose();
          } else {
            const encoder = await Encoder.load(dir, { device: 'cpu' });
            await encoder.embed(['hello world']);
            encoder.dispose();
          }
        } catch (error) {
          const code = (error as ColtrastError).code;
          refusedBy[code] = (refusedBy[code] ?? 0) + 1;
          if (!(error instanceof ColtrastError) || code === 'NATIVE') wrong.push(`${key}=${label}: ${String(error).slice(0, 200)}`);
        }
      }
    }
    t.deepEqual(wrong, [], family);
  }
  t.true((refusedBy.MODEL_FILES ?? 0) > 200, JSON.stringify(refusedBy));
  const dir = fixtureCopy((d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, num_hidden_layers: 2 ** 31 })));
  t.regex((await loadError(dir)).message, /config\.json: "num_hidden_layers" must be a positive integer \(at most 65536\)/);
  const dropout = fixtureCopy((d) => editJson(path.join(d, 'config.json'), (c) => ({ ...c, hidden_dropout_prob: 1.5 })));
  t.regex((await loadError(dropout)).message, /config\.json: "hidden_dropout_prob" must be a probability from 0 to 1/);
});

test("a folder rewritten and loaded again while a model of it lives: each model keeps its own tokenizer.json", async (t) => {
  // The tokenizer worker keeps one tokenizer per file; it used to key them by path alone, so the second load ran the
  // first file's tokenizer (no error, other ids) as long as a model of the first was alive.
  const dir = fixtureCopy();
  const lowercase = (on: boolean) => {
    const file = path.join(dir, 'tokenizer.json');
    const spec = JSON.parse(fs.readFileSync(file, 'utf8'));
    spec.normalizer.lowercase = on;
    fs.writeFileSync(`${file}.new`, JSON.stringify(spec));
    fs.renameSync(`${file}.new`, file);
  };
  const before = await Encoder.load(dir, { device: 'cpu' });
  t.deepEqual((await before.tokenize(['Abc']))[0], [2, 27, 164, 165, 3]);
  lowercase(false);
  const after = await Encoder.load(dir, { device: 'cpu' });
  t.deepEqual((await after.tokenize(['Abc']))[0], [2, 1, 3], 'the new file: no lowercasing, "Abc" is unknown');
  t.deepEqual((await before.tokenize(['Abc']))[0], [2, 27, 164, 165, 3], 'the model loaded before keeps the file it was loaded with');
  // A tokenizer.json cut short and loaded again is refused, not run with the old file's tokenizer.
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"version": "1.0", "model": {');
  const e = await loadError(dir);
  t.regex(e.message, /cannot load tokenizer .*EOF while parsing/);
  before.dispose();
  after.dispose();
});

test("a save writes the tokenizer files the model loaded, not its source folder's as they are by then (changed in place or replaced)", async (t) => {
  const dir = fixtureCopy();
  const names = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt'];
  const read = (from: string) => Object.fromEntries(names.map((f) => [f, fs.readFileSync(path.join(from, f), 'utf8')]));
  const loaded = read(dir);
  const encoder = await Encoder.load(dir, { device: 'cpu' });
  t.deepEqual((await encoder.tokenize(['Abc']))[0], [2, 27, 164, 165, 3]);
  // The tokenizer replaced (a rename over it: no lowercasing, "Abc" unknown), the other files changed in place.
  const spec = JSON.parse(loaded['tokenizer.json']);
  spec.normalizer.lowercase = false;
  fs.writeFileSync(path.join(dir, 'tokenizer.json.new'), JSON.stringify(spec));
  fs.renameSync(path.join(dir, 'tokenizer.json.new'), path.join(dir, 'tokenizer.json'));
  editJson(path.join(dir, 'tokenizer_config.json'), (c) => ({ ...c, do_lower_case: false }));
  fs.appendFileSync(path.join(dir, 'vocab.txt'), 'extra\n');
  fs.rmSync(path.join(dir, 'special_tokens_map.json'));
  const saved = path.join(tempDir(), 'saved');
  await encoder.save(saved);
  t.deepEqual(read(saved), loaded);
  const again = await Encoder.load(saved, { device: 'cpu' });
  t.deepEqual((await again.tokenize(['Abc']))[0], [2, 27, 164, 165, 3], 'the tokenizer the model ran with');
  again.dispose();
  // Rewritten in place (the same file, new content): the same.
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(spec));
  await encoder.save(saved, { overwrite: true });
  t.is(fs.readFileSync(path.join(saved, 'tokenizer.json'), 'utf8'), loaded['tokenizer.json']);
  // The bytes are kept while a model of them lives, not after.
  const { tokenizerPath, tokenizerVersion } = (encoder as unknown as { files: ModelDirectory }).files;
  t.is(loadedTokenizerFile(tokenizerPath, tokenizerVersion)?.toString('utf8'), loaded['tokenizer.json']);
  encoder.dispose();
  t.is(loadedTokenizerFile(tokenizerPath, tokenizerVersion), undefined);

  // A cross-encoder's save writes them the same way.
  const ceDir = folderCopy(path.resolve(__dirname, 'fixtures', 'tiny-cross-encoder', 'st'));
  const ceLoaded = fs.readFileSync(path.join(ceDir, 'tokenizer.json'), 'utf8');
  const ce = await CrossEncoder.load(ceDir, { device: 'cpu' });
  fs.writeFileSync(path.join(ceDir, 'tokenizer.json'), '{"version": "1.0", "model": {');
  const ceSaved = path.join(tempDir(), 'ce');
  await ce.save(ceSaved);
  t.is(fs.readFileSync(path.join(ceSaved, 'tokenizer.json'), 'utf8'), ceLoaded);
  ce.dispose();
});

test('a folder read and not loaded (no tokenizer keeps its tokenizer.json) is written with its tokenizer.json while that is unchanged, refused once it changed', (t) => {
  const dir = fixtureCopy();
  const files = readModelDirectory(dir);
  const settings = { pooling: files.pooling, normalize: files.normalize, maxSeqLength: files.maxSeqLength, dimension: 32 };
  const target = tempDir();
  writeModelFiles(files, target, settings);
  t.is(fs.readFileSync(path.join(target, 'tokenizer.json'), 'utf8'), fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'tokenizer.json.new'), fs.readFileSync(path.join(dir, 'tokenizer.json')));
  fs.renameSync(path.join(dir, 'tokenizer.json.new'), path.join(dir, 'tokenizer.json'));
  const error = t.throws(() => writeModelFiles(files, tempDir(), settings), { instanceOf: ColtrastError }) as ColtrastError;
  t.is(error.code, 'MODEL_FILES');
  t.regex(error.message, /^cannot save: .*tokenizer\.json, the tokenizer of the model being saved, was changed since the model was loaded, and the one it was loaded with is not at hand: load the model again/);
});
