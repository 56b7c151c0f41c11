"""The scoring endpoint's client, importable as `raypipe.client` (it lives in raypipe.online.client)."""
from raypipe.online.client import AsyncScoringClient, ScoringClient, ScoringError

__all__ = ["AsyncScoringClient", "ScoringClient", "ScoringError"]
