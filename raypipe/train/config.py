"""The SFT job's configuration: flags, a YAML file, or both (flags win)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator
from raypipe.settings import load_settings


class TrainConfig(BaseModel):
    data: str = Field(description="curated Parquet: a curation output folder (uses curated/) or a Parquet folder/file; local or s3://")
    model: str = Field(description="a Hugging Face checkpoint path, an s3:// copy of one, or 'tiny'")
    output: str = Field(description="output folder, local or s3://: model/, train_summary.json, checkpoints")
    template: str = Field("auto", description="auto (the tokenizer's chat template), chatml or plain")
    max_len: int = Field(4096, ge=16, description="tokens per packed row / per trajectory")
    overlong: Literal["drop", "truncate"] = "drop"
    pack: bool = False
    attention: str = Field("auto", description="packed isolation path: auto, flash_varlen, flex, sdpa_block")
    micro_batch_size: int = Field(1, ge=1, description="rows per micro-batch per worker")
    grad_accum: int = Field(1, ge=1)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (also sets the schedule)")
    lr: float = Field(1e-5, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    zero: int = Field(2, ge=0, le=3)
    deepspeed_config: str | None = Field(None, description="a DeepSpeed JSON; replaces the generated one ('auto' values filled)")
    optimizer: Literal["torch-adamw", "fused-adam", "cpu-adam"] = "torch-adamw"
    gradient_checkpointing: bool = True
    loss_chunk_tokens: int = Field(4096, ge=64)
    seed: int = 0
    num_workers: int = Field(2, ge=1)
    gpus_per_worker: float = Field(0.0, ge=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(0, ge=0, description="optimizer steps between checkpoints (0: only at the end)")
    keep_checkpoints: int = Field(2, ge=1)
    storage: str | None = Field(None, description="Ray Train storage_path for checkpoints (default: <output>/ray)")
    run_name: str = "sft"
    max_failures: int = Field(0, ge=0, description="worker-group restarts Ray Train attempts within this run")
    fault_at_step: int | None = Field(None, description="testing: rank 0 kills itself (SIGKILL) after this step")
    s3_endpoint: str | None = None
    s3_region: str | None = None
    num_cpus: int | None = Field(None, description="CPUs for a local Ray (ignored when joining a cluster)")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.gpus_per_worker and self.gpus_per_worker < 1 and self.zero:
            raise ValueError("DeepSpeed needs whole GPUs per worker")
        return self

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


def load_train_config(path: str | None, overrides: dict) -> TrainConfig:
    return load_settings(TrainConfig, path, overrides)
