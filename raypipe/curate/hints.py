"""What a finished curation run says about itself at the end: where its answers went missing (with the setting that
finds them) and, when nothing was kept, why. Read from the merged aggregates (raypipe.curate.aggregates) and the
manifest: nothing here reads a record."""
from __future__ import annotations

from raypipe.core import io

ANSWER_FLAG = "--answer-from final-or-thinking"


def answer_hints(merged: dict, answer_from: str) -> list[dict]:
    """Per source, when most of its records are no_answer: why, and what to pass. With `--answer-from final`, the
    records whose finished reasoning holds a \\boxed{} answer are the ones `final-or-thinking` grades."""
    hints = []
    for source, a in merged["sources"].items():
        n, boxed = a["records"], a.get("boxed_in_reasoning", 0)
        missing = a["verdicts"].get("no_answer", 0)
        if not n or missing * 2 <= n and boxed * 2 <= n:
            continue
        hint = {"source": source, "records": n, "no_answer": missing, "boxed_in_reasoning": boxed}
        if answer_from == "final" and boxed:
            hint.update(flag=ANSWER_FLAG, text=(
                f"source {source}: {missing} of {n} records have no answer after their reasoning, and {boxed} of "
                f"them end a finished reasoning with a \\boxed{{}} answer: {ANSWER_FLAG} grades those"))
        else:
            hint.update(flag="--format / --fields", text=(
                f"source {source}: {missing} of {n} records have no answer (an unfinished reasoning, or no \\boxed{{}}"
                " or 'final answer' in the final part): check that --format / --fields read the response whole"))
        hints.append(hint)
    return hints


def drop_reasons(merged: dict) -> dict[str, int]:
    """Dropped records by the kind of their reason, over all sources, most first."""
    total: dict[str, int] = {}
    for a in merged["sources"].values():
        for reason, c in a.get("drop_reasons", {}).items():
            total[reason] = total.get(reason, 0) + c
    return dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))


def account(merged: dict, answer_from: str) -> dict:
    """The manifest's `hints` and `drop_reasons`."""
    return {"hints": answer_hints(merged, answer_from), "drop_reasons": drop_reasons(merged)}


def closing_lines(manifest: dict, output: str) -> list[str]:
    """The last lines a run prints: where the kept data is, or that nothing was kept and why; then the hints."""
    c = manifest["counts"]
    if c["kept"]:
        lines = [f"curated data: {io.join(output, 'curated')}"]
    else:
        reasons = ", ".join(f"{r} {n}" for r, n in manifest.get("drop_reasons", {}).items())
        why = [f"{c['dropped']} dropped ({reasons})" if c["dropped"] else "",
               f"{c['rejected']} rejected (reasons in {io.join(output, 'rejects')})" if c["rejected"] else ""]
        lines = ["nothing kept, so no curated/ was written: " + ("; ".join(w for w in why if w) or "no records")]
    lines.append(f"report:       {io.join(output, 'report.html')}")
    lines += [f"hint: {h['text']}" for h in manifest.get("hints", [])]
    return lines
