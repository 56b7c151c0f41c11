"""Online scoring: trajectories scored one by one (or a few at a time) with a curation run's exact decisions.

The decision comes from the batch job's own `Scorer.score` + `Scorer.decide`, under the `Policy` stored in the
run's manifest.json and the ScoringConfig of the run's config. Rows are normalised by the `flat` input format,
as the batch job does, so a row posted here gets the decision the batch job gave it.
No Ray here: the Serve application (raypipe.online.app) wraps this.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from raypipe.core import io
from raypipe.core.errors import RowError
from raypipe.core.formats import FORMATS
from raypipe.core.policy import Policy
from raypipe.core.proxies import PROXIES
from raypipe.core.registry import load_plugins
from raypipe.core.schema import records_table
from raypipe.core.scoring import DECISION_FIELDS, SCORE_FIELDS, Scorer, ScoringConfig
from raypipe.core.versions import DECISION_VERSIONS  # manifest versions that change a decision when they differ
from raypipe.core.versions import versions as current_versions

DEFAULT_SOURCE = "online"
TEXT_FIELDS = ("id", "source", "problem", "reference_answer", "response", "thinking", "meta")


class ManifestError(ValueError):
    """A manifest that cannot be used for online scoring."""


class Trajectory(BaseModel):
    """One trajectory in the record schema's flat form. Other fields are accepted and ignored (batch: `meta`)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "id": "aime24_0", "source": "my-model", "problem": "What is $1+1$?", "reference_answer": "2",
        "response": "<think>\nOne plus one.\n\nPerhaps it is 2.\n</think>\nThe answer is $\\boxed{2}$."}]})

    problem: str = Field(description="the problem text")
    response: str = Field(description="the full response: reasoning markup and final part (or the final part alone, "
                          "with the reasoning in reasoning_content)")
    reasoning_content: str | None = Field(None, description="the reasoning, when it is not in the response's markup")
    reference_answer: str | None = Field(None, description="reference answer (alias: answer); none: verdict "
                                         "unverified")
    answer: str | None = Field(None, description="alias of reference_answer, as in the batch job's flat layout")
    source: str | None = Field(None, description="source (model) name: picks the per-source threshold")
    model: str | None = Field(None, description="alias of source, as in the batch job")
    id: str | None = Field(None, description="row id (default: a stable hash of source, problem and response)")


_TRAJECTORY = TypeAdapter(Trajectory)


def invalid_item(item: Any) -> str | None:
    """Why one item of a batch does not fit the request model (None when it does): the batch route answers it with
    a per-item reject and scores the others."""
    if not isinstance(item, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
        return f"an item is a JSON object (a trajectory), not {kind.get(type(item), 'null')}"
    try:
        _TRAJECTORY.validate_python(item)
    except ValidationError as e:
        return "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'item'}: {err['msg']}"
                         for err in e.errors(include_url=False, include_input=False))
    return None


def rejected(error: str) -> dict:
    """The result of a row that cannot be scored (the shape score_rows gives it)."""
    return {"decision": "reject", "reason": f"invalid record: {error}", "error": error}


PY_TYPES = {pa.string(): str, pa.float64(): float, pa.int64(): int, pa.bool_(): bool}
DESCRIPTIONS = {
    "decision": "keep | drop | reject",
    "threshold": "the source's branch_score threshold (or the default one)",
    "known_source": "false: the source was not in the curation run",
    "error": "why a row could not be normalised (decision 'reject')",
}
RECORD_COLUMNS = [("id", pa.string()), ("source", pa.string()), ("problem_id", pa.string()),
                  ("thought_complete", pa.bool_()), ("markup", pa.string())]


def result_model() -> type[BaseModel]:
    """The response model: the batch job's columns for one row, from the Scorer's fields and every registered
    proxy's own (a plugin's proxy fields pass through too: extra fields are allowed)."""
    columns = [*RECORD_COLUMNS, *SCORE_FIELDS, *(f for _, p in PROXIES.items() for f in p.fields), *DECISION_FIELDS]
    fields: dict = {name: (PY_TYPES[typ] | None, Field(None, description=DESCRIPTIONS.get(name)))
                    for name, typ in columns}
    fields.update(decision=(str, Field(description=DESCRIPTIONS["decision"])), reason=(str, ...),
                  known_source=(bool | None, Field(None, description=DESCRIPTIONS["known_source"])),
                  error=(str | None, Field(None, description=DESCRIPTIONS["error"])))
    return create_model("ScoreResult", __config__=ConfigDict(extra="allow"), __doc__=(
        "The batch job's columns for one row. A row that cannot be normalised has decision 'reject' and an error."),
        **fields)


ScoreResult = result_model()


