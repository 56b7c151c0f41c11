"""The same prompt for training and evaluation: the user turn SFT trains on is, as rendered text, the prompt the
evaluation generates from, and both stamps record it."""
from __future__ import annotations

import pytest

from raypipe.core import prompts
from raypipe.eval import prompting
from raypipe.eval.config import EvalConfig
from raypipe.train.config import TrainConfig
from raypipe.train.render import render_text


@pytest.mark.parametrize("version", prompts.PROMPTS.names())
def test_train_and_eval_render_the_same_prompt_string(version, tiny_model_path):
    from raypipe.tiny import load_tokenizer

    tok = load_tokenizer(tiny_model_path)
    train = TrainConfig(data="d", model="tiny", output="o", prompt_version=version)
    evaluation = EvalConfig(model="tiny", output="o", prompt_version=version)
    problem = "Find the number of ordered pairs $(x, y)$ with $x + y = 10$."
    trained = render_text(tok, problem, "Let me count.", "\\boxed{11}", train.template, train.assistant_format())
    evaluated = prompting.render(tok, prompting.messages(problem, evaluation.prompt_version))
    assert trained.prompt == evaluated
    assert (prompts.SUFFIX in trained.prompt) == (version == "v1")


def test_both_stamps_record_the_prompt(tmp_path):
    from raypipe.eval.stamp import build_stamp

    stamp = build_stamp(EvalConfig(model="tiny", output=str(tmp_path)), {"model": "tiny"}, {}, {})
    assert stamp["prompt_template"] == prompts.stamp("v1")
    assert TrainConfig(data="d", model="tiny", output="o").prompt_version == "v1"  # one setting, one default
    assert "prompt_version" in TrainConfig.model_fields and "prompt_version" in EvalConfig.model_fields
    assert TrainConfig.model_fields["prompt_version"] is not None
    assert TrainConfig.model_fields["prompt_version"].description == EvalConfig.model_fields["prompt_version"].description
