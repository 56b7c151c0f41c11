"""The Ray Train worker: DeepSpeed engine, resume from the latest checkpoint, the step loop, checkpoints on
every rank, metrics through ray.train.report, and the Hugging Face export."""
from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import time

log = logging.getLogger("raypipe.train")
STATE = "raypipe_state.json"


def micro_batches(rows, size: int, pad_id: int, skip: int = 0):
    from raypipe.train.packing import collate

    buf, seen = [], 0
    for row in rows:
        buf.append(row)
        if len(buf) == size:
            if seen >= skip:
                yield collate(buf, pad_id)
            seen += 1
            buf = []


def local_model_path(model: str, storage) -> str:
    """'tiny' is built locally; an s3:// checkpoint is copied once into a local cache."""
    import pyarrow.fs as pafs

    from raypipe.core.schema import stable_hash
    from raypipe.tiny import default_dir, resolve_model

    if not model.startswith("s3://"):
        return resolve_model(model)
    dest = default_dir().parent / f"models/{stable_hash(model, n=8)}"
    if not (dest / "config.json").exists():
        fs, path = storage.filesystem(model)
        tmp = f"{dest}.tmp{os.getpid()}"
        pafs.copy_files(path, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        os.makedirs(dest.parent, exist_ok=True)
        try:
            os.replace(tmp, dest)
        except OSError:
            pass
    return str(dest)


def export_model(engine, tokenizer, zero: int, uri: str, storage, rank: int) -> None:
    """Gather ZeRO-3 shards on every rank, save_pretrained on rank 0, copy to `uri` (local or s3://)."""
    import contextlib

    import deepspeed
    import pyarrow.fs as pafs
    import torch.distributed as dist

    model = engine.module.model
    gather = (deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None) if zero == 3
              else contextlib.nullcontext())
    with gather:
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                fs, path = storage.filesystem(uri)
                fs.create_dir(path, recursive=True)
                pafs.copy_files(tmp, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    dist.barrier()


class MetricsLog:
    """Rank 0's per-step metrics, rewritten to <output>/metrics.jsonl at each checkpoint (kept across resumes)."""

    def __init__(self, uri: str, storage, rank: int):
        self.uri, self.storage, self.active, self.rows = uri, storage, rank == 0, []

    def resume(self, step: int) -> None:
        from raypipe.core.io import read_text

        text = read_text(self.uri, self.storage) if self.active else None
        self.rows = [r for r in map(json.loads, (text or "").splitlines()) if r["step"] <= step]

    def add(self, metrics: dict) -> None:
        if self.active:
            self.rows.append(metrics)

    def flush(self) -> None:
        from raypipe.core.io import write_text

        if self.active:
            write_text("".join(json.dumps(r) + "\n" for r in self.rows), self.uri, self.storage)


def train_worker(config: dict) -> None:
    import deepspeed
    import ray.train
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from raypipe.core.io import Storage, join
    from raypipe.tiny import load_tokenizer
    from raypipe.train.attention import IMPLEMENTATIONS
    from raypipe.train.config import TrainConfig
    from raypipe.train.order import epoch_order
    from raypipe.train.step import CausalLMLoss, DeepSpeedEngine, cosine_lambda, mfu, model_flops_fn, peak_flops, train_loop

    cfg = TrainConfig(**config["train"])
    derived = config["derived"]  # what the driver worked out: attention path, DeepSpeed config, step counts
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    storage = Storage(cfg.s3_endpoint, cfg.s3_region)
    device = torch.device(f"cuda:{ctx.get_local_rank()}" if cfg.use_gpu else "cpu")
    if cfg.use_gpu:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    attention = derived["attention"]
    if rank == 0:
        log.warning("raypipe train: attention path %s (%s), ZeRO-%d, %s", attention, IMPLEMENTATIONS[attention],
                    cfg.zero, "bf16" if cfg.use_gpu else "fp32")

    model_path = local_model_path(cfg.model, storage)
    tokenizer = load_tokenizer(model_path)
    ds_cfg = derived["deepspeed"]
    dtype = torch.bfloat16 if cfg.use_gpu else torch.float32
    if cfg.init == "scratch":  # the architecture only; weights drawn from the seed (the same on every rank)
        from transformers import AutoConfig

        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path),
                                                 attn_implementation=IMPLEMENTATIONS[attention], dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, attn_implementation=IMPLEMENTATIONS[attention],
                                                     dtype=dtype)
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    module = CausalLMLoss(model, cfg.loss_chunk_tokens)
    total = derived["total_steps"]
    schedule = cosine_lambda(total, int(cfg.warmup_ratio * total), cfg.min_lr_ratio)
    ds_engine, *_ = deepspeed.initialize(
        model=module, model_parameters=[p for p in module.parameters() if p.requires_grad], config=ds_cfg,
        lr_scheduler=None if "scheduler" in ds_cfg else (lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule)))
    engine = DeepSpeedEngine(ds_engine)

    start = 0
    history = MetricsLog(join(cfg.output, "metrics.jsonl"), storage, rank)
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            with open(os.path.join(d, STATE)) as f:
                state = json.load(f)
            ds_engine.load_checkpoint(d, tag=state["tag"])
            start = int(state["step"])
        history.resume(start)
        if rank == 0:
            log.warning("raypipe train: resumed from step %d (%s)", start, ckpt.path)

    def reduce(t):
        dist.all_reduce(t)
        return t

    flops_fn = model_flops_fn(model.config)
    peak = peak_flops(device)
    spe = derived["steps_per_epoch"]
    sources = derived["sources"]
    last: dict = {}

    def on_step(step: int, stats) -> None:
        metrics = {"step": step, "epoch": (step - 1) // spe, "loss": stats.loss, "lr": stats.lr,
                   "tokens_per_s": stats.tokens_per_s, "target_tokens": stats.target_tokens,
                   "padding_fraction": stats.padding_fraction, "step_seconds": stats.seconds,
                   "mfu": mfu(stats, peak, world), "start_step": start}
        if len(sources) > 1:
            metrics.update({f"loss/{sources[s]}": v for s, v in stats.source_loss.items()})
        last.update(metrics)
        history.add(metrics)
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == total:
            history.flush()
            with tempfile.TemporaryDirectory() as d:
                tag = f"step{step}"
                ds_engine.save_checkpoint(d, tag=tag)
                if rank == 0:
                    with open(os.path.join(d, STATE), "w") as f:
                        json.dump({"step": step, "tag": tag, "total_steps": total}, f)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        elif step % cfg.report_every == 0 or cfg.fault_at_step == step:
            ray.train.report(metrics)
        if cfg.fault_at_step == step and rank == 0:
            time.sleep(2.0)  # let the controller record the last report, then die as a preempted node would
            os.kill(os.getpid(), signal.SIGKILL)

    step = start
    for epoch in range(start // spe if spe else 0, cfg.epochs):
        if step >= total:
            break
        skip = (step - epoch * spe) * cfg.grad_accum
        rows = epoch_order(ray.train.get_dataset_shard("train").iter_rows(), cfg.seed, epoch, cfg.shuffle_buffer)
        batches = micro_batches(rows, cfg.micro_batch_size, tokenizer.pad_token_id, skip)
        step = train_loop(engine, batches, cfg.grad_accum, attention, device, min(total, (epoch + 1) * spe), step,
                          reduce, len(sources), flops_fn, on_step)
    if step >= total:
        export_model(engine, tokenizer, cfg.zero, join(cfg.output, "model"), storage, rank)
