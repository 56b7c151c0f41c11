"""The paper's diagnostics: a token-level SFT loss probe and an LLM step judge, and a page comparing sources.

inputs, dataset        trajectories into Ray Data (any curate input, or a curation output folder)
loss, loss_job         the loss probe (pure) and its job (model actors); loss_summary aggregates
judge                  the step judge's pure logic: prompts, answer parser, keyword baseline, label statistics
judge_base             the JUDGE_BACKENDS registry, the output schema, prepare() / result_row()
judge_backends         `keyword` and `openai` backends (actor pools); judge_vllm: the `vllm` backend
config                 JudgeConfig, LossConfig, DiagnoseSettings; judge_job runs the judge, judge_summary aggregates
report, compare        the HTML reports and the two-source page (`raypipe diagnose`)
"""
