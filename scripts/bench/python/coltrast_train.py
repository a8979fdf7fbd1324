#!/usr/bin/env python3
"""ColTrast fine-tuning in plain PyTorch: the Python baseline coltrast is compared with.

This is what a Python user writes for the ColTrast recipe (../shared/seeds/002_30da18beefb93cd4.txt) with
nothing but PyTorch, eager ops and autograd, as the write-up does:

  * a BERT encoder as an nn.Module with Hugging Face's parameter names, loaded from the model folder's
    model.safetensors (read by hand: 8-byte little-endian header length, JSON header, raw data); its
    self-attention is F.scaled_dot_product_attention where the torch has it (2.0 and later), as Hugging
    Face's BERT and coltrast run it, and matmul / softmax / matmul on torch 1.13;
  * per optimizer step: forward of the queries and of the documents (positives first, then the batch's hard
    negatives; every other row's documents are in-batch negatives), then
      - the contrastive InfoNCE loss on pooled (the folder's 1_Pooling mode), L2-normalized vectors:
        cross_entropy(q @ d.T / tau, arange(B)), plus the documents -> queries direction when symmetric;
      - the late-interaction loss on L2-normalized token states: MaxSim scores (einsum, masked max over
        document tokens, sum over query tokens divided by the query's length), then cross_entropy(S / tau,
        arange(B)) ('cross_entropy', plus the symmetric term when asked) or the pairwise
        BCE-with-logits form ('bce': mean over positives and mean over negatives, averaged);
      - total = contrastiveWeight * contrastive + lateInteractionWeight * late interaction;
    backward, clip_grad_norm_ (max norm 1 by default), AdamW (weight decay 0.01, none on biases and
    LayerNorm weights), the learning rate warmed up linearly and then decayed linearly (or cosine, or kept
    constant), as coltrast's train() schedules it;
  * a projection head when the folder has one (sentence-transformers' Dense module, 2_Dense: an nn.Linear
    loaded from its model.safetensors, then Identity or Tanh) between pooling and normalization for the
    contrastive loss, trained with the encoder (its weight decayed, its bias not);
  * gradient accumulation when asked: each micro-batch's loss multiplied by its loss scale (1 / K) before
    backward, clipping and the AdamW update only on the micro-batches marked to apply;
  * --parity with held-out examples: after the steps, the final weights embed them (eval mode, no dropout;
    pooling, head, L2 normalization) and Recall@1, MRR@10 and nDCG@10 of each query against all held-out
    positives (cosine, ties broken by document id) are computed here by hand.

sentence-transformers and transformers are what such a user would normally import; they cannot be installed
on the machines this was written on (Debian bookworm, no PyPI), so the model and the losses are written out
here. Only the Debian package python3-torch is needed (torch 1.13, the same libtorch build coltrast links on
Debian, so both sides run the same kernels and BLAS).

Modes (token ids come from coltrast's tokenizer, written to JSON by the Node side, so both sides see the
same ids; this file has no tokenizer):

  coltrast_train.py --parity request.json --out result.json
      the steps of scripts/bench/parity.js: per-step losses for the given batches and options
  coltrast_train.py --bench --model DIR --data pairs.json --batch-size 32 --steps 5 --threads 2 [--json out.json]
      training throughput (samples/s: query + positive pairs per second), first step not timed
"""
import argparse
import json
import math
import os
import resource
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# Self-attention as Hugging Face's BERT and coltrast run it where the torch has the function (2.0 and
# later): F.scaled_dot_product_attention. COLTRAST_EAGER_ATTENTION=1 switches both sides to the eager form.
FUSED_ATTENTION = hasattr(F, "scaled_dot_product_attention") and os.environ.get("COLTRAST_EAGER_ATTENTION", "") in ("", "0")

SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path):
    """{name: tensor} from a .safetensors file (the `safetensors` package is not in Debian)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES[entry["dtype"]]
        start, end = entry["data_offsets"]
        if end > start:
            t = torch.frombuffer(bytearray(data[start:end]), dtype=dtype)
        else:
            t = torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(entry["shape"])
    return tensors


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


class BertEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c["hidden_size"]
        self.word_embeddings = nn.Embedding(c["vocab_size"], h)
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], h)
        self.token_type_embeddings = nn.Embedding(c.get("type_vocab_size", 2), h)
        self.LayerNorm = nn.LayerNorm(h, eps=c.get("layer_norm_eps", 1e-12))
        self.dropout = nn.Dropout(c.get("hidden_dropout_prob", 0.1))

    def forward(self, input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1], dtype=input_ids.dtype).unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class Linear3(nn.Module):
    """attention.self: query, key, value."""

    def __init__(self, h):
        super().__init__()
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)


class DenseNorm(nn.Module):
    """attention.output / output: dense, LayerNorm."""

    def __init__(self, n_in, h, eps):
        super().__init__()
        self.dense = nn.Linear(n_in, h)
        self.LayerNorm = nn.LayerNorm(h, eps=eps)


class Dense(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)


class Attention(nn.Module):
    def __init__(self, h, eps):
        super().__init__()
        self.self = Linear3(h)
        self.output = DenseNorm(h, h, eps)


class BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, eps = c["hidden_size"], c.get("layer_norm_eps", 1e-12)
        self.heads = c["num_attention_heads"]
        self.head_size = h // self.heads
        self.act = ACTIVATIONS[c.get("hidden_act", "gelu")]
        self.attention = Attention(h, eps)
        self.intermediate = Dense(h, c["intermediate_size"])
        self.output = DenseNorm(c["intermediate_size"], h, eps)
        self.attention_dropout = nn.Dropout(c.get("attention_probs_dropout_prob", 0.1))
        self.hidden_dropout = nn.Dropout(c.get("hidden_dropout_prob", 0.1))

    def forward(self, x, mask):
        b, n, h = x.shape
        s = self.attention.self

        def heads(t):
            return t.view(b, n, self.heads, self.head_size).transpose(1, 2)

        q, k, v = heads(s.query(x)), heads(s.key(x)), heads(s.value(x))
        if FUSED_ATTENTION:
            p = self.attention_dropout.p if self.training else 0.0
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size) + mask
            context = torch.matmul(self.attention_dropout(torch.softmax(scores, -1)), v)
        context = context.transpose(1, 2).reshape(b, n, h)
        o = self.attention.output
        attended = o.LayerNorm(self.hidden_dropout(o.dense(context)) + x)
        expanded = self.output.dense(self.act(self.intermediate.dense(attended)))
        return self.output.LayerNorm(self.hidden_dropout(expanded) + attended)


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c["num_hidden_layers"]))


class BertModel(nn.Module):
    """Hugging Face's BertModel without the pooler: token states [batch, seq, hidden]."""

    def __init__(self, c):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.encoder = Encoder(c)

    def forward(self, input_ids, attention_mask, token_type_ids):
        x = self.embeddings(input_ids, token_type_ids)
        if not FUSED_ATTENTION:
            # Padding keys get (almost) the lowest float, as Hugging Face does: softmax weight exactly 0.
            mask = ((1 - attention_mask.to(x.dtype)) * -3.0e38).view(input_ids.shape[0], 1, 1, -1)
        elif bool(attention_mask.all()):
            mask = None  # no padding: no mask, as Hugging Face's SDPA path does
        else:
            mask = attention_mask.to(torch.bool).view(input_ids.shape[0], 1, 1, -1)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


DENSE_ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
}


class DenseHead(nn.Module):
    """sentence-transformers' Dense module: activation(linear(pooled)); parameter names linear.weight/bias."""

    def __init__(self, in_features, out_features, bias, activation):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = activation

    def forward(self, x):
        y = self.linear(x)
        return torch.tanh(y) if self.activation == "tanh" else y


def load_dense(folder):
    """The folder's Dense module (listed in modules.json) as a DenseHead, or None when it has none."""
    modules_file = os.path.join(folder, "modules.json")
    if not os.path.exists(modules_file):
        return None
    with open(modules_file) as f:
        modules = json.load(f)
    dense = [m for m in modules if m.get("type", "").endswith(".Dense")]
    if not dense:
        return None
    path = os.path.join(folder, dense[0]["path"])
    with open(os.path.join(path, "config.json")) as f:
        c = json.load(f)
    activation = DENSE_ACTIVATIONS[c.get("activation_function", "torch.nn.modules.activation.Tanh")]
    head = DenseHead(c["in_features"], c["out_features"], c.get("bias", True), activation)
    weights = read_safetensors(os.path.join(path, "model.safetensors"))
    head.load_state_dict({k: v.to(torch.float32) for k, v in weights.items()}, strict=True)
    return head