@dataclass(frozen=True)
class CurationRun:
    """What a curation run's manifest fixes for online scoring."""

    uri: str
    policy: Policy
    scoring: ScoringConfig
    config_hash: str | None
    versions: dict
    max_response_chars: int

    def describe(self) -> dict:
        return {
            "manifest": self.uri,
            "config_hash": self.config_hash,
            "lexicon": self.scoring.lexicon,
            "segmenter": self.scoring.segmenter,
            "verify_timeout_s": self.scoring.verify_timeout_s,
            "rule": self.policy.rule,
            "proxy": self.policy.proxy,
            "drop_top": self.policy.drop_top,
            "keep_incorrect": self.policy.keep_incorrect,
            "reference_source": self.policy.reference_source,
            "thresholds": {s: (t.score if t else None) for s, t in self.policy.thresholds.items()},
            "default_threshold": self.policy.default_threshold,
            "manifest_versions": self.versions,
        }


def load_run(uri: str, storage: io.Storage | None = None, verify_workers: int = 1,
             allow_version_mismatch: bool = False) -> CurationRun:
    """Read manifest.json (a file, or a curation output folder holding one; local or s3://)."""
    storage = storage or io.Storage()
    if not uri.endswith(".json"):
        uri = io.join(uri, "manifest.json")
    text = io.read_text(uri, storage)
    if text is None:
        raise ManifestError(f"no manifest at {uri}")
    try:
        manifest = json.loads(text)
        config = manifest["config"]
        load_plugins(config.get("plugins") or [])  # the run's own operators, if it used any
        policy = Policy.model_validate(manifest["policy"])
        if policy.reference_steps_file and not policy.reference_steps:  # the run wrote them beside the manifest
            policy = policy.model_copy(update={"reference_steps": _reference_steps(uri, policy, storage)})
        fields = {k: config[k] for k in ScoringConfig.model_fields if k in config}
        scoring = ScoringConfig(**{**fields, "verify_workers": verify_workers})
    except (ValueError, KeyError, TypeError) as e:
        raise ManifestError(f"{uri} is not a usable curation manifest: {type(e).__name__}: {e}") from None
    recorded = manifest.get("versions", {})
    now = current_versions(scoring.lexicon, scoring.grader)
    differ = {k: (recorded.get(k), now.get(k)) for k in DECISION_VERSIONS if recorded.get(k) != now.get(k)}
    if differ and not allow_version_mismatch:
        raise ManifestError(f"{uri} was written with other versions (manifest, here): {differ}; decisions could "
                            "differ from the batch job's. Rerun the curation, or allow the mismatch explicitly")
    return CurationRun(uri=uri, policy=policy, scoring=scoring, config_hash=manifest.get("config_hash"),
                versions=recorded, max_response_chars=int(config.get("max_response_chars", 16 << 20)))


def _reference_steps(manifest_uri: str, policy: Policy, storage: io.Storage) -> dict[str, float]:
    """problem_id -> the reference source's mean steps, from the Parquet folder the curation run wrote."""
    base = manifest_uri[: -len("manifest.json")].rstrip("/") or "."
    table = io.read_parquet_dir(io.join(base, policy.reference_steps_file), storage)
    if table is None:
        raise ManifestError(f"{manifest_uri}: reference steps not found under {policy.reference_steps_file}")
    return dict(zip(table.column("problem_id").to_pylist(), table.column("steps").to_pylist()))


class OnlineScorer:
    """The batch job's Scorer and Policy behind a rows-in, results-out call. Not thread-safe: one caller at a time."""

    def __init__(self, run: CurationRun, default_source: str = DEFAULT_SOURCE):
        self.run = run
        self.default_source = default_source
        self.scorer = Scorer(run.scoring)
        self.columns = [n for n, _ in (*RECORD_COLUMNS, *self.scorer.fields, *DECISION_FIELDS)]
        self.flat = FORMATS.create("flat")

    def setup(self) -> "OnlineScorer":
        self.scorer.setup()
        return self

    def close(self) -> None:
        self.scorer.close()

    def normalize(self, row: dict, index: int) -> dict:
        rec = self.flat.normalize(row, self.default_source, "online", index, self.run.policy.markup_by_source)
        for field in TEXT_FIELDS:  # JSON may carry lone surrogates ("\\ud800"), which Arrow cannot hold
            text = rec[field]
            if not text.isascii():  # O(1) for ASCII text: CPython records it
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise RowError(f"field '{field}' is not valid Unicode text (lone surrogate)") from None
        if len(rec["response"]) > self.run.max_response_chars:
            raise RowError(f"response of {len(rec['response'])} chars is over the run's limit of "
                           f"{self.run.max_response_chars}")
        return rec

    def score_rows(self, rows: list[dict]) -> list[dict]:
        """One result dict (ScoreResult's fields) per input row, in order; bad rows get decision 'reject'."""
        results: list[dict | None] = [None] * len(rows)
        good, where = [], []
        for i, row in enumerate(rows):
            try:
                good.append(self.normalize(row, i))
                where.append(i)
            except RowError as e:
                results[i] = rejected(str(e))
        if good:
            decided = self.scorer.decide(self.scorer.score(records_table(good)), self.run.policy)
            cols = decided.select(self.columns).to_pydict()
            known = self.run.policy.thresholds
            for j, i in enumerate(where):
                out = {k: cols[k][j] for k in self.columns}
                out["known_source"] = out["source"] in known
                results[i] = out
        return results  # type: ignore[return-value]
