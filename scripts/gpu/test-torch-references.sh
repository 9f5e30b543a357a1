#!/usr/bin/env bash
# The PyTorch side of every GPU comparison (scripts/gpu/gpu-check.sh runs these three on the GPU
# machine) runs nowhere else; this runs each on the CPU at small sizes, through the same code
# paths (model construction at the release architectures, forward and backward, SDPA's flash
# backend, DynamicCache decoding), and checks the fields gpu-check.sh's tables read. Run it
# before spending device time (a broken reference costs a whole call there). Not part of
# scripts/test.sh: it needs the 3 GiB Python environment (scripts/setup/setup-python.sh, installed here
# on first use). About 2 minutes on 2 cores.
#
#   scripts/gpu/test-torch-references.sh              with .venv (the fixtures' pins)
#   scripts/gpu/test-torch-references.sh --gpu-image  with .venv-gpu-image: the torch and transformers
#                                                 versions of the GPU machines' image, whose python3
#                                                 runs these there
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
PY="$(scripts/setup/setup-python.sh --print-python "$@")"
fail() { echo "test-torch-references: FAIL: $*" >&2; exit 1; }

# the last line of a run, checked to be JSON with the named fields
expect_fields() { # what, line, fields...
  local what="$1" line="$2"
  shift 2
  "$PY" - "$line" "$@" <<'PY' || fail "$what: $2"
import json, sys
row = json.loads(sys.argv[1])
missing = [f for f in sys.argv[2:] if f not in row]
if missing or "error" in row:
    sys.exit(f"missing {missing} or an error in {row}")
PY
}

echo "+ bench_flash_torch.py (flash stage)" >&2
lines="$("$PY" scripts/gpu/bench_flash_torch.py --device cpu --seqs 200 --warmup 0 --steps 1)"
expect_fields "matmul rate" "$(grep '"matmul_bf16"' <<<"$lines")" impl tflops
expect_fields "flash forward" "$(grep '"forward"' <<<"$lines")" seq pass impl median_ms tflops torch_peak_alloc_mib
expect_fields "flash backward" "$(grep '"backward"' <<<"$lines")" seq pass impl median_ms tflops

echo "+ bench_torch.py --model 0.6b (train stage)" >&2
line="$("$PY" scripts/bench/bench_torch.py --device cpu --dtype bf16 --model 0.6b --seq 64 --batch 1 --gradient-checkpointing --warmup 0 --steps 1 | tail -1)"
expect_fields "train step" "$line" impl params tokens_per_s step_s_median loss

echo "+ bench_decode_torch.py --arch 0.6b (decode stage)" >&2
line="$("$PY" scripts/bench/bench_decode_torch.py --arch 0.6b --device cpu --context 64 --batch 2 --new-tokens 4 --chunk 32 | tail -1)"
expect_fields "decoding" "$line" impl model context batch params new_tokens decode_s prefill_tokens_per_s decode_tokens_per_s device_mem_used_after_decode_mib

echo "test-torch-references: the three PyTorch references run on the CPU ($("$PY" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")'))" >&2