def load_model(folder):
    """(model, pooling mode) from a Hugging Face / sentence-transformers folder with model.safetensors."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    if config.get("model_type") != "bert":
        raise SystemExit(f"{folder}: this baseline only has BERT (model_type {config.get('model_type')!r})")
    model = BertModel(config)
    weights = read_safetensors(os.path.join(folder, "model.safetensors"))
    state = {}
    for name, _ in model.named_parameters():
        stored = name if name in weights else "bert." + name
        state[name] = weights[stored].to(torch.float32)
    model.load_state_dict(state, strict=True)
    pooling = "mean"
    pooling_file = os.path.join(folder, "1_Pooling", "config.json")
    if os.path.exists(pooling_file):
        with open(pooling_file) as f:
            p = json.load(f)
        for mode, key in [
            ("cls", "pooling_mode_cls_token"),
            ("max", "pooling_mode_max_tokens"),
            ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"),
            ("lasttoken", "pooling_mode_lasttoken"),
            ("mean", "pooling_mode_mean_tokens"),
        ]:
            if p.get(key):
                pooling = mode
                break
    return model, pooling


def pad(rows):
    """Token id lists -> (input_ids, attention_mask, token_type_ids), int64 [batch, longest], right padding."""
    longest = max(1, max(len(r) for r in rows))
    ids = torch.zeros(len(rows), longest, dtype=torch.int64)
    mask = torch.zeros(len(rows), longest, dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
        mask[i, : len(r)] = 1
    return ids, mask, torch.zeros_like(ids)


def pool(states, mask, mode):
    m = mask.to(states.dtype).unsqueeze(-1)
    if mode == "cls":
        return states[:, 0]
    if mode in ("mean", "mean_sqrt_len"):
        count = m.sum(1).clamp_min(1e-9)
        return (states * m).sum(1) / (count if mode == "mean" else count.sqrt())
    if mode == "max":
        return states.masked_fill(m == 0, -1e9).amax(1)
    if mode == "lasttoken":
        last = (mask.sum(1) - 1).clamp_min(0)
        return states[torch.arange(states.shape[0]), last]
    raise ValueError(f"unknown pooling {mode}")


def maxsim_scores(q, q_mask, d, d_mask):
    """S[b, n] = mean over query b's tokens of the max over document n's tokens of <q_i, d_j>."""
    sim = torch.einsum("bid,njd->bnij", q, d)
    sim = sim.masked_fill(~d_mask.bool()[None, :, None, :], float("-inf"))
    best = sim.max(-1).values
    best = best.masked_fill(torch.isinf(best), 0.0)
    qm = q_mask.to(q.dtype)
    return (best * qm[:, None, :]).sum(-1) / qm.sum(1).clamp_min(1)[:, None]


def coltrast_loss(q_states, q_mask, d_states, d_mask, o, tau, head=None, pooled=None):
    """(total, contrastive, late interaction) of one batch; query i's positive is document i. `head` (the
    projection head, if any) maps the pooled vectors before normalization; token states never go through it.
    `pooled`: the (query, document) pooled and projected vectors when the caller computed them (under
    autocast, say); they are normalized in float32."""
    project = head if head is not None else (lambda x: x)
    B = q_states.shape[0]
    target = torch.arange(B)
    total = torch.zeros(())
    contrastive = late = torch.zeros(())
    if o["contrastiveWeight"] > 0:
        if pooled is not None:
            qp, dp = (F.normalize(p.float(), dim=-1) for p in pooled)
        else:
            qp = F.normalize(project(pool(q_states, q_mask, o["pooling"])), dim=-1)
            dp = F.normalize(project(pool(d_states, d_mask, o["pooling"])), dim=-1)
        logits = qp @ dp.T / tau
        contrastive = F.cross_entropy(logits, target)
        if o["symmetric"]:
            contrastive = 0.5 * (contrastive + F.cross_entropy(logits[:, :B].T, target))
        total = total + o["contrastiveWeight"] * contrastive
    if o["lateInteractionWeight"] > 0:
        qt = F.normalize(q_states, dim=-1)
        dt = F.normalize(d_states, dim=-1)
        logits = maxsim_scores(qt, q_mask, dt, d_mask) / tau
        if o["lateInteractionKind"] == "bce":
            N = logits.shape[1]
            labels = torch.eye(B, N)
            per_pair = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
            positives = (per_pair * labels).sum() / B
            late = positives if N == 1 else 0.5 * (positives + (per_pair * (1 - labels)).sum() / (B * N - B))
        else:
            late = F.cross_entropy(logits, target)
            if o["symmetric"]:
                late = 0.5 * (late + F.cross_entropy(logits[:, :B].T, target))
        total = total + o["lateInteractionWeight"] * late
    return total, contrastive, late


def learning_rate_at(step, total, peak, warmup_ratio, schedule):
    """Linear warm-up over floor(total * warmup_ratio) steps, then linear / cosine decay reaching 0 after the last step
    (as transformers' schedulers), or constant."""
    warmup = math.floor(total * warmup_ratio)
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    if schedule == "constant":
        return peak
    progress = (step - warmup) / (total - warmup)
    if schedule == "cosine":
        return peak * 0.5 * (1 + math.cos(math.pi * progress))
    return peak * (1 - progress)


class Trainer:
    def __init__(self, model, pooling, trainer_options, step_options, seed, head=None):
        self.model = model
        self.head = head
        self.step_options = dict(step_options, pooling=step_options.get("pooling") or pooling)
        # The encoder's parameters, then the head's (coltrast's order; it matters only to summation order).
        named = list(model.named_parameters()) + ([("head." + n, p) for n, p in head.named_parameters()] if head else [])
        self.params = [p for _, p in named]
        no_decay = ("bias", "LayerNorm.weight")
        decay = [p for n, p in named if not any(k in n for k in no_decay)]
        rest = [p for n, p in named if any(k in n for k in no_decay)]
        lr = trainer_options.get("learningRate", 2e-5)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": trainer_options.get("weightDecay", 0.01)}, {"params": rest, "weight_decay": 0.0}],
            lr=lr,
            betas=(trainer_options.get("beta1", 0.9), trainer_options.get("beta2", 0.999)),
            eps=trainer_options.get("eps", 1e-8),
        )
        self.tau = torch.tensor(self.step_options["temperature"], dtype=torch.float32)
        # precision "bfloat16": the forward pass (model, pooling, head) under CPU autocast, as coltrast's
        # trainer runs it; the losses on float32 copies.
        self.autocast = trainer_options.get("precision", "float32") == "bfloat16"
        torch.manual_seed(seed)  # dropout draws from the default generator, seeded as coltrast seeds its own

    def step(self, queries, documents, learning_rate, loss_scale=1.0, apply=True):
        """One micro-batch: forward, loss * loss_scale backward; with `apply`, clipping and the AdamW update on
        the gradients summed since the last update. Returns the unscaled losses (grad norm 0 without apply)."""
        o = self.step_options
        self.model.train()
        if o.get("miniBatchSize", 0) > 0:
            if self.autocast:
                raise SystemExit("mixed precision with gradient caching is not written here")
            total, contrastive, late = self.cached_backward(queries, documents, o["miniBatchSize"], loss_scale)
        else:
            q_states, q_pooled = self.encode(*queries)
            d_states, d_pooled = self.encode(*documents)
            pooled = (q_pooled, d_pooled) if q_pooled is not None else None
            total, contrastive, late = coltrast_loss(q_states.float(), queries[1], d_states.float(), documents[1], o, self.tau, self.head, pooled)
            (total * loss_scale if loss_scale != 1 else total).backward()
        grad_norm = 0.0
        if apply:
            max_norm = o.get("maxGradNorm", 1.0)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm if max_norm > 0 else float("inf")).item()
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=False)
        return {
            "loss": total.item(),
            "contrastive": contrastive.item(),
            "lateInteraction": late.item(),
            "gradNorm": grad_norm,
            "learningRate": learning_rate,
        }

    def encode(self, ids, mask, types):
        """Token states and (with the contrastive loss on) pooled, projected vectors, as coltrast's trainer
        computes them: the forward pass and the head under autocast when training in bfloat16, pooling over
        float32 states."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            states = self.model(ids, mask, types)
            pooled = None
            if self.step_options["contrastiveWeight"] > 0:
                pooled = pool(states.float(), mask, self.step_options["pooling"])
                if self.head is not None:
                    pooled = self.head(pooled)
        return states, pooled

    def cached_backward(self, queries, documents, mini, loss_scale):
        """Gradient caching (GradCache, as train({ miniBatchSize }) runs it): each side encoded `mini` rows at a
        time without autograd (rows longest first when there is more than one mini-batch, each mini-batch cut
        to its longest row), the loss and its gradient with respect to the token states over the whole batch,
        then each mini-batch encoded again from its saved random-number state (the same dropout masks) and
        backpropagated with its rows of that gradient; the generator ends where the first pass left it."""
        chunks = []

        def encode_side(ids, mask, types):
            lengths = [max(1, int(row.nonzero().max()) + 1 if row.any() else 1) for row in mask]
            order = list(range(ids.shape[0]))
            if len(order) > mini:
                order.sort(key=lambda r: -lengths[r])  # stable, as std::stable_sort
            states = None
            for start in range(0, len(order), mini):
                rows = torch.tensor(order[start : start + mini])
                cut = max(lengths[r] for r in rows.tolist())
                rng = torch.get_rng_state()
                with torch.no_grad():
                    out = self.model(ids[rows, :cut], mask[rows, :cut], types[rows, :cut])
                if states is None:
                    states = torch.zeros(ids.shape[0], ids.shape[1], out.shape[-1])
                states[rows, :cut] = out
                chunks.append((ids, mask, types, rows, cut, rng, len(leaves)))
            leaves.append(states.requires_grad_(True))

        leaves = []
        encode_side(*queries)
        encode_side(*documents)
        after = torch.get_rng_state()
        total, contrastive, late = coltrast_loss(leaves[0], queries[1], leaves[1], documents[1], self.step_options, self.tau, self.head)
        (total * loss_scale if loss_scale != 1 else total).backward()
        for ids, mask, types, rows, cut, rng, side in chunks:
            torch.set_rng_state(rng)
            out = self.model(ids[rows, :cut], mask[rows, :cut], types[rows, :cut])
            torch.autograd.backward(out, leaves[side].grad[rows, :cut])
        torch.set_rng_state(after)
        return total.detach(), contrastive.detach(), late.detach()

    @torch.no_grad()
    def embed(self, rows, batch_size=32):
        """Pooled, projected, L2-normalized vectors of token-id rows, in eval mode (no dropout)."""
        self.model.eval()
        out = []
        for start in range(0, len(rows), batch_size):
            ids, mask, types = pad(rows[start : start + batch_size])
            pooled = pool(self.model(ids, mask, types), mask, self.step_options["pooling"])
            if self.head is not None:
                pooled = self.head(pooled)
            out.append(F.normalize(pooled, dim=-1))
        return torch.cat(out)


def retrieval_metrics(q, d, relevant):
    """Recall@1, MRR@10 and nDCG@10 (one relevant document per query, grade 1) of cosine search of every
    query against every document; ties in score are broken by document id ("d<j>", compared as strings), as
    coltrast's ir-metrics does. Also, per query, the rank of its relevant document (1-based) and the smallest
    score gap between that document and any other (a gap near float rounding makes the rank a coin toss)."""
    scores = (q @ d.T).tolist()
    ids = [f"d{j}" for j in range(d.shape[0])]
    recall1 = mrr10 = ndcg10 = 0.0
    ranks, gaps = [], []
    for i, row in enumerate(scores):
        order = sorted(range(len(row)), key=lambda j: (-row[j], ids[j]))
        r = order.index(relevant[i]) + 1
        ranks.append(r)
        gaps.append(min((abs(row[relevant[i]] - x) for j, x in enumerate(row) if j != relevant[i]), default=math.inf))
        recall1 += 1.0 if r == 1 else 0.0
        if r <= 10:
            mrr10 += 1.0 / r
            ndcg10 += 1.0 / math.log2(r + 1)  # the ideal DCG of one relevant document is 1
    n = len(scores)
    return {"recall@1": recall1 / n, "mrr@10": mrr10 / n, "ndcg@10": ndcg10 / n, "queries": n}, ranks, gaps


def blas_libraries():
    """The BLAS shared objects mapped into this process (to report which one torch runs on)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
        return sorted(libs)
    except OSError:
        return []


