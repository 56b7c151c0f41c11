"""raypipe curate: verify, measure branching and select, on Ray Data (the main job)."""
from __future__ import annotations

import re
import sys

from raypipe.commands import Command, Refused
from raypipe.curate.config import CurateConfig


def run(config: CurateConfig) -> int:
    from raypipe.core.errors import ConfigMismatch, LayoutError, UnusableInput
    from raypipe.curate.job import run_curate

    try:
        manifest = run_curate(config)
    except (ConfigMismatch, LayoutError, UnusableInput, FileNotFoundError, ValueError) as e:
        raise Refused(str(e)) from e
    except Exception as e:  # a task that failed for good (e.g. an object S3 never served): its root cause, plainly
        print(f"raypipe curate: the job failed: {root_cause(e)}", file=sys.stderr)
        return 1
    return 0 if manifest["balanced"] else 1


def root_cause(e: BaseException) -> str:
    """The last non-Ray exception in the chain (Ray carries remote ones as traceback text), on one line."""
    texts, seen, x = [], set(), e
    while isinstance(x, BaseException) and id(x) not in seen:
        seen.add(id(x))
        texts.append(str(x))
        x = getattr(x, "cause", None) or x.__cause__
    line = re.compile(r"^([\w.]*(?:Error|Exception)): (.+)$")
    found = [m.groups() for t in texts for ln in t.splitlines() if (m := line.match(ln.strip()))
             and not m.group(1).startswith("ray.")]
    if found:
        return f"{found[-1][0].rsplit('.', 1)[-1]}: {found[-1][1]}"
    first = str(e).strip().splitlines()
    return f"{type(e).__name__}: {first[0] if first else ''}"


COMMAND = Command("curate", "curate trajectories (the main job)", CurateConfig, run, description=__doc__,
                  example="raypipe curate --input ../shared/data/trajectories --output out/curated --drop-top 0.1\n"
                          "raypipe curate --input ../shared/data/r1 --output out/r1 --answer-from final-or-thinking")
