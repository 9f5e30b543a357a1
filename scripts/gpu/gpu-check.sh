#!/usr/bin/env bash
# What runs ON the GPU machine (the device tool runs it in a copy of the repo; build the tarball
# first with scripts/gpu/build-cuda.sh and carry .gpu). Unpacks the CUDA binaries, points the loader
# at PyTorch's CUDA 13 libraries, then per stage:
#   parity  the GPU parity tests (CI=true: no GPU = failure), outputs poisoned before every kernel,
#           and the SFT recipe on the GPU against the same run on the CPU (tests/cuda_sft.rs)
#   kernels fused kernels vs candle's composite paths, and the bf16 matmul rate (candle and torch)
#   train   a training step of Qwen3-0.6B/1.7B/8B-shaped random models, the 8B at 4k, 8k and 32k
#           context, the others at 4k, forge and PyTorch + transformers (SDPA, bf16, gradient
#           checkpointing) interleaved in one run
#   flash   the fused flash attention: its parity tests (outputs poisoned), compute-sanitizer memcheck of
#           them and racecheck of the packed one where the machine has compute-sanitizer, then forward/backward TFLOP/s at 4k/8k/32k
#           (Qwen3-8B attention shape) beside torch SDPA's flash backend, the matmul path's memory
#           at the same shapes (the 32k memory check), and the bf16 matmul rate (benches/gpu_flash.rs,
#           scripts/gpu/bench_flash_torch.py)
#   decode  greedy decoding over the GPU KV caches (benches/gpu_decode.rs) beside PyTorch +
#           transformers (scripts/bench/bench_decode_torch.py --arch: SDPA, DynamicCache), Qwen3-0.6B/1.7B/8B
#           shapes at 4k/8k (batch 8) and 32k (batch 1) context: prefill and decode tokens/s, the
#           decode step's effective memory bandwidth, device memory; and, per run length of a step's
#           rows, the flash tiles vs split-K over the caches (benches/gpu_cached_attention.rs: the
#           measurement FLASH_MIN_ROWS awaits)
#   profile Nsight Compute (ncu, clocks left alone) on the attention kernels, forge's and torch's
#           flash backend side by side at 8k (Qwen3-8B attention shape), and the decode kernels over
#           4k caches: per kernel its time, SM / memory / DRAM / tensor-pipe throughput, achieved
#           and theoretical occupancy, registers, shared memory and top warp stalls, plus every
#           metric ncu collected as JSON rows; and every kernel of one training step (0.6B shape,
#           4k), forge's and torch's, timed and summed per kernel name: what tuning needs, kept for
#           sessions without a GPU. Not part of "all"; where ncu cannot read the counters
#           (gVisor), the table says so and the call does not fail
#   all     parity, kernels, train, flash, decode in order (not into the device tool's $OUT: 10 files, over the 8 that come back)
# and writes a markdown table per stage (GPU model, driver, date, commit) into RESULTS_DIR, the raw
# rows beside it (.jsonl), and every test's and benchmark's stderr into gpu-check.log.
#
# The device tool kills a command at 10 minutes and returns only what is under $OUT, so the script
# keeps its own deadline, BUDGET_S seconds from its start: every test binary and bench run gets what
# is left of it (`timeout`), a run that is cut off or never started is recorded as such, and every
# stage's table is still written. Several stages share one call (one machine start) as a list:
# `scripts/gpu/gpu-check.sh parity,kernels,flash`, then `profile,train`, then `decode` (each call within 30 s of
# the last keeps the machine warm; see README, "GPU (CUDA)"). Where the device tool gives a call
# less than 600 s (its reply's limit_s: little device time left), pass BUDGET_S = limit_s - 60.
#
# Usage: scripts/gpu/gpu-check.sh [STAGES] [TARBALL] [RESULTS_DIR]
#        STAGES: parity, kernels, train, flash, decode, profile, a comma-separated list of them, or all
#        defaults: all, .gpu/forge-cuda.tar.xz, $OUT if set (the device tool's) else benches/results
# Environment: BUDGET_S (default 540: the call's deadline, under the device tool's 600 s),
#              PYTHON (default python3: the one with torch), TRAIN_PLAN (model:context pairs,
#              "8b:4096 8b:8192 8b:32768 1.7b:4096 0.6b:4096": the issue's target first),
#              TRAIN_STEPS (3), DECODE_MODELS ("8b 1.7b 0.6b"),
#              DECODE_PLAN (context:batch pairs, "4096:8 8192:8 32768:1"), DECODE_NEW_TOKENS (64),
#              SANITIZER_S (150: the most each compute-sanitizer run of the flash stage may take),
#              PROFILE_S (90: the most each ncu run of the profile stage may take), PROFILE_STAGE_S
#              (240: the most the whole profile stage may take), NCU (ncu's path).
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
STAGES="${1:-all}"
[[ "$STAGES" == all ]] && STAGES=parity,kernels,train,flash,decode
TARBALL="${2:-.gpu/forge-cuda.tar.xz}"
RESULTS="${3:-${OUT:-benches/results}}"
PY="${PYTHON:-python3}"
die() { echo "gpu-check: $*" >&2; exit 1; }

