"""Configuration: YAML plus flags, validation, the hash that guards an output folder, and the CLI's errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from raypipe.core.settings import load
from raypipe.curate.config import CurateConfig
from tests.conftest import ROOT


def test_yaml_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("input: in/\noutput: out/\ndrop-top: 0.2\nrule: random\nlexicon: switch\n")
    c = load(CurateConfig, str(f), {"rule": "longest", "seed": None})
    assert (c.drop_top, c.rule, c.lexicon, c.seed) == (0.2, "longest", "switch", 0)


def test_validation():
    with pytest.raises(ValidationError, match="reference-source"):
        CurateConfig(input="a", output="b", proxy="step-ratio")
    with pytest.raises(ValidationError):
        CurateConfig(input="a", output="b", drop_top=1.5)


def test_hash_ignores_execution_settings():
    a = CurateConfig(input="a", output="b")
    assert a.hash() == CurateConfig(input="a", output="b", num_cpus=8, overwrite=True, s3_endpoint="http://x").hash()
    assert a.hash() != CurateConfig(input="a", output="b", drop_top=0.2).hash()


def test_cli_unknown_layout_is_a_clear_error(spawn, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jsonl").write_text(json.dumps({"prompt_text": "a", "gen": "b"}) + "\n")
    r = subprocess.run([sys.executable, "-m", "raypipe.cli", "curate", "--input", str(tmp_path / "in"), "--output",
                        str(tmp_path / "out"), "--num-cpus", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "unknown record layout" in r.stderr and "prompt_text" in r.stderr and "messages" in r.stderr


def test_cli_missing_input_is_a_clear_error(spawn, tmp_path):
    r = subprocess.run([sys.executable, "-m", "raypipe.cli", "curate", "--input", str(tmp_path / "nope"), "--output",
                        str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "input not found" in r.stderr
