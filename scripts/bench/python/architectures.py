#!/usr/bin/env python3
"""sentence-transformers' encode() throughput for an embedding model of a given architecture, to set beside coltrast's
embed(): a decoder LLM (Qwen3, EmbeddingGemma's Gemma 3) or an encoder beside BERT (MPNet, DeBERTa-v3, ModernBERT, T5).

    architectures.py make <out-folder> --shape <shape> --tokenizer <folder>
    architectures.py bench <folder> <texts.json> [--threads 2] [--batch-size 16] [--vectors out.bin]

make: a model of the shape with seeded random weights (float32), the tokenizer of --tokenizer (its vocabulary size
  sets the model's), saved as a sentence-transformers folder (what both sides load), pooled as the real models of
  that shape are. qwen3-0.6b is Qwen3-Embedding-0.6B's transformer (28 layers, hidden 1024, 16 query and 8
  key/value heads of 128, MLP 3072; last-token pooling, Normalize); qwen3-small has 4 of its layers. mpnet-base is
  all-mpnet-base-v2's (12 layers, hidden 768, 12 heads, MLP 3072, relative position buckets; mean pooling,
  Normalize); modernbert-base is ModernBERT-base's, as gte-modernbert-base uses it (22 layers, hidden 768, 12 heads,
  GeGLU MLP 1152, global attention every third layer, a 128-token window in the others; CLS pooling, Normalize).
  deberta-v3-base is DeBERTa-v3-base's (12 layers, hidden 768, 12 heads, MLP 3072, relative positions in 256 log
  buckets with shared projections, no absolute positions; mean pooling, Normalize): mxbai-rerank-base-v1's encoder.
  sentence-t5-base is sentence-t5-base's (and gtr-t5-base's) T5 encoder (12 blocks, d_model 768, 12 heads of 64, ReLU
  feed-forward 3072, 32 relative position buckets up to 128; mean pooling, a Dense 768 to 768 without bias, Normalize).
  embeddinggemma-300m is EmbeddingGemma-300m's Gemma 3 (24 layers, hidden 768, 3 query heads and 1 key/value head of
  256, GELU-gated MLP 1152, bidirectional attention, five sliding-window layers of 512 to each full one; mean pooling,
  Dense 768 to 3072 and 3072 to 768 without bias, Normalize).
bench: one warm-up encode of a batch, then encode() of every text at --batch-size, timed; prints a JSON line
  {seconds, textsPerSecond, peakRssMiB, torch, sentenceTransformers}. --vectors writes the embeddings (float32,
  input order) to compare with coltrast's.
"""
import argparse
import json
import os
import resource
import shutil
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
from transformers import AutoModel, DebertaV2Config, Gemma3TextConfig, ModernBertConfig, MPNetConfig, Qwen3Config, T5Config, T5EncoderModel

def qwen3(vocab, layers):
    return Qwen3Config(
        vocab_size=vocab, hidden_size=1024, intermediate_size=3072, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=False, num_hidden_layers=layers,
    )


# shape: (config from the vocabulary size, pooling mode)
SHAPES = {
    "qwen3-0.6b": (lambda vocab: qwen3(vocab, 28), "lasttoken"),
    "qwen3-small": (lambda vocab: qwen3(vocab, 4), "lasttoken"),
    "mpnet-base": (lambda vocab: MPNetConfig(vocab_size=vocab, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                             intermediate_size=3072, max_position_embeddings=514, layer_norm_eps=1e-5), "mean"),
    # deberta-v3-base's settings (mxbai-rerank-base-v1 is this shape with a classification head).
    "deberta-v3-base": (lambda vocab: DebertaV2Config(vocab_size=vocab, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                                      intermediate_size=3072, max_position_embeddings=512, relative_attention=True,
                                                      position_buckets=256, max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
                                                      share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
                                                      type_vocab_size=0, layer_norm_eps=1e-7, pad_token_id=0), "mean"),
    "modernbert-base": (lambda vocab: ModernBertConfig(vocab_size=vocab, hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
                                                       intermediate_size=1152, max_position_embeddings=8192, local_attention=128,
                                                       global_attn_every_n_layers=3, pad_token_id=0), "cls"),
    "sentence-t5-base": (lambda vocab: T5Config(vocab_size=vocab, d_model=768, d_kv=64, num_heads=12, d_ff=3072, num_layers=12,
                                                feed_forward_proj="relu", relative_attention_num_buckets=32,
                                                relative_attention_max_distance=128), "mean"),
    "embeddinggemma-300m": (lambda vocab: Gemma3TextConfig(vocab_size=vocab, hidden_size=768, intermediate_size=1152, num_hidden_layers=24,
                                                           num_attention_heads=3, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                                                           sliding_window=512, max_position_embeddings=2048, rope_theta=1000000.0,
                                                           rope_local_base_freq=10000.0, use_bidirectional_attention=True, pad_token_id=0), "mean"),
}
# The Dense modules after pooling (no bias, no activation), as (in, out) per module: sentence-T5's, EmbeddingGemma's.
DENSE = {"sentence-t5-base": [(768, 768)], "embeddinggemma-300m": [(768, 3072), (3072, 768)]}


def make(out, shape, tokenizer):
    vocab = json.load(open(os.path.join(tokenizer, "config.json")))["vocab_size"]
    make_config, pooling = SHAPES[shape]
    torch.manual_seed(1)
    config = make_config(vocab)
    # T5's encoder alone, as sentence-transformers loads it.
    model = T5EncoderModel(config) if config.model_type == "t5" else AutoModel.from_config(config)
    model.save_pretrained(out, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if os.path.exists(os.path.join(tokenizer, f)):
            shutil.copy(os.path.join(tokenizer, f), out)
    transformer = Transformer(out, max_seq_length=256)
    width = transformer.get_embedding_dimension()
    dense = [Dense(i, o, bias=False, activation_function=torch.nn.Identity()) for i, o in DENSE.get(shape, [])]
    st = SentenceTransformer(modules=[transformer, Pooling(width, pooling_mode=pooling), *dense, Normalize()], device="cpu")
    st.save(out)


def bench(folder, texts_file, threads, batch_size, vectors_file):
    torch.set_num_threads(threads)
    texts = json.load(open(texts_file))
    model = SentenceTransformer(folder, device="cpu")
    model.encode(texts[:batch_size], batch_size=batch_size)
    start = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    seconds = time.perf_counter() - start
    if vectors_file:
        np.asarray(vectors, dtype=np.float32).tofile(vectors_file)
    print(json.dumps({
        "seconds": seconds,
        "textsPerSecond": len(texts) / seconds,
        "peakRssMiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "torch": torch.__version__,
        "sentenceTransformers": sentence_transformers.__version__,
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["make", "bench"])
    parser.add_argument("folder")
    parser.add_argument("texts", nargs="?")
    parser.add_argument("--shape", choices=list(SHAPES), default="qwen3-0.6b")
    parser.add_argument("--tokenizer")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--vectors")
    a = parser.parse_args()
    if a.what == "make":
        make(a.folder, a.shape, a.tokenizer)
    else:
        bench(a.folder, a.texts, a.threads, a.batch_size, a.vectors)
