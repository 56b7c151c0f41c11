"""What manifest.json and report.html are built from: per-chunk aggregates of the decided records, merged in any order.

`aggregate(decided)` reads one chunk's records (after the dedup fixes and the decision) and returns a small
JSON-serialisable dict; `merge(aggs)` adds such dicts up. Nothing in it grows with the number of records:

- counts (records, decisions, verdicts, where answers came from, empty parts, unread text fields, duplicates,
  renamed ids) are Arrow group-by counts, summed on merge: exact;
- branch_ratio per source and verdict group (correct, other, unverified) is a distribution: the exact
  (value, count) pairs while there are at most `EXACT_VALUES` distinct values, else counts in `FINE_BINS` fixed
  bins over [0, 1] (width 1 / FINE_BINS), with the exact n, min and max. A merge stays exact exactly when the union
  of the values has at most EXACT_VALUES distinct ones, whatever the order, and binning commutes with adding, so
  the merge is associative and order-independent. Quantiles are exact (numpy's default, linear) from the pairs and
  approximate, within one bin width, from the bins: `quantiles` says which;
- the steps-against-length sample keeps, per source, the `SAMPLE_PER_SOURCE` records with the smallest hash of
  (source, id): the same records whatever the chunking and the merge order;
- dropped rows are counted by the kind of their reason (raypipe.core.reasons), and the report's examples, a few
  records of each kind with their text cut to a bound, are picked the same way whatever the order
  (raypipe.curate.examples).

Plain Python on Arrow: no Ray.
"""
from __future__ import annotations

import hashlib
import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.core.policy import Policy
from raypipe.core.verify import CORRECT, NO_ANSWER, UNVERIFIED
from raypipe.curate.examples import kinds, merge_examples, pick

EXACT_VALUES = 2048  # distinct branch_ratio values kept exactly per (source, group) before binning
FINE_BINS = 10_000  # fixed bins over [0, 1] once binned: width 1e-4
SAMPLE_PER_SOURCE = 1000  # records per source in the steps-against-length sample
GROUPS = ("correct", "other", "unverified")
COUNTERS = ("decisions", "verdicts", "answer_source", "unconsumed_text", "drop_reasons")
# boxed_in_reasoning: no_answer records whose reasoning finished with a \boxed{} in it (what --answer-from
# final-or-thinking would grade)
SUMS = ("records", "empty_thinking", "empty_final", "duplicates", "renamed_ids", "boxed_in_reasoning")
REASON_KINDS = 32  # distinct drop reasons counted per source; the rest are "other"
BOXED = r"\\(boxed|fbox)\s*\{"  # as raypipe.core.verify finds a boxed answer


def _source_entry() -> dict:
    return {**{k: 0 for k in SUMS}, **{k: {} for k in COUNTERS}, "branch_ratio": {}, "sample": [],
            "examples": {}}


def _count(table: pa.Table, keys: list[str]) -> list[tuple]:
    """(key values..., n) for each distinct combination of `keys`."""
    if table.num_rows == 0:
        return []
    g = table.select(keys).group_by(keys).aggregate([([], "count_all")])
    return list(zip(*(g.column(k).to_pylist() for k in keys), g.column("count_all").to_pylist()))


def _col(table: pa.Table, name: str, type_=pa.string()) -> pa.ChunkedArray | pa.Array:
    return table.column(name) if name in table.column_names else pa.nulls(table.num_rows, type_)


# ---- distributions --------------------------------------------------------------------------------------------

def _bin(v: float) -> int:
    return min(FINE_BINS - 1, max(0, int(math.floor(v * FINE_BINS))))


def _dist(pairs: dict[float, int]) -> dict:
    n = sum(pairs.values())
    out = {"n": n, "min": min(pairs), "max": max(pairs)}
    if len(pairs) <= EXACT_VALUES:
        return {**out, "values": sorted([v, c] for v, c in pairs.items())}
    bins: Counter = Counter()
    for v, c in pairs.items():
        bins[_bin(v)] += c
    return {**out, "bins": sorted([i, c] for i, c in bins.items())}


def _as_bins(d: dict) -> Counter:
    if "bins" in d:
        return Counter({i: c for i, c in d["bins"]})
    out: Counter = Counter()
    for v, c in d["values"]:
        out[_bin(v)] += c
    return out


def merge_dist(a: dict, b: dict) -> dict:
    n, lo, hi = a["n"] + b["n"], min(a["min"], b["min"]), max(a["max"], b["max"])
    if "values" in a and "values" in b:
        pairs: Counter = Counter()
        for v, c in a["values"] + b["values"]:
            pairs[v] += c
        return _dist(pairs)
    bins = _as_bins(a) + _as_bins(b)
    return {"n": n, "min": lo, "max": hi, "bins": sorted([i, c] for i, c in bins.items())}


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's linear interpolation, to the last bit."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def quantile(d: dict | None, q: float) -> float | None:
    """numpy.quantile's default (linear) method: exact from values, within one bin width from bins."""
    if not d or not d["n"]:
        return None
    n = d["n"]
    if q <= 0:
        return float(d["min"])
    if q >= 1:
        return float(d["max"])
    h = (n - 1) * q
    lo = int(math.floor(h))
    if "values" in d:
        values = np.array([v for v, _ in d["values"]], dtype=float)
        cum = np.cumsum([c for _, c in d["values"]])
        a = values[np.searchsorted(cum, lo, side="right")]
        b = values[np.searchsorted(cum, min(lo + 1, n - 1), side="right")]
        return float(_lerp(a, b, h - lo))
    idx = np.array([i for i, _ in d["bins"]])
    cum = np.cumsum([c for _, c in d["bins"]])
    centre = (idx[np.searchsorted(cum, lo, side="right")] + 0.5) / FINE_BINS
    return float(min(max(centre, d["min"]), d["max"]))