IFS=, read -ra STAGE_LIST <<<"$STAGES"
files=1 # gpu-check.log
for stage in "${STAGE_LIST[@]}"; do
  case "$stage" in
    parity) files=$((files + 1)) ;;
    kernels | train | flash | decode | profile) files=$((files + 2)) ;;
    *) die "unknown stage '$stage' in '$STAGES' (parity, kernels, train, flash, decode, profile, a comma-separated list of them, or all)" ;;
  esac
done
# the device tool brings back at most 8 files from $OUT
if [[ -n "${OUT:-}" && "$RESULTS" == "$OUT" ]] && ((files > 8)); then
  die "'$STAGES' writes $files files, more than the 8 the device tool brings back from \$OUT: split it (parity,kernels,flash, then profile,train, then decode)"
fi
BUDGET="${BUDGET_S:-540}"
[[ "$BUDGET" =~ ^[0-9]+$ ]] || die "BUDGET_S must be a number of seconds, got '$BUDGET'"
[[ -f "$TARBALL" ]] || die "$TARBALL not found: run scripts/gpu/build-cuda.sh on the build machine and carry its folder"
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this is not a GPU machine"
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu-check.log"
: >"$LOG"

BIN="$(mktemp -d)"
trap 'rm -rf "$BIN"' EXIT
if command -v xz >/dev/null; then
  tar -C "$BIN" -xJf "$TARBALL"
else # the GPU image's package list does not promise xz; Python's tarfile reads it through lzma
  "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' "$TARBALL" "$BIN"
fi
# Each process loads candle's ~40 MB of PTX, which the driver compiles on first use; a cache large
# enough for all of it lets every later process of the call reuse that work.
export CUDA_CACHE_MAXSIZE=4294967296

# candle links libcublas/libcublasLt/libcurand/libnvrtc/libcudart (CUDA 13) and the driver's
# libcuda.so.1; PyTorch's cu13 wheels ship the former under site-packages/nvidia/.
NVIDIA_LIBS="$("$PY" - <<'PY'
import os, nvidia
wanted = ("libcublas.so", "libcublasLt.so", "libcurand.so", "libnvrtc.so", "libcudart.so", "libnccl.so")
dirs = {d for root in nvidia.__path__ for d, _, files in os.walk(root) if any(f.startswith(wanted) for f in files)}
print(":".join(sorted(dirs)))
PY
)" || die "could not locate PyTorch's nvidia libraries with $PY (import nvidia failed)"
export LD_LIBRARY_PATH="$NVIDIA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for exe in "$BIN"/bin/forge "$BIN"/tests/* "$BIN"/benches/*; do
  missing="$(ldd "$exe" | grep 'not found' || true)"
  [[ -z "$missing" ]] || die "$(basename "$exe") cannot load: $missing (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
done

GPU="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
REFERENCE="$("$PY" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")' 2>>"$LOG" || echo "torch/transformers not importable")"
header() {
  echo "- GPU: $GPU"
  echo "- Date: $(date -u +%Y-%m-%d); binaries: $(grep -h '^commit' "$BIN/MANIFEST"), $(grep -h '^nvcc' "$BIN/MANIFEST")"
  echo "- Reference: $REFERENCE"
}
failed=0

# Runs "$@" for at most CAP seconds ($1) and within what is left of the budget; exit 124 when cut
# off (or when too little is left to start).
capped() {
  local cap="$1" left=$((BUDGET - SECONDS))
  shift
  if ((left < 15)); then
    echo "gpu-check: not started (the ${BUDGET}s budget is spent): $*" | tee -a "$LOG" >&2
    return 124
  fi
  echo "+ $*" >>"$LOG"
  timeout --kill-after=10 "$((cap < left ? cap : left))" "$@"
}
bounded() { capped "$BUDGET" "$@"; }
# Appends the markdown table that a Python script (stdin) makes of a JSON-lines file ($2) to $1: a
# script that breaks on an unexpected row costs that table, never the stages after it.
table() {
  "$PY" - "$2" >>"$1" 2>>"$LOG" || echo "(no table: its script failed, exit $? (see gpu-check.log); the rows are in $(basename "$2"))" >>"$1"
}
# What a run's exit status means, for the tables.
failure() {
  case "$1" in
    124 | 137) echo "not finished within the ${BUDGET}s budget (BUDGET_S)" ;;
    *) echo "failed, exit $1 (out of memory?)" ;;
  esac
}

