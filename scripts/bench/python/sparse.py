#!/usr/bin/env python3
"""sentence-transformers' SparseEncoder.encode() throughput, to set beside coltrast's SparseEncoder.encode().

    sparse.py make <bert-folder> <out-folder> --texts texts.json [--non-zeros 200]
    sparse.py bench <sparse-encoder-folder> <texts.json> [--threads 2] [--batch-size 32] [--vectors out.json]
        [--device cpu|cuda] [--dtype float32|bfloat16|float16]

make: a BertForMaskedLM on the folder's encoder weights, its head drawn as transformers draws one (the output layer
  tied to the word embeddings) but for the output layer's bias, one value for every entry: a random model's logits are
  half above zero, and the bias is set below zero so that the first 32 of --texts get --non-zeros non-zeros each on
  average, about as many as a trained SPLADE keeps of a 30,522-entry vocabulary (a hundred to three hundred), so
  that the vectors' size is a real one. Saved as a SparseEncoder folder (Transformer with its masked-LM head,
  SpladePooling max/relu), what both sides load.
bench: one warm-up encode of a batch, then encode() of every text at --batch-size, timed (the vectors as sparse
  tensors, sentence-transformers' default); prints a JSON line {seconds, textsPerSecond, nonZeros (mean a text),
  peakRssMiB, peakGpuMiB (on a GPU), torch, sentenceTransformers}. --vectors writes the vectors ({indices, values}
  per text) to compare with coltrast's.
"""
import argparse
import json
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sentence_transformers
import torch
from sentence_transformers import SparseEncoder
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sparse_encoder.modules import SpladePooling
from transformers import AutoTokenizer, BertForMaskedLM


def make(bert, out, texts_file, non_zeros):
    torch.manual_seed(3)
    model = BertForMaskedLM.from_pretrained(bert).eval()
    tokenizer = AutoTokenizer.from_pretrained(bert)
    sample = json.load(open(texts_file))[:32]
    with torch.no_grad():
        model.cls.predictions.bias.zero_()
        batch = tokenizer(sample, padding=True, truncation=True, max_length=512, return_tensors="pt")
        logits = model(**batch).logits.masked_fill(batch["attention_mask"].unsqueeze(-1) == 0, -1e9)
        maxima = logits.amax(1).flatten()  # each text's largest logit of each vocabulary entry
        # The bias that leaves non_zeros of each text's entries above zero, on average.
        threshold = maxima.sort(descending=True).values[non_zeros * len(sample)].item()
        model.cls.predictions.bias.fill_(-threshold)
    staged = out + ".mlm"
    model.save_pretrained(staged)
    AutoTokenizer.from_pretrained(bert).save_pretrained(staged)
    SparseEncoder(modules=[Transformer(staged, transformer_task="fill-mask", max_seq_length=512), SpladePooling("max", "relu")], device="cpu").save(out)


def bench(folder, texts_file, threads, batch_size, vectors_file, device="cpu", dtype="float32"):
    torch.set_num_threads(threads)
    texts = json.load(open(texts_file))
    model = SparseEncoder(folder, device=device, model_kwargs={"dtype": getattr(torch, dtype)})
    model.encode(texts[:batch_size], batch_size=batch_size, show_progress_bar=False)
    start = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch_size, show_progress_bar=False)
    seconds = time.perf_counter() - start
    vectors = vectors.coalesce().cpu()
    rows, columns = vectors.indices()
    counts = torch.bincount(rows, minlength=len(texts)).tolist()
    if vectors_file:
        values = vectors.values().float().tolist()
        columns = columns.tolist()
        out, at = [], 0
        for n in counts:
            out.append({"indices": columns[at : at + n], "values": values[at : at + n]})
            at += n
        with open(vectors_file, "w") as f:
            json.dump(out, f)
    gpu = {"peakGpuMiB": round(torch.cuda.max_memory_allocated() / 2**20)} if device.startswith("cuda") else {}
    print(json.dumps({
        "seconds": seconds,
        "textsPerSecond": len(texts) / seconds,
        "nonZeros": sum(counts) / len(texts),
        "peakRssMiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        **gpu,
        "torch": torch.__version__,
        "sentenceTransformers": sentence_transformers.__version__,
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["make", "bench"])
    parser.add_argument("folder")
    parser.add_argument("target")
    parser.add_argument("--texts")
    parser.add_argument("--non-zeros", type=int, default=200)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vectors")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    a = parser.parse_args()
    if a.what == "make":
        make(a.folder, a.target, a.texts, a.non_zeros)
    else:
        bench(a.folder, a.target, a.threads, a.batch_size, a.vectors, a.device, a.dtype)
