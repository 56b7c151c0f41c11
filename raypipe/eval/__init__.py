"""Benchmark evaluation: registry, prompting, generation backends, grading with the curation verifier, metrics."""
