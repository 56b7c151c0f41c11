"""The step-judge backends that label batches of trajectories in a pool of Ray Data actors: `keyword` (the offline
lexicon baseline) and `openai` (any OpenAI-compatible chat endpoint, through raypipe.eval.openai_client)."""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from raypipe.core.registry import load_plugins
from raypipe.core.stage import Stage
from raypipe.diagnostics.judge import KeywordJudge, build_requests, parse_labels
from raypipe.diagnostics.judge_base import JUDGE_BACKENDS, OUT_SCHEMA, JudgeBackend, prepare, result_row


class BatchJudge(JudgeBackend):
    """A backend whose instances label lists of trajectories; label() runs them in an actor pool."""

    actor_cpus: float | None = None  # CPUs per actor; None: the actor plan's share
    in_process = True

    def setup(self) -> "BatchJudge":
        """Per actor: clients, models, thread pools."""
        return self

    def label_rows(self, rows: list[dict], preps: list[dict]) -> list[dict]:
        raise NotImplementedError

    def label(self, ds, ex=None):
        from raypipe.executor import LocalExecutor, RayExecutor

        ex = ex or RayExecutor()
        if isinstance(ex, LocalExecutor):
            return ex.map_dataset(LabelSteps(self.config), ds, batch_size=self.config.batch_size)
        pool = ex.pool(self.config.actors, reserve_cpus=1)
        print(f"[raypipe] judge: {pool.max_size} labelling actors", flush=True)
        if self.actor_cpus:
            pool = dataclasses.replace(pool, cpus=self.actor_cpus)
        return ex.map_dataset(LabelSteps(self.config), ds, pool=pool, batch_size=self.config.batch_size)


class LabelSteps(Stage):
    """The step judge as a stage: trajectories in, their step labels out, with the configured batch backend."""

    name = "judge"
    reads = ("id", "source", "problem", "thinking", "response", "branch_ratio")
    writes = tuple(OUT_SCHEMA.names)

    def __init__(self, config):
        self.cfg = config

    def setup(self) -> None:
        load_plugins(self.cfg.plugins)  # a backend from a plugin registers itself in this process too
        self.backend = JUDGE_BACKENDS.get(self.cfg.backend).from_config(self.cfg).setup()

    def process(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        preps = [prepare(r, self.cfg) for r in rows]
        return pa.Table.from_pylist(self.backend.label_rows(rows, preps), schema=OUT_SCHEMA)


@JUDGE_BACKENDS.register("keyword")
class KeywordBackend(BatchJudge):
    prompted = False

    @classmethod
    def judge_name(cls, config) -> str:
        return KeywordJudge(config.lexicon).version

    def setup(self) -> "KeywordBackend":
        self.judge = KeywordJudge(self.config.lexicon)
        return self

    def label_rows(self, rows: list[dict], preps: list[dict]) -> list[dict]:
        return [result_row(r, p, self.judge.label_steps(p["steps"]), self.config) for r, p in zip(rows, preps)]


@JUDGE_BACKENDS.register("openai")
class OpenAIJudge(BatchJudge):
    actor_cpus = 0.25  # the actors wait on the endpoint

    @classmethod
    def check(cls, config) -> None:
        if not config.endpoint:
            raise ValueError("--backend openai needs --endpoint (an OpenAI-compatible base URL)")

    def setup(self) -> "OpenAIJudge":

        c = self.config
        url = c.endpoint.rstrip("/")
        self.client = c.client(url if url.endswith("/v1") else url + "/v1")
        self.model = c.model
        if not self.model:  # the first model the endpoint lists
            models, err = self.client.models()
            if not models:
                raise RuntimeError(f"cannot list models at {self.client.base_url}: {err or 'none listed'}")
            self.model = models[0]["id"]
        self.pool = ThreadPoolExecutor(max_workers=c.concurrency)
        return self

    def chat(self, messages: list[dict]) -> tuple[str | None, str | None]:
        """(answer text, error): exactly one of them is set."""
        c = self.config
        body = {"model": self.model, "messages": messages, "max_tokens": c.max_tokens, "temperature": c.temperature}
        if c.json_mode:
            body["response_format"] = {"type": "json_object"}
        data, err = self.client.chat(body)
        if err:
            return None, err
        try:
            text = data["choices"][0]["message"]["content"]
        except (TypeError, KeyError, IndexError):
            return None, f"unexpected response shape: {str(data)[:200]}"
        return (text, None) if isinstance(text, str) else (None, "answer has no text content")

    def label_rows(self, rows: list[dict], preps: list[dict]) -> list[dict]:
        c = self.config
        reqs = [(i, q) for i, (r, p) in enumerate(zip(rows, preps))
                for q in build_requests(r["problem"] or "", p["steps"], c.steps_per_request, c.max_step_chars)]
        answers = list(self.pool.map(lambda iq: self.chat(iq[1]["messages"]), reqs))
        per_row: list[list] = [[] for _ in rows]
        for (i, q), (text, err) in zip(reqs, answers):
            parsed = parse_labels(text, q["first"], q["count"])
            if err:
                parsed.detail = err
            per_row[i].append(parsed)
        out = []
        for r, p, parsed in zip(rows, preps, per_row):
            labels = [lab for x in parsed for lab in x.labels]
            errors = [x.detail for x in parsed if x.status != "ok"]
            out.append(result_row(r, p, labels, c, parsed, errors))
        return out

    def close(self) -> None:
        self.pool.shutdown()
        self.client.close()
