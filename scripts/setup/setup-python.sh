#!/usr/bin/env bash
# Creates the Python reference environment ($REPO/.venv) used by scripts/fixtures/make_tokenizer.py,
# scripts/fixtures/make_fixtures.py and scripts/bench/bench_torch.py.
#
# Usage: scripts/setup/setup-python.sh [--print-python] [--gpu-image | --transformers-5]
#   (no argument)  .venv: the pins the fixtures were made with (transformers 4.57)
#   --transformers-5
#                  .venv-tf5: the current PyPI transformers 5 (what users save models with in
#                  2026: `rope_parameters`, `dtype`), for the fixtures marked as written by it
#   --gpu-image    .venv-gpu-image: the versions the GPU machines' image holds (python3 there is
#                  the image's own; gpu-check.sh runs the PyTorch references under it), so that
#                  scripts/gpu/test-torch-references.sh --gpu-image tries them against the same APIs here
#   --print-python prints the environment's python on stdout (everything else goes to stderr)
#
# Idempotent: a stamp file records the pinned requirement set; a second run with the same pins
# returns at once. Delete .venv (or change a pin) to force a reinstall.
#
# torch comes from PyPI only. PyPI's Linux x86_64 torch wheels are CUDA builds whose import needs
# the nvidia/cuda wheels it depends on (a --no-deps install fails at `import torch`), so the full
# dependency set is installed (~3 GiB). The same venv then serves the GPU machines
# (site-packages/nvidia/... holds the CUDA runtime libraries).
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1

PRINT_PYTHON=0
if [[ "${1:-}" == --print-python ]]; then
  PRINT_PYTHON=1
  shift
fi
case "${1:-}" in
  "")
    VENV="$REPO/.venv"
    PYTHON="${PYTHON:-python3.11}"
    REQUIREMENTS=(
      "torch==2.15.0"
      "transformers==4.57.6"
      "tokenizers==0.22.2"
      "huggingface-hub==0.36.2"
      "safetensors==0.8.0"
      "numpy==2.4.6"
    )
    ;;
  --transformers-5)
    VENV="$REPO/.venv-tf5"
    PYTHON="${PYTHON:-python3.11}"
    REQUIREMENTS=(
      "torch==2.15.0"
      "transformers==5.25.0"
      "tokenizers==0.23.3"
      "huggingface-hub==2.4.0"
      "safetensors==0.8.0"
      "numpy==2.4.6"
    )
    ;;
  --gpu-image)
    # the device library's KINDS.md, "pip list, as a session saw it" (2026-11): Python 3.12.3
    VENV="$REPO/.venv-gpu-image"
    PYTHON="${PYTHON:-python3.12}"
    REQUIREMENTS=(
      "torch==2.11.0"
      "transformers==5.17.0"
      "tokenizers==0.23.2"
      "huggingface-hub==1.33.0"
      "safetensors==0.8.0"
      "numpy==2.5.2"
    )
    ;;
  *)
    echo "setup-python: unknown argument '$1' (use [--print-python] and no argument for .venv, --transformers-5 or --gpu-image)" >&2
    exit 2
    ;;
esac
STAMP="$VENV/.forge-setup-stamp"
WANT="$(printf '%s\n' "$PYTHON" "${REQUIREMENTS[@]}")"
print_python() {
  if ((PRINT_PYTHON)); then echo "$VENV/bin/python"; fi
}

if [[ -x "$VENV/bin/python" && -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$WANT" ]]; then
  print_python
  exit 0
fi

# a pyenv shim answers `command -v` for versions it does not have enabled: try to run it
if ! "$PYTHON" --version >/dev/null 2>&1; then
  minor="${PYTHON#python}"
  installed="$(ls -d "$(pyenv root 2>/dev/null || echo /nonexistent)/versions/$minor".*/bin/"$PYTHON" 2>/dev/null | tail -1 || true)"
  PYTHON="${installed:-python3}"
fi
echo "setup-python: creating $VENV with $("$PYTHON" --version 2>&1)" >&2
rm -f "$STAMP"
"$PYTHON" -m venv "$VENV" >&2
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install --quiet --no-input "${REQUIREMENTS[@]}" >&2
"$VENV/bin/python" - >&2 <<'EOF'
import torch, transformers, tokenizers, safetensors, numpy
print("setup-python: torch", torch.__version__, "transformers", transformers.__version__,
      "tokenizers", tokenizers.__version__, "safetensors", safetensors.__version__,
      "numpy", numpy.__version__)
EOF
printf '%s' "$WANT" >"$STAMP"
print_python
