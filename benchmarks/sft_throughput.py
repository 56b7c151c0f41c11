"""SFT throughput: useful tokens/s and MFU of (1) an HF-style padded baseline, (2) raypipe's packed, isolated
path and (3) the same under DeepSpeed ZeRO-2, measured in one run on one device.

Needs torch, transformers (and Triton on GPU) only: no Ray, no pyarrow; DeepSpeed is optional (setup 3 is skipped
without it). Random-init Qwen2.5-1.5B shape, bf16, gradient checkpointing, a log-normal long-CoT length mix
(median ~3k tokens) in 16k-token rows:

    python benchmarks/sft_throughput.py                      # GPU
    python benchmarks/sft_throughput.py --preset cpu-small   # CPU: a small shape, fp32
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESETS = {
    "qwen2.5-1.5b": dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151936,
                         max_len=16384, median=3000, sigma=0.8, steps=8, warmup=2),
    "cpu-small": dict(hidden=128, layers=4, heads=4, kv_heads=2, intermediate=384, vocab=8192,
                      max_len=2048, median=400, sigma=0.8, steps=4, warmup=1),
}


class TorchEngine:
    """raypipe.train.step's engine interface in plain torch (no DeepSpeed): gradient accumulation, clipping,
    optimizer and scheduler steps."""

    world_size = 1

    def __init__(self, module, optimizer, scheduler=None, accum: int = 1, clip: float | None = 1.0):
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self.accum, self.clip, self._micro = accum, clip, 0
        self.loss_factor = 1.0  # backward() takes the loss as-is

    def forward(self, **kw):
        return self.module(**kw)

    def backward(self, loss):
        loss.backward()

    def step(self):
        self._micro += 1
        if self._micro % self.accum:
            return
        if self.clip:
            import torch

            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]



def lengths(n: int, median: int, sigma: float, max_len: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [max(64, min(max_len, int(rng.lognormvariate(math.log(median), sigma)))) for _ in range(n)]


def make_docs(lens, vocab, seed):
    import torch

    from raypipe.train.packing import Doc

    g = torch.Generator().manual_seed(seed)
    docs = []
    for n in lens:
        ids = torch.randint(0, vocab, (n,), generator=g).tolist()
        prompt = min(n // 8, 256)  # a problem, then a long response (the supervised part)
        docs.append(Doc(ids, [-100] * prompt + ids[prompt:]))
    return docs


def padded_batches(docs, max_len):
    """HF-style: documents in arrival order, padded to the longest, at most max_len slots per batch."""
    from raypipe.train.packing import row_record

    batch, longest = [], 0
    for d in docs:
        n = len(d.input_ids)
        if batch and (len(batch) + 1) * max(longest, n) > max_len:
            yield [row_record([x]) for x in batch]
            batch, longest = [], 0
        batch.append(d)
        longest = max(longest, n)
    if batch:
        yield [row_record([x]) for x in batch]


def build_model(a, device, dtype, attn):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                      max_position_embeddings=max(32768, a.max_len), tie_word_embeddings=True, use_cache=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=dtype).to(device)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def run_setup(name, a, device, dtype, docs, peak):
    import torch

    from raypipe.train.attention import IMPLEMENTATIONS, choose_attention
    from raypipe.train.packing import collate, pack, row_record
    from raypipe.train.step import CausalLMLoss, DeepSpeedEngine, model_flops_fn, train_step

    packed = name != "padded"
    attention = choose_attention(device.type, packed, a.attention)
    model = build_model(a, device, dtype, IMPLEMENTATIONS[attention])
    flops_fn = model_flops_fn(model.config)
    if packed:
        batches = [[row_record(r)] for r in pack(docs, a.max_len)]
    else:
        batches = list(padded_batches(docs, a.max_len))
    batches = [collate(b, 0) for b in batches][: a.warmup + a.steps]
    if name == "zero2":
        import deepspeed

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 1000), RANK="0",
                          WORLD_SIZE="1", LOCAL_RANK="0")
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
        ds_cfg = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
                  "zero_optimization": {"stage": 2}, "bf16": {"enabled": dtype == torch.bfloat16},
                  "optimizer": {"type": "AdamW", "params": {"lr": 1e-5, "torch_adam": True}},
                  "steps_per_print": 10**9}
        module = CausalLMLoss(model)
        eng, *_ = deepspeed.initialize(model=module, model_parameters=module.parameters(), config=ds_cfg)
        engine = DeepSpeedEngine(eng)
    elif packed:
        module = CausalLMLoss(model)
        engine = TorchEngine(module, torch.optim.AdamW(module.parameters(), lr=1e-5))
    else:
        engine = None
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    tokens = flops = seconds = 0.0
    padding = []
    for i, b in enumerate(batches):
        if packed:
            stats = train_step(engine, [b], attention, device, flops_fn=flops_fn)
            t, f, s = stats.real_tokens, stats.flops, stats.seconds
        else:  # the plain Hugging Face step: full-vocabulary logits and loss inside the model
            t0 = time.perf_counter()
            x = {k: b[k].to(device) for k in ("input_ids", "labels", "attention_mask")}
            model(**x).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            s, t, f = time.perf_counter() - t0, int(b["attention_mask"].sum()), flops_fn(b["doc_lens"])
        padding.append(1 - int(b["attention_mask"].sum()) / b["attention_mask"].numel())
        if i >= a.warmup:
            tokens, flops, seconds = tokens + t, flops + f, seconds + s
    result = {"setup": name, "attention": attention, "steps": len(batches) - a.warmup,
              "useful_tokens_per_s": round(tokens / seconds, 1) if seconds else None,
              "mfu": round(flops / seconds / peak, 4) if peak and seconds else None,
              "padding_fraction": round(sum(padding) / len(padding), 3)}
    if device.type == "cuda":
        result["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        torch.cuda.reset_peak_memory_stats()
    del engine, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv=None) -> int:
    import importlib.util

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: qwen2.5-1.5b on GPU, cpu-small on CPU")
    for k in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab", "max_len", "median", "steps", "warmup"):
        p.add_argument("--" + k.replace("_", "-"), type=int)
    p.add_argument("--sigma", type=float)
    p.add_argument("--attention", default="auto", help="packed path: auto, flash_varlen, flex, sdpa_block")
    p.add_argument("--setups", default="padded,packed,zero2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)

    import torch

    from raypipe.train.step import peak_flops

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    preset = PRESETS[a.preset or ("qwen2.5-1.5b" if device.type == "cuda" else "cpu-small")]
    for k, v in preset.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = peak_flops(device)
    n_docs = max(64, (a.warmup + a.steps + 2) * a.max_len // a.median * 2)
    docs = make_docs(lengths(n_docs, a.median, a.sigma, a.max_len, a.seed), a.vocab, a.seed)
    header = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "dtype": str(dtype), "peak_flops": peak,
              "shape": {k: getattr(a, k) for k in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab")},
              "max_len": a.max_len, "median_doc_tokens": a.median, "docs": n_docs}
    print(json.dumps(header))
    results = []
    for name in a.setups.split(","):
        if name == "zero2" and importlib.util.find_spec("deepspeed") is None:
            results.append({"setup": name, "skipped": "deepspeed is not installed"})
        else:
            try:
                results.append(run_setup(name, a, device, dtype, docs, peak))
            except torch.OutOfMemoryError as e:
                results.append({"setup": name, "error": f"out of memory: {str(e)[:200]}"})
        print(json.dumps(results[-1]), flush=True)
    print(f"\n{'setup':<8} {'attention':<12} {'useful tok/s':>13} {'MFU':>7} {'padding':>8}")
    for r in results:
        mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "n/a"
        print(f"{r['setup']:<8} {r.get('attention', '-'):<12} {r.get('useful_tokens_per_s') or 0:>13,.0f} {mfu:>7} "
              f"{r.get('padding_fraction', 0):>8.3f}  {r.get('skipped') or r.get('error') or ''}")
    if a.json:
        Path(a.json).write_text(json.dumps({"header": header, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
