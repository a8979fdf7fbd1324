#!/usr/bin/env python3
"""Embedding throughput of the plain-PyTorch baseline (texts/s), to set beside coltrast's embed().

    embed.py --model DIR --data ids.json [--batch-size 32] [--threads 2] [--dtype float32|bfloat16]
             [--quantize int8] [--json out.json] [--check vectors.bin]

What sentence-transformers' encode() does, written out (sentence-transformers is not installable here; see
coltrast_train.py): texts sorted by length (longest first), batches of --batch-size padded to their longest
text, a forward pass under torch.inference_mode(), the folder's pooling (1_Pooling) and L2 normalization when
modules.json has a Normalize module. --data holds the token ids of each text as coltrast's tokenizer gives
them ([CLS] ... [SEP], truncated to max_seq_length; written by scripts/bench/python/compare.js), so both sides
embed the same inputs; tokenization is not part of this timing. One batch runs first as a warm-up.
--dtype bfloat16 casts the model (model.to(torch.bfloat16)), as coltrast's Encoder.load({ dtype }) holds it;
the vectors come back as float32. --quantize int8: the model's nn.Linear layers quantized dynamically to int8,
torch.ao.quantization.quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8), as
coltrast's Encoder.load({ quantize: 'int8' }) runs them (the projection head, if any, stays float32 there: its
folder's 2_Dense is not part of this model).
--check compares the vectors with coltrast's (float32, row-major, input order) and prints the largest
absolute difference.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coltrast_train import blas_libraries, load_model, pad, pool  # noqa: E402


def normalizes(folder):
    path = os.path.join(folder, "modules.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return any(m.get("type", "").endswith("Normalize") for m in json.load(f))


def embed(model, pooling, normalize, texts, batch_size):
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = torch.empty(len(texts), model.embeddings.word_embeddings.embedding_dim)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, mask, types = pad([texts[i] for i in rows])
            v = pool(model(ids, mask, types), mask, pooling)
            if normalize:
                v = F.normalize(v, dim=-1)
            out[rows] = v.float()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="JSON: a list of token id lists")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--quantize", choices=["int8"])
    parser.add_argument("--json")
    parser.add_argument("--check", help="coltrast's vectors (float32, row-major) to compare with")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, pooling = load_model(args.model)
    model.to(getattr(torch, args.dtype))
    model.eval()
    if args.quantize == "int8":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    # Resident memory with the model loaded (and quantized), before any text: the model's own, as embed.js reads it.
    with open("/proc/self/status") as f:
        loaded_rss_mib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    load_peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    normalize = normalizes(args.model)
    with open(args.data) as f:
        texts = json.load(f)
    embed(model, pooling, normalize, sorted(texts, key=len, reverse=True)[: args.batch_size], args.batch_size)  # warm-up
    start, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    vectors = embed(model, pooling, normalize, texts, args.batch_size)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    tokens = sum(len(t) for t in texts)
    result = {
        "side": "python",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas": blas_libraries(),
        "texts": len(texts),
        "tokens": tokens,
        "batchSize": args.batch_size,
        "dtype": args.dtype,
        "quantize": args.quantize,
        "seconds": seconds,
        "textsPerSecond": len(texts) / seconds,
        "tokensPerSecond": tokens / seconds,
        "cpuSeconds": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime,
        "minorFaults": after.ru_minflt - usage.ru_minflt,
        "loadedRssMiB": loaded_rss_mib,
        "loadPeakRssMiB": load_peak_rss_mib,
        "peakRssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.check:
        theirs = torch.frombuffer(bytearray(open(args.check, "rb").read()), dtype=torch.float32).reshape(vectors.shape)
        result["maxAbsDiffVsColtrast"] = (vectors - theirs).abs().max().item()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
