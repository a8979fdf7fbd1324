"""PyTorch eager baseline for the fused loss ops, on the GPU machine (torch 2.x with CUDA).

    python3 scripts/bench/ops_eager.py [--dtype bfloat16] [--runs 20] [--json out.json]

What Python trainers write: MaxSim as einsum + masked max + sum, the contrastive loss as
F.cross_entropy(q @ c.T / tau, arange(B)) with float32 logits and a learnable tau (the fused op computes
d loss / d tau too), autograd for the backward. For each shape it reports the median time of forward +
backward (CUDA events), the peak memory allocated beyond the inputs, and the fraction of the roofline:
the larger of (matmul flops / measured matmul rate) and (bytes the op must move / measured
copy bandwidth), over the measured time. The contrastive loss is also tried at B = N = 262,144, where
eager is expected to run out of memory. Prints JSON rows comparable with scripts/bench/ops.js's.
"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
parser.add_argument("--runs", type=int, default=20)
parser.add_argument("--json")
args = parser.parse_args()
dtype = getattr(torch, args.dtype)
dev = torch.device("cuda")


def timed(fn, runs):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_extra(fn):
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def matmul_rate():
    a = torch.randn(8192, 8192, device=dev, dtype=dtype)
    ms = timed(lambda: a @ a, 10)
    return 2 * 8192**3 / (ms / 1e3)


def copy_bandwidth():
    a = torch.empty(2**28, device=dev, dtype=torch.uint8)
    b = torch.empty_like(a)
    ms = timed(lambda: b.copy_(a), 10)
    return 2 * a.numel() / (ms / 1e3)


def unit(*shape):
    return F.normalize(torch.randn(*shape, device=dev, dtype=torch.float32), dim=-1).to(dtype).requires_grad_()


def maxsim_case(B, N, Lq, Ld, dim):
    q, d = unit(B, Lq, dim), unit(N, Ld, dim)
    qm = torch.ones(B, Lq, device=dev, dtype=torch.bool)
    dm = torch.ones(N, Ld, device=dev, dtype=torch.bool)

    def step():
        sim = torch.einsum("bid,njd->bnij", q, d).masked_fill(~dm[None, :, None, :], float("-inf"))
        scores = (sim.max(-1).values * qm[:, None, :]).sum(-1)
        scores.float().sum().backward()
        q.grad = d.grad = None

    flops = 3 * 2 * B * N * Lq * Ld * dim  # forward product and the two backward products
    bytes_ = (q.numel() + d.numel()) * q.element_size() * 3
    return step, flops, bytes_


def contrastive_case(B, N, dim):
    q, c = unit(B, dim), unit(N, dim)
    target = torch.arange(B, device=dev)
    # A learnable temperature, as the fused op computes d loss / d tau too.
    tau = torch.tensor(0.05, device=dev, requires_grad=True)

    def step():
        loss = F.cross_entropy((q @ c.T).float() / tau, target)
        loss.backward()
        q.grad = c.grad = tau.grad = None

    flops = 3 * 2 * B * N * dim
    bytes_ = (q.numel() + c.numel()) * q.element_size() * 3
    return step, flops, bytes_


rate, bandwidth = matmul_rate(), copy_bandwidth()
rows = []
cases = [
    ("maxsim", dict(B=32, N=256, Lq=32, Ld=180, dim=128), maxsim_case),
    ("contrastive", dict(B=16384, N=16384, dim=384), contrastive_case),
    ("contrastive", dict(B=262144, N=262144, dim=384), contrastive_case),
]
for op, shape, make in cases:
    row = dict(op=op, **shape, dtype=args.dtype, impl="pytorch-eager")
    try:
        step, flops, bytes_ = make(**shape)
        row["peak_extra_MiB"] = round(peak_extra(step), 1)
        row["median_ms"] = round(timed(step, args.runs), 3)
        row["roofline_fraction"] = round(max(flops / rate, bytes_ / bandwidth) / (row["median_ms"] / 1e3), 3)
    except torch.cuda.OutOfMemoryError:
        row["median_ms"] = "OOM"
    torch.cuda.empty_cache()
    rows.append(row)
    print(json.dumps(row), flush=True)

result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, matmul_tflops=round(rate / 1e12, 1),
              copy_GBps=round(bandwidth / 1e9, 1), rows=rows)
print(json.dumps(result, indent=2))
if args.json:
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
