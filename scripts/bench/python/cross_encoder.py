#!/usr/bin/env python3
"""sentence-transformers' CrossEncoder.predict() throughput, to set beside coltrast's CrossEncoder.predict().

    cross_encoder.py make <bert-folder> <out-folder>
    cross_encoder.py make-decoder <causal-lm-folder> <out-folder>
    cross_encoder.py bench <cross-encoder-folder> <pairs.json> [--threads 2] [--batch-size 32] [--scores out.bin]
        [--device cpu|cuda] [--dtype float32|bfloat16|float16]

make: a one-label BertForSequenceClassification on the folder's encoder weights, its pooler and classifier
  drawn from a seeded normal (std 0.5), saved as a Hugging Face folder (what both sides load).
make-decoder: a reranker on a causal LM (generator.py make writes one of Qwen3-0.6B's shape) as Qwen3-Reranker is set
  up for sentence-transformers 6: its chat template (the instruction as a system message, the pair as query and
  document messages, an assistant turn opened), scored by LogitScore on "yes" against "no", saved by CrossEncoder.save.
bench: one warm-up predict of a batch, then predict() of every pair ([query, document]) at --batch-size,
  timed; prints a JSON line {seconds, pairsPerSecond, peakRssMiB, peakGpuMiB (on a GPU), torch, sentenceTransformers}. --scores writes
  the scores (float32, input order) to compare with coltrast's.
"""
import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import sentence_transformers
import torch
from sentence_transformers import CrossEncoder
from transformers import AutoTokenizer, BertForSequenceClassification


def make(bert, out):
    model = BertForSequenceClassification.from_pretrained(bert, num_labels=1)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for linear in (model.bert.pooler.dense, model.classifier):
            linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.5)
            linear.bias.copy_(torch.randn(linear.bias.shape, generator=generator) * 0.5)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(bert).save_pretrained(out)


# Qwen3-Reranker's prompt as sentence-transformers-ready rerankers template it (tokenized here by the bench's BERT-style
# tokenizer, whose vocabulary splits the markers into pieces: the shape of the work is the same).
RERANKER_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n<Instruct>: '
    "{{ messages | selectattr('role', 'eq', 'system') | map(attribute='content') | first | default('Given a web search query, retrieve relevant passages that answer the query') }}\n"
    "<Query>: {{ messages | selectattr('role', 'eq', 'query') | map(attribute='content') | first }}\n"
    "<Document>: {{ messages | selectattr('role', 'eq', 'document') | map(attribute='content') | first }}<|im_end|>\n"
    # (the last newlines as an expression: Jinja drops a template's final newline)
    "<|im_start|>assistant\n<think>\n\n</think>{{ '\\n\\n' }}"
)


def make_decoder(causal, out):
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.cross_encoder.modules import LogitScore

    tokenizer = AutoTokenizer.from_pretrained(causal)
    tokenizer.chat_template = RERANKER_TEMPLATE
    tokenizer.save_pretrained(causal)
    transformer = Transformer(causal, transformer_task="text-generation", max_seq_length=512)
    score = LogitScore(true_token_id=tokenizer.convert_tokens_to_ids("yes"), false_token_id=tokenizer.convert_tokens_to_ids("no"))
    CrossEncoder(modules=[transformer, score], device="cpu").save(out)


def bench(folder, pairs_file, threads, batch_size, scores_file, device="cpu", dtype="float32", quantize=None):
    torch.set_num_threads(threads)
    pairs = [tuple(p) for p in json.load(open(pairs_file))]
    ce = CrossEncoder(folder, device=device, model_kwargs={"dtype": getattr(torch, dtype)})
    if quantize == "int8":
        # The base model's encoder only: coltrast keeps the pooler and the classifier in float32.
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        quantize_dynamic(ce.model, {ce.model.base_model_prefix + ".encoder": per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    ce.predict(pairs[:batch_size], batch_size=batch_size, show_progress_bar=False)
    start = time.perf_counter()
    scores = ce.predict(pairs, batch_size=batch_size, show_progress_bar=False)
    seconds = time.perf_counter() - start
    if scores_file:
        np.asarray(scores, dtype=np.float32).tofile(scores_file)
    gpu = {"peakGpuMiB": round(torch.cuda.max_memory_allocated() / 2**20)} if device.startswith("cuda") else {}
    print(json.dumps({
        "seconds": seconds,
        "pairsPerSecond": len(pairs) / seconds,
        "peakRssMiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        **gpu,
        "torch": torch.__version__,
        "sentenceTransformers": sentence_transformers.__version__,
    }))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "make-decoder":
        make_decoder(sys.argv[2], sys.argv[3])
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        parser.add_argument("what", choices=["bench"])
        parser.add_argument("folder")
        parser.add_argument("pairs")
        parser.add_argument("--threads", type=int, default=os.cpu_count())
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--scores")
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
        parser.add_argument("--quantize", choices=["int8"])
        a = parser.parse_args()
        bench(a.folder, a.pairs, a.threads, a.batch_size, a.scores, a.device, a.dtype, a.quantize)
