"""raypipe diagnose: loss-probe and judge summaries of two sources side by side, next to the paper's figures."""
from __future__ import annotations

import sys

from pydantic import Field, field_validator, model_validator

from raypipe.commands import Command
from raypipe.core.settings import Settings


class DiagnoseSettings(Settings):
    sources: list[str] = Field(description="A,B: A plays the paper's DeepSeek-R1, B its gpt-oss-120b")
    loss: list[str] = Field([], description="loss-probe output folder(s), comma-separated")
    judge: list[str] = Field([], description="judge output folder(s), comma-separated")
    output: str = Field(description="HTML file to write (local or s3://)")
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL (else AWS_ENDPOINT_URL)")
    s3_region: str | None = Field(None, description="S3 region")

    @field_validator("sources", "loss", "judge", mode="before")
    @classmethod
    def _split(cls, v):
        """'A,B' or [A, B]; blank entries dropped."""
        if isinstance(v, str):
            v = v.split(",")
        return [x.strip() for x in v if x.strip()] if isinstance(v, list) and all(isinstance(x, str) for x in v) else v

    @model_validator(mode="after")
    def _check(self) -> "DiagnoseSettings":
        if len(self.sources) != 2:
            raise ValueError("--sources takes exactly two names, A,B")
        if not self.loss and not self.judge:
            raise ValueError("give --loss and/or --judge output folders")
        return self


def run(settings: DiagnoseSettings) -> int:
    from raypipe.core import io
    from raypipe.diagnostics.compare import write_compare

    a, b = settings.sources
    try:
        rows = write_compare(a, b, settings.loss, settings.judge, settings.output,
                             io.Storage(settings.s3_endpoint, settings.s3_region))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"raypipe diagnose: {e}", file=sys.stderr)
        return 2
    for r in rows:
        print(f"{r['metric']:<28} A={r['a']!s:<24} B={r['b']!s:<24} same direction as paper: {r['same']}")
    print(f"[raypipe] compare page: {settings.output}")
    return 0


COMMAND = Command("diagnose", "compare two sources' diagnostics with the paper", DiagnoseSettings, run,
                  description=__doc__)