def seeded_linear_init(head, seed):
    """Whether `head` holds nn.Linear's initial distribution (uniform in +-1/sqrt(in_features)) as drawn, weight
    then bias, from torch.Generator().manual_seed(seed): how coltrast initializes a new projection head."""
    g = torch.Generator().manual_seed(seed)
    w = head.linear.weight
    bound = 1 / math.sqrt(w.shape[1])
    weight = torch.empty(w.shape).uniform_(-bound, bound, generator=g)
    bias = torch.empty(w.shape[0]).uniform_(-bound, bound, generator=g)
    return bool(torch.equal(weight, w.detach()) and torch.equal(bias, head.linear.bias.detach()))


def run_parity(request):
    """The steps of a parity request. Each entry of request["batches"] is one micro-batch: token ids of its
    queries and documents, and optionally its optimizer step (0-based; the learning rate's), its loss scale
    and whether the update is applied after it (defaults: its own step, 1, true). Results are per micro-batch."""
    torch.set_num_threads(request["threads"])
    model, pooling = load_model(request["model"])
    head = load_dense(request["model"])
    # Checked before training moves the head; None when no seed was given.
    seeded = seeded_linear_init(head, request["headSeed"]) if head is not None and request.get("headSeed") is not None else None
    trainer = Trainer(model, pooling, request["trainer"], request["step"], request["seed"], head)
    s = request["schedule"]
    steps = []
    for i, batch in enumerate(request["batches"]):
        step = batch.get("step", i)
        lr = learning_rate_at(step, s["totalSteps"], s["peak"], s["warmupRatio"], s["schedule"])
        r = trainer.step(pad(batch["queries"]), pad(batch["documents"]), lr, batch.get("lossScale", 1.0), batch.get("apply", True))
        steps.append(dict(r, step=step, apply=batch.get("apply", True)))
    result = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas": blas_libraries(),
        "pooling": trainer.step_options["pooling"],
        "steps": steps,
    }
    if head is not None:
        result["head"] = {
            "inFeatures": head.linear.in_features,
            "outFeatures": head.linear.out_features,
            "activation": head.activation,
            "initialIsSeededLinearInit": seeded,
        }
    v = request.get("validation")
    if v:
        q = trainer.embed(v["queries"])
        d = trainer.embed(v["documents"])
        metrics, ranks, gaps = retrieval_metrics(q, d, v["relevant"])
        result["validation"] = {"metrics": metrics, "ranks": ranks, "gaps": gaps, "queryVectors": q.tolist(), "documentVectors": d.tolist()}
    return result


