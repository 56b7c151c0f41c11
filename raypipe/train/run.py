"""The SFT driver: prepare the data on Ray Data, run TorchTrainer + DeepSpeed, write train_summary.json."""
from __future__ import annotations

import json
import logging
import os
import time

log = logging.getLogger("raypipe.train")


def plan_steps(train_rows: int, cfg) -> tuple[int, int]:
    """(steps per epoch, total steps): every worker gets the same number of rows (an equal split)."""
    per_worker = train_rows // cfg.num_workers
    spe = per_worker // (cfg.micro_batch_size * cfg.grad_accum)
    if spe == 0:
        raise ValueError(f"{train_rows} training rows are too few for {cfg.num_workers} workers x "
                         f"{cfg.micro_batch_size} rows x {cfg.grad_accum} accumulation steps")
    total = spe * cfg.epochs
    return spe, min(total, cfg.max_steps) if cfg.max_steps else total


def run_train(cfg) -> dict:
    """Train; returns the summary also written to <output>/train_summary.json. Raises on a failed run."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from raypipe.core.io import Storage, join, read_text, write_text
    from raypipe.ray_env import ensure_ray, quiet_ray
    from raypipe.tiny import load_tokenizer
    from raypipe.train.attention import choose_attention
    from raypipe.train.data import prepare, resolve_data, source_names
    from raypipe.train.ds_config import deepspeed_config
    from raypipe.train.render import render_text
    from raypipe.train.worker import local_model_path, train_worker

    t0 = time.time()
    # Ray Train runs its workers in their own working directory: a relative local path must not follow them there.
    local = {k: os.path.abspath(getattr(cfg, k)) for k in ("output", "data", "checkpoint_storage")
             if getattr(cfg, k) and "://" not in getattr(cfg, k)}
    if os.path.exists(cfg.model):  # a local checkpoint folder (not 'tiny', a hub id or s3://)
        local["model"] = os.path.abspath(cfg.model)
    cfg = cfg.model_copy(update=local)
    storage = Storage(cfg.s3_endpoint, cfg.s3_region)
    # A missing data folder or model fails before Ray starts.
    sources = source_names(resolve_data(cfg.data, storage), storage)
    model_path = local_model_path(cfg.model, storage)
    ensure_ray(cfg.num_cpus)
    fmt = cfg.assistant_format()
    # Fail early on a bad template, or one that strips the reasoning from assistant turns.
    from raypipe.core.prompts import EXAMPLE_PROBLEM, stamp

    example = render_text(load_tokenizer(model_path), EXAMPLE_PROBLEM, "Let me add 1 and 1.", "\\boxed{2}",
                          cfg.template, fmt)
    ds, data_stats = prepare(cfg, model_path, storage, sources)
    spe, total = plan_steps(data_stats["train_rows"], cfg)
    attention = choose_attention("cuda" if cfg.use_gpu else "cpu", cfg.pack, cfg.attention)
    ds_cfg = deepspeed_config(cfg, total, cfg.use_gpu)
    log.warning("raypipe train: %d rows -> %d steps (%d per epoch), attention %s", data_stats["train_rows"], total,
                spe, attention)

    ckpt_uri = cfg.checkpoint_storage or join(cfg.output, "ray")
    fs, ckpt_path = storage.filesystem(ckpt_uri)
    env = {k: os.environ[k] for k in ("TORCH_EXTENSIONS_DIR", "RAYPIPE_CACHE", "AWS_ACCESS_KEY_ID",
                                      "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION") if k in os.environ}
    if not cfg.use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"train": cfg.model_dump(), "derived": {
            "attention": attention, "deepspeed": ds_cfg, "total_steps": total, "steps_per_epoch": spe,
            "sources": sources}},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if cfg.use_gpu else {})}),
        run_config=ray.train.RunConfig(
            name=cfg.run_name, storage_path=ckpt_path, storage_filesystem=fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            worker_runtime_env={"env_vars": env}),
        datasets={"train": ds},
        dataset_config=ray.train.DataConfig(execution_options=_ordered()),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
    )
    with quiet_ray():
        result = trainer.fit()
    metrics = dict(result.metrics or {})
    history = [json.loads(line) for line in (read_text(join(cfg.output, "metrics.jsonl"), storage) or "").splitlines()]
    timed = [h for h in history if h["step"] > 1] or history  # step 1 includes warm-up costs
    summary = {
        "final_loss": metrics.get("loss"), "steps": metrics.get("step"), "total_steps": total,
        "first_loss": history[0]["loss"] if history else None,
        "tokens_per_s": _mean([h["tokens_per_s"] for h in timed]), "mfu": _mean([h["mfu"] for h in timed]),
        "padding_fraction": metrics.get("padding_fraction"), "lr": metrics.get("lr"),
        "per_source_loss": {k[5:]: v for h in history for k, v in h.items() if k.startswith("loss/")},  # latest
        "resumed_from_step": metrics.get("start_step"), "metrics_log": join(cfg.output, "metrics.jsonl"),
        "model_path": join(cfg.output, "model"), "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "attention": attention, "zero": cfg.zero, "precision": "bf16" if cfg.use_gpu else "fp32",
        "num_workers": cfg.num_workers, "data": data_stats, "sources": sources,
        "prompt_template": {**stamp(cfg.prompt_version), "example_prompt": example.prompt},
        "rendering": {"template": cfg.template, "think_open": cfg.think_open, "think_close": cfg.think_close,
                      "assistant_format": fmt.layout, "parts_from": data_stats["parts_from"],
                      **data_stats["rendered"],
                      "definitions": {"rows_without_thinking": "empty reasoning: the final part alone",
                                      "rows_unmarked": "no reasoning markup (the response is both its reasoning and "
                                      "its final part): rendered once, without think tags"}},
        "seconds": round(time.time() - t0, 1), "config": cfg.model_dump(),
    }
    write_text(json.dumps(summary, indent=1, default=str), join(cfg.output, "train_summary.json"), storage)
    return summary


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _ordered():
    from ray.data import ExecutionOptions

    opts = ExecutionOptions()
    opts.preserve_order = True
    return opts