# torch's bf16 matmul rate on this GPU (8192³, median of 10 after 3 warm-ups): one JSON line, the
# denominator of MFU and of the flash fraction.
matmul_rate() {
  bounded "$PY" - <<'PY' || echo "{\"bench\": \"matmul_bf16\", \"impl\": \"torch\", \"error\": \"$(failure $?)\"}"
import json, time, torch
n = 8192
a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
for _ in range(3):
    a @ b
torch.cuda.synchronize()
times = []
for _ in range(10):
    t0 = time.perf_counter(); a @ b; torch.cuda.synchronize(); times.append(time.perf_counter() - t0)
s = sorted(times)[len(times) // 2]
print(json.dumps({"bench": "matmul_bf16", "shape": f"{n}x{n}x{n}", "impl": "torch", "median_ms": s * 1e3, "tflops": 2 * n**3 / s / 1e12}))
PY
}

run_parity() {
  local out="$RESULTS/gpu-parity.md"
  {
    echo "# GPU parity: CUDA kernels vs their CPU references"
    echo
    header
    echo "- Every kernel output is filled with NaN before the kernel runs (unwritten elements fail)."
    echo
    echo "| test binary | result |"
    echo "|---|---|"
  } >"$out"
  local rc
  for t in "$BIN"/tests/*; do
    if CI=true FORGE_REPO="$REPO" bounded "$t" --test-threads=1 >>"$LOG" 2>&1; then
      echo "| $(basename "$t") | pass |" >>"$out"
    else
      rc=$?
      echo "| $(basename "$t") | **FAIL**: $(failure $rc) (see gpu-check.log) |" >>"$out"
      failed=1
    fi
  done
  grep -E '^test |test result' "$LOG" | sed 's/^/    /' >>"$out" || true
  cat "$out"
}

run_kernels() {
  local lines="$RESULTS/gpu-kernels.jsonl" out="$RESULTS/gpu-kernels.md"
  local rc
  CI=true bounded "$BIN/benches/gpu_kernels" >"$lines" 2>>"$LOG" || { rc=$?; echo "{\"bench\": \"gpu_kernels\", \"error\": \"$(failure $rc)\"}" >>"$lines"; }
  matmul_rate >>"$lines"
  {
    echo "# GPU kernels: fused CUDA kernels vs candle's composite paths"
    echo
    header
    echo "- Forward + backward (AdamW: one step), median of 20 after 3 warm-ups, device synchronised around each."
    echo "- Reproduce: \`scripts/gpu/build-cuda.sh\`, then \`scripts/gpu/gpu-check.sh kernels\` on the GPU machine."
    echo
  } >"$out"
  table "$out" "$lines" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| bench | shape | impl | median ms | TFLOP/s | composite / fused |")
print("|---|---|---|---|---|---|")
fused = {(r["bench"], r["shape"]): r["median_ms"] for r in rows if r.get("impl") == "fused"}
for r in rows:
    if "error" in r:
        print(f'| {r["bench"]} | | {r.get("impl", "")} | {r["error"]} | | |')
        continue
    key = (r["bench"], r["shape"])
    ratio = f'{r["median_ms"] / fused[key]:.2f}×' if r["impl"] == "composite" and key in fused else ""
    tflops = f'{r["tflops"]:.0f}' if "tflops" in r else ""
    print(f'| {r["bench"]} | {r["shape"]} | {r["impl"]} | {r["median_ms"]:.3f} | {tflops} | {ratio} |')
PY
  cat "$out"
}

run_train() {
  local lines="$RESULTS/gpu-train-step.jsonl" out="$RESULTS/gpu-train-step.md"
  local steps="${TRAIN_STEPS:-3}"
  matmul_rate >"$lines"  # measured in this call: a later call may run on a fresh machine
  for plan in ${TRAIN_PLAN:-8b:4096 8b:8192 8b:32768 1.7b:4096 0.6b:4096}; do
    local model="${plan%%:*}" seq="${plan##*:}"
    echo "+ forge $model $seq" >&2
    CI=true bounded "$BIN/benches/gpu_train_step" --model "$model" --seq "$seq" --recompute --warmup 1 --steps "$steps" 2>>"$LOG" | tail -1 >>"$lines" \
      || echo "{\"impl\": \"forge\", \"model\": \"$model\", \"seq\": $seq, \"error\": \"$(failure $?)\"}" >>"$lines"
    echo "+ torch $model $seq" >&2
    PYTHONUNBUFFERED=1 bounded "$PY" scripts/bench/bench_torch.py --device cuda --dtype bf16 --model "$model" --seq "$seq" --batch 1 \
      --gradient-checkpointing --warmup 1 --steps "$steps" 2>>"$LOG" | tail -1 >>"$lines" \
      || echo "{\"impl\": \"pytorch\", \"model\": \"$model\", \"seq\": $seq, \"error\": \"$(failure $?)\"}" >>"$lines"
  done
  {
    echo "# GPU training step: forge vs PyTorch + transformers"
    echo
    header
    echo "- Step = forward + backward (no optimizer) of a Qwen3-shaped model with random bf16 weights, batch 1 × seq tokens,"
    echo "  activation recomputation (forge) / gradient checkpointing (PyTorch, SDPA attention); median of $steps after 1 warm-up."
    echo "- Model FLOPs/token = 6 × (matmul parameters incl. lm_head) + 6 × layers × heads × head_dim × seq (causal attention);"
    echo "  recomputation is not counted. MFU is against torch's bf16 matmul rate, measured at the start of this stage."
    echo "- Memory: the driver's used device memory after a step (both), and torch's peak allocated/reserved."
    echo "- Reproduce: \`scripts/gpu/build-cuda.sh\`, then \`scripts/gpu/gpu-check.sh train\` on the GPU machine."
    echo
  } >"$out"
  table "$out" "$lines" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rows = [r for r in lines if r.get("bench") != "matmul_bf16"]
peak = next((r["tflops"] for r in lines if r.get("bench") == "matmul_bf16" and "tflops" in r), None)
print(f'bf16 matmul 8192³ (torch, this run): {peak:.0f} TFLOP/s' if peak else "bf16 matmul rate: not measured (MFU n/a)")
print()
# hidden, layers, heads, head_dim, vocab per model (as in bench_torch.py)
shapes = {"0.6b": (1024, 28, 16, 128, 151936), "1.7b": (2048, 28, 16, 128, 151936), "8b": (4096, 36, 32, 128, 151936)}
print("| model | seq | impl | tokens/s | step s | MFU | device mem used MiB | torch peak alloc / reserved MiB | loss |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if "error" in r:
        print(f'| {r["model"]} | {r.get("seq", "")} | {r["impl"]} | {r["error"]} | | | | | |')
        continue
    try:
        hidden, layers, heads, head_dim, vocab = shapes[r["model"]]
        embed = vocab * hidden
        tied = r["model"] != "8b"
        matmul_params = r["params"] - embed + (embed if tied else 0)  # the lm_head matmul counts, the lookup does not
        flops = 6 * matmul_params + 6 * layers * heads * head_dim * r["seq"]
        mfu = f'{r["tokens_per_s"] * flops / (peak * 1e12):.1%}' if peak else "n/a"
        torch_mem = f'{r["cuda_max_allocated_mib"]:.0f} / {r["cuda_max_reserved_mib"]:.0f}' if "cuda_max_allocated_mib" in r else ""
        loss = f'{r["loss"]:.4f}' if isinstance(r["loss"], (int, float)) else f'**{r["loss"]}**'  # NaN is JSON null
        print(f'| {r["model"]} | {r["seq"]} | {r["impl"]} | {r["tokens_per_s"]:.0f} | {r["step_s_median"]:.3f} | {mfu} | {r["device_mem_used_after_step_mib"]:.0f} | {torch_mem} | {loss} |')
    except (KeyError, TypeError, ValueError) as e:
        print(f'| {r.get("model", "")} | {r.get("seq", "")} | {r.get("impl", "")} | row not understood ({e!r}): `{json.dumps(r)[:200]}` | | | | | |')
PY
  cat "$out"
}

# compute-sanitizer --tool TOOL [OPTIONS] over the cuda_parity tests matching FILTER, checking
# forge's flash kernels only (candle's and cuBLAS's, which the reference runs, are not ours to
# judge, and would cost the time), for at most SANITIZER_S seconds: sets $verdict, and `failed`
# when the tool reports errors or the tests fail under it. A tool that cannot run on this machine
# (gVisor machines refuse it: «Device not supported») is recorded as such, not as a failure.
sanitize() {
  local tool="$1" filter="$2" rc
  shift 2
  if CI=true capped "${SANITIZER_S:-150}" "$sanitizer" --tool "$tool" --kernel-name kns=flash "$@" --error-exitcode 97 \
    "$BIN/tests/cuda_parity" "$filter" --test-threads=1 >>"$LOG" 2>&1; then
    verdict="clean"
  else
    rc=$?
    case $rc in
      97) verdict="**$tool reports errors** (see gpu-check.log)"; failed=1 ;;
      101) verdict="**the tests failed under $tool** (see gpu-check.log)"; failed=1 ;;
      124 | 137) verdict="not finished within ${SANITIZER_S:-150}s (SANITIZER_S) or the budget" ;;
      *) verdict="not run: $tool could not run on this machine, exit $rc (see gpu-check.log)" ;;
    esac
  fi
}

run_flash() {
  local lines="$RESULTS/gpu-flash.jsonl" out="$RESULTS/gpu-flash.md"
  local parity memcheck racecheck sanitizer verdict
  # 1. parity: the flash tests of cuda_parity (fused bf16 vs the f32 reference, outputs poisoned)
  if CI=true bounded "$BIN/tests/cuda_parity" flash --test-threads=1 >>"$LOG" 2>&1; then parity=pass; else parity="**FAIL**: $(failure $?)"; failed=1; fi
  # 2. speed and memory: forge (fused, and the matmul path) and torch SDPA flash, same GPU, same run
  CI=true bounded "$BIN/benches/gpu_flash" >"$lines" 2>>"$LOG" \
    || echo "{\"bench\": \"flash_attention\", \"impl\": \"forge\", \"error\": \"gpu_flash $(failure $?) (see gpu-check.log)\"}" >>"$lines"
  PYTHONUNBUFFERED=1 bounded "$PY" scripts/gpu/bench_flash_torch.py >>"$lines" 2>>"$LOG" \
    || echo "{\"bench\": \"flash_attention\", \"impl\": \"torch\", \"error\": \"bench_flash_torch.py $(failure $?) (see gpu-check.log)\"}" >>"$lines"
  # 3. out-of-bounds / uninitialised accesses and shared-memory hazards: compute-sanitizer, where
  #    the machine has one (last: slow, and what it may cut short is its own)
  sanitizer="$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer /opt/nvidia/*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1 || true)"
  if [[ -n "$sanitizer" ]]; then
    echo "+ $(timeout 30 "$sanitizer" --version 2>&1 | tail -1)" >>"$LOG"
    sanitize memcheck flash
    memcheck="$verdict ($sanitizer)"
    # the forward's cp.async pipeline and the barriers between tile phases, on the packed varlen
    # test: forward and backward, both head dims
    sanitize racecheck flash_attention_packed_varlen --racecheck-report hazard
    racecheck="$verdict"
  else
    memcheck="not run: no compute-sanitizer on this machine"
    racecheck="$memcheck"
  fi
  {
    echo "# GPU flash attention: forge's fused kernels vs torch SDPA (flash backend)"
    echo
    header
    echo "- Parity (cuda_parity flash tests: forward + dQ/dK/dV vs the f32 reference, causal, GQA 4:1 and 8:1,"
    echo "  lengths off the 64-row tiles, packed varlen, outputs poisoned with NaN): $parity"
    echo "- compute-sanitizer memcheck of those tests: $memcheck"
    echo "- compute-sanitizer racecheck (shared-memory hazards) of the packed varlen test: $racecheck"
    echo "- Shape: batch 1, 32 query heads, 8 K/V heads, head_dim 128, bf16, causal (Qwen3-8B attention)."
    echo "  FLOPs: forward 2·s²·h·d, backward 2.5× that (flash-attention convention); backward ms ="
    echo "  (forward + backward) − forward, medians. Fraction = TFLOP/s over the same framework's measured bf16 matmul rate."
    echo "- 'forge matmul path' = forge_kernels::attention with an additive causal mask (what ran before the fused op): the"
    echo "  memory check — an error there at 32k where 'forge fused' has a time means the fused op fits where it does not."
    echo "- Reproduce: \`scripts/gpu/build-cuda.sh\`, then \`scripts/gpu/gpu-check.sh flash\` on the GPU machine."
    echo
  } >"$out"
  table "$out" "$lines" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rate = {("forge" if "candle" in r["impl"] else "torch"): r["tflops"] for r in rows if r.get("bench") == "matmul_bf16" and "tflops" in r}
print(f'bf16 matmul 8192³: candle/cuBLAS {rate.get("forge", float("nan")):.0f} TFLOP/s, torch {rate.get("torch", float("nan")):.0f} TFLOP/s')
print()
print("| seq | pass | impl | median ms | TFLOP/s | fraction of matmul rate | device mem used MiB | note |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    if r.get("bench") != "flash_attention":
        continue
    if "error" in r:
        print(f'| {r.get("seq", "")} | {r.get("pass", "")} | {r["impl"]} | | | | | {r["error"][:120]} |')
        continue
    peak = rate.get("torch" if r["impl"].startswith("torch") else "forge")
    frac = f'{r["tflops"] / peak:.1%}' if peak else "n/a"
    mem = r.get("device_mem_used_mib", r.get("torch_peak_alloc_mib", ""))
    mem = f"{mem:.0f}" if isinstance(mem, (int, float)) else ""
    print(f'| {r["seq"]} | {r["pass"]} | {r["impl"]} | {r["median_ms"]:.3f} | {r["tflops"]:.0f} | {frac} | {mem} | |')
PY
  cat "$out"
}

run_decode() {
  local lines="$RESULTS/gpu-decode.jsonl" out="$RESULTS/gpu-decode.md" new="${DECODE_NEW_TOKENS:-64}"
  : >"$lines"
  # where prefill runs should switch from split-K to the flash tiles (FLASH_MIN_ROWS): both kernels
  # per run length, Qwen3-8B attention shape
  echo "+ forge cached attention: flash tiles vs split-K per run length" >&2
  CI=true bounded "$BIN/benches/gpu_cached_attention" >>"$lines" 2>>"$LOG" \
    || echo "{\"bench\": \"cached_attention_threshold\", \"error\": \"gpu_cached_attention $(failure $?)\"}" >>"$lines"
  # the issue's target first: what the budget cuts short is the smaller models
  for model in ${DECODE_MODELS:-8b 1.7b 0.6b}; do
    for plan in ${DECODE_PLAN:-4096:8 8192:8 32768:1}; do
      local context="${plan%%:*}" batch="${plan##*:}"
      echo "+ forge $model context $context batch $batch" >&2
      CI=true bounded "$BIN/benches/gpu_decode" --model "$model" --context "$context" --batch "$batch" --new-tokens "$new" 2>>"$LOG" | tail -1 >>"$lines" \
        || echo "{\"impl\": \"forge\", \"model\": \"$model\", \"context\": $context, \"batch\": $batch, \"error\": \"$(failure $?)\"}" >>"$lines"
      echo "+ torch $model context $context batch $batch" >&2
      PYTHONUNBUFFERED=1 bounded "$PY" scripts/bench/bench_decode_torch.py --arch "$model" --context "$context" --batch "$batch" --new-tokens "$new" 2>>"$LOG" | tail -1 >>"$lines" \
        || echo "{\"impl\": \"transformers\", \"model\": \"$model\", \"context\": $context, \"batch\": $batch, \"error\": \"$(failure $?)\"}" >>"$lines"
    done
  done
  {
    echo "# GPU decoding: forge vs PyTorch + transformers"
    echo
    header
    echo "- Qwen3-shaped models with random bf16 weights; \`batch\` prompts of \`context\` tokens prefilled in chunks of 2048 rows"
    echo "  per sequence, then $new greedy single-token steps (argmax on the GPU) over the KV caches: forge's GPU caches"
    echo "  (prefill chunks through kernels/flash_attn.cu's flash_fwd_cached, decode steps through kernels/decode_attn.cu's"
    echo "  split-K), transformers' DynamicCache with SDPA attention. One run each, after a small warm-up."
    echo "- Effective bandwidth of a decode step: (bf16 weights + the K/V read by the batch's attention) / step time."
    echo "- Reproduce: \`scripts/gpu/build-cuda.sh\`, then \`scripts/gpu/gpu-check.sh decode\` on the GPU machine."
    echo
  } >"$out"
  table "$out" "$lines" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rows = [r for r in lines if "bench" not in r]
# layers, kv heads, head_dim per model (as in bench_torch.py)
shapes = {"0.6b": (28, 8, 128), "1.7b": (28, 8, 128), "8b": (36, 8, 128)}
print("| model | context | batch | impl | prefill tokens/s | decode tokens/s | decode step ms | effective GB/s | device mem used MiB |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if "error" in r:
        print(f'| {r["model"]} | {r["context"]} | {r["batch"]} | {r["impl"]} | {r["error"]} | | | | |')
        continue
    layers, kv_heads, head_dim = shapes[r["model"]]
    step_s = r["decode_s"] / r["new_tokens"]
    kv_read = r["batch"] * (r["context"] + r["new_tokens"] / 2) * layers * 2 * kv_heads * head_dim * 2
    gbs = (2 * r["params"] + kv_read) / step_s / 1e9
    print(f'| {r["model"]} | {r["context"]} | {r["batch"]} | {r["impl"]} | {r["prefill_tokens_per_s"]:.0f} | {r["decode_tokens_per_s"]:.1f} | {1e3 * step_s:.1f} | {gbs:.0f} | {r["device_mem_used_after_decode_mib"]:.0f} |')

print()
print("## Attention over the caches: flash tiles vs split-K per run length (FLASH_MIN_ROWS)")
print()
print("`batch` sequences with `context` cached positions each attend a run of `rows` new rows in one step")
print("(32 query heads, 8 K/V heads, head_dim 128, bf16; median of 20): every run through")
print("flash_fwd_cached's 64-row tiles vs every row through split-K (benches/gpu_cached_attention.rs).")
print()
print("| context | batch | rows | flash tiles µs | split-K µs | split-K / flash | routes' relative difference |")
print("|---|---|---|---|---|---|---|")
for r in lines:
    if r.get("bench") == "cached_attention":
        print(f'| {r["context"]} | {r["batch"]} | {r["rows"]} | {r["flash_us"]:.1f} | {r["split_k_us"]:.1f} | {r["split_k_us"] / r["flash_us"]:.2f} | {r["routes_relative_difference"]:.1e} |')
print()
for r in lines:
    if r.get("bench") == "cached_attention_threshold":
        if "error" in r:
            print(f'- **{r["error"]}**')
        else:
            from_rows = r["flash_faster_from_rows"]
            verdict = f"from {from_rows} rows on" if from_rows is not None else "at none of the measured lengths"
            print(f'- context {r["context"]}: the flash tiles are faster {verdict} (FLASH_MIN_ROWS is {r["flash_min_rows"]})')
PY
  cat "$out"
}

# Seconds the next ncu run may take: PROFILE_S, within what is left of the stage's PROFILE_STAGE_S
# (so that a stage listed first leaves the rest of the call to the stages after it).
profile_cap() {
  local left=$((profile_end - SECONDS)) cap="${PROFILE_S:-90}"
  echo $((left < cap ? left : cap))
}

# Runs ncu ($4...: its options, `-o $3`, the command) within profile_cap and reads its report's
# raw page (every metric, one row per kernel, a units row under the header) into JSON rows of run
# $2: with $1 = kernels, a row per kernel (name, grid, block, µs, every metric with its unit); with
# $1 = step, one row summing the kernels' time per name. Where ncu cannot, the row holds the reason.
ncu_rows() {
  local kind="$1" label="$2" report="$3" rc=0
  shift 3
  fail_row() { echo "{\"kind\": \"$kind\", \"run\": \"$label\", \"error\": \"$1\"}" >>"$lines"; }
  if ((profile_end - SECONDS < 15)); then
    fail_row "not started: the profile stage's ${PROFILE_STAGE_S:-240}s (PROFILE_STAGE_S) are spent"
    return 0
  fi
  CI=true capped "$(profile_cap)" "$NCU" "$@" >>"$LOG" 2>&1 || rc=$?
  if ((rc != 0)) || [[ ! -f "$report.ncu-rep" ]]; then
    case $rc in
      124 | 137) fail_row "not finished within PROFILE_S (${PROFILE_S:-90}s), the stage's PROFILE_STAGE_S (${PROFILE_STAGE_S:-240}s) or the budget" ;;
      *) fail_row "ncu could not profile it on this machine, exit $rc (see gpu-check.log)" ;;
    esac
    return 0
  fi
  # base units (ns, bytes) where this ncu knows the option
  "$NCU" --import "$report.ncu-rep" --csv --page raw --print-units base >"$report.csv" 2>>"$LOG" \
    || "$NCU" --import "$report.ncu-rep" --csv --page raw >"$report.csv" 2>>"$LOG" || true
  "$PY" - "$kind" "$label" "$report.csv" >>"$lines" 2>>"$LOG" <<'PY' || fail_row "its ncu export could not be read (see gpu-check.log)"
import csv, json, sys
kind, label, path = sys.argv[1:4]
rows = list(csv.reader(open(path)))
# ncu may print ==PROF== / ==WARNING== lines before the table: it starts at the header row, then units
start = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
header, units = (rows[start], rows[start + 1]) if start is not None else ([], [])
to_us = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "s": 1e6, "second": 1e6}
kernels = []
for r in rows[start + 2:] if start is not None else []:
    if len(r) != len(header):
        continue
    fields, metrics = dict(zip(header, r)), {h: [v, u] for h, u, v in zip(header, units, r) if "__" in h}
    value, unit = metrics.get("gpu__time_duration.sum", ["", ""])
    try:
        us = float(value.replace(",", "")) * to_us[unit]
    except (ValueError, KeyError):
        us = None
    kernels.append({"kernel": fields["Kernel Name"], "grid": fields.get("Grid Size", ""), "block": fields.get("Block Size", ""), "us": us, "metrics": metrics})
if not kernels:
    why = "no kernel matched" if kind == "kernels" else "no kernel ran between cuProfilerStart and cuProfilerStop"
    print(json.dumps({"kind": kind, "run": label, "error": f"{why} (see gpu-check.log)"}))
elif kind == "kernels":
    for k in kernels:
        print(json.dumps({"kind": kind, "run": label, **k}))
else:
    by_kernel = {}
    for k in kernels:
        count, us = by_kernel.get(k["kernel"], (0, 0.0))
        by_kernel[k["kernel"]] = (count + 1, us + (k["us"] or 0.0))
    ranked = sorted(by_kernel.items(), key=lambda kv: -kv[1][1])
    print(json.dumps({"kind": kind, "run": label, "step_kernels": len(kernels), "step_gpu_us": sum(us for _, us in by_kernel.values()),
                      "by_kernel": [[k, c, us] for k, (c, us) in ranked[:40]]}))
PY
}

# Profiles one run ($3...) under ncu: the launches whose function name matches the regex $2, up to
# 12, labelled $1. Sections rather than named metrics: a metric this ncu version does not know
# would fail the whole run, a section is resolved by ncu itself.
profile() {
  local label="$1" kernels="$2" report="$BIN/profile-$((++profiles))"
  shift 2
  ncu_rows kernels "$label" "$report" --clock-control none --target-processes all --kernel-name "regex:$kernels" --launch-count 12 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats -f -o "$report" "$@"
}

# Where one training step's GPU time goes: every kernel of one step ($2...: a run that brackets it
# with cuProfilerStart/Stop, --profile-step) timed by ncu (its duration alone: one pass, no cache
# flush), summed per kernel name, labelled $1.
step_times() {
  local label="$1" report="$BIN/profile-$((++profiles))"
  shift
  ncu_rows step "$label" "$report" --clock-control none --cache-control none --profile-from-start off --target-processes all \
    --metrics gpu__time_duration.sum -f -o "$report" "$@"
}

run_profile() {
  local lines="$RESULTS/gpu-profile.jsonl" out="$RESULTS/gpu-profile.md" version profiles=0 profile_end=$((SECONDS + ${PROFILE_STAGE_S:-240}))
  : >"$lines"
  NCU="${NCU:-$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || true)}"
  if [[ -z "$NCU" ]]; then
    version="not run: no ncu on this machine"
    echo "{\"kind\": \"kernels\", \"run\": \"all\", \"error\": \"$version\"}" >>"$lines"
  else
    version="$(timeout 30 "$NCU" --version 2>&1 | tail -1)"
    echo "+ $version" >>"$LOG"
    # one fused forward (timed alone, then again before its backward) and the three backward kernels
    profile "forge fused 8k" 'flash' "$BIN/benches/gpu_flash" --seqs 8192 --warmup 0 --steps 1
    profile "torch sdpa flash 8k" 'flash' "$PY" scripts/gpu/bench_flash_torch.py --seqs 8192 --warmup 0 --steps 1
    # a decode step (1 row per sequence: split-K) and a 64-row prefill run (flash tiles)
    profile "forge cached 4k" 'kv_append|decode_attn|flash_fwd_cached' "$BIN/benches/gpu_cached_attention" --contexts 4096 --rows 1,64 --batch 8 --warmup 0 --steps 1
    # one training step of the 0.6B shape at 4k, as the train stage runs it, kernel by kernel
    step_times "forge train step 0.6b 4k" "$BIN/benches/gpu_train_step" --model 0.6b --seq 4096 --recompute --warmup 0 --steps 1 --profile-step
    step_times "torch train step 0.6b 4k" "$PY" scripts/bench/bench_torch.py --device cuda --dtype bf16 --model 0.6b --seq 4096 --batch 1 \
      --gradient-checkpointing --warmup 0 --steps 1 --profile-step
  fi
  {
    echo "# GPU kernel profiles: forge's attention kernels and torch's flash backend under Nsight Compute"
    echo
    header
    echo "- Profiler: $version; \`--clock-control none\` (clocks as the benchmarks see them), ncu's default cache"
    echo "  flush between replays. Flash: batch 1, 8192 tokens, 32 query heads, 8 K/V heads, head_dim 128, bf16,"
    echo "  causal, forward then backward (benches/gpu_flash.rs, scripts/gpu/bench_flash_torch.py). Cached: 8 sequences"
    echo "  with 4096 cached positions attending 1 row each (split-K) and 64 rows each (flash tiles)"
    echo "  (benches/gpu_cached_attention.rs). Train steps: every kernel of one forward + backward of the 0.6B shape at 4k"
    echo "  (forge with recomputation, torch with gradient checkpointing), timed alone by ncu, summed per kernel."
    echo "- Columns: % of the peak sustained rate (SM = the busiest SM pipeline or issue), DRAM and memory"
    echo "  (the busiest of DRAM, L2, L1) throughput, tensor pipe (the busiest tensor-core pipe); occupancy in warps"
    echo "  per SM as % of the maximum; stalls: the reasons warps waited most, cycles per issued instruction."
    echo "  Every metric ncu collected is in gpu-profile.jsonl."
    echo "- Reproduce: \`scripts/gpu/build-cuda.sh\`, then \`scripts/gpu/gpu-check.sh profile\` on the GPU machine."
    echo
  } >"$out"
  table "$out" "$lines" <<'PY'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]

def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None

def first(metrics, *patterns):
    """The value of the first metric whose name matches one of the patterns, as a number."""
    for pattern in patterns:
        for name, (value, _) in metrics.items():
            if re.fullmatch(pattern, name) and number(value) is not None:
                return number(value)
    return None

def pct(v):
    return "" if v is None else f"{v:.0f}"

def short(kernel):  # torch's demangled templates to the function's name
    return re.sub(r"^void ", "", kernel).split("(")[0].split("<")[0].split("::")[-1]

print("| run | kernel | grid | block | µs | SM % | memory % | DRAM % | tensor pipe % | achieved / theoretical occupancy % | registers | dynamic smem B | top stalls (cycles per issue) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in (r for r in rows if r["kind"] == "kernels"):
    if "error" in r:
        print(f'| {r["run"]} | **{r["error"]}** | | | | | | | | | | | |')
        continue
    m, us = r["metrics"], r["us"]
    stalls = []
    for name, (value, _) in m.items():
        hit = re.fullmatch(r"smsp__average_warps?_(?:latency_)?issue_stalled_(\w+?)(?:_per_issue_active)?\.ratio", name)
        if hit and number(value) is not None and hit.group(1) not in ("not_issued", "selected"):
            stalls.append((number(value), hit.group(1)))
    top = ", ".join(f"{name} {value:.1f}" for value, name in sorted(stalls, reverse=True)[:3])
    achieved = first(m, r"sm__warps_active\.avg\.pct_of_peak_sustained_active")
    theoretical = first(m, r"sm__maximum_warps_per_active_cycle_pct")
    print(" | ".join([
        f'| {r["run"]}', short(r["kernel"]), r["grid"], r["block"], "" if us is None else f"{us:.1f}",
        pct(first(m, r"sm__throughput\.avg\.pct_of_peak_sustained_elapsed")),
        pct(first(m, r"gpu__compute_memory_throughput\.avg\.pct_of_peak_sustained_elapsed")),
        pct(first(m, r"dram__throughput\.avg\.pct_of_peak_sustained_elapsed", r"gpu__dram_throughput\.avg\.pct_of_peak_sustained_elapsed")),
        pct(first(m, r"sm__pipe_tensor_op_hmma_cycles_active\.avg\.pct_of_peak_sustained_active", r"sm__pipe_tensor\w*cycles_active\.avg\.pct_of_peak_sustained_active", r"sm__inst_executed_pipe_tensor\w*\.avg\.pct_of_peak_sustained_active")),
        f"{pct(achieved)} / {pct(theoretical)}",
        pct(first(m, r"launch__registers_per_thread")),
        pct(first(m, r"launch__shared_mem_per_block_dynamic")),
        f"{top} |",
    ]))

for r in (r for r in rows if r["kind"] == "step"):
    print()
    print(f'## {r["run"]}: where one step\'s GPU time goes')
    print()
    if "error" in r:
        print(f'**{r["error"]}**')
        continue
    total = r["step_gpu_us"]
    print(f'{r["step_kernels"]} kernels, {total / 1e3:.1f} ms of GPU time (kernels back to back, as ncu serialises them).')
    print()
    print("| kernel | launches | ms | share |")
    print("|---|---|---|---|")
    for name, count, us in r["by_kernel"][:15]:
        print(f"| {short(name)[:80]} | {count} | {us / 1e3:.2f} | {us / total:.1%} |")
PY
  cat "$out"
}

for stage in "${STAGE_LIST[@]}"; do "run_$stage"; done
if (( failed )); then die "GPU parity tests failed (see $LOG)"; fi
echo "gpu-check: done; results in $RESULTS" >&2
