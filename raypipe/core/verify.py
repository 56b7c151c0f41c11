"""Answer extraction and equivalence, with a wall-clock bound on every comparison.

Two verbs, as in math-verify: `extract_answer(final_part)` and `Verifier.grade_many(pairs)`.
Equivalence is Hugging Face math-verify's LaTeX path (latex2sympy's parser); its plain-expression path
is never used, because it hands the text to sympy's `parse_expr` (which evaluates Python). Comparisons run in
worker processes that are killed and replaced when they overrun, so the bound holds inside Ray actors and
Serve replicas, where math-verify's own `signal.alarm` timeout cannot work.
"""
from __future__ import annotations

import os
import subprocess
import sys
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from multiprocessing.connection import Connection, wait

CORRECT, WRONG, NO_ANSWER = "correct", "wrong", "no_answer"
UNPARSEABLE_REFERENCE, TIMEOUT, ERROR, UNVERIFIED = "unparseable_reference", "timeout", "error", "unverified"
VERDICTS = (CORRECT, WRONG, NO_ANSWER, UNPARSEABLE_REFERENCE, TIMEOUT, ERROR, UNVERIFIED)
VERIFIER_VERSION = "raypipe-verify-2/math-verify-latex"

MAX_ANSWER_CHARS = 2000
MAX_BRACE_DEPTH = 100
CPU_GRACE_S = 5  # CPU seconds past the bound after which an orphaned worker is ended by the kernel (RLIMIT_CPU)

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FALLBACKS = [
    re.compile(r"final answer is\s*[:：]?\s*\$*([^\n$]*[^\s.$])", re.IGNORECASE),
    re.compile(r"\*\*\s*(?:final\s+)?answer\s*[:：]?\s*\*\*\s*[:：]?\s*\$*([^\n$]*[^\s.$])", re.IGNORECASE),
    re.compile(r"(?:^|\n)\s*(?:final\s+)?answer\s*[:：]\s*\$*([^\n$]*[^\s.$])", re.IGNORECASE),
]
_NUMBER = re.compile(r"^[-+]?\d{1,40}(?:\.\d{1,40})?$")


def _boxed_contents(text: str, start: int) -> str | None:
    depth, i = 1, start
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


def _display_equation(final: str) -> str | None:
    """The right-hand side of a display equation that ends the final part ($$…$$ or \\[…\\])."""
    text = final.rstrip()
    if text.endswith("$$"):
        start, expr = text.rfind("$$", 0, len(text) - 2), None
        expr = text[start + 2:-2] if start != -1 else None
    elif text.endswith("\\]"):
        start = text.rfind("\\[")
        expr = text[start + 2:-2] if start != -1 else None
    else:
        return None
    if not expr or "$$" in expr:
        return None
    depth, cut = 0, -1
    for i, c in enumerate(expr):
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth -= 1
        elif c == "=" and depth == 0 and (i == 0 or expr[i - 1] not in "<>!:\\"):
            cut = i
    rhs = expr[cut + 1:].strip().rstrip(".,;").strip() if cut != -1 else ""
    return rhs or None


def extract(text: str, boxed_only: bool = False) -> tuple[str | None, str]:
    """(answer, how it was found) of a final part: the last \\boxed{…} ("boxed"), else a 'final answer is …'
    phrase ("phrase"), else the right-hand side of a concluding display equation ("display-equation");
    (None, "") when there is none. `boxed_only`: the last \\boxed{…} or nothing (for reasoning text)."""
    if not text:
        return None, ""
    for m in reversed(list(_BOX.finditer(text))):
        got = _boxed_contents(text, m.end())
        if got is not None and got.strip():
            return got.strip(), "boxed"
    if boxed_only:
        return None, ""
    for pat in _FALLBACKS:
        found = pat.findall(text)
        if found:
            return found[-1].strip(), "phrase"
    rhs = _display_equation(text)
    return (rhs, "display-equation") if rhs else (None, "")


def extract_answer(final: str) -> str | None:
    """The final answer of a response's final part (see `extract`)."""
    return extract(final)[0]


def _clean(s: str) -> str:
    return re.sub(r"\\[,!;: ]|\\left|\\right|\s|\$", "", s).rstrip(".")


def normalize_answer(answer: str) -> str:
    """An answer without spacing, \\left/\\right, dollar signs and a trailing period: equal spellings compare equal
    as strings (the verifier decides the rest)."""
    return _clean(answer)


