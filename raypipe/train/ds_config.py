"""The DeepSpeed configuration: ZeRO stage, precision and optimizer. The warmup-cosine schedule is a torch
LambdaLR (step.cosine_lambda) handed to deepspeed.initialize, unless a user JSON names its own scheduler."""
from __future__ import annotations

import json


def deepspeed_config(cfg, total_steps: int, use_gpu: bool) -> dict:
    """From TrainConfig. bf16 on GPU, fp32 on CPU; torch AdamW unless compiled ops are asked for."""
    opt_params = {"lr": cfg.lr, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "torch-adamw":
        opt_params["torch_adam"] = True
    optimizer = {"type": "AdamW", "params": opt_params}
    warmup = int(cfg.warmup_ratio * total_steps)
    zero: dict = {"stage": cfg.zero}
    if cfg.optimizer == "cpu-adam":
        zero["offload_optimizer"] = {"device": "cpu"}
    if cfg.deepspeed_config:
        with open(cfg.deepspeed_config) as f:
            user = json.load(f)
        base = {"optimizer": optimizer, "zero_optimization": zero}
        for k, v in base.items():
            user.setdefault(k, v)
        user["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
        user["gradient_accumulation_steps"] = cfg.grad_accum
        user.pop("train_batch_size", None)
        return _fill_auto(user, cfg, total_steps, warmup)
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": use_gpu},
        "optimizer": optimizer,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def _fill_auto(node, cfg, total_steps: int, warmup: int):
    values = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "total_num_steps": max(total_steps, 1),
              "warmup_num_steps": warmup, "gradient_clipping": cfg.grad_clip}
    if isinstance(node, dict):
        return {k: (values.get(k, v) if v == "auto" else _fill_auto(v, cfg, total_steps, warmup))
                for k, v in node.items()}
    return node