def run_bench(args):
    torch.set_num_threads(args.threads)
    model, pooling = load_model(args.model)
    with open(args.data) as f:
        pairs = json.load(f)  # [{query: ids, positive: ids}]
    trainer = Trainer(
        model,
        pooling,
        {"learningRate": 2e-5, "weightDecay": 0.01, "precision": args.precision},
        {
            # --loss contrastive: the in-batch InfoNCE term alone (MultipleNegativesRankingLoss's job).
            "contrastiveWeight": 1.0 if args.loss == "contrastive" else 0.5,
            "lateInteractionWeight": 0.0 if args.loss == "contrastive" else 0.5,
            "temperature": 0.05,
            "symmetric": False,
            "lateInteractionKind": "cross_entropy",
            "maxGradNorm": 1.0,
        },
        42,
    )
    bs = args.batch_size
    batches = [pairs[i : i + bs] for i in range(0, bs * (args.steps + 1), bs)]
    if len(batches[-1]) < bs:
        raise SystemExit(f"--data has {len(pairs)} pairs; {bs * (args.steps + 1)} needed")
    times, cpu, faults = [], 0.0, 0
    for i, batch in enumerate(batches):
        start, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        q = pad([p["query"] for p in batch])
        d = pad([p["positive"] for p in batch])
        trainer.step(q, d, 2e-5)
        if i > 0:  # the first step is a warm-up
            times.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu += after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
            faults += after.ru_minflt - usage.ru_minflt
    seconds = sum(times)
    result = {
        "side": "python",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas": blas_libraries(),
        "batchSize": bs,
        "loss": args.loss,
        "precision": args.precision,
        "timedSteps": len(times),
        "secondsPerStep": seconds / len(times),
        "samplesPerSecond": bs * len(times) / seconds,
        "stepSeconds": times,
        # CPU time (user + system, all threads) and minor page faults per step: less disturbed than wall time
        # by other work on a shared machine.
        "cpuSecondsPerStep": cpu / len(times),
        "minorFaultsPerStep": faults / len(times),
        "peakRssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parity", help="a request written by scripts/bench/parity.js")
    parser.add_argument("--out", help="--parity: where the per-step results go (default stdout)")
    parser.add_argument("--bench", action="store_true")
    parser.add_argument("--model")
    parser.add_argument("--data", help="--bench: JSON [{query: ids, positive: ids}] from coltrast's tokenizer")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="--bench: timed steps (one more runs first as a warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--loss", choices=["coltrast", "contrastive"], default="coltrast", help="--bench: both losses, or the contrastive one alone")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32", help="--bench: the forward pass under torch.autocast in bfloat16")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.parity:
        with open(args.parity) as f:
            result = run_parity(json.load(f))
        text = json.dumps(result)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        else:
            print(text)
    elif args.bench:
        if not args.model or not args.data:
            parser.error("--bench needs --model and --data")
        run_bench(args)
    else:
        parser.error("give --parity REQUEST or --bench")


if __name__ == "__main__":
    sys.exit(main())
