"""The SFT job's settings: `raypipe train`'s flags, its --config YAML, and the experiment's train stage."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AliasChoices, Field, model_validator

from raypipe.core.io import StorageSettings
from raypipe.core.flags import HIDDEN
from raypipe.core.settings import ModelSettings, OutputSettings, SeedSettings
from raypipe.ray_env import InProcessSettings, LocalRaySettings

from raypipe.core.prompts import PromptSettings
from raypipe.train.render import THINK_CLOSE, THINK_OPEN, AssistantFormat


class RenderSettings(PromptSettings):
    """How a trajectory becomes the text trained on (SFT) and scored (the loss probe): one definition for both. The
    user turn is the evaluation's (`prompt_version`), so a model is trained on the prompt it is evaluated with."""

    template: Literal["auto", "chatml", "plain"] = Field("auto", description="auto (the tokenizer's chat template), "
                                                         "chatml, plain")
    think_open: str = Field(THINK_OPEN, description="assistant turn = think_open + thinking + think_close + final "
                            "(the final part alone when a row has no reasoning); default '<think>\\n' (in YAML a "
                            "double-quoted string with \\n)")
    think_close: str = Field(THINK_CLOSE, description="closes the reasoning and leads into the final part (see "
                             "think_open); default '\\n</think>\\n\\n'")

    def assistant_format(self) -> AssistantFormat:
        return AssistantFormat(self.think_open, self.think_close, self.prompt_version)


class TrainConfig(RenderSettings, ModelSettings, OutputSettings, SeedSettings, StorageSettings, LocalRaySettings,
                  InProcessSettings):
    HELP: ClassVar[dict[str, str]] = {
        "model": "Hugging Face checkpoint path, s3:// copy of one, or 'tiny'",
        "output": "output folder, local or s3://: model/, train_summary.json, metrics.jsonl, ray/ checkpoints",
        "seed": "seed of the data order and of torch's random state",
    }

    data: str = Field(description="curation output folder (uses curated/) or Parquet folder/file; local or s3://")
    max_len: int = Field(4096, ge=16, description="max tokens per trajectory / packed row")
    overlong: Literal["drop", "truncate"] = Field("drop", description="rows longer than --max-len: drop or truncate "
                                                  "them (counted either way; a truncated row loses its answer)")
    truncate_min_tokens: int = Field(32, ge=2, description="overlong truncate: a row keeps at least this many "
                                     "completion tokens, else it is dropped (tokens cut are counted)")
    pack: bool = Field(False, description="pack trajectories into rows of --max-len tokens, isolated per document")
    attention: Literal["auto", "flash_varlen", "flex", "sdpa_block"] = Field(
        "auto", description="packed isolation path (auto: flash_varlen with flash-attn, else flex on GPU, sdpa_block "
        "on CPU)")
    micro_batch_size: int = Field(1, ge=1, description="rows per micro-batch per worker")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    epochs: int = Field(1, ge=1, description="passes over the data")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (also sets the "
                                  "schedule)")
    lr: float = Field(1e-5, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="the cosine schedule ends at lr x this")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of the steps spent warming the learning rate "
                                "up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, ge=0, description="gradient norm clip (0: none)")
    zero: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage (0, 1, 2 or 3)")
    deepspeed_config: str | None = Field(None, description="DeepSpeed JSON replacing the generated config ('auto' "
                                         "values filled)")
    optimizer: Literal["torch-adamw", "fused-adam", "cpu-adam"] = Field(
        "torch-adamw", description="torch-adamw (builds nothing), fused-adam (DeepSpeed's, GPU), cpu-adam "
        "(DeepSpeed's, for CPU offload)")
    gradient_checkpointing: bool = Field(True, description="recompute activations in the backward pass (less "
                                         "memory, more compute)")
    loss_chunk_tokens: int = Field(4096, ge=64, description="tokens per chunk of the output projection + loss (the "
                                   "full logits are never materialised)")
    shuffle_buffer: int = Field(10000, ge=0, description="rows each worker holds to reorder its rows in every epoch "
                                "after the first (0: every epoch in the same order)")
    init: Literal["checkpoint", "scratch"] = Field("checkpoint", description="checkpoint: start from --model's "
                                                   "weights; scratch: its architecture with weights drawn from "
                                                   "--seed (training from scratch)")
    num_workers: int = Field(2, ge=1, description="Ray Train workers (data-parallel ranks)")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per worker (0: train on CPU)")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs per worker")
    checkpoint_every: int = Field(0, ge=0, description="optimizer steps between checkpoints (0: only at the end)")
    report_every: int = Field(20, ge=1, description="optimizer steps between metric reports to Ray Train (every "
                              "step goes to metrics.jsonl; a report waits for the controller's poll, about 2 s)")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept (the latest ones)")
    checkpoint_storage: str | None = Field(None, description="Ray Train storage_path for checkpoints (default "
                                           "<output>/ray)", validation_alias=AliasChoices("checkpoint_storage",
                                                                                          "storage"))
    run_name: str = Field("sft", description="Ray Train run name (a restart with the same name resumes)")
    max_failures: int = Field(0, ge=0, description="worker-group restarts Ray Train attempts within this run")
    fault_at_step: Annotated[int | None, HIDDEN] = Field(None, description="testing: rank 0 kills itself (SIGKILL) "
                                                         "after this step")

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.gpus_per_worker and self.gpus_per_worker < 1 and self.zero:
            raise ValueError("DeepSpeed needs whole GPUs per worker")
        return self

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0
