"""Evaluation grades like curation: the same answer source and grader, a sample cut by the length limit is never an
answer, and generation stops at the chat template's end of turn (a base checkpoint's EOS is another token)."""
from __future__ import annotations

import pytest

from raypipe.core.scoring import Scorer
from raypipe.eval.config import EvalConfig
from raypipe.eval.grading import CUT_DETAIL, grade_samples

BOXED_IN_THINKING = "<think>\nWe start with 4.\n\n4 + 3 = 7.\n\nSo the result is \\boxed{7}.\n</think>\n\n"


def sample(key: str, response: str, finish: str = "stop") -> dict:
    return {"key": key, "problem": "Start with 4. Apply + 3. What is the result?", "reference_answer": "7",
            "response": response, "finish_reason": finish}


@pytest.fixture(scope="module")
def scorers():
    made = {a: Scorer(EvalConfig(model="m", output="o", answer_from=a, verify_timeout_s=30).scoring()).setup()
            for a in ("final", "final-or-thinking")}
    yield made
    for s in made.values():
        s.close()


def test_eval_grades_with_the_curation_answer_source(scorers):
    final = grade_samples([sample("a", BOXED_IN_THINKING)], scorers["final"])[0]
    either = grade_samples([sample("a", BOXED_IN_THINKING)], scorers["final-or-thinking"])[0]
    assert final["verdict"] == "no_answer" and either["verdict"] == "correct"


def test_a_sample_cut_by_the_length_limit_is_no_answer(scorers):
    whole = "<think>\nWe start with 4.\n\n4 + 3 = 7.\n</think>\n\nThe result is \\boxed{7}."
    done, cut = grade_samples([sample("a", whole), sample("b", whole, "length")], scorers["final"])
    assert done["verdict"] == "correct"
    assert cut["verdict"] == "no_answer" and cut["verify_detail"].startswith(CUT_DETAIL)
    # the same reply decoded without its markup (special tokens skipped) would have read as a plain answer
    stripped = grade_samples([sample("c", "We start with 4.\n\n4 + 3 = 7.\n\n\\boxed{7}", "length")],
                             scorers["final"])[0]
    assert stripped["verdict"] == "no_answer"


def test_the_keyword_judge_labels_the_outputs_steps(scorers):
    from raypipe.eval.metrics import judged_steps

    branching = ("<think>\nWe start with 4.\n\nPerhaps it is easier to guess.\n\nAlternatively, we could check it."
                 "\n\n4 + 3 = 7.\n</think>\n\nThe result is \\boxed{7}.")
    graded = grade_samples([sample("a", branching), sample("b", BOXED_IN_THINKING)], scorers["final"])
    assert graded[0]["step_labels"][1:3] == "pp" and "p" not in graded[1]["step_labels"]
    figures = judged_steps(graded)
    assert figures["propose_share"] == pytest.approx(2 / 7)
    assert figures["p_propose_propose"] == pytest.approx(1 / 2)


def test_stop_tokens_include_the_end_of_turn(tiny_model_path, tmp_path):
    from raypipe.eval.prompting import stop_token_ids, strip_stops
    from raypipe.organism.student import StudentSettings, build_student
    from raypipe.tiny import load_tokenizer

    tiny = load_tokenizer(tiny_model_path)  # its EOS is <|im_end|> itself
    assert stop_token_ids(tiny) == [tiny.convert_tokens_to_ids("<|im_end|>")]
    path = build_student(tmp_path / "s", ["Start with 4. Apply + 3."] * 4,
                         StudentSettings(vocab_size=300, hidden=16, layers=1, heads=2), 0, 9)
    base = load_tokenizer(path)
    assert base.eos_token == "<|endoftext|>"
    assert stop_token_ids(base) == [base.eos_token_id, base.convert_tokens_to_ids("<|im_end|>")]
    from raypipe.eval.backends.vllm import reply_stops  # what the vllm backend sends as stop_token_ids

    assert reply_stops(path) == (stop_token_ids(base), ["<|endoftext|>", "<|im_end|>"])
    plain = load_tokenizer(tiny_model_path)
    plain.chat_template = None
    assert stop_token_ids(plain) == [plain.eos_token_id]
    assert strip_stops("x<|im_end|><|endoftext|>", ["<|endoftext|>", "<|im_end|>"]) == "x"


def test_the_hf_engine_stops_on_the_end_of_turn_of_a_base_tokenizer(tmp_path):
    from raypipe.eval.hf_engine import HFEngine
    from raypipe.organism.student import StudentSettings, build_student

    path = build_student(tmp_path / "s", ["Start with 4. Apply + 3."] * 4,
                         StudentSettings(vocab_size=300, hidden=16, layers=1, heads=2), 0, 9)
    engine = HFEngine(path).setup()
    assert engine.tokenizer.convert_tokens_to_ids("<|im_end|>") in engine.stop_ids
    out = engine.generate([engine.render([{"role": "user", "content": "Start with 4."}])], 5, 0.0, 1.0)[0]
    assert out["finish_reason"] in ("stop", "length") and out["completion_tokens"] <= 5
