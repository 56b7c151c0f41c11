"""The dataset card (README.md) of a curation output: its features are the ones `datasets` derives from the Arrow
schema, and a folder with an empty split still loads (no Ray: hand-made Parquet files)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from raypipe.core.policy import Policy
from raypipe.core.versions import versions
from raypipe.curate.card import dataset_card, features

datasets = pytest.importorskip("datasets")

SCHEMA = pa.schema([("id", pa.string()), ("n", pa.int64()), ("x", pa.float64()), ("f", pa.float32()),
                    ("ok", pa.bool_()), ("big", pa.large_string()), ("tags", pa.list_(pa.string())),
                    ("nested", pa.list_(pa.list_(pa.int32()))), ("pair", pa.struct([("a", pa.int64()),
                                                                                    ("b", pa.string())])),
                    ("items", pa.list_(pa.struct([("k", pa.string())]))), ("fixed", pa.list_(pa.float64(), 3)),
                    ("when", pa.timestamp("us")), ("blob", pa.binary())])


def test_features_are_the_ones_datasets_derives():
    assert features(SCHEMA) == datasets.Features.from_arrow_schema(SCHEMA)._to_yaml_list()
    assert datasets.Features._from_yaml_list(features(SCHEMA)) == datasets.Features.from_arrow_schema(SCHEMA)
    assert features(pa.schema([("m", pa.map_(pa.string(), pa.int64()))])) is None  # left to datasets to infer


def manifest(kept: int, dropped: int) -> dict:
    policy = Policy(thresholds={"s": {"score": 0.2, "tiebreak": 1, "n_correct": 10, "n_drop": 1}})
    return {"counts": {"input_rows": kept + dropped + 1, "records": kept + dropped + 1, "kept": kept,
                       "dropped": dropped, "rejected": 1}, "balanced": True,
            "policy": policy.model_dump(mode="json"), "config": {"segmenter": "blank", "grader": "math-verify",
                                                                 "answer_from": "final"},
            "config_hash": "0123456789abcdef", "versions": versions("paper"),
            "suspect_reference": {"on_suspect_reference": "flag", "problems": []}}


def front(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_an_empty_split_is_left_out_and_the_rest_loads(tmp_path):
    out = tmp_path / "run"
    (out / "dropped").mkdir(parents=True)
    table = pa.table({"id": ["a", "b", "c"], "n": [1, 2, 3]})
    pq.write_table(table.slice(0, 2), out / "dropped" / "part-1.parquet")
    pq.write_table(table.slice(2), out / "dropped" / "part-2.parquet")
    card = dataset_card(manifest(0, 3), table.schema, str(out))
    meta = front(card)
    assert meta["license"] == "other"
    assert meta["configs"][0]["data_files"] == [{"split": "dropped", "path": "dropped/*.parquet"}]
    assert "curated" in card and "left out of the configs" in card
    (out / "README.md").write_text(card)
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
    assert list(ds) == ["dropped"] and ds["dropped"].num_rows == 3
    assert ds["dropped"].features == datasets.Features.from_arrow_schema(table.schema)


def test_nothing_to_load():
    card = dataset_card(manifest(0, 0), None, "s3://bucket/run/")
    assert "configs" not in front(card) and "nothing to load" in card


def test_body_names_the_policy_and_provenance():
    card = dataset_card(manifest(5, 3), SCHEMA, "/data/run")
    meta = front(card)
    assert [f["split"] for f in meta["configs"][0]["data_files"]] == ["curated", "dropped"]
    assert meta["dataset_info"]["features"] == features(SCHEMA)
    for text in ("0123456789abcdef", "paper@1", "keyword-share", "| s | 10 | 1 | 0.2 |",
                 'load_dataset("/data/run")', '"curated": "/data/run/curated/*.parquet"'):
        assert text in card, text
