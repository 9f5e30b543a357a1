#!/usr/bin/env bash
# Creates the Python reference environment ($REPO/.venv) used by scripts/make_tokenizer.py,
# scripts/make_fixtures.py and scripts/bench_torch.py.
#
# Idempotent: a stamp file records the pinned requirement set; a second run with the same pins
# returns at once. Delete .venv (or change a pin) to force a reinstall.
#
# torch comes from PyPI only. PyPI's Linux x86_64 torch wheels are CUDA builds whose import needs
# the nvidia/cuda wheels it depends on (a --no-deps install fails at `import torch`), so the full
# dependency set is installed (~3 GiB). The same venv then serves the GPU machines
# (site-packages/nvidia/... holds the CUDA runtime libraries).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PYTHON="${PYTHON:-python3.11}"
STAMP="$VENV/.forge-setup-stamp"

REQUIREMENTS=(
  "torch==2.15.0"
  "transformers==4.57.6"
  "tokenizers==0.22.2"
  "huggingface-hub==0.36.2"
  "safetensors==0.8.0"
  "numpy==2.4.6"
)
WANT="$(printf '%s\n' "$PYTHON" "${REQUIREMENTS[@]}")"

if [[ -x "$VENV/bin/python" && -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$WANT" ]]; then
  exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  PYTHON=python3
fi
echo "setup-python: creating $VENV with $("$PYTHON" --version 2>&1)" >&2
rm -f "$STAMP"
"$PYTHON" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install --quiet --no-input "${REQUIREMENTS[@]}"
"$VENV/bin/python" - <<'EOF'
import torch, transformers, tokenizers, safetensors, numpy
print("setup-python: torch", torch.__version__, "transformers", transformers.__version__,
      "tokenizers", tokenizers.__version__, "safetensors", safetensors.__version__,
      "numpy", numpy.__version__)
EOF
printf '%s' "$WANT" >"$STAMP"
