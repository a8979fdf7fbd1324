#!/usr/bin/env python3
"""sentence-transformers baselines on a GPU, to set beside coltrast (scripts/bench/python/compare-gpu.js).

    st_baseline.py encode --model DIR --texts texts.json [--batch-size 128] [--dtype float32|bfloat16|float16]
                          [--device cuda] [--vectors out.bin] [--json out.json] [--no-cudnn-attention] [--profile-kernels]
    st_baseline.py train  --model DIR --data pairs.json [--batch-size 64] [--steps 10] [--precision float32|bfloat16]
                          [--loss mnrl|cached-mnrl|coltrast] [--mini-batch-size 256] [--loop trainer|manual]
                          [--device cuda] [--json out.json] [--no-cudnn-attention]
    st_baseline.py serve  one job a line on stdin, a JSON list of the arguments above (["encode", "--model", ...]);
                          for each, a line on stdout: the marker @@st_baseline then {"result": ...} or {"error": ...}

serve: compare-gpu.js's measurements in one process, each job as its command line would run it (its own model load,
seed, peak-memory reset and cuDNN attention setting; the CUDA cache emptied after it), without a process start
(importing torch, transformers and sentence-transformers and starting CUDA: seconds each time; 2026-12-05's quick H100
comparison took 171 s for some 24 processes whose timed work came to well under a minute). Out of memory is a job's answer ({"oom": true}), as on its command line.

--no-cudnn-attention: torch.backends.cuda.enable_cudnn_sdp(False), as coltrast runs by default (PyTorch's default
lets scaled_dot_product_attention use cuDNN's kernels on sm_90 and newer, which build a plan per new input shape:
on an H100, 2026-12-05, sentence-transformers' bfloat16 encode() ran at a seventh of its float32 rate with them, and
coltrast's bfloat16 embed() at a quarter of its own rate when allowed them).

encode: SentenceTransformer(DIR).encode(texts) as a user calls it: its own tokenization, its length-sorted
batching, pooling and the folder's Normalize; one call of --batch-size texts first as a warm-up. The model
is cast to --dtype (model.to(dtype)) for bfloat16/float16. Reports texts/s and the CUDA peak memory
(torch.cuda.max_memory_allocated) of the timed call; --vectors writes the embeddings (float32, row-major,
input order) so the caller can compare them with coltrast's. --profile-kernels: one more encode() of the same texts
after the timed one, under torch.profiler, and where its time went (kernel_time below): the question a missed
embedding target leaves, whether the Python side's time is the GPU's arithmetic (which coltrast calls too) or host
work the GPU waits for.

train: fine-tuning on query/positive text pairs with AdamW at learning rate 2e-5 (weight decay 0.01,
clipping at 1), in-batch negatives; --steps timed steps after an untimed one, or with --steps 0 one step, timed (its
peak memory the whole step's, first use included). --loss mnrl: contrastive only, MultipleNegativesRankingLoss (scale 20 =
1 / temperature 0.05). --loss cached-mnrl: the same loss with gradient caching,
CachedMultipleNegativesRankingLoss (--mini-batch-size texts encoded at a time; its backward hook re-encodes
each mini-batch), to set beside coltrast's train({ miniBatchSize }). --loss coltrast: the ColTrast recipe as the write-up computes it, eagerly on the
model's outputs: 0.5 x cross-entropy over the cosine similarities of the pooled (normalized) embeddings
divided by 0.05, plus 0.5 x cross-entropy over MaxSim scores of the L2-normalized token embeddings (every
query token against every document token of every document in the batch, einsum, masked max, mean over
the query's tokens) divided by 0.05; manual loop only. --loop trainer runs
sentence-transformers' own SentenceTransformerTrainer (needs the datasets package; fp32 or --precision
bfloat16 through its bf16 argument) for --steps + 1 steps and times each step after the first from the
previous step's end to its own (batch fetching and tokenization included) with a callback; without datasets
or accelerate (the trainer's `train` extra) it falls back to --loop manual and says so in "side". --loop
manual runs the same loss and optimizer in a plain loop (model.preprocess, or model.tokenize before 5.4;
the model's forward under bfloat16 autocast as accelerate wraps it for the trainer; backward, clip at 1,
step), which is what the trainer does minus its bookkeeping. Reports seconds per step, samples/s
and the CUDA peak memory of the timed steps. A step that runs out of memory ends the run with
{"oom": true} (for the caller's largest-batch search).

Every result is one JSON object on the last line of stdout (and in --json).
"""
import argparse
import gc
import importlib.util
import json
import os
import re
import sys
import time
import traceback

import torch

# The accelerator machine reaches no network: every model folder here is local, and a Hub look-up (a model
# card's base model, a missing optional file) would only wait for a time-out.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load(folder, device):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(folder, device=device)


