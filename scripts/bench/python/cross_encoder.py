#!/usr/bin/env python3
"""sentence-transformers' CrossEncoder.predict() throughput, to set beside coltrast's CrossEncoder.predict().

    cross_encoder.py make <bert-folder> <out-folder>
    cross_encoder.py bench <cross-encoder-folder> <pairs.json> [--threads 2] [--batch-size 32] [--scores out.bin]

make: a one-label BertForSequenceClassification on the folder's encoder weights, its pooler and classifier
  drawn from a seeded normal (std 0.5), saved as a Hugging Face folder (what both sides load).
bench: one warm-up predict of a batch, then predict() of every pair ([query, document]) at --batch-size,
  timed; prints a JSON line {seconds, pairsPerSecond, peakRssMiB, torch, sentenceTransformers}. --scores writes
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


def bench(folder, pairs_file, threads, batch_size, scores_file):
    torch.set_num_threads(threads)
    pairs = [tuple(p) for p in json.load(open(pairs_file))]
    ce = CrossEncoder(folder, device="cpu")
    ce.predict(pairs[:batch_size], batch_size=batch_size, show_progress_bar=False)
    start = time.perf_counter()
    scores = ce.predict(pairs, batch_size=batch_size, show_progress_bar=False)
    seconds = time.perf_counter() - start
    if scores_file:
        np.asarray(scores, dtype=np.float32).tofile(scores_file)
    print(json.dumps({
        "seconds": seconds,
        "pairsPerSecond": len(pairs) / seconds,
        "peakRssMiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "torch": torch.__version__,
        "sentenceTransformers": sentence_transformers.__version__,
    }))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        parser.add_argument("what", choices=["bench"])
        parser.add_argument("folder")
        parser.add_argument("pairs")
        parser.add_argument("--threads", type=int, default=os.cpu_count())
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--scores")
        a = parser.parse_args()
        bench(a.folder, a.pairs, a.threads, a.batch_size, a.scores)
