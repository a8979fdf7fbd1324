#!/usr/bin/env python3
"""transformers' side of scripts/bench/generator.js: a causal LM's log-likelihoods of completions and its greedy
generation, as a Python user writes them, to set beside coltrast's Generator.

    generator.py make <out-folder> --shape qwen3-0.6b|qwen3-small|phi4-mini-small --tokenizer <folder>
    generator.py ll <folder> <pairs.json> [--threads 2] [--batch-size 16] [--device cpu|cuda] [--dtype float32|bfloat16] [--out ll.bin]
    generator.py gen <folder> <prompts.json> [--threads 2] [--batch-size 8] [--max-new-tokens 32] [--device d] [--dtype t] [--out tokens.json]
    generator.py beam <folder> <prompts.json> --beams 4 [--threads 2] [--batch-size 8] [--max-new-tokens 32] [--out tokens.json]

make: a Qwen3ForCausalLM of the shape (Qwen3-0.6B's: hidden 1024, 16 query and 8 key/value heads of 128, MLP 3072,
  tied word embeddings; 28 layers, or 4 for qwen3-small), or a Phi3ForCausalLM of Phi-4-mini's (hidden 3072, 24 query
  and 8 key/value heads of 128, 0.75 of each rotated, MLP 8192, LongRoPE past 4,096 tokens, tied word embeddings; 2
  of its 32 layers for phi4-mini-small) with seeded random float32 weights and the tokenizer of
  --tokenizer (its vocabulary size sets the model's, its [SEP] is the end of sequence), saved with save_pretrained.
ll: each {prompt, completion} tokenized as coltrast does (the prompt with the tokenizer's special tokens, the
  completion without, then eos), right-padded batches of --batch-size, model(...).logits, log_softmax, the
  completion tokens' log-probabilities summed; timed from tokenizing to the sums. --out: the sums (float32).
ll and gen print a JSON line {seconds, <rate>, peakRssMiB, loadedRssMiB and loadPeakRssMiB (resident memory once the
model is loaded, and the peak until then), peakGpuMiB (on a GPU), torch, transformers}. --device and --dtype:
  where the model runs and its weights' type (bfloat16: as from_pretrained(dtype=torch.bfloat16) loads it).
gen: generate(do_sample=False, exactly --max-new-tokens new tokens) on left-padded batches of --batch-size
  prompts (the tokenizer's special tokens included); timed from tokenizing to the token ids. --out: the new tokens.
beam: the same with num_beams=--beams (beam search; transformers searches a batch's prompts together).
"""
import argparse
import json
import os
import resource
import shutil
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, Phi3Config, Qwen3Config

QWEN3 = dict(hidden_size=1024, intermediate_size=3072, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
             max_position_embeddings=32768, rope_theta=1000000.0)
# Phi-4-mini-instruct's config.json, but for its layers and vocabulary (its LongRoPE factors too: the short ones apply
# to prompts within 4,096 tokens; their values change the rotation, not the work).
PHI4_MINI = dict(hidden_size=3072, intermediate_size=8192, num_attention_heads=24, num_key_value_heads=8, max_position_embeddings=131072,
                 original_max_position_embeddings=4096, partial_rotary_factor=0.75, rope_theta=10000.0,
                 rope_scaling={"type": "longrope", "short_factor": [1.0 + 0.02 * i for i in range(48)], "long_factor": [1.0 + 0.25 * i for i in range(48)]})
SHAPES = {
    "qwen3-0.6b": (Qwen3Config, dict(QWEN3, num_hidden_layers=28)),
    "qwen3-small": (Qwen3Config, dict(QWEN3, num_hidden_layers=4)),
    "phi4-mini-small": (Phi3Config, dict(PHI4_MINI, num_hidden_layers=2)),
}