def is_exact(d: dict | None) -> bool:
    return not d or "values" in d


def histogram(d: dict | None, edges: np.ndarray) -> np.ndarray:
    """Counts in `edges` (exact from values; from the bins' centres once binned)."""
    if not d or not d["n"]:
        return np.zeros(len(edges) - 1)
    if "values" in d:
        x, w = [v for v, _ in d["values"]], [c for _, c in d["values"]]
    else:
        x, w = [(i + 0.5) / FINE_BINS for i, _ in d["bins"]], [c for _, c in d["bins"]]
    return np.histogram(np.clip(x, edges[0], edges[-1]), bins=edges, weights=w)[0]


# ---- one chunk ------------------------------------------------------------------------------------------------

def sample_key(source: str, rid: str) -> str:
    return hashlib.blake2b(f"{source}\0{rid}".encode(), digest_size=8).hexdigest()


def _sample(t: pa.Table) -> dict[str, list]:
    t = t.filter(pc.and_(pc.is_valid(t.column("n_tokens")), pc.is_valid(t.column("n_steps"))))
    keys = [sample_key(s, i) for s, i in zip(t.column("source").to_pylist(), t.column("id").to_pylist())]
    t = t.append_column("key", pa.array(keys, pa.string())).sort_by([("source", "ascending"), ("key", "ascending")])
    out: dict[str, list] = {}
    for s, k, x, y in zip(*(t.column(c).to_pylist() for c in ("source", "key", "n_tokens", "n_steps"))):
        rows = out.setdefault(s, [])
        if len(rows) < SAMPLE_PER_SOURCE:
            rows.append([k, x, y])
    return out


def _boxed_in_reasoning(decided: pa.Table) -> pa.Array:
    """no_answer records with a finished reasoning that holds a \\boxed{}: the reasoning text is searched only for
    those (a few), not for every record."""
    candidate = pc.fill_null(pc.and_(pc.equal(decided.column("verdict"), NO_ANSWER),
                                     _col(decided, "thought_complete", pa.bool_())), False)
    out = np.zeros(decided.num_rows, dtype=bool)
    where = np.flatnonzero(candidate.to_numpy(zero_copy_only=False))
    if len(where):
        text = pc.take(_col(decided, "thinking"), pa.array(where))
        out[where] = pc.fill_null(pc.match_substring_regex(text, BOXED), False).to_numpy(zero_copy_only=False)
    return pa.array(out)