def st_losses():
    """sentence-transformers' losses module: sentence_transformers.sentence_transformer.losses since 5.4 (the
    old sentence_transformers.losses path is a deprecated alias there), sentence_transformers.losses before."""
    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:
        from sentence_transformers import losses
    return losses


def tokenize(model, texts, device):
    """The model's features for texts, as its trainer's collator makes them, on device. preprocess() since
    sentence-transformers 5.4 (tokenize() is its deprecated alias in 6.x), tokenize() before. The features
    may hold non-tensors (6.x adds "modality": "text"): only tensors move."""
    prepare = getattr(model, "preprocess", None) or model.tokenize
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in prepare(texts).items()}


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device):
    return round(torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else None


def versions():
    import sentence_transformers
    import transformers

    out = {"torch": torch.__version__, "sentenceTransformers": sentence_transformers.__version__, "transformers": transformers.__version__}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    # Whether scaled_dot_product_attention may use cuDNN's kernels (torch's default; coltrast turns them off unless
    # COLTRAST_CUDNN_ATTENTION=1, and its side records its own setting), so a table can say what each side ran.
    # TORCH_CUDNN_SDPA_DEPRIORITIZED=1 in the environment ranks them last instead (then the comparison times the
    # Python side as coltrast runs by default).
    if hasattr(torch.backends.cuda, "cudnn_sdp_enabled"):
        out["cudnnAttention"] = torch.backends.cuda.cudnn_sdp_enabled()
    if os.environ.get("TORCH_CUDNN_SDPA_DEPRIORITIZED"):
        out["cudnnAttentionDeprioritized"] = os.environ["TORCH_CUDNN_SDPA_DEPRIORITIZED"]
    return out


def encode(args):
    with open(args.texts) as f:
        texts = json.load(f)
    model = load(args.model, args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    if dtype != torch.float32:
        model = model.to(dtype)
    model.eval()
    model.encode(texts[: args.batch_size], batch_size=args.batch_size, convert_to_tensor=True)  # warm-up
    reset_peak(args.device)
    start = time.perf_counter()
    vectors = model.encode(texts, batch_size=args.batch_size, convert_to_tensor=True)
    sync(args.device)
    seconds = time.perf_counter() - start
    if args.vectors:
        vectors.float().cpu().numpy().astype("float32").tofile(args.vectors)
    kernels = None
    if args.profile_kernels:
        try:
            kernels = kernel_time(lambda: model.encode(texts, batch_size=args.batch_size, convert_to_tensor=True), args.device)
        except Exception as error:  # a profiler that fails costs the row its breakdown, not its throughput
            kernels = {"error": f"{type(error).__name__}: {error}"[:500]}
    return {
        "side": "sentence-transformers encode",
        **versions(),
        "dtype": args.dtype,
        "texts": len(texts),
        "batchSize": args.batch_size,
        "seconds": seconds,
        "textsPerSecond": len(texts) / seconds,
        "peakGpuMiB": peak_mib(args.device),
        "dimension": int(vectors.shape[1]),
        **({"kernels": kernels} if kernels is not None else {}),
    }


# The kind of a profiled kernel or operator, by its name: attention first (the memory-efficient attention kernels are
# CUTLASS ones, "fmha_cutlassF_..."), then matrix products (cuBLAS, CUTLASS and nvjet kernels; aten's mm, addmm and
# bmm on the CPU), copies, and everything else (layer norms, activations, softmax outside attention, pooling, ...).
KERNEL_KINDS = [
    ("attention", re.compile(r"fmha|flash|attention|sdpa|scaled_dot_product", re.I)),
    ("matmul", re.compile(r"gemm|gemv|xmma|cutlass|nvjet|cublas|aten::(mm|addmm|bmm|baddbmm|matmul)$", re.I)),
    ("copies", re.compile(r"^(memcpy|memset)|aten::(copy_|to|_to_copy|contiguous)$", re.I)),
]


def kernel_kind(name):
    return next((kind for kind, pattern in KERNEL_KINDS if pattern.search(name)), "other")


def kernel_time(run, device):
    """Where the time of run() goes: run under torch.profiler, the durations of its GPU kernels (and copies)
    summed by kind (kernel_kind), beside the call's wall time. One stream runs one kernel at a time, so their sum
    over the wall time is the share of the call in which the GPU was busy, and the rest is host work (tokenizing,
    Python, launches) that it waited for; the profiler's own overhead slows the host side, so that share is a lower
    bound. Without CUDA, the aten operators' self times (time in the operator, not in those it calls), the same way:
    a smoke test of this function more than a measurement."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    sync(device)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        start = time.perf_counter()
        run()
        sync(device)
        wall = time.perf_counter() - start
    seconds = {"matmul": 0.0, "attention": 0.0, "copies": 0.0, "other": 0.0}
    count = 0
    for event in prof.events():
        if cuda:
            if event.device_type != DeviceType.CUDA:
                continue
            us = event.time_range.elapsed_us()
        else:
            if event.device_type != DeviceType.CPU or not event.name.startswith("aten::"):
                continue
            us = event.self_cpu_time_total
        seconds[kernel_kind(event.name)] += us / 1e6
        count += 1
    total = sum(seconds.values())
    return {
        "source": "CUDA kernels" if cuda else "aten operators' self time (CPU)",
        "events": count,
        "wallSeconds": round(wall, 4),
        "seconds": {kind: round(value, 4) for kind, value in seconds.items()},
        "totalSeconds": round(total, 4),
        "busyShare": round(total / wall, 3) if wall > 0 else None,
    }


def is_oom(error):
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def coltrast_loss(model):
    """The eager ColTrast loss over [query features, document features], as MNRL's callable is used."""
    import torch.nn.functional as F

    def loss(features, _labels):
        q, d = model(features[0]), model(features[1])
        target = torch.arange(q["sentence_embedding"].shape[0], device=q["sentence_embedding"].device)
        qp = F.normalize(q["sentence_embedding"], dim=-1)
        dp = F.normalize(d["sentence_embedding"], dim=-1)
        contrastive = F.cross_entropy(qp @ dp.T / 0.05, target)
        qt = F.normalize(q["token_embeddings"], dim=-1)
        dt = F.normalize(d["token_embeddings"], dim=-1)
        qm, dm = q["attention_mask"], d["attention_mask"]
        sim = torch.einsum("bid,njd->bnij", qt, dt)
        sim = sim.masked_fill(~dm.bool()[None, :, None, :], float("-inf"))
        best = sim.max(-1).values
        best = best.masked_fill(torch.isinf(best), 0.0)
        qmf = qm.to(best.dtype)
        scores = (best * qmf[:, None, :]).sum(-1) / qmf.sum(1).clamp_min(1)[:, None]
        late = F.cross_entropy(scores / 0.05, target)
        return 0.5 * contrastive + 0.5 * late

    return loss


def train_manual(model, loss_fn, pairs, args):
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    autocast = args.precision == "bfloat16"
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    if autocast:
        # The model's own forward runs under autocast wherever it is called from, as the trainer's (accelerate
        # wraps model.forward): CachedMultipleNegativesRankingLoss re-embeds each mini-batch in a hook during
        # backward, outside the `with` below, and would otherwise do that second pass in float32.
        model.forward = torch.autocast(device_type=device_type, dtype=torch.bfloat16)(model.forward)
    times = []
    model.train()
    # --steps 0 (compare-gpu.js's largest-batch search): one step, timed, its peak the whole step's.
    first_timed = 0 if args.steps == 0 else 1
    for step in range(args.steps + 1):
        batch = pairs[step * args.batch_size : (step + 1) * args.batch_size]
        if step == first_timed:
            reset_peak(args.device)
        sync(args.device)
        start = time.perf_counter()
        features = [tokenize(model, [p["query"] for p in batch], args.device), tokenize(model, [p["positive"] for p in batch], args.device)]
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(args.device)
        if step >= first_timed:
            times.append(time.perf_counter() - start)
    return times


def train_trainer(model, loss_fn, pairs, args):
    import tempfile

    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import TrainerCallback

    times = []

    # From one step's end to the next: fetching and tokenizing the batch (the trainer's collator), forward,
    # loss, backward, clipping and the optimizer, as coltrast's step time counts them.
    class StepTimer(TrainerCallback):
        previous = None

        def on_step_end(self, *_, **__):
            sync(args.device)
            now = time.perf_counter()
            if self.previous is None:
                reset_peak(args.device)
                now = time.perf_counter()
            else:
                times.append(now - self.previous)
            self.previous = now

    timer = StepTimer()
    data = Dataset.from_dict({"anchor": [p["query"] for p in pairs], "positive": [p["positive"] for p in pairs]})
    with tempfile.TemporaryDirectory() as out:
        training_args = SentenceTransformerTrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            max_steps=args.steps + 1,
            learning_rate=2e-5,
            weight_decay=0.01,
            max_grad_norm=1.0,
            bf16=args.precision == "bfloat16",
            # transformers refuses bf16 without a GPU unless told to train on the CPU.
            use_cpu=not args.device.startswith("cuda"),
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            dataloader_drop_last=True,
            seed=42,
        )
        trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=data, loss=loss_fn, callbacks=[timer])
        trainer.train()
    return times


