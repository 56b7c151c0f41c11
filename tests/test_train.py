"""SFT: masking, packing isolation and the chunked loss (no Ray); then real Ray Train runs with 2 gloo workers
and real DeepSpeed: ZeRO-2 and ZeRO-3 overfit, checkpoints on s3:// (moto), kill + resume, and the HF export."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import TRAJECTORIES, raypipe_cli
from train_fixtures import real_records, write_curated

from raypipe.train.attention import model_inputs
from raypipe.train.packing import Doc, collate, pack, row_record
from raypipe.train.render import IGNORE, render

MAX_LEN = 2560
RUN = {"model": "tiny", "max_len": MAX_LEN, "overlong": "truncate", "pack": True, "lr": 5e-3, "max_steps": 6,
       "epochs": 10, "checkpoint_every": 2, "num_workers": 2, "cpus_per_worker": 1, "warmup_ratio": 0.0, "seed": 3}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    from raypipe.tiny import load_tokenizer

    return load_tokenizer(tiny_model_path)


@pytest.fixture(scope="module")
def records(shared_data):
    return real_records(TRAJECTORIES, per_source=6, max_chars=4000)[:8]


@pytest.fixture(scope="module")
def curated(records, tmp_path_factory):
    return write_curated(tmp_path_factory.mktemp("sft-data"), records)


def test_labels_mask_prompt_and_padding_exactly(tokenizer, records):
    rendered = [render(tokenizer, r["problem"], r["thinking"], r["final"], 8192) for r in records[:3]]
    prompts = [len(tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": r["problem"]}],
                                                           add_generation_prompt=True, tokenize=False),
                             add_special_tokens=False)["input_ids"]) for r in records[:3]]
    assert all(p > 10 for p in prompts)
    batch = collate([row_record([Doc(x.example.input_ids, x.example.labels)]) for x in rendered], tokenizer.pad_token_id)
    for i, (x, p) in enumerate(zip(rendered, prompts)):
        n = len(x.example.input_ids)
        labels, ids = batch["labels"][i], batch["input_ids"][i]
        assert (labels[:p] == IGNORE).all() and (labels[n:] == IGNORE).all()  # prompt, then padding
        assert torch.equal(labels[p:n], ids[p:n]) and (labels[p:n] != IGNORE).all()
        assert tokenizer.decode(labels[p:n]).rstrip().endswith("<|im_end|>")
    assert (batch["attention_mask"] == (batch["labels"] != IGNORE) | (batch["doc_ids"] >= 0)).all()


def test_overlong_policy_drops_or_truncates(tokenizer, records):
    r = records[-1]
    assert render(tokenizer, r["problem"], r["thinking"], r["final"], 64).status == "dropped_overlong"
    cut = render(tokenizer, r["problem"], r["thinking"], r["final"], 400, overlong="truncate")
    assert cut.status == "truncated" and len(cut.example.input_ids) == 400 and cut.example.labels[-1] != IGNORE
    assert render(tokenizer, "", "x", "y", 64).status == "empty"


def test_packed_document_logits_match_solo(tiny_model_path, tokenizer, records):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, attn_implementation="sdpa").eval()
    docs = [Doc(x.example.input_ids, x.example.labels) for x in
            (render(tokenizer, r["problem"], r["thinking"], r["final"], 1024) for r in records[:4]) if x.example]
    rows = pack(docs, 2048)
    row = max(rows, key=len)
    assert len(row) >= 2
    batch = collate([row_record(row)], tokenizer.pad_token_id)
    with torch.no_grad():
        packed = model(**model_inputs(batch, "sdpa_block")).logits[0]
        solo = torch.cat([model(**model_inputs(collate([row_record([d])], tokenizer.pad_token_id), "sdpa_block"))
                          .logits[0] for d in row])
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
    assert (packed - solo).abs().max() < 1e-4
    # The trap: restarting position ids alone does not isolate documents.
    assert (leaky - solo).abs().max() > 1e-2


def test_chunked_loss_equals_full_cross_entropy(tiny_model_path, tokenizer, records):
    from transformers import AutoModelForCausalLM

    from raypipe.train.step import CausalLMLoss

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    x = render(tokenizer, records[0]["problem"], records[0]["thinking"], records[0]["final"], 2048).example
    batch = collate([row_record([Doc(x.input_ids, x.labels)])], tokenizer.pad_token_id)
    with torch.no_grad():
        ref = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        ours = CausalLMLoss(model, chunk_tokens=64)(batch["input_ids"], batch["labels"], batch["position_ids"])
    assert ours.numel() == int((batch["labels"][:, 1:] != IGNORE).sum())
    assert abs(ours.mean().item() - ref.item()) < 1e-5


def test_pack_fills_rows_within_max_len():
    docs = [Doc(list(range(n)), list(range(n))) for n in (700, 300, 900, 100, 500, 1000)]
    rows = pack(docs, 1000)
    assert sorted(len(d.input_ids) for r in rows for d in r) == [100, 300, 500, 700, 900, 1000]
    assert all(sum(len(d.input_ids) for d in r) <= 1000 for r in rows) and len(rows) == 4


def _train(ray_local, curated, output, **kw):
    from raypipe.train.config import TrainConfig
    from raypipe.train.run import run_train

    return run_train(TrainConfig(data=str(curated), output=str(output), **{**RUN, **kw}))


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


@pytest.fixture(scope="module")
def zero2_run(ray_local, curated, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft-z2")
    return out, _train(ray_local, curated, out, zero=2)


@pytest.mark.timeout(300)
def test_zero2_overfits_and_reports(zero2_run, records):
    out, s = zero2_run
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == list(range(1, 7))
    # Each worker sees the same rows every epoch (2 steps): step 5 repeats step 1's batch, after 4 updates.
    assert history[4]["loss"] < history[0]["loss"] - 0.2
    assert s["steps"] == 6 and s["attention"] == "sdpa_block" and s["precision"] == "fp32"
    assert s["data"]["input_rows"] == 8 and s["data"]["truncated"] >= 1
    assert set(s["per_source_loss"]) == {"sky-14b", "sky-27b"}
    assert {k for h in history for k in h if k.startswith("loss/")} == {"loss/sky-14b", "loss/sky-27b"}
    assert 0 <= s["padding_fraction"] < 1 and s["tokens_per_s"] > 0 and history[-1]["lr"] > 0
    assert json.loads((out / "train_summary.json").read_text())["model_path"] == str(out / "model")
    # What was rendered is recorded: the layout, and how many rows had reasoning.
    r = s["rendering"]
    assert r["assistant_format"] == "<think>\n{thinking}\n</think>\n\n{final}" and r["template"] == "auto"
    assert r["parts_from"] == "thinking/final columns"
    assert r["rows_with_thinking"] + r["rows_without_thinking"] + r["rows_unmarked"] == s["data"]["rows_used"] == 8
    # Responses without reasoning markup (thinking == final) are rendered once; the rest with their reasoning.
    assert r["rows_unmarked"] == sum(x["markup"] == "plain" for x in records) > 0
    assert r["rows_with_thinking"] == sum(x["markup"] == "sky" for x in records) > 0


@pytest.mark.timeout(300)
def test_older_curated_data_gives_the_same_training_rows(ray_local, records, curated, tmp_path):
    """A curated folder written before the thinking / final columns: the response is split, to the same tokens."""
    from raypipe.core.io import Storage
    from raypipe.tiny import resolve_model
    from raypipe.train.config import TrainConfig
    from raypipe.train.data import prepare

    legacy = write_curated(tmp_path / "legacy", records, legacy=True)
    got = {}
    # a small folder is tokenized in the driver; --in-process-below-mb 0 tokenizes it in an actor pool: the same rows
    for name, folder, below in (("columns", curated, 128), ("legacy", legacy, 128), ("pool", curated, 0)):
        cfg = TrainConfig(data=str(folder), output=str(tmp_path / name), in_process_below_mb=below, **RUN)
        ds, stats = prepare(cfg, resolve_model("tiny"), Storage(), ["sky-14b", "sky-27b"])
        got[name] = sorted(tuple(int(i) for i in r["input_ids"]) for r in ds.take_all()), stats
    assert got["columns"] == got["pool"]
    assert got["columns"][0] == got["legacy"][0] and got["columns"][0]
    assert got["columns"][1]["parts_from"] == "thinking/final columns"
    assert got["legacy"][1]["parts_from"].startswith("response (split")
    assert got["columns"][1]["rendered"] == got["legacy"][1]["rendered"]


@pytest.mark.timeout(120)
def test_exported_model_loads_and_generates(zero2_run):
    from transformers import AutoModelForCausalLM

    from raypipe.tiny import load_tokenizer

    out, _ = zero2_run
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = load_tokenizer(str(out / "model"))
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 1+1?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    gen = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > prompt["input_ids"].shape[1]


@pytest.mark.timeout(420)
def test_killed_run_resumes_and_matches_uninterrupted(spawn, ray_local, curated, zero2_run, tmp_path):
    out = tmp_path / "resumed"
    with pytest.raises(Exception):
        _train(ray_local, curated, out, zero=2, fault_at_step=3)
    assert not (out / "model").exists()
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # Restart as a new job through the CLI: a new driver on the same Ray, as a resubmitted job would be.
    args = [f"--data={curated}", "--model=tiny", f"--output={out}", f"--max-len={MAX_LEN}", "--overlong=truncate",
            "--pack", "--lr=5e-3", "--max-steps=6", "--epochs=10", "--checkpoint-every=2", "--num-workers=2",
            "--cpus-per-worker=1", "--warmup-ratio=0", "--seed=3", "--zero=2", "--num-cpus=2"]
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    proc = subprocess.run(raypipe_cli() + ["train", *args], capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "train_summary.json").read_text())
    assert s["resumed_from_step"] == 2 and s["steps"] == 6
    ref, got = _weights(zero2_run[0] / "model"), _weights(out / "model")
    assert ref.keys() == got.keys()
    worst = max((ref[k] - got[k]).abs().max().item() for k in ref)
    assert worst < 1e-4, worst


@pytest.mark.timeout(300)
def test_zero3_with_s3_checkpoints(ray_local, curated, s3_bucket, tmp_path):
    import pyarrow.fs as pafs
    from ray.train import Checkpoint
    from transformers import AutoModelForCausalLM

    from raypipe.core.io import Storage

    endpoint, bucket = s3_bucket
    s = _train(ray_local, curated, f"s3://{bucket}/run", zero=3, s3_endpoint=endpoint, max_steps=4)
    history = [json.loads(x) for x in Storage(endpoint).filesystem(f"s3://{bucket}/run/metrics.jsonl")[0]
               .open_input_stream(f"{bucket}/run/metrics.jsonl").read().decode().splitlines()]
    assert history[2]["loss"] < history[0]["loss"] - 0.1
    assert s["checkpoint"].startswith(f"{bucket}/run/ray/sft/")
    fs, _ = Storage(endpoint).filesystem(f"s3://{bucket}")
    with Checkpoint(s["checkpoint"], filesystem=fs).as_directory() as d:
        state = json.loads((Path(d) / "raypipe_state.json").read_text())
        assert state["step"] == 4
        shards = sorted(p.name for p in (Path(d) / state["tag"]).iterdir())
        assert sum("optim_states" in n for n in shards) == 2, shards  # every rank's ZeRO-3 state
    local = tmp_path / "model"
    local.mkdir()
    pafs.copy_files(f"{bucket}/run/model", str(local), source_filesystem=fs,
                    destination_filesystem=pafs.LocalFileSystem())
    model = AutoModelForCausalLM.from_pretrained(local)
    assert model.config.num_hidden_layers == 2 and all(p.numel() for p in model.parameters())


def test_truncation_keeps_a_minimum_and_counts_the_tokens_cut(tokenizer, records):
    r = records[-1]
    full = render(tokenizer, r["problem"], r["thinking"], r["final"], 10**6)
    n, prompt = len(full.example.input_ids), full.example.labels.count(IGNORE)
    cut = render(tokenizer, r["problem"], r["thinking"], r["final"], prompt + 40, "truncate", min_kept=32)
    assert cut.status == "truncated" and cut.tokens_cut == n - prompt - 40
    assert len(cut.example.input_ids) == prompt + 40
    # two completion tokens of reasoning and no answer: dropped, not trained
    short = render(tokenizer, r["problem"], r["thinking"], r["final"], prompt + 2, "truncate", min_kept=32)
    assert short.status == "dropped_overlong" and short.example is None


def test_every_epoch_after_the_first_reads_its_own_seeded_order():
    from raypipe.train.order import epoch_order

    rows = list(range(500))
    first = list(epoch_order(iter(rows), seed=0, epoch=0, buffer=10_000))
    second, third = (list(epoch_order(iter(rows), seed=0, epoch=e, buffer=10_000)) for e in (1, 2))
    assert first == rows, "the first epoch keeps the prepared (already shuffled) order"
    assert sorted(second) == rows and sorted(third) == rows and second != third != rows
    assert second == list(epoch_order(iter(rows), seed=0, epoch=1, buffer=10_000)), "a resumed run sees it again"
    local = list(epoch_order(iter(rows), seed=0, epoch=1, buffer=50))
    assert sorted(local) == rows and local != rows
    assert list(epoch_order(iter(rows), seed=0, epoch=3, buffer=0)) == rows
