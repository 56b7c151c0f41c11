"""Named, versioned lexicons of branch markers (the words that open a new line of reasoning)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import yaml
from pydantic import BaseModel, Field, field_validator

from raypipe.core.registry import Registry
from raypipe.core.settings import SettingsGroup


@dataclass(frozen=True)
class Lexicon:
    name: str
    version: str
    markers: tuple[str, ...]
    case_sensitive: bool = False
    word_boundary: bool = True  # off for CJK, which has no word boundaries

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def marker_pattern(self, marker: str) -> str:
        body = r"\s+".join(re.escape(w) for w in marker.split())
        if self.word_boundary:
            body = rf"\b{body}\b"
        return body

    def pattern(self) -> str:
        """One RE2- and Python-compatible regex matching any marker."""
        alts = "|".join(self.marker_pattern(m) for m in self.markers)
        return ("" if self.case_sensitive else "(?i)") + f"(?:{alts})"

    @cached_property
    def regex(self) -> re.Pattern:
        """pattern() for Python's re, with RE2's ASCII word boundaries: what the plain-Python paths match with."""
        return re.compile(self.pattern(), re.ASCII)


LEXICONS: Registry[Lexicon] = Registry("lexicon")
# The paper's keyword proxy (arXiv 2604.01702): steps that open an alternative.
LEXICONS.add("paper", Lexicon("paper", "1", ("Perhaps", "Another", "Alternatively")))
# A wider set of strategy switches and self-interruptions.
LEXICONS.add("switch", Lexicon(
    "switch", "1",
    ("Perhaps", "Another", "Alternatively", "Wait", "Hmm", "Let me try", "Let me think again", "On second thought",
     "But maybe", "Maybe I should", "What if", "Instead", "Actually", "Or maybe", "Let me reconsider",
     "Another approach", "Let me check")))
LEXICONS.add("paper-zh", Lexicon("paper-zh", "1", ("或许", "也许", "另一种", "或者", "换个思路", "等等"), word_boundary=False))


def get_lexicon(name_or_path: str) -> Lexicon:
    """A named lexicon, or one defined in a YAML file: {name, version, markers, case_sensitive, word_boundary}."""
    if name_or_path in LEXICONS:
        return LEXICONS.get(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")):
        with open(name_or_path) as f:
            spec = yaml.safe_load(f)
        return Lexicon(spec["name"], str(spec.get("version", "1")), tuple(spec["markers"]),
                       bool(spec.get("case_sensitive", False)), bool(spec.get("word_boundary", True)))
    raise ValueError(f"unknown lexicon {name_or_path!r}: choose one of {LEXICONS.names()} or a YAML file")


class LexiconSettings(SettingsGroup):
    lexicon: str = Field("paper", description="branch-marker lexicon: paper, switch, paper-zh, or a YAML file "
                         "{name, version, markers, case_sensitive, word_boundary}")

    @field_validator("lexicon")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in LEXICONS and not v.endswith((".yaml", ".yml")):
            raise ValueError(f"unknown lexicon {v!r}: choose one of {LEXICONS.names()} or a YAML file")
        return v
