"""The assistant turn SFT trains on: one rendering of the canonical reasoning and final part whatever the input
markup; a chat template that strips the reasoning is an error; the step-deletion ablation edits `thinking`."""
from __future__ import annotations

import pyarrow as pa
import pytest

from raypipe.core.formats import FORMATS
from raypipe.core.schema import records_table
from raypipe.core.structure import split_steps
from raypipe.curate.ablate import delete_steps_table
from raypipe.train.render import IGNORE, AssistantFormat, ReasoningDropped, render, render_text

PROBLEM = "What is 12 + 30? Please reason step by step, and put your final answer within \\boxed{}."
STEPS = ["Let me solve the problem step by step. First, compute the sum: 12 + 30 = 42.",
         "Perhaps we can try another approach. Alternatively, count up from 30 by 12: 31, 32, ..., 42.",
         "Wait, let me check the arithmetic again: 42 - 30 = 12. So the sum is 42.",
         "Perhaps I should verify once more: 40 + 2 = 42."]
THINKING = "\n\n".join(STEPS)
FINAL = "The final answer is \\boxed{42}."

# The same trace in five markups: (format, row, the markup the record must report).
MARKUPS = {
    "think": ("flat", {"problem": PROBLEM, "answer": "42", "response": f"<think>\n{THINKING}\n</think>\n\n{FINAL}"},
              "think"),
    "sky": ("flat", {"problem": PROBLEM, "answer": "42", "response": (
        f"<|begin_of_thought|>\n\n{THINKING}\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n{FINAL}\n\n"
        "<|end_of_solution|>")}, "sky"),
    "harmony": ("flat", {"problem": PROBLEM, "answer": "42", "response": (
        f"<|channel|>analysis<|message|>{THINKING}<|end|><|start|>assistant<|channel|>final<|message|>{FINAL}"
        "<|return|>")}, "harmony"),
    "reasoning_content": ("chat", {"answer": "42", "messages": [
        {"role": "user", "content": PROBLEM},
        {"role": "assistant", "content": FINAL, "reasoning_content": THINKING}]}, "reasoning_content"),
    "answer_tags": ("flat", {"problem": PROBLEM, "answer": "42",
                             "response": f"<think>\n{THINKING}\n</think>\n<answer>\n{FINAL}\n</answer>"}, "think"),
}

# A DeepSeek-R1 / Qwen3-style template: assistant turns keep only what follows </think>.
STRIPPING_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1].lstrip('\\n') %}{% endif %}"
    "{{ '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def record(name: str) -> dict:
    fmt, row, _ = MARKUPS[name]
    return FORMATS.create(fmt).records(row, "src", f"{name}.jsonl", 0)[0]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    from raypipe.tiny import load_tokenizer

    return load_tokenizer(tiny_model_path)


@pytest.fixture
def stripping_tokenizer(tiny_model_path):
    from raypipe.tiny import load_tokenizer

    tok = load_tokenizer(tiny_model_path)
    tok.chat_template = STRIPPING_TEMPLATE
    return tok


def test_five_markups_render_to_identical_ids_with_the_prompt_masked(tokenizer):
    records = {name: record(name) for name in MARKUPS}
    assert {n: r["markup"] for n, r in records.items()} == {n: m for n, (_, _, m) in MARKUPS.items()}
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROBLEM}], add_generation_prompt=True,
                                           tokenize=False)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert n_prompt > 10
    rendered = {n: render(tokenizer, r["problem"], r["thinking"], r["final"], 4096) for n, r in records.items()}
    ids = {n: x.example.input_ids for n, x in rendered.items()}
    assert all(x.status == "ok" and x.kind == "thinking" for x in rendered.values())
    assert len({tuple(v) for v in ids.values()}) == 1, {n: len(v) for n, v in ids.items()}
    for x in rendered.values():
        labels, input_ids = x.example.labels, x.example.input_ids
        assert labels[:n_prompt] == [IGNORE] * n_prompt  # exactly the prompt is masked
        assert labels[n_prompt:] == input_ids[n_prompt:] and IGNORE not in labels[n_prompt:]
    text = tokenizer.decode(ids["harmony"][n_prompt:])
    assert text == f"<think>\n{THINKING}\n</think>\n\n{FINAL}<|im_end|>\n"  # no harmony tokens are trained on
    # The named templates render the same canonical turn.
    for template in ("chatml", "plain"):
        assert len({tuple(render(tokenizer, r["problem"], r["thinking"], r["final"], 4096, template=template)
                          .example.input_ids) for r in records.values()}) == 1


def test_layout_is_a_setting_and_rows_without_reasoning_render_the_final_part(tokenizer):
    fmt = AssistantFormat("<reasoning>", "</reasoning>\n")
    r = render_text(tokenizer, PROBLEM, "\n" + THINKING + "\n", FINAL, "auto", fmt)
    assert r.completion == f"<reasoning>{THINKING}</reasoning>\n{FINAL}<|im_end|>\n" and r.kind == "thinking"
    assert r.completion[slice(*r.thinking_span)] == THINKING
    assert fmt.layout == "<reasoning>{thinking}</reasoning>\n{final}"
    bare = render_text(tokenizer, PROBLEM, "  \n", FINAL)
    assert bare.completion == f"{FINAL}<|im_end|>\n" and bare.kind == "final_only" and bare.thinking_span is None
    # A response without reasoning markup is both its reasoning and its final part: rendered once.
    plain = FORMATS.create("flat").records({"problem": PROBLEM, "response": FINAL}, "s", "x", 0)[0]
    once = render_text(tokenizer, PROBLEM, plain["thinking"], plain["final"])
    assert once.completion == f"{FINAL}<|im_end|>\n" and once.kind == "unmarked"
    assert render(tokenizer, "", THINKING, FINAL, 64).status == "empty"
    assert render(tokenizer, PROBLEM, " ", None, 64).status == "empty"