def _depth(s: str) -> int:
    depth = best = 0
    for c in s:
        if c == "{" or c == "(" or c == "[":
            depth += 1
            best = max(best, depth)
        elif c == "}" or c == ")" or c == "]":
            depth -= 1
    return best


def _fast_grade(answer: str, reference: str) -> str | None:
    """Decide without sympy where that is exact: plain decimal numbers. None means 'ask the worker'."""
    a, r = _clean(answer), _clean(reference)
    if _NUMBER.match(a) and _NUMBER.match(r):
        try:
            return CORRECT if Decimal(a) == Decimal(r) else WRONG
        except InvalidOperation:
            return None
    return None


# --- the worker process -------------------------------------------------------------------------

def _parse(text: str):
    from math_verify import LatexExtractionConfig, parse

    config = [LatexExtractionConfig(boxed_match_priority=0)]
    got = parse(f"\\boxed{{{text}}}", config, parsing_timeout=None)
    return got or parse(f"${text}$", config, parsing_timeout=None)


def grade_in_process(answer: str, reference: str) -> str:
    """The comparison itself (unbounded: call it only inside a bounded worker)."""
    from math_verify import verify

    gold = _parse(reference)
    if not gold:
        return UNPARSEABLE_REFERENCE
    pred = _parse(answer)
    if pred and verify(gold, pred, timeout_seconds=None):
        return CORRECT
    return WRONG


