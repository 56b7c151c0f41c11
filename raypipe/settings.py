"""Loading any job's pydantic config from a YAML file plus command-line overrides (flags win)."""
from __future__ import annotations

from typing import TypeVar

import yaml
from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)


def load_settings(model: type[T], path: str | None, overrides: dict) -> T:
    data: dict = {}
    if path:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        data = {k.replace("-", "_"): v for k, v in data.items()}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return model(**data)
