"""How raypipe starts its own Ray: a local instance on 127.0.0.1 without a token (no warning on every run), unless
the environment says otherwise or there is a cluster to join. (A real start: tests/test_serve.py's strict server.)"""
from __future__ import annotations

import os

from raypipe.ray_env import LOCAL_RAY_ENV, local_ray_defaults


def test_a_local_ray_defaults_to_loopback_without_a_token_unless_told_otherwise(monkeypatch):
    for key in (*LOCAL_RAY_ENV, "RAY_ADDRESS", "RAY_JOB_SUBMISSION_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")  # joining a cluster: its settings, not ours
    local_ray_defaults()
    assert not any(k in os.environ for k in LOCAL_RAY_ENV)
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # an explicit choice wins
    local_ray_defaults()
    assert os.environ["RAY_AUTH_MODE"] == "token" and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
