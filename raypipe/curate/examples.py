"""The report's examples: per source, a few records of each kind, picked the same whatever the chunking and the merge
order, with their text cut to a bound (the aggregate and the report never grow with the data).

Each kind is a total order over the records it admits; a chunk keeps its first PER_CATEGORY records in that order and
a merge keeps the first PER_CATEGORY of the union, so the result is the first PER_CATEGORY of the whole dataset:

- most_branching: dropped rows (any reason), the highest branch_score first;
- over_threshold: rows dropped by the selection rule, the lowest rank key first (the rows just over the cut);
- under_threshold: kept verified-correct rows, the highest rank key first (the rows just under the cut);
- reason:<kind>: rows dropped for another reason (verdict:wrong, verdict:no_answer, duplicate, …), a deterministic
  sample (the smallest tie-break hashes of (source, id)).

The rank key and tie-break are the decision's own (raypipe.core.policy), so "just under" is what the rule compared.
Plain Python on Arrow: no Ray.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.core.policy import Policy, rank_keys
from raypipe.core.reasons import reason_kind
from raypipe.core.rules import RULES
from raypipe.core.verify import CORRECT

PER_CATEGORY = 3
THINKING_CHARS = 12_000  # of the reasoning; the view says how much was left out
TEXT_CHARS = 1_500  # problem and final part
ANSWER_CHARS = 300
FIXED = ("most_branching", "over_threshold", "under_threshold")
NUMBERS = ("n_steps", "n_branch_steps", "branch_ratio", "branch_score", "threshold", "n_tokens")
TEXTS = ("decision", "reason", "verdict")
BULK = ("response", "thinking", "final", "problem", "meta")  # ranked without; taken for the picked rows only


def _col(t: pa.Table, name: str, type_=pa.string()):
    return t.column(name) if name in t.column_names else pa.chunked_array([pa.nulls(t.num_rows, type_)])


def kinds(reasons) -> pa.Array:
    """reason_kind of each reason, computed once per distinct reason."""
    reasons = pc.fill_null(reasons, "")
    enc = pc.dictionary_encode(reasons.combine_chunks() if isinstance(reasons, pa.ChunkedArray) else reasons)
    mapped = pa.array([reason_kind(r) for r in enc.dictionary.to_pylist()], pa.string())
    return pc.take(mapped, enc.indices)


def _cut(text: str | None, limit: int) -> tuple[str, int]:
    text = text or ""
    return (text, 0) if len(text) <= limit else (text[:limit], len(text) - limit)


def _example(row: dict, order: list) -> dict:
    thinking, cut = _cut(row.get("thinking"), THINKING_CHARS)
    out = {"order": order, "id": row["id"], "source": row["source"], "thinking": thinking, "cut_chars": cut,
           "problem": _cut(row.get("problem"), TEXT_CHARS)[0], "final": _cut(row.get("final"), TEXT_CHARS)[0],
           "answer_extracted": row.get("answer_extracted") and _cut(row["answer_extracted"], ANSWER_CHARS)[0],
           "reference_answer": row.get("reference_answer") and _cut(row["reference_answer"], ANSWER_CHARS)[0]}
    for k in TEXTS + NUMBERS:
        v = row.get(k)
        out[k] = None if isinstance(v, float) and v != v else v
    return out


def _first(t: pa.Table, order: list[tuple[str, str]]) -> dict[str, list[int]]:
    """Per source, the positions in `t` of its first PER_CATEGORY rows in `order` (then id)."""
    ranked = t.select(["source", "id", *(c for c, _ in order)]).append_column("_at", pa.array(np.arange(t.num_rows)))
    ranked = ranked.sort_by([("source", "ascending"), *order, ("id", "ascending")])
    out: dict[str, list[int]] = {}
    for s, at in zip(ranked.column("source").to_pylist(), ranked.column("_at").to_pylist()):
        got = out.setdefault(s, [])
        if len(got) < PER_CATEGORY:
            got.append(at)
    return out


def pick(decided: pa.Table, policy: Policy | None = None) -> dict[str, dict[str, list[dict]]]:
    """{source: {kind: [example, …]}} for one table of decided records (each list in its kind's order)."""
    if decided.num_rows == 0:
        return {}
    policy = policy or Policy()
    kind = kinds(_col(decided, "reason"))
    dropped = pc.fill_null(pc.equal(decided.column("decision"), "drop"), False)
    by_rule = pc.and_(dropped, pc.starts_with(kind, "rule:"))
    kept = pc.fill_null(pc.and_(pc.equal(decided.column("decision"), "keep"),
                                pc.equal(decided.column("verdict"), CORRECT)), False)
    score = pc.fill_null(_col(decided, "branch_score", pa.float64()), float("nan"))
    candidates = pc.or_(dropped, kept)
    bulk = decided.select([c for c in BULK if c in decided.column_names])
    t = decided.drop_columns(bulk.column_names).filter(candidates)
    t = t.append_column("_row", pa.array(np.flatnonzero(candidates.to_numpy(zero_copy_only=False))))
    kind, by_rule, kept, dropped = (pc.filter(x, candidates) for x in (kind, by_rule, kept, dropped))
    score = pc.filter(score, candidates).to_numpy(zero_copy_only=False)
    primary, tb = rank_keys(t, policy, score) if t.num_rows else (np.zeros(0), np.zeros(0, dtype=np.int64))
    has_score, ranked = ~np.isnan(score), np.isfinite(primary)
    masks = {"most_branching": (dropped.to_numpy(zero_copy_only=False) & has_score, -score, "ascending")}
    if RULES.get(policy.rule).drops:  # a rule that drops nothing has no threshold to be near
        masks["over_threshold"] = (by_rule.to_numpy(zero_copy_only=False) & ranked, primary, "ascending")
        masks["under_threshold"] = (kept.to_numpy(zero_copy_only=False) & ranked, primary, "descending")
    other = dropped.to_numpy(zero_copy_only=False) & ~by_rule.to_numpy(zero_copy_only=False)
    names = np.asarray(kind.to_pylist(), dtype=object)
    for k in sorted(set(names[other])):
        masks[f"reason:{k}"] = (other & (names == k), None, None)
    out: dict[str, dict[str, list[dict]]] = {}
    for category, (mask, key, direction) in masks.items():
        if not mask.any():
            continue
        sub = t.filter(pa.array(mask))
        cols, order = {"_tb": tb[mask]}, [("_tb", direction or "ascending")]
        if key is not None:
            cols = {"_key": key[mask], **cols}
            order = [("_key", direction), *order]
        for name, values in cols.items():
            sub = sub.append_column(name, pa.array(values))
        for source, rows in _first(sub, order).items():
            picked = sub.take(rows)
            texts = bulk.take(picked.column("_row"))
            out.setdefault(source, {})[category] = [
                _example({**r, **full}, _order(r, direction, key is not None))
                for r, full in zip(picked.to_pylist(), texts.to_pylist())]
    return out


def _order(row: dict, direction: str | None, keyed: bool) -> list:
    """The sort key a merge compares (ascending), the same order the chunk sorted by."""
    sign = -1 if direction == "descending" else 1
    return ([sign * float(row["_key"])] if keyed else []) + [sign * int(row["_tb"]), row["id"]]


def merge_examples(a: dict[str, list[dict]], b: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """One source's examples of two aggregates: per kind, the first PER_CATEGORY of the union."""
    return {k: sorted(a.get(k, []) + b.get(k, []), key=lambda e: e["order"])[:PER_CATEGORY]
            for k in sorted(set(a) | set(b))}


def example_ids(examples: dict[str, list[dict]]) -> dict[str, list[str]]:
    return {k: [e["id"] for e in v] for k, v in examples.items()}
