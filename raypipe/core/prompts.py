"""The user turn a problem becomes, for training and for evaluation alike: versioned templates and the one setting
that names them (`prompt_version`, shared by `raypipe train`, the loss probe and `raypipe eval`)."""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator

from raypipe.core.registry import Registry
from raypipe.core.settings import Settings

SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str  # the user turn, with {problem} where the problem goes


PROMPTS: Registry[PromptTemplate] = Registry("prompt template")
PROMPTS.add("v1", PromptTemplate("v1", "{problem}\n" + SUFFIX))  # the default (Qwen2.5-Math / DeepSeek-R1 evaluation)
PROMPTS.add("v1-raw", PromptTemplate("v1-raw", "{problem}"))
DEFAULT = "v1"
EXAMPLE_PROBLEM = "What is 1+1?"  # rendered into both stamps, so two runs' prompts can be compared as text


def user_message(problem: str, version: str = DEFAULT) -> str:
    if version not in PROMPTS:
        raise ValueError(f"unknown prompt template '{version}'; known: {', '.join(PROMPTS.names())}")
    return PROMPTS.get(version).text.replace("{problem}", problem)


def stamp(version: str) -> dict:
    """What a run records of its prompt: the version, its template, and the user turn of an example problem."""
    return {"version": version, "text": PROMPTS.get(version).text, "example_problem": EXAMPLE_PROBLEM,
            "example_user_turn": user_message(EXAMPLE_PROBLEM, version)}


class PromptSettings(Settings):
    prompt_version: str = Field(DEFAULT, description="prompt template version, the same for training and "
                                "evaluation (v1: problem + 'Please reason step by step…'; v1-raw: the problem alone)")

    @field_validator("prompt_version")
    @classmethod
    def _prompt(cls, v):
        user_message("", v)
        return v
