"""raypipe diagnose: loss-probe and judge summaries of two sources side by side, next to the paper's figures."""
from __future__ import annotations

from raypipe.commands import Command, refusing
from raypipe.diagnostics.config import DiagnoseSettings


def run(settings: DiagnoseSettings) -> int:
    from raypipe.core import io
    from raypipe.diagnostics.compare import write_compare

    a, b = settings.sources
    with refusing(FileNotFoundError, ValueError, KeyError):
        rows = write_compare(a, b, settings.loss_outputs, settings.judge_outputs, settings.output,
                             settings.storage())
    for r in rows:
        print(f"{r['metric']:<28} A={r['a']!s:<24} B={r['b']!s:<24} same direction as paper: {r['same']}")
    print(f"[raypipe] compare page: {settings.output}")
    return 0


COMMAND = Command("diagnose", "compare two sources' diagnostics with the paper", DiagnoseSettings, run,
                  description=__doc__,
                  example="raypipe diagnose --sources A,B --loss out/loss-a,out/loss-b --judge out/judge "
                          "--output out/compare.html")