def trainer_missing():
    """What SentenceTransformerTrainer needs and this python lacks (its `train` extra: datasets, accelerate)."""
    return [name for name in ("datasets", "accelerate") if importlib.util.find_spec(name) is None]


def train(args):
    losses = st_losses()
    loop = args.loop
    missing = trainer_missing() if loop == "trainer" else []
    if missing:
        # Still a measurement: the same loss in the plain loop, labelled as such.
        loop = "manual"
        print(f"SentenceTransformerTrainer needs {' and '.join(missing)}: running --loop manual", file=sys.stderr)
    with open(args.data) as f:
        pairs = json.load(f)
    if args.steps == 0 and loop == "trainer":
        raise SystemExit("--steps 0 (one step, timed) runs in --loop manual")
    if len(pairs) < args.batch_size * (args.steps + 1):
        raise SystemExit(f"{args.data}: {len(pairs)} pairs, {args.batch_size * (args.steps + 1)} needed")
    torch.manual_seed(42)
    model = load(args.model, args.device)
    how = loop if not missing else f"manual; the trainer needs {', '.join(missing)}"
    if args.loss == "coltrast":
        if args.loop != "manual":
            raise SystemExit("--loss coltrast runs in --loop manual")
        loss_fn = coltrast_loss(model)
        side = "eager ColTrast on a sentence-transformers model (manual loop)"
    elif args.loss == "cached-mnrl":
        loss_fn = losses.CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=args.mini_batch_size)
        side = f"sentence-transformers CachedMNRL, mini-batch {args.mini_batch_size} ({how})"
    else:
        loss_fn = losses.MultipleNegativesRankingLoss(model, scale=20.0)
        side = f"sentence-transformers MNRL ({how})"
    base = {"side": side, **versions(), "precision": args.precision, "batchSize": args.batch_size}
    try:
        times = (train_trainer if loop == "trainer" else train_manual)(model, loss_fn, pairs, args)
    except Exception as error:  # noqa: BLE001 - only out-of-memory is an answer; anything else is re-raised
        if not is_oom(error):
            raise
        return {**base, "oom": True, "error": str(error).splitlines()[0]}
    seconds = sum(times) / len(times)
    return {
        **base,
        "oom": False,
        "timedSteps": len(times),
        "stepSeconds": times,
        "secondsPerStep": seconds,
        "samplesPerSecond": args.batch_size / seconds,
        "peakGpuMiB": peak_mib(args.device),
    }


