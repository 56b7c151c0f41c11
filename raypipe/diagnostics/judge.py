"""LLM step judge, pure logic: numbered-step prompts, a tolerant parser of the answers, the keyword baseline,
and label statistics (shares, transition matrix). No Ray and no HTTP here."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from raypipe.core.lexicon import Lexicon, get_lexicon

LABELS = ("propose", "deduce", "verify", "other")
UNLABELLED = "unlabelled"
PROMPT_VERSION = "step-judge-prompt@1"
KEYWORD_VERSION = "keyword-judge@1"

SYSTEM_PROMPT = """You label the steps of a mathematical reasoning trace. Each step gets exactly one label:
- propose: the step proposes a new idea, approach, hypothesis or alternative path ("Perhaps...", "Another way...", "Let's try...").
- deduce: the step carries out the current approach: computation, algebra, logical inference.
- verify: the step checks, re-examines or confirms earlier work or a result.
- other: anything else (restating the problem, summaries, filler).
Answer with JSON only, no prose: {"labels": [{"step": <number>, "label": "<propose|deduce|verify|other>"}, ...]}
with one entry for every step number you were given, in order."""


def user_prompt(problem: str, steps: list[str], first: int, max_step_chars: int, max_problem_chars: int) -> str:
    def clip(s: str, n: int) -> str:
        return s if len(s) <= n else s[:n] + " [...]"

    numbered = "\n\n".join(f"[Step {first + i + 1}]\n{clip(s.strip(), max_step_chars)}" for i, s in enumerate(steps))
    last = first + len(steps)
    return (f"Problem:\n{clip(problem.strip(), max_problem_chars)}\n\nReasoning steps {first + 1} to {last}:\n\n"
            f"{numbered}\n\nLabel steps {first + 1} to {last}.")


def build_requests(problem: str, steps: list[str], steps_per_request: int = 30, max_step_chars: int = 1200,
                   max_problem_chars: int = 2000) -> list[dict]:
    """Chat requests covering all steps in order: [{first, count, messages}]; step numbers are global."""
    out = []
    for first in range(0, len(steps), steps_per_request):
        chunk = steps[first:first + steps_per_request]
        out.append({"first": first, "count": len(chunk), "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_prompt(problem, chunk, first, max_step_chars, max_problem_chars)}]})
    return out


# --- parsing -----------------------------------------------------------------------------------

@dataclass
class Parsed:
    labels: list[str]  # one per requested step; UNLABELLED where the answer said nothing usable
    status: str  # ok | partial | failed
    detail: str = ""
    notes: list[str] = field(default_factory=list)


_PAIR_RE = [
    re.compile(r'"?step"?\s*:\s*"?(\d+)"?\s*,\s*"?label"?\s*:\s*"([A-Za-z_]+)"', re.I),
    re.compile(r'"?label"?\s*:\s*"([A-Za-z_]+)"\s*,\s*"?step"?\s*:\s*"?(\d+)"?', re.I),
    re.compile(r'"(\d+)"\s*:\s*"([A-Za-z_]+)"'),
]
MAX_ANSWER_CHARS = 200_000


def _norm_label(x) -> str | None:
    if not isinstance(x, str):
        return None
    x = x.strip().lower()
    return x if x in LABELS else None


def _from_json(obj, first: int, count: int) -> list[tuple[int, object]] | None:
    """(step, label) pairs from a decoded answer: {"labels": [...]}, a bare list, or {"<step>": label}."""
    if isinstance(obj, dict) and "labels" in obj:
        obj = obj["labels"]
    if isinstance(obj, dict):
        pairs = []
        for k, v in obj.items():
            if str(k).strip().isdigit():
                pairs.append((int(k), v))
        return pairs
    if isinstance(obj, list):
        pairs = []
        for i, item in enumerate(obj):
            if isinstance(item, dict):
                step = item.get("step", item.get("id"))
                try:
                    step = int(step)
                except (TypeError, ValueError):
                    continue
                pairs.append((step, item.get("label")))
            elif isinstance(item, str) and len(obj) == count:  # a bare list of labels, in order
                pairs.append((first + i + 1, item))
        return pairs
    return None


def _json_candidates(text: str):
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        yield fence.group(1)
    yield text
    for open_, close in (("{", "}"), ("[", "]")):
        a, b = text.find(open_), text.rfind(close)
        if -1 < a < b:
            yield text[a:b + 1]


def parse_labels(text: str | None, first: int, count: int) -> Parsed:
    """Labels for steps first+1 .. first+count from a model's answer. Valid, reordered, truncated and garbage
    answers all give a result: steps the answer does not label validly are UNLABELLED."""
    if not text or not text.strip():
        return Parsed([UNLABELLED] * count, "failed", "empty answer")
    text = text[:MAX_ANSWER_CHARS]
    pairs, how = None, "json"
    for cand in _json_candidates(text):
        try:
            pairs = _from_json(json.loads(cand), first, count)
        except (ValueError, RecursionError):
            continue
        if pairs is not None:
            break
    if not pairs:  # truncated or malformed JSON: salvage every complete (step, label) pair
        how = "salvaged"
        pairs = [(int(m.group(1)), m.group(2)) for m in _PAIR_RE[0].finditer(text)]
        pairs += [(int(m.group(2)), m.group(1)) for m in _PAIR_RE[1].finditer(text)]
        if not pairs:
            pairs = [(int(m.group(1)), m.group(2)) for m in _PAIR_RE[2].finditer(text)]
    labels: dict[int, str] = {}
    notes: list[str] = []
    for step, raw in pairs:
        label = _norm_label(raw)
        if not first < step <= first + count:
            notes.append(f"step {step} out of range")
        elif label is None:
            notes.append(f"step {step}: unknown label {str(raw)[:20]!r}")
        elif step in labels and labels[step] != label:
            notes.append(f"step {step}: conflicting labels")
            labels[step] = UNLABELLED
        else:
            labels[step] = label
    out = [labels.get(first + i + 1, UNLABELLED) for i in range(count)]
    n_ok = sum(1 for x in out if x != UNLABELLED)
    if n_ok == 0:
        return Parsed(out, "failed", f"no usable labels ({how})" + (f"; {notes[0]}" if notes else ""), notes)
    if n_ok < count:
        return Parsed(out, "partial", f"{count - n_ok} of {count} steps unlabelled ({how})", notes)
    return Parsed(out, "ok", how if how != "json" else "", notes)


# --- keyword judge -----------------------------------------------------------------------------

PROPOSE_OPENERS = Lexicon("judge-propose", "1", ("Let me try", "Let's try", "Let us try", "What if", "Maybe",
                                                  "Suppose", "Instead", "Let's consider", "Let me consider",
                                                  "Another approach", "Another way", "Or maybe"))
VERIFY_CUES = Lexicon("judge-verify", "1", ("check", "verify", "double-check", "double check", "confirm",
                                             "make sure", "sanity", "plug back", "plugging", "substitute back",
                                             "re-examine", "let me recheck", "recheck", "correct"))
DEDUCE_RE = re.compile(r"=|\\frac|\\cdot|\btherefore\b|\bthus\b|\bhence\b|\bso\b|\bwe get\b|\bgives\b|\d", re.I)


class KeywordJudge:
    """Deterministic offline baseline: propose = a branch marker (the curation lexicon) or a proposal opener;
    verify = a checking cue; deduce = computation or inference cues; otherwise other. First match wins."""

    def __init__(self, lexicon: str = "paper"):
        self.lexicon = get_lexicon(lexicon)
        self.version = f"{KEYWORD_VERSION}+{self.lexicon.tag}"
        self._propose = re.compile(f"(?:{self.lexicon.pattern()})|(?:{PROPOSE_OPENERS.pattern()})".replace("(?i)", ""),
                                   0 if self.lexicon.case_sensitive else re.I)
        self._verify = re.compile(VERIFY_CUES.pattern())

    def label(self, step: str) -> str:
        if self._propose.search(step):
            return "propose"
        if self._verify.search(step):
            return "verify"
        if DEDUCE_RE.search(step):
            return "deduce"
        return "other"

    def label_steps(self, steps: list[str]) -> list[str]:
        return [self.label(s) for s in steps]


# --- statistics --------------------------------------------------------------------------------

def transition_counts(sequences: list[list[str]]) -> np.ndarray:
    """counts[i, j] = consecutive steps labelled LABELS[i] then LABELS[j], within each trajectory. Pairs with an
    unlabelled step are skipped (not bridged)."""
    idx = {lab: i for i, lab in enumerate(LABELS)}
    counts = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    for seq in sequences:
        for a, b in zip(seq, seq[1:]):
            if a in idx and b in idx:
                counts[idx[a], idx[b]] += 1
    return counts


def transition_probs(counts: np.ndarray) -> list[list[float | None]]:
    rows = counts.sum(axis=1)
    return [[float(c / r) if r else None for c in row] for row, r in zip(counts, rows)]


def label_shares(sequences: list[list[str]]) -> tuple[dict[str, int], dict[str, float | None]]:
    counts = {lab: 0 for lab in (*LABELS, UNLABELLED)}
    for seq in sequences:
        for x in seq:
            counts[x if x in counts else UNLABELLED] += 1
    labelled = sum(counts[lab] for lab in LABELS)
    return counts, {lab: (counts[lab] / labelled if labelled else None) for lab in LABELS}


def propose_share(labels: list[str]) -> float | None:
    labelled = [x for x in labels if x in LABELS]
    return sum(x == "propose" for x in labelled) / len(labelled) if labelled else None


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):  # average ranks of ties
        m = x == v
        ranks[m] = ranks[m].mean()
    return ranks


def correlation(xs: list, ys: list) -> dict:
    """Pearson and Spearman correlation over the pairs where both values exist."""
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    out = {"n": len(pairs), "pearson": None, "spearman": None}
    if len(pairs) < 3:
        return out
    a, b = np.array(pairs, dtype=float).T
    if a.std() == 0 or b.std() == 0:
        return out
    out["pearson"] = float(np.corrcoef(a, b)[0, 1])
    out["spearman"] = float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])
    return out
