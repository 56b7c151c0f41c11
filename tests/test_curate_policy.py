"""The curation job's audit of the references, its dataset card and --policy-from, end to end on a real local Ray
over a copy of the real trajectories whose references were made wrong for some problems. Three runs shared by the
module: a keep-out run, the same input under its policy, and a subset of the input under its policy."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raypipe.curate.config import CurateConfig
from raypipe.curate.job import run_curate
from tests.conftest import TRAJECTORIES
from tests.test_curate_job import read_part

pytestmark = pytest.mark.timeout(600)
AIME = ("skyt1_math-correct-5K-14B_aime24.jsonl", "skyt1_math-correct-5K-32B-ckpt140_aime24.jsonl")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def altered(tmp_path_factory, shared_data):
    """The 600 real rows with wrong references for every other problem that both aime24 sources answered
    correctly (by the data's own `correct`), and for one problem only one of them did. Returns (folder, ids
    that must be flagged, ids that must not)."""
    rows = {name: read_jsonl(TRAJECTORIES / name) for name in AIME}
    a, b = ({r["id"]: r for r in rows[name]} for name in AIME)
    assert all(a[i]["problem"] == b[i]["problem"] for i in a)
    both = sorted((i for i in a if a[i]["correct"] and b[i]["correct"]), key=lambda i: int(i.split("_")[1]))
    one = next(i for i in sorted(a) if a[i]["correct"] != b[i]["correct"])
    flagged, control = set(both[::2]), {one, *both[1::2]}
    assert len(flagged) >= 2 and len(both) - len(flagged) >= 1
    out = tmp_path_factory.mktemp("altered")
    for f in TRAJECTORIES.glob("*.jsonl"):
        lines = []
        for r in read_jsonl(f):
            if f.name in AIME and r["id"] in flagged | {one}:
                r["answer"] = str(int(r["answer"]) + 1)
            lines.append(json.dumps(r))
        (out / f.name).write_text("\n".join(lines) + "\n")
    return out, flagged, control


@pytest.fixture(scope="module")
def keep_out(altered, tmp_path_factory):
    out = tmp_path_factory.mktemp("keepout") / "out"
    # a generous verifier bound (inherited by the runs under its policy): a timeout on a loaded machine is a verdict
    cfg = CurateConfig(input=str(altered[0]), output=str(out), on_suspect_reference="keep-out", verify_timeout_s=30)
    return out, run_curate(cfg)


def by_id(out: Path) -> dict[tuple, tuple]:
    return {(r["source"], r["id"]): (part, r["reason"], r["problem_id"], r["reference_answer"])
            for part in ("curated", "dropped") for r in read_part(out, part)}


def test_the_audit_flags_every_altered_problem_and_no_other(keep_out, altered):
    out, manifest = keep_out
    _, flagged, control = altered
    rows = by_id(out)
    problem_of = {rid: v[2] for (_, rid), v in rows.items()}
    found = manifest["suspect_reference"]["problems"]
    assert {p["problem_id"] for p in found} == {problem_of[i] for i in flagged}
    assert not {p["problem_id"] for p in found} & {problem_of[i] for i in control}
    originals = {r["id"]: r["answer"] for r in read_jsonl(TRAJECTORIES / AIME[0])}
    for p in found:
        rid = next(i for i in flagged if problem_of[i] == p["problem_id"])
        assert p["reference"] == str(int(originals[rid]) + 1) and p["answer"] == originals[rid]
        assert p["rows"] == 2 and len(p["sources"]) == 2 and p["correct_rows"] == 0
        assert sorted((e["source"], e["id"]) for e in p["examples"]) == sorted((s, rid) for s in p["sources"])
    html = (out / "report.html").read_text()
    assert "Suspect references" in html and all(p["problem_id"] in html for p in found)


def test_keep_out_drops_their_rows_with_the_reason_and_counts_add_up(keep_out, altered):
    out, manifest = keep_out
    _, flagged, _ = altered
    rows = by_id(out)
    suspect = {k for k, v in rows.items() if v[1].startswith("suspect_reference")}
    assert {rid for _, rid in suspect} == flagged and len(suspect) == 2 * len(flagged)
    assert all(rows[k][0] == "dropped" for k in suspect)
    assert sorted(manifest["suspect_reference"]["kept_out"]) == sorted(
        [p["problem_id"], p["reference"]] for p in manifest["suspect_reference"]["problems"])
    c = manifest["counts"]
    assert c["records"] == 600 == c["kept"] + c["dropped"] + c["rejected"] == len(rows) and manifest["balanced"]
    for source, th in manifest["policy"]["thresholds"].items():
        ranked = [r for r in read_part(out, "curated") + read_part(out, "dropped")
                  if r["source"] == source and r["verdict"] == "correct" and (source, r["id"]) not in suspect]
        assert th["n_correct"] == len(ranked) and th["n_drop"] == sum(r["reason"].startswith("rule:") for r in ranked)
    rules = manifest["decision_rules"]
    assert rules.index("duplicate") < rules.index("suspect_reference") < rules.index("verdict")


def test_rows_kept_out_are_not_ranked(keep_out, altered, tmp_path):
    """Phase 2's rank keys of a chunk leave out the rows of a kept-out reference (one correct row here)."""
    from raypipe.core import io
    from raypipe.curate import phase2

    out, _ = keep_out
    scored = tmp_path / "_work" / "scored"
    shutil.copytree(out / "_work" / "scored", scored)
    rows = by_id(out)
    row = next(k for k, v in rows.items() if k[1] in altered[2] and v[1] == "kept")  # a verified-correct row
    chunk = next(p.name[len("part-"):-len(".parquet")] for p in sorted(scored.glob("part-*.parquet"))
                 if row in set(zip(*pq.read_table(p, columns=["source", "id"]).to_pydict().values())))
    cfg = CurateConfig(input=str(altered[0]), output=str(tmp_path), on_suspect_reference="keep-out")

    def ranked(suspects):
        policy = cfg.policy().model_copy(update={"suspect_references": suspects})
        counts = phase2._keys_pass(str(tmp_path), io.Storage(), chunk, phase2.rank_columns(cfg), 0,
                                   policy.model_dump_json(), [])[0]
        return sum(int(c.sum()) for _, c in counts.values())

    assert ranked([(rows[row][2], rows[row][3])]) == ranked([]) - 1


