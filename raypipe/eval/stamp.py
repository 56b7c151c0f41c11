"""The reproducibility stamp of an evaluation: model and its hash, engine, sampling, prompt, verifier, datasets."""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
from raypipe import __version__
from raypipe.core.verify import VERIFIER_VERSION
from raypipe.core.versions import package_version
from raypipe.core import prompts

FULL_HASH_LIMIT = 256 << 20  # files above this are fingerprinted by size + first and last MiB
_MODEL_FILES = (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja", ".tiktoken", ".py")


def _file_digest(path: str, h) -> str:
    size = os.path.getsize(path)
    h.update(f"{os.path.basename(path)}\0{size}\0".encode())
    with open(path, "rb") as f:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return "full"
        h.update(f.read(1 << 20))
        f.seek(size - (1 << 20))
        h.update(f.read(1 << 20))
        return "sampled"


def model_fingerprint(path: str) -> dict:
    """sha256 over a local checkpoint's files (weights, config, tokenizer); a hub id or URL is named only."""
    if not os.path.isdir(path):
        return {"path": path, "sha256": None, "hash_method": "not a local folder"}
    h = hashlib.sha256()
    methods = set()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full) and name.endswith(_MODEL_FILES):
            methods.add(_file_digest(full, h))
    method = "sha256 of every file" if methods <= {"full"} else "sha256; files over 256 MiB by size + first/last MiB"
    return {"path": os.path.abspath(path), "sha256": h.hexdigest(), "hash_method": method}


def build_stamp(config, backend_info: dict, datasets: dict, scorer_versions: dict) -> dict:
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": backend_info.get("model"),
        "engine": {k: v for k, v in backend_info.items() if k != "model"},
        "sampling": config.sampling().model_dump(),
        "prompt_template": prompts.stamp(config.prompt_version),
        "verifier": {"version": VERIFIER_VERSION, "math-verify": package_version("math-verify"),
                     "timeout_s": config.verify_timeout_s},
        "structure": scorer_versions,
        "datasets": datasets,
        "raypipe": __version__,
        "config_hash": config.hash(),
    }
