"""transformers generation for CPU and small models: the one engine behind the `hf` backend and the CPU Serve
deployment of serve/models.py."""
from __future__ import annotations

import os
import threading
import time


class HFEngine:
    def __init__(self, model: str, dtype: str = "float32", max_batch: int = 8, threads: int | None = None):
        self.model_path = model
        self.dtype = dtype
        self.max_batch = max_batch
        self.threads = threads
        self.model = None
        self.tokenizer = None
        self.stop_ids: list[int] = []
        self._lock = threading.Lock()  # one generate at a time per engine (Serve replicas may call from threads)

    def setup(self) -> "HFEngine":
        if self.model is not None:
            return self
        import torch
        from transformers import AutoModelForCausalLM

        from raypipe.tiny import load_tokenizer, resolve_model

        self.model_path = resolve_model(self.model_path)
        if self.threads:
            torch.set_num_threads(self.threads)
        self.tokenizer = load_tokenizer(self.model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype if self.dtype == "auto" else getattr(torch, self.dtype))
        self.model.eval()
        from raypipe.eval.prompting import stop_token_ids

        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config.eos_token_id)
        return self

    def render(self, messages: list[dict]) -> str:
        from raypipe.eval.prompting import render

        return render(self.setup().tokenizer, messages)

    def generate(self, prompts: list[str], max_tokens: int, temperature: float, top_p: float,
                 seed: int | None = None, stop_ids: list[int] | None = None) -> list[dict]:
        """One completion per prompt: {text, finish_reason, prompt_tokens, completion_tokens, seconds}. Generation
        stops at EOS or the chat template's end of turn; the text keeps special tokens such as `<think>`, so that a
        reply cut inside its reasoning still shows it."""
        import torch

        self.setup()
        out: list[dict] = []
        for start in range(0, len(prompts), self.max_batch):
            batch = prompts[start:start + self.max_batch]
            t0 = time.perf_counter()
            with self._lock, torch.inference_mode():
                if seed is not None:
                    torch.manual_seed(seed + start)
                enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
                eos = self.stop_ids + [i for i in stop_ids or [] if i not in self.stop_ids]
                kwargs = dict(max_new_tokens=max_tokens, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos)
                if temperature > 0:
                    kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
                else:
                    kwargs.update(do_sample=False)
                gen = self.model.generate(**enc, **kwargs)
            new = gen[:, enc["input_ids"].shape[1]:]
            secs = (time.perf_counter() - t0) / len(batch)
            for i, row in enumerate(new.tolist()):
                stop_at = next((j for j, t in enumerate(row) if t in eos), None)
                ids = row if stop_at is None else row[:stop_at]
                out.append({
                    "text": self.tokenizer.decode(ids, skip_special_tokens=False),
                    "finish_reason": "length" if stop_at is None else "stop",
                    "prompt_tokens": int(enc["attention_mask"][i].sum()),
                    "completion_tokens": len(ids) + (0 if stop_at is None else 1),
                    "seconds": secs,
                })
        return out

    def info(self) -> dict:
        from raypipe.core.versions import package_version

        return {"engine": "transformers", "version": package_version("transformers"), "torch": package_version("torch"),
                "dtype": self.dtype, "threads": self.threads or os.cpu_count()}