def test_a_template_that_strips_the_reasoning_is_an_error(tokenizer, stripping_tokenizer):
    r = record("harmony")
    with pytest.raises(ReasoningDropped, match=r"template 'auto'.*drops the reasoning.*--template chatml"):
        render(stripping_tokenizer, r["problem"], r["thinking"], r["final"], 4096)
    # Rows without reasoning have nothing to lose.
    assert render(stripping_tokenizer, PROBLEM, "", FINAL, 4096).status == "ok"
    # The named chatml template keeps the thinking tokens, and the default template does too.
    for tok, template in ((stripping_tokenizer, "chatml"), (tokenizer, "auto")):
        x = render(tok, r["problem"], r["thinking"], r["final"], 4096, template=template).example
        trained = [i for i, l in zip(x.input_ids, x.labels) if l != IGNORE]
        step_ids = tokenizer(STEPS[1][:-1], add_special_tokens=False)["input_ids"]  # the "." merges with "\n\n"
        assert any(trained[i:i + len(step_ids)] == step_ids for i in range(len(trained))), template
        assert THINKING in tokenizer.decode(trained)


def test_curated_data_without_the_canonical_columns_is_split_from_the_response(tiny_model_path, tokenizer):
    from raypipe.train.config import TrainConfig
    from raypipe.train.data import Tokenize

    records = [record(n) for n in ("think", "sky", "harmony", "answer_tags")]
    table = records_table(records)
    tok = Tokenize(TrainConfig(data="d", model=tiny_model_path, output="o", prompt_version="v1-raw"), tiny_model_path,
                   ["src"])
    new = tok({c: table.column(c).to_numpy(zero_copy_only=False) for c in ("problem", "thinking", "final", "source")})
    old = tok({c: table.column(c).to_numpy(zero_copy_only=False) for c in ("problem", "response", "markup", "source")})
    assert new["status"] == old["status"] == ["ok"] * 4 and new["kind"] == old["kind"] == ["thinking"] * 4
    assert [list(x) for x in new["input_ids"]] == [list(x) for x in old["input_ids"]]
    assert len({tuple(x) for x in new["input_ids"]}) == 1


def test_a_stripping_template_fails_the_tokenize_stage(tmp_path, tiny_model_path):
    import shutil

    from raypipe.train.config import TrainConfig
    from raypipe.train.data import Tokenize

    path = tmp_path / "model"
    shutil.copytree(tiny_model_path, path)
    from raypipe.tiny import load_tokenizer

    tok = load_tokenizer(str(path))
    tok.chat_template = STRIPPING_TEMPLATE
    tok.save_pretrained(str(path))
    r = record("think")
    stage = Tokenize(TrainConfig(data="d", model=str(path), output="o", prompt_version="v1-raw"), str(path), ["src"])
    with pytest.raises(ReasoningDropped):  # never counted as a bad row and trained without it
        stage({"problem": [r["problem"]], "thinking": [r["thinking"]], "final": [r["final"]], "source": ["src"]})


def test_step_deletion_edits_thinking_and_keeps_the_response():
    steps = [f"Step {i}: we compute {i} + 1 = {i + 1}." if i % 3 else f"Perhaps step {i} works." for i in range(20)]
    thinking = "\n\n".join(steps)
    rows = [FORMATS.create("flat").records({"id": f"r{i}", "problem": f"Q{i}", "response": response}, "s", "x", i)[0]
            for i, response in enumerate([
                f"<think>\n{thinking}\n</think>\n\n{FINAL}",
                f"<|channel|>analysis<|message|>{thinking}<|end|><|start|>assistant<|channel|>final<|message|>{FINAL}",
                f"<think>\n{STEPS[0]}\n</think>\n\n{FINAL}"])]
    table = records_table(rows)
    a = delete_steps_table(table, 0.1, seed=7)
    b = delete_steps_table(table, 0.1, seed=7)
    assert a.equals(b)  # seeded
    assert a.column("steps_deleted").to_pylist() == [2, 2, 0]  # round(0.1 x 20), round(0.1 x 1) = 0
    assert a.column("response").equals(table.column("response"))  # the raw response is unchanged
    for name in ("final", "thinking_start", "thinking_end", "final_start", "final_end"):
        assert a.column(name).equals(table.column(name)), name
    for before, after, k in zip(table.column("thinking").to_pylist(), a.column("thinking").to_pylist(),
                                a.column("steps_deleted").to_pylist()):
        kept = split_steps(after)
        assert len(kept) == len(split_steps(before)) - k and set(kept) <= set(split_steps(before))
        assert [s for s in split_steps(before) if s in kept] == kept  # order kept
    assert not delete_steps_table(table, 0.1, seed=8).column("thinking").equals(a.column("thinking"))
    # SFT trains on the ablated reasoning.
    assert a.column("thinking").to_pylist()[2] == table.column("thinking").to_pylist()[2]
    assert a.column("thinking").type == pa.string() and a.num_rows == table.num_rows