def parser_of():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["encode", "train"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--texts", help="encode: JSON list of texts")
    parser.add_argument("--data", help="train: JSON list of {query, positive} texts")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--loss", default="mnrl", choices=["mnrl", "cached-mnrl", "coltrast"])
    parser.add_argument("--mini-batch-size", type=int, default=256, help="--loss cached-mnrl: texts encoded at a time")
    parser.add_argument("--loop", default="trainer", choices=["trainer", "manual"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--vectors")
    parser.add_argument("--json")
    parser.add_argument("--no-cudnn-attention", action="store_true")
    parser.add_argument("--profile-kernels", action="store_true", help="encode: one more encode() under torch.profiler; kernel time by kind")
    return parser


# Whether scaled_dot_product_attention may use cuDNN's kernels when a job does not turn them off (torch's default).
CUDNN_DEFAULT = torch.backends.cuda.cudnn_sdp_enabled() if hasattr(torch.backends.cuda, "cudnn_sdp_enabled") else None


def run(parser, argv):
    """One job: `argv` as st_baseline.py's command line; its result."""
    args = parser.parse_args(argv)
    if CUDNN_DEFAULT is not None:
        torch.backends.cuda.enable_cudnn_sdp(CUDNN_DEFAULT and not args.no_cudnn_attention)
    if args.what == "encode" and not args.texts:
        parser.error("encode needs --texts")
    if args.what == "train" and not args.data:
        parser.error("train needs --data")
    if args.what == "train" and args.loop == "trainer" and not trainer_missing():
        # accelerate keeps one process-wide state (mixed precision among it), which an earlier job's trainer set;
        # transformers' TrainingArguments resets it too, in the versions that do.
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    # What an earlier job in this process left allocated (serve; 0 on a command line): its peak would count it too.
    left = torch.cuda.memory_allocated() if args.device.startswith("cuda") else 0
    result = encode(args) if args.what == "encode" else train(args)
    result["allocatedMiBAtStart"] = round(left / 2**20)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


MARKER = "@@st_baseline "


def serve(parser):
    """Jobs from stdin until it closes (see the module's doc)."""
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            out = {"result": run(parser, json.loads(line))}
        except SystemExit as error:  # argparse's errors, and train()'s refusals
            out = {"error": f"st_baseline.py exited ({error.code})"}
        except Exception:  # noqa: BLE001 - the job's failure goes back to the caller, the worker goes on
            out = {"error": traceback.format_exc()[-3000:]}
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        print(MARKER + json.dumps(out), flush=True)


def main():
    parser = parser_of()
    if sys.argv[1:] == ["serve"]:
        return serve(parser)
    print(json.dumps(run(parser, sys.argv[1:])))


if __name__ == "__main__":
    sys.exit(main())
