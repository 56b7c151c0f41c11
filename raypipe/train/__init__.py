"""SFT on curated trajectories: rendering and packing (pure), the step/loop (torch only), Ray Train + DeepSpeed driver.

`render`, `packing`, `attention` and `step` import neither Ray nor pyarrow, so the step function can be
benchmarked on a bare GPU machine (benchmarks/sft_throughput.py).
"""