def test_the_card_loads_with_datasets(keep_out, tmp_path):
    datasets = pytest.importorskip("datasets")
    out, manifest = keep_out
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "license: other" in card and manifest["config_hash"] in card
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
    assert {s: ds[s].num_rows for s in ds} == {"curated": manifest["counts"]["kept"],
                                               "dropped": manifest["counts"]["dropped"]}
    assert sorted(ds["curated"]["id"]) == sorted(r["id"] for r in read_part(out, "curated"))
    same = datasets.load_dataset("parquet", data_files={"dropped": str(out / "dropped" / "*.parquet")},
                                 cache_dir=str(tmp_path / "hf"))
    assert same["dropped"].features == ds["dropped"].features


@pytest.fixture(scope="module")
def frozen_same(keep_out, altered, tmp_path_factory):
    out = tmp_path_factory.mktemp("frozen") / "out"
    cfg = CurateConfig(input=str(altered[0]), output=str(out), policy_from=str(keep_out[0] / "manifest.json"),
                       drop_top=0.3)
    return out, run_curate(cfg)


def test_policy_from_on_the_same_input_gives_the_same_decisions(keep_out, frozen_same):
    (out_a, a), (out_b, b) = keep_out, frozen_same
    assert by_id(out_b) == by_id(out_a)
    assert b["policy"]["thresholds"] == a["policy"]["thresholds"] and b["config"]["drop_top"] == 0.1
    assert b["input_fingerprint"] == a["input_fingerprint"]
    per_chunk = [sorted((i["uri"], i["fingerprint"]) for i in m["inputs"]) for m in (a, b)]
    assert per_chunk[0] == per_chunk[1] and all(f for _, f in per_chunk[0])  # (listed in the order chunks finished)
    assert b["policy_from"]["manifest"] == str(out_a / "manifest.json")
    assert b["policy_from"]["fingerprint_matches"] is True
    assert b["policy_from"]["overridden"] == {"drop_top": [0.3, 0.1]} and b["policy_from"]["versions_differ"] == {}


def test_policy_from_on_another_input_applies_the_same_thresholds(keep_out, altered, tmp_path, capsys):
    out_a, a = keep_out
    subset = tmp_path / "subset"
    subset.mkdir()
    for name in AIME:
        shutil.copy(altered[0] / name, subset / name)
    m = run_curate(CurateConfig(input=str(subset), output=str(tmp_path / "out"), policy_from=str(out_a)))
    assert m["policy"]["thresholds"] == a["policy"]["thresholds"]
    assert m["policy_from"]["fingerprint_matches"] is False and m["input_fingerprint"] != a["input_fingerprint"]
    assert "is not the one the policy was measured on" in capsys.readouterr().out
    rows, earlier = by_id(tmp_path / "out"), by_id(out_a)
    assert len(rows) == 60 and all(rows[k] == earlier[k] for k in rows)  # each row decided as in the earlier run


def test_policy_from_reads_a_manifest_or_its_folder_and_names_what_it_overrides(tmp_path):
    """No Ray: the frozen settings come from the earlier manifest, those given here that differ are named, and a
    version a decision depends on that differs is recorded."""
    from raypipe.core import io
    from raypipe.core.versions import versions
    from raypipe.curate import policy_from

    earlier = CurateConfig(input="in", output=str(tmp_path), drop_top=0.2, lexicon="switch", segmenter="blank")
    manifest = {"config": earlier.model_dump(mode="json"), "policy": earlier.policy().model_dump(mode="json"),
                "versions": {**versions("switch"), "lexicon": "switch@0"}, "input_fingerprint": "ab" * 16}
    del manifest["config"]["on_suspect_reference"]  # a setting added since that run: its default applies
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    here = CurateConfig(input="other", output="out", drop_top=0.3, on_suspect_reference="keep-out",
                        policy_from=str(tmp_path))
    config, run = policy_from.apply(here, io.Storage())
    assert (config.drop_top, config.lexicon, config.on_suspect_reference, config.input) == (0.2, "switch", "flag",
                                                                                            "other")
    assert run.uri == str(tmp_path / "manifest.json")
    assert run.overridden == {"drop_top": [0.3, 0.2], "on_suspect_reference": ["keep-out", "flag"]}
    assert run.versions_differ == {"lexicon": ["switch@0", versions("switch")["lexicon"]]}
    assert run.record("cd" * 16)["fingerprint_matches"] is False and run.record("ab" * 16)["fingerprint_matches"]
    assert any("other versions" in line for line in run.describe())
    (tmp_path / "not.json").write_text(json.dumps({"counts": {}}))
    with pytest.raises(ValueError, match="not a curation manifest"):
        policy_from.apply(here.model_copy(update={"policy_from": str(tmp_path / "not.json")}), io.Storage())
    with pytest.raises(FileNotFoundError):
        policy_from.apply(here.model_copy(update={"policy_from": str(tmp_path / "none")}), io.Storage())
