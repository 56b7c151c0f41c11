"""The generation stage: units in; each unit's trace written by the teacher (streamed and scored as it arrives, and
stopped once the branch budget says it will be dropped), scored when it finishes, and recorded in its marker.

The teacher is an eval backend (raypipe.eval.backends) with the eval's settings. `openai` streams (server-sent
events) with up to `concurrency` requests in flight per worker; the others write whole traces, which are then only
scored. Finished traces are scored by the batch job's Scorer and Policy (raypipe.online.scorer) in the worker, or by
a running `raypipe serve` (`--scorer URL`), so a unit's decision is the one curation would make with the same
thresholds.
"""
from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from raypipe.core import io
from raypipe.core.lexicon import get_lexicon
from raypipe.core.policy import Policy
from raypipe.core.registry import load_plugins
from raypipe.core.stage import Resources, Stage
from raypipe.eval import prompting
from raypipe.eval.sampling import GenRequest, sample_seed
from raypipe.generate.stream import StreamScorer
from raypipe.generate.units import marker_uri

STREAMING = ("openai",)


class WriteTraces(Stage):
    name = "generate"
    reads = ("units",)
    writes = ("records",)

    def __init__(self, cfg, policy: Policy):
        self.cfg, self.policy = cfg, policy
        # Read where the user set it (the driver): a worker on another node, or one Ray started before the variable
        # was set, does not have it.
        self.scorer_token = os.environ.get(cfg.scorer_token_env) if cfg.scorer else None
        self.resources = Resources(cpus=0.5 if cfg.backend in STREAMING else 1.0,
                                   worker_processes=cfg.verify_workers, worker_cpus=0.25)

    def setup(self) -> None:
        load_plugins(self.cfg.plugins)
        self.storage = self.cfg.storage()
        self.rule = self.cfg.abort_rule()
        self.lexicon = get_lexicon(self.cfg.lexicon)
        self.lock = threading.Lock()
        if self.cfg.backend in STREAMING:
            self.client = self.cfg.client(self.cfg.model)
            self.model_name = self.cfg.served_model_name or self._first_model()
        else:
            from raypipe.eval.backends import BACKENDS

            self.backend = BACKENDS.get(self.cfg.backend).from_config(self.cfg).setup()
            self.model_name = self.cfg.model
        self.scorer = self._scorer()

    def _first_model(self) -> str:
        models, err = self.client.models()
        if not models:
            raise RuntimeError(f"cannot list models at {self.cfg.model}: {err or 'none listed'}")
        return models[0]["id"]

    def _scorer(self):
        """Something with score_rows(rows) -> results and close(): the scoring service, or the same in process."""
        if self.cfg.scorer:
            return RemoteScorer(self.cfg.scorer, self.scorer_token)
        from raypipe.core.scoring import ScoringConfig
        from raypipe.online.scorer import CurationRun, OnlineScorer

        run = CurationRun(uri="(this run)", policy=self.policy, scoring=ScoringConfig.of(self.cfg), config_hash=None,
                          versions={}, max_response_chars=16 << 20)
        return OnlineScorer(run, default_source=self.source).setup()

    @property
    def source(self) -> str:
        return self.cfg.source or str(self.cfg.model).rstrip("/").rsplit("/", 1)[-1]

    def threshold(self) -> float | None:
        th = self.policy.thresholds.get(self.source)
        return th.score if th is not None else self.policy.default_threshold

    def process(self, item: dict) -> dict:
        units = json.loads(item["units"])
        if self.cfg.backend in STREAMING:
            with ThreadPoolExecutor(max(1, self.cfg.concurrency)) as pool:
                traces = list(pool.map(self._stream, units))
        else:
            traces = self._batch(units)
        finished = [i for i, t in enumerate(traces) if t["status"] == "finished"]
        if finished:
            rows = [self._row(units[i], traces[i]) for i in finished]
            with self.lock:
                scored = self.scorer.score_rows(rows)
            for i, s in zip(finished, scored):
                traces[i].update({k: s.get(k) for k in ("verdict", "decision", "reason", "branch_ratio",
                                                         "branch_score", "n_steps", "answer_extracted")})
        for unit, trace in zip(units, traces):
            io.write_text(json.dumps(trace), marker_uri(self.cfg, unit["key"]), self.storage)
        return {"key": item["key"], "records": json.dumps(traces)}

    def _messages(self, unit: dict) -> list[dict]:
        return prompting.messages(unit["problem"], self.cfg.prompt_version)

    def _base(self, unit: dict) -> dict:
        return {"key": unit["key"], "id": unit["trace_id"], "problem_id": unit["problem_id"], "sample": unit["sample"],
                "problem": unit["problem"], "answer": unit["answer"], "source": self.source,
                "seed": sample_seed(self.cfg.seed, unit["key"])}

    def _stream(self, unit: dict) -> dict:
        scorer = StreamScorer(self.lexicon, self.cfg.segmenter)
        state = {"scorer": scorer, "reasoning": None, "abort": None}
        threshold = self.threshold()

        def restart() -> None:
            state.update(scorer=StreamScorer(self.lexicon, self.cfg.segmenter), reasoning=None, abort=None)

        def on_delta(content: str, reasoning: str) -> bool:
            if state["reasoning"] is None:  # the API gives the reasoning apart (reasoning_content): score that
                state["reasoning"] = bool(reasoning)
                if reasoning:
                    state["scorer"] = StreamScorer(self.lexicon, self.cfg.segmenter, reasoning=True)
            s = state["scorer"]
            piece = reasoning if state["reasoning"] else content
            if piece:
                s.feed(piece)
            if self.rule is not None:
                state["abort"] = self.rule.check(s.state(), threshold)
            return state["abort"] is None

        body = {"model": self.model_name, "messages": self._messages(unit), "max_tokens": self.cfg.max_tokens,
                "temperature": self.cfg.temperature, "top_p": self.cfg.top_p,
                "seed": sample_seed(self.cfg.seed, unit["key"])}
        result, error = self.client.stream_chat(body, on_delta, on_restart=restart)
        out = self._base(unit)
        if error is not None:
            return {**out, "status": "error", "error": error, "requests": self.cfg.retries + 1}
        usage = result.get("usage") or {}
        chars = len(result["text"]) + len(result.get("reasoning") or "")
        tokens = usage.get("completion_tokens") or -(-chars // 4)
        out.update(response=result["text"], reasoning_content=result.get("reasoning"),
                   finish_reason=result["finish_reason"], requests=result["attempts"],
                   prompt_tokens=usage.get("prompt_tokens"), completion_tokens=tokens)
        if result["aborted"]:
            s = state["scorer"].state()
            return {**out, "status": "aborted", "reason": state["abort"], "n_markers": s.n_markers,
                    "n_steps": s.n_steps}
        return {**out, "status": "finished"}

    def _batch(self, units: list[dict]) -> list[dict]:
        requests = [GenRequest(f"{u['key']}/{u['sample']}", self._messages(u), sample_seed(self.cfg.seed, u["key"]),
                               u["problem"]) for u in units]
        results = self.backend.generate(requests, self.cfg.sampling())
        out = []
        for unit, r in zip(units, results):
            base = self._base(unit)
            if r.error:
                out.append({**base, "status": "error", "error": r.error, "requests": 1})
            else:
                out.append({**base, "status": "finished", "response": r.text, "finish_reason": r.finish_reason,
                            "requests": 1, "prompt_tokens": r.prompt_tokens,
                            "completion_tokens": r.completion_tokens or -(-len(r.text) // 4)})
        return out

    @staticmethod
    def _row(unit: dict, trace: dict) -> dict:
        row = {"id": trace["id"], "source": trace["source"], "problem": trace["problem"],
               "reference_answer": trace["answer"], "response": trace["response"]}
        if trace.get("reasoning_content"):
            row["reasoning_content"] = trace["reasoning_content"]
        return row

    def teardown(self) -> None:
        if hasattr(self, "scorer"):
            self.scorer.close()
        if hasattr(self, "client"):
            self.client.close()


class RemoteScorer:
    """A running `raypipe serve` (raypipe.online.client: retries, Retry-After) behind the in-process scorer's call."""

    def __init__(self, url: str, token: str | None):
        from raypipe.online.client import ScoringClient

        self.client = ScoringClient(url, token=token)

    def score_rows(self, rows: list[dict]) -> list[dict]:
        return self.client.score_batch(rows)

    def close(self) -> None:
        self.client.close()