def aggregate(decided: pa.Table, chunk: str | None = None, policy: Policy | None = None) -> dict:
    """The aggregate of one chunk's decided records; `chunk` names it for the per-chunk balance check, `policy` (the
    one that decided them) gives the examples' rank keys."""
    n = decided.num_rows
    kept = sum(c for d, c in _count(decided, ["decision"]) if d == "keep")
    dropped = sum(c for d, c in _count(decided, ["decision"]) if d == "drop")
    out: dict = {"sources": {}, "chunks": {chunk: {"records": n, "kept": kept, "dropped": dropped}} if chunk else {}}
    if n == 0:
        return out
    src = decided.column("source")
    answer = pc.fill_null(_col(decided, "answer_source"), "")
    prefix = pc.list_element(pc.split_pattern(answer, ":", max_splits=1), 0)
    t = pa.table({
        "source": src, "decision": decided.column("decision"), "verdict": decided.column("verdict"),
        "answer_source": pc.if_else(pc.equal(prefix, ""), "none", prefix),
        "empty_thinking": pc.equal(pc.fill_null(decided.column("n_steps"), 0), 0).cast(pa.int64()),
        "empty_final": pc.equal(pc.fill_null(decided.column("final_chars"), 0), 0).cast(pa.int64()),
        "duplicates": pc.is_valid(_col(decided, "duplicate_of")).cast(pa.int64()),
        "renamed_ids": pc.is_valid(_col(decided, "input_id")).cast(pa.int64()),
        "boxed_in_reasoning": _boxed_in_reasoning(decided).cast(pa.int64()),
    })
    sums = t.group_by("source").aggregate([([], "count_all")] + [(k, "sum") for k in SUMS[1:]])
    for row in sums.to_pylist():
        out["sources"][row["source"]] = {**_source_entry(), "records": row["count_all"],
                                        **{k: row[f"{k}_sum"] for k in SUMS[1:]}}
    acc = out["sources"]
    for key in ("decisions", "verdicts", "answer_source"):
        col = {"decisions": "decision", "verdicts": "verdict"}.get(key, key)
        for s, v, c in _count(t, ["source", col]):
            acc[s][key][v] = c
    # the kind of a drop's reason (raypipe.core.reasons: "rule:top", "verdict:no_answer", "duplicate"), at most
    # REASON_KINDS per source
    reasons = pa.table({"source": src, "decision": decided.column("decision"), "kind": kinds(_col(decided, "reason"))})
    for s, k, c in _count(reasons.filter(pc.equal(reasons.column("decision"), "drop")), ["source", "kind"]):
        acc[s]["drop_reasons"][k] = c
    for entry in acc.values():
        entry["drop_reasons"] = _bounded(entry["drop_reasons"])
    fields = pc.split_pattern(pc.fill_null(_col(decided, "unconsumed_text"), ""), ",")
    flat = pa.table({"source": pc.take(src, pc.list_parent_indices(fields)), "field": pc.list_flatten(fields)})
    for s, f, c in _count(flat.filter(pc.not_equal(flat.column("field"), "")), ["source", "field"]):
        acc[s]["unconsumed_text"][f] = c
    verdict = decided.column("verdict")
    group = pc.if_else(pc.equal(verdict, CORRECT), "correct", pc.if_else(pc.equal(verdict, UNVERIFIED), "unverified", "other"))
    ratio = decided.column("branch_ratio").cast(pa.float64())
    r = pa.table({"source": src, "group": group, "ratio": ratio})
    r = r.filter(pc.and_(pc.is_valid(ratio), pc.invert(pc.is_nan(pc.fill_null(ratio, 0.0)))))
    pairs: dict[tuple, dict[float, int]] = {}
    for s, g, v, c in _count(r, ["source", "group", "ratio"]):
        pairs.setdefault((s, g), {})[v] = c
    for (s, g), p in pairs.items():
        acc[s]["branch_ratio"][g] = _dist(p)
    for s, rows in _sample(decided.select(["source", "id", "n_tokens", "n_steps"])).items():
        acc[s]["sample"] = rows
    for s, examples in pick(decided, policy).items():
        acc[s]["examples"] = examples
    return out


# ---- merging --------------------------------------------------------------------------------------------------

def _bounded(counts: dict[str, int]) -> dict[str, int]:
    """At most REASON_KINDS entries: the largest, and the rest added up under "other"."""
    if len(counts) <= REASON_KINDS:
        return counts
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ranked[:REASON_KINDS - 1])
    out["other"] = out.get("other", 0) + sum(c for _, c in ranked[REASON_KINDS - 1:])
    return out


def _merge_source(a: dict, b: dict) -> dict:
    out = {k: a.get(k, 0) + b.get(k, 0) for k in SUMS}
    for k in COUNTERS:
        out[k] = dict(Counter(a.get(k, {})) + Counter(b.get(k, {})))
    out["drop_reasons"] = _bounded(out["drop_reasons"])
    out["branch_ratio"] = {g: (merge_dist(a["branch_ratio"][g], b["branch_ratio"][g])
                               if g in a["branch_ratio"] and g in b["branch_ratio"]
                               else a["branch_ratio"].get(g) or b["branch_ratio"][g])
                           for g in GROUPS if g in a["branch_ratio"] or g in b["branch_ratio"]}
    out["sample"] = sorted(a["sample"] + b["sample"])[:SAMPLE_PER_SOURCE]
    out["examples"] = merge_examples(a.get("examples", {}), b.get("examples", {}))
    return out


def merge(aggs: list[dict]) -> dict:
    """The aggregate of the union of the chunks: counts add, distributions merge, the sample keeps the smallest keys."""
    out: dict = {"sources": {}, "chunks": {}}
    for agg in aggs:
        for s, entry in agg["sources"].items():
            out["sources"][s] = _merge_source(out["sources"][s], entry) if s in out["sources"] else entry
        for key, c in agg["chunks"].items():
            prev = out["chunks"].get(key)
            out["chunks"][key] = {k: prev[k] + v for k, v in c.items()} if prev else dict(c)
    out["sources"] = dict(sorted(out["sources"].items()))
    out["chunks"] = dict(sorted(out["chunks"].items()))
    return out


def branch_ratios(entry: dict, groups: tuple[str, ...]) -> dict | None:
    """One source's distribution over several verdict groups."""
    dists = [entry["branch_ratio"][g] for g in groups if g in entry["branch_ratio"]]
    out = None
    for d in dists:
        out = d if out is None else merge_dist(out, d)
    return out


def check_balance(stats: list[dict], merged: dict) -> list[dict]:
    """The chunks whose records (phase-1 marker) differ from kept + dropped (phase 3) + rejected (phase 1)."""
    failed = []
    for st in stats:
        c = merged["chunks"].get(st["key"], {"kept": 0, "dropped": 0})
        records = st.get("records", st.get("rows", st.get("input", 0)))
        if records != c["kept"] + c["dropped"] + st["rejected"]:
            failed.append({"chunk": st["key"], "uri": st.get("uri"), "records": records, "kept": c["kept"],
                           "dropped": c["dropped"], "rejected": st["rejected"]})
    return failed
