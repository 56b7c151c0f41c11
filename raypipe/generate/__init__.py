"""The trace factory: a teacher samples problems, each trace is scored while it streams and stopped once a branch
budget says it will be dropped, and what finishes is curated by the same policy as `raypipe curate`.

stream     the incremental scorer: steps and markers counted chunk by chunk, equal to the finished text's
abort      `--abort-when` rules on the running counts
units      problems, a unit per (problem, sample) with its own seed and marker, quota rounds
teacher    the WriteTraces stage: stream (or batch-generate), score, record
job        rounds on the executor, traces/ and aborted/, the curation, the accounting; config: GenerateConfig
"""
