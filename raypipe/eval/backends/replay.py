"""`replay` backend: responses generated elsewhere (JSONL/Parquet with problem + response), matched to the
benchmark's problems by normalised problem text; the j-th stored response of a problem is its sample j."""
from __future__ import annotations

from collections import defaultdict

from raypipe.core import io as rio
from raypipe.core.schema import problem_id
from raypipe.eval.backends.base import BACKENDS, Backend
from raypipe.eval.sampling import GenRequest, GenResult, Sampling


@BACKENDS.register("replay")
class ReplayBackend(Backend):
    def __init__(self, responses: list[str] | None, storage: rio.Storage):
        if not responses:
            raise ValueError("the replay backend needs --responses FILE_OR_FOLDER (problem + response fields)")
        self.uris = responses
        self.storage = storage
        self.by_problem: dict[str, list[dict]] = defaultdict(list)
        self.files: list[str] = []

    @classmethod
    def from_config(cls, config) -> "ReplayBackend":
        return cls(config.responses, config.storage())

    def setup(self) -> "ReplayBackend":
        for uri in self.uris:
            for f in rio.list_inputs(uri, self.storage):
                self.files.append(f)
                for row in rio.iter_raw_rows(f, self.storage):
                    rec = row.value if isinstance(row.value, dict) else {}
                    problem = rec.get("problem") or rec.get("question")
                    response = rec.get("response") or rec.get("output") or rec.get("completion")
                    if isinstance(problem, str) and isinstance(response, str):
                        self.by_problem[problem_id(problem)].append({"text": response, "file": f})
        return self

    def generate(self, requests: list[GenRequest], sampling: Sampling) -> list[GenResult]:
        out = []
        for r in requests:
            j = int(r.key.rsplit("/", 1)[1])
            stored = self.by_problem.get(problem_id(r.problem), [])
            if j < len(stored):
                out.append(GenResult(r.key, stored[j]["text"], "stop"))
            else:
                out.append(GenResult(r.key, finish_reason="error",
                                     error=f"no stored response #{j} for this problem ({len(stored)} stored)"))
        return out

    def info(self) -> dict:
        return {"backend": self.name, "engine": "stored responses", "files": self.files,
                "model": {"path": ",".join(self.uris), "sha256": None}}

    def close(self) -> None:
        pass