def make(out, shape, tokenizer):
    vocab = json.load(open(os.path.join(tokenizer, "config.json")))["vocab_size"]
    eos = AutoTokenizer.from_pretrained(tokenizer).sep_token_id  # the BERT-style tokenizer's [SEP] ends a sequence
    kind, shape_config = SHAPES[shape]
    config = kind(vocab_size=vocab, tie_word_embeddings=True, pad_token_id=0, eos_token_id=eos, **shape_config)
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(config).save_pretrained(out, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if os.path.exists(os.path.join(tokenizer, f)):
            shutil.copy(os.path.join(tokenizer, f), out)


def finish(seconds, rate_name, count):
    gpu = {"peakGpuMiB": round(torch.cuda.max_memory_allocated() / 2**20)} if torch.cuda.is_available() and torch.cuda.is_initialized() else {}
    print(json.dumps({
        "seconds": seconds, rate_name: count / seconds, "peakRssMiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), **LOADED,
        **gpu, "torch": torch.__version__, "transformers": transformers.__version__,
    }))


# --quantize int8: the decoder layers' nn.Linear (model.layers) quantized dynamically, per channel, as coltrast's
# Generator.load({ quantize: 'int8' }) runs them; the embeddings and lm_head stay float32 on both sides.
QUANTIZE = None
# Resident memory once the model is loaded (and quantized), and the peak until then: load()'s.
LOADED = {}


def load(folder, device, dtype):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device).eval()
    if QUANTIZE == "int8":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        quantize_dynamic(model, {"model.layers": per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    with open("/proc/self/status") as f:
        LOADED["loadedRssMiB"] = round(next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024)
    LOADED["loadPeakRssMiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return model


def synced(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def log_likelihoods(folder, pairs_file, threads, batch_size, out, device="cpu", dtype="float32"):
    torch.set_num_threads(threads)
    pairs = json.load(open(pairs_file))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = load(folder, device, dtype)
    eos = model.config.eos_token_id

    def run(batch):
        prompts = tokenizer([p["prompt"] for p in batch]).input_ids
        completions = tokenizer([p["completion"] for p in batch], add_special_tokens=False).input_ids
        seqs = [p + c + [eos] for p, c in zip(prompts, completions)]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        sums = []
        for r, (p, s) in enumerate(zip(prompts, seqs)):
            positions = torch.arange(len(p) - 1, len(s) - 1, device=device)
            sums.append(logp[r, positions, ids[r, positions + 1]].sum().item())
        return sums

    run(pairs[:batch_size])
    start = synced(device)
    sums = [x for i in range(0, len(pairs), batch_size) for x in run(pairs[i:i + batch_size])]
    seconds = synced(device) - start
    if out:
        np.asarray(sums, dtype=np.float32).tofile(out)
    finish(seconds, "pairsPerSecond", len(pairs))


def generate(folder, prompts_file, threads, batch_size, max_new, out, beams=1, device="cpu", dtype="float32"):
    torch.set_num_threads(threads)
    prompts = json.load(open(prompts_file))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    model = load(folder, device, dtype)

    def run(batch, new):
        enc = tokenizer(batch, return_tensors="pt", padding=True, return_token_type_ids=False).to(device)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=new, min_new_tokens=new, do_sample=False, num_beams=beams, pad_token_id=0)
        return ids[:, enc.input_ids.shape[1]:].tolist()

    run(prompts[:batch_size], 2)
    start = synced(device)
    tokens = [t for i in range(0, len(prompts), batch_size) for t in run(prompts[i:i + batch_size], max_new)]
    seconds = synced(device) - start
    if out:
        json.dump(tokens, open(out, "w"))
    finish(seconds, "tokensPerSecond", len(prompts) * max_new)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["make", "ll", "gen", "beam"])
    parser.add_argument("folder")
    parser.add_argument("data", nargs="?")
    parser.add_argument("--shape", choices=list(SHAPES), default="qwen3-small")
    parser.add_argument("--tokenizer")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--quantize", choices=["int8"])
    parser.add_argument("--out")
    a = parser.parse_args()
    QUANTIZE = a.quantize
    if a.what == "make":
        make(a.folder, a.shape, a.tokenizer)
    elif a.what == "ll":
        log_likelihoods(a.folder, a.data, a.threads, a.batch_size, a.out, a.device, a.dtype)
    else:
        generate(a.folder, a.data, a.threads, a.batch_size, a.max_new_tokens, a.out, a.beams if a.what == "beam" else 1, a.device, a.dtype)
