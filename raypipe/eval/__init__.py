"""Benchmark evaluation: registry, prompting, generation backends, grading with the curation verifier, metrics.

config (EvalConfig) -> runner: benchmarks + prompting -> backends (the BACKENDS registry: hf, openai, vllm, replay)
-> grading -> metrics -> results (results.json, report.html, `eval compare`) and stamp. openai_client is the one
client of OpenAI-compatible servers (also the LLM step judge's); hosting serves models for it (`serve-model`).
"""
