"""raypipe inspect: records of a curation output read back and printed as the report shows them: every step, branch
markers highlighted, the verdict, the decision and its reason, the extracted answer against the reference.
`--id ID` prints a record; `--worst N [--source S]` the N dropped records with the highest branch_score."""
from __future__ import annotations

import os
import sys

from raypipe.commands import Command, refusing
from raypipe.curate.config import InspectSettings


def run(settings: InspectSettings) -> int:
    from raypipe.curate.inspect import Style, records, rejected, render_text

    storage = settings.storage()
    with refusing(FileNotFoundError, ValueError, OSError):
        views = records(settings.folder, storage, settings.id, settings.worst, settings.source)
    if not views:
        rejects = rejected(settings.folder, settings.id, storage) if settings.id is not None else []
        for r in rejects:
            print(f"{settings.id} was rejected ({r['shard']}, row {r['row']}): {r['reason']}")
        if rejects:
            return 0
        what = f"id {settings.id!r}" if settings.id is not None else "dropped record with a branch_score"
        print(f"raypipe inspect: no {what}{f' of source {settings.source!r}' if settings.source else ''} in "
              f"{settings.folder}", file=sys.stderr)
        return 1
    colour = settings.color == "always" or (settings.color == "auto" and sys.stdout.isatty()
                                            and not os.environ.get("NO_COLOR"))
    try:
        print("\n\n".join(render_text(v, Style(colour), settings.step_chars) for v in views), flush=True)
    except BrokenPipeError:  # piped into `head`: what was wanted was printed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


COMMAND = Command("inspect", "print records of a curation output: steps, markers, verdict, decision, reason",
                  InspectSettings, run, description=__doc__,
                  example="raypipe inspect out/curated --id aime24_2\n"
                          "raypipe inspect out/curated --worst 5 --source DeepSeek-R1")