def _bound_cpu(timeout_s: float) -> None:
    """The kernel ends a comparison that runs past its bound even if nobody is left to kill this worker (its actor
    or replica died): big-integer arithmetic holds the GIL, so no thread of ours could. The parent normally kills
    it at the wall-clock bound, long before: CPU time never runs ahead of wall time."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    limit = int(usage.ru_utime + usage.ru_stime + timeout_s) + CPU_GRACE_S
    resource.setrlimit(resource.RLIMIT_CPU, (limit, resource.getrlimit(resource.RLIMIT_CPU)[1]))


def _worker_main(recv_conn, send_conn, memory_limit: int, timeout_s: float) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    except (ImportError, ValueError, OSError):
        pass
    import logging

    import math_verify  # noqa: F401  (import once, before the first task)

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    send_conn.send(READY)  # imports done: the parent starts a comparison's clock only now

    while True:
        try:
            task = recv_conn.recv()
        except EOFError:
            return
        if task is None:
            return
        key, answer, reference = task
        _bound_cpu(timeout_s)
        try:
            verdict, detail = grade_in_process(answer, reference), ""
        except RecursionError:
            verdict, detail = ERROR, "recursion limit in the LaTeX parser"
        except MemoryError:
            verdict, detail = ERROR, "memory limit in the verifier"
        except Exception as e:  # a parser failure on hostile text is a verdict, not a crash
            verdict, detail = ERROR, f"{type(e).__name__}: {str(e)[:160]}"
        send_conn.send((key, verdict, detail))


READY = "ready"
STARTUP_S = 120.0  # the bound on a worker's imports (a loaded machine); a comparison's own bound starts after them


class _Worker:
    """A verifier subprocess (a fresh interpreter, not a fork: it is safe inside threaded Ray workers)."""

    def __init__(self, memory_limit: int, timeout_s: float):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "raypipe.core.verify", str(to_child_r), str(from_child_w), str(memory_limit),
             str(timeout_s)],
            pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, close_fds=True,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.send_conn = Connection(to_child_w, readable=False)
        self.conn = Connection(from_child_r, writable=False)
        self.task: tuple | None = None
        self.started = 0.0
        self.ready = False

    def wait_ready(self) -> None:
        """Wait (bounded) for the worker's imports, so that they never count against the first comparison's bound
        (under load they took longer than the bound: a timeout verdict that a quiet machine would not give)."""
        if not self.ready:
            self.ready = True
            try:
                if self.conn.poll(STARTUP_S):
                    self.conn.recv()
            except (EOFError, OSError):
                pass  # it died starting: the comparison given to it is graded "verifier process died"

    def send(self, obj) -> None:
        self.send_conn.send(obj)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)
        self.send_conn.close()
        self.conn.close()


@dataclass(frozen=True)
class Grade:
    verdict: str
    seconds: float
    detail: str = ""


class Verifier:
    """Bounded, cached answer grading. `setup()` starts the worker processes; `close()` stops them."""

    def __init__(self, workers: int = 1, timeout_s: float = 5.0, memory_mb: int = 2048, cache_size: int = 200_000):
        self.n_workers = max(1, workers)
        self.timeout_s = timeout_s
        self.memory_limit = memory_mb << 20
        self.cache: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()
        self.cache_size = cache_size
        self._workers: list[_Worker] = []

    def setup(self) -> "Verifier":
        if not self._workers:
            self._workers = [_Worker(self.memory_limit, self.timeout_s) for _ in range(self.n_workers)]
        return self

    def close(self) -> None:
        for w in self._workers:
            try:
                w.send(None)
            except OSError:
                pass
            w.kill()
        self._workers = []

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _remember(self, key: tuple[str, str], grade: Grade) -> None:
        if grade.verdict in (CORRECT, WRONG, UNPARSEABLE_REFERENCE):
            self.cache[key] = (grade.verdict, grade.detail)
            if len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)

    def grade_many(self, pairs: list[tuple[str | None, str]]) -> list[Grade]:
        """Grade (answer, reference) pairs; an answer of None is `no_answer`. Order is preserved."""
        out: list[Grade | None] = [None] * len(pairs)
        pending: dict[tuple[str, str], list[int]] = {}
        for i, (answer, reference) in enumerate(pairs):
            t0 = time.perf_counter()
            if not reference or not reference.strip():
                out[i] = Grade(UNVERIFIED, 0.0, "no reference answer")
            elif answer is None:
                out[i] = Grade(NO_ANSWER, 0.0)
            elif len(answer) > MAX_ANSWER_CHARS or _depth(answer) > MAX_BRACE_DEPTH:
                out[i] = Grade(ERROR, 0.0, f"answer over the limits ({MAX_ANSWER_CHARS} chars, depth {MAX_BRACE_DEPTH})")
            elif len(reference) > MAX_ANSWER_CHARS or _depth(reference) > MAX_BRACE_DEPTH:
                out[i] = Grade(UNPARSEABLE_REFERENCE, 0.0, "reference over the limits")
            elif (hit := self.cache.get((answer, reference))) is not None:
                out[i] = Grade(hit[0], time.perf_counter() - t0, hit[1])
            elif (fast := _fast_grade(answer, reference)) is not None:
                out[i] = Grade(fast, time.perf_counter() - t0, "numeric")
            else:
                pending.setdefault((answer, reference), []).append(i)
        if pending:
            keys = list(pending)
            for k, grade in self._run([(k, a, r) for k, (a, r) in enumerate(keys)]):
                for i in pending[keys[k]]:
                    out[i] = grade
                self._remember(keys[k], grade)
        return out  # type: ignore[return-value]

    def _run(self, tasks: list[tuple[int, str, str]]):
        self.setup()
        queue = list(reversed(tasks))
        busy: dict[int, _Worker] = {}
        while queue or busy:
            for slot, w in enumerate(self._workers):
                if w.task is None and queue:
                    w.wait_ready()
                    w.task = queue.pop()
                    w.started = time.perf_counter()
                    try:
                        w.send(w.task)
                    except OSError:  # it died before the comparison reached it
                        yield w.task[0], Grade(ERROR, 0.0, "verifier process died")
                        w.kill()
                        self._workers[slot] = _Worker(self.memory_limit, self.timeout_s)
                        continue
                    busy[slot] = w
            if not busy:
                continue
            now = time.perf_counter()
            deadline = min(w.started + self.timeout_s for w in busy.values())
            ready = wait([w.conn for w in busy.values()], timeout=max(0.0, deadline - now))
            for slot, w in list(busy.items()):
                task = w.task
                assert task is not None
                elapsed = time.perf_counter() - w.started
                if w.conn in ready:
                    try:
                        message = w.conn.recv()
                        if message == READY:  # a hello later than STARTUP_S: the answer is still to come
                            continue
                        _, verdict, detail = message
                        yield task[0], Grade(verdict, elapsed, detail)
                        w.task = None
                        del busy[slot]
                        continue
                    except (EOFError, OSError):
                        yield task[0], Grade(ERROR, elapsed, "verifier process died")
                elif elapsed >= self.timeout_s:
                    yield task[0], Grade(TIMEOUT, elapsed, f"over {self.timeout_s:g}s")
                else:
                    continue
                w.kill()
                self._workers[slot] = _Worker(self.memory_limit, self.timeout_s)
                del busy[slot]


if __name__ == "__main__":  # the worker subprocess: python -m raypipe.core.verify READ_FD WRITE_FD MEMORY_LIMIT TIMEOUT_S
    _worker_main(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False),
                 int(sys.argv[3]), float(sys.argv[4]))
