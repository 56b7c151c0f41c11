"""The training step and loop: no Ray here. They take an iterator of micro-batches (dicts from packing.collate)
and an engine (DeepSpeedEngine, or any object with its five methods), so the same code runs under Ray Train and
in a single-GPU benchmark (benchmarks/sft_throughput.py brings a plain-torch engine).

The loss is the mean over every supervised token of the global batch (all micro-batches, all ranks); the
logits are computed only at supervised positions, in checkpointed chunks, so a 16k row never holds fp32 logits
over the whole vocabulary.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from raypipe.train.attention import flatten_for, model_inputs
from raypipe.train.render import IGNORE


class CausalLMLoss(torch.nn.Module):
    """Wraps a Hugging Face causal LM: returns the cross-entropy of each supervised token (next-token targets)."""

    def __init__(self, model, chunk_tokens: int = 4096):
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens

    def forward(self, input_ids, labels, position_ids=None, attention_mask=None):
        hidden = self.model.get_decoder()(input_ids=input_ids, position_ids=position_ids,
                                          attention_mask=attention_mask, use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE
        h = hidden[:, :-1][keep]
        y = targets[keep]
        head = self.model.get_output_embeddings()
        parts = [checkpoint(_ce, head, h[i:i + self.chunk_tokens], y[i:i + self.chunk_tokens], use_reentrant=False)
                 for i in range(0, h.shape[0], self.chunk_tokens)]
        return torch.cat(parts) if parts else h.sum(-1) * 0.0


def _ce(head, h, y):
    return F.cross_entropy(head(h).float(), y, reduction="none")


def supervised_sources(batch: dict):
    """Source index of each supervised token, in CausalLMLoss's order."""
    targets = batch["labels"][:, 1:]
    return batch["token_source"][:, 1:][targets != IGNORE]


class DeepSpeedEngine:
    """The engine interface over a DeepSpeedEngine (which averages over ranks and divides by the accumulation)."""

    def __init__(self, engine):
        self.engine = engine
        self.module = engine.module
        self.world_size = engine.world_size if hasattr(engine, "world_size") else 1
        self.loss_factor = float(self.world_size * engine.gradient_accumulation_steps())

    def forward(self, **kw):
        return self.engine(**kw)

    def backward(self, loss):
        self.engine.backward(loss)

    def step(self):
        self.engine.step()

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])


@dataclass
class StepStats:
    loss: float
    target_tokens: int
    real_tokens: int
    slots: int  # real + padding positions
    seconds: float
    lr: float
    source_loss: dict[int, float] = field(default_factory=dict)
    source_tokens: dict[int, int] = field(default_factory=dict)
    flops: float = 0.0

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.slots if self.slots else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.real_tokens / self.seconds if self.seconds else 0.0


def _identity(t):
    return t


def train_step(engine, micro_batches: list[dict], attention: str, device, reduce: Callable = _identity,
               n_sources: int = 1, flops_fn: Callable | None = None) -> StepStats:
    """One optimizer step over `micro_batches` (this rank's share). `reduce` sums a tensor over ranks."""
    t0 = time.perf_counter()
    local = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in micro_batches)
    global_targets = float(reduce(torch.tensor([local], dtype=torch.float64, device=device)).item())
    denom = max(global_targets, 1.0)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    by_src = torch.zeros(2 * n_sources, dtype=torch.float64, device=device)
    real = slots = 0
    flops = 0.0
    for batch in micro_batches:
        batch = flatten_for(batch, attention)
        tensors = {k: v.to(device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
        kw = model_inputs(tensors, attention)
        token_loss = engine.forward(input_ids=kw["input_ids"], labels=tensors["labels"],
                                    position_ids=kw["position_ids"], attention_mask=kw["attention_mask"])
        engine.backward(token_loss.sum() / denom * engine.loss_factor)
        engine.step()
        tl = token_loss.detach().double()
        loss_sum += tl.sum()
        src = supervised_sources(tensors).clamp(min=0, max=n_sources - 1)
        by_src[:n_sources].index_add_(0, src, tl)
        by_src[n_sources:].index_add_(0, src, torch.ones_like(tl))
        real += int(batch["attention_mask"].sum())
        slots += batch["attention_mask"].numel()
        if flops_fn is not None:
            flops += flops_fn(batch["doc_lens"])
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    totals = reduce(torch.cat([loss_sum.reshape(1), by_src,
                               torch.tensor([real, slots, flops], dtype=torch.float64, device=device)]))
    totals = totals.cpu().tolist()
    src_loss, src_tok = totals[1:1 + n_sources], totals[1 + n_sources:1 + 2 * n_sources]
    return StepStats(
        loss=totals[0] / denom, target_tokens=int(global_targets), real_tokens=int(totals[-3]),
        slots=int(totals[-2]), seconds=seconds, lr=engine.lr(), flops=totals[-1],
        source_loss={s: src_loss[s] / src_tok[s] for s in range(n_sources) if src_tok[s]},
        source_tokens={s: int(src_tok[s]) for s in range(n_sources) if src_tok[s]},
    )


def train_loop(engine, micro_batches: Iterable[dict], accum: int, attention: str, device, max_steps: int,
               start_step: int = 0, reduce: Callable = _identity, n_sources: int = 1,
               flops_fn: Callable | None = None, on_step: Callable[[int, StepStats], None] | None = None) -> int:
    """Steps until max_steps or the micro-batches run out (a last partial accumulation group is not stepped).
    Returns the global step reached."""
    step = start_step
    it: Iterator[dict] = iter(micro_batches)
    while step < max_steps:
        group = [b for _, b in zip(range(accum), it)]
        if len(group) < accum:
            break
        stats = train_step(engine, group, attention, device, reduce, n_sources, flops_fn)
        step += 1
        if on_step is not None:
            on_step(step, stats)
    return step


def model_flops_fn(config) -> Callable[[list[list[int]]], float]:
    """Training FLOPs of a micro-batch: 6 * params * tokens plus causal attention over each document."""
    h, layers = config.hidden_size, config.num_hidden_layers
    inter = config.intermediate_size
    heads, kv = config.num_attention_heads, getattr(config, "num_key_value_heads", config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or h // heads
    per_layer = h * heads * head_dim * 2 + h * kv * head_dim * 2 + 3 * h * inter
    params = layers * per_layer + h * config.vocab_size  # the output projection; input embeddings do no matmul

    def flops(doc_lens: list[list[int]]) -> float:
        tokens = sum(sum(r) for r in doc_lens)
        attn = sum(l * l for r in doc_lens for l in r)
        return 6.0 * params * tokens + 6.0 * layers * heads * head_dim * attn

    return flops


PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def peak_flops(device) -> float | None:
    """Dense bf16 peak of this accelerator, None on CPU (no MFU there)."""
    if device is None or torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def mfu(stats: StepStats, peak: float | None, world: int = 1) -> float | None:
    if not peak or not stats.seconds:
        return None
    return stats.flops / stats.seconds / (peak * world)


def cosine_lambda(total_steps: int, warmup: int, min_ratio: float = 0.1) -> Callable[[int], float]:
    """Linear warmup then cosine decay to min_ratio of the peak (the schedule the DeepSpeed config mirrors)."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f
