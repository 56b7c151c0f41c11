"""Generation backends behind one interface (backends.base.Backend), by name in the BACKENDS registry.

hf: transformers on this machine; openai: any OpenAI-compatible server; vllm: Ray Data LLM (vLLM engine);
replay: stored responses (outputs generated elsewhere), graded like fresh ones. Each registers itself in its own
module; importing them is cheap (torch and vLLM are imported when a backend is set up). A plugin module adds one
with `@BACKENDS.register("name")` on a Backend subclass.
"""
from __future__ import annotations

from raypipe.eval.backends import hf, openai, replay, vllm  # noqa: F401  (each registers itself)
from raypipe.eval.backends.base import BACKENDS, Backend

__all__ = ["BACKENDS", "Backend"]
