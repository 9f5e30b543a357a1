#!/usr/bin/env bash
# scripts/gpu/gpu-check.sh runs where a session may get one chance a month: this runs it here, on stub
# binaries in a tarball of the real layout, a stub nvidia-smi and a compute-sanitizer that refuses
# the device (as on gVisor machines), and checks what a first GPU run depends on: the stage lists
# the device tool can bring back, tables written when rows fail or cannot be read, the budget
# cutting runs short, a refused sanitizer not counted as a failure, a failed parity test counted.
# Run by scripts/test.sh; takes seconds.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "test-gpu-check: FAIL: $*" >&2; exit 1; }

# --- stubs ---------------------------------------------------------------------------------------
STAGE="$WORK/stage" FAKE="$WORK/fake"
mkdir -p "$STAGE/bin" "$STAGE/tests" "$STAGE/benches" "$FAKE/bin" "$FAKE/py/nvidia"
touch "$FAKE/py/nvidia/__init__.py"
stub() { # path, body
  printf '#!/usr/bin/env bash\n%s\n' "$2" >"$1"
  chmod +x "$1"
}
stub "$FAKE/bin/nvidia-smi" 'echo "Stub GPU, 580.00, 81559 MiB"'
stub "$FAKE/bin/compute-sanitizer" '[[ "$1" == --version ]] && { echo "Version stub"; exit 0; }
sleep "${STUB_SANITIZER_SLEEP:-0}"; echo "========= Error: Device not supported" >&2; exit 255'
stub "$STAGE/bin/forge" 'exit 0'
parity_test='[[ -n "${STUB_FAIL_PARITY:-}" ]] && { echo "test flash_attention_gqa ... FAILED"; echo "test result: FAILED. 0 passed; 1 failed"; exit 101; }
echo "test flash_attention_gqa ... ok"; echo "test result: ok. 1 passed; 0 failed"'
for t in cuda_parity cuda_adamw cuda_sft cuda_decode; do stub "$STAGE/tests/$t" "$parity_test"; done
# a row without the "shape" the table reads: its table script breaks
stub "$STAGE/benches/gpu_kernels" 'echo "{\"bench\": \"rms_norm\", \"shape\": \"8x4096\", \"impl\": \"fused\", \"median_ms\": 0.5}"
echo "{\"bench\": \"rms_norm\", \"impl\": \"composite\", \"median_ms\": 1.5}"'
# the 8B loss is NaN (JSON null), as a first GPU run may well give
stub "$STAGE/benches/gpu_train_step" 'loss=2.5; [[ "$2" == 8b ]] && loss=null
echo "warming up" >&2
echo "{\"impl\": \"forge\", \"model\": \"$2\", \"seq\": $4, \"params\": 751632384, \"tokens_per_s\": 1000.0, \"step_s_median\": 4.1, \"device_mem_used_after_step_mib\": 9000, \"loss\": $loss}"'
stub "$STAGE/benches/gpu_flash" 'echo "{\"bench\": \"matmul_bf16\", \"impl\": \"candle\", \"tflops\": 700.0}"
echo "{\"bench\": \"flash_attention\", \"impl\": \"forge fused\", \"seq\": 4096, \"pass\": \"fwd\", \"median_ms\": 1.0, \"tflops\": 300.0, \"device_mem_used_mib\": 2000}"'
stub "$STAGE/benches/gpu_cached_attention" 'sleep "${STUB_SLEEP:-0}"
echo "{\"bench\": \"cached_attention\", \"context\": 1024, \"batch\": 8, \"rows\": 16, \"flash_us\": 10.0, \"split_k_us\": 12.0, \"routes_relative_difference\": 0.001}"
echo "{\"bench\": \"cached_attention_threshold\", \"context\": 1024, \"flash_faster_from_rows\": 16, \"flash_min_rows\": 16}"'
stub "$STAGE/benches/gpu_decode" 'echo "{\"impl\": \"forge\", \"model\": \"$2\", \"context\": $4, \"batch\": $6, \"params\": 751632384, \"new_tokens\": 64, \"decode_s\": 1.0, \"prefill_tokens_per_s\": 9000.0, \"decode_tokens_per_s\": 500.0, \"device_mem_used_after_decode_mib\": 9000}"'
# ncu, on PATH only where a case puts "$FAKE/ncu" there: records its command lines, refuses where
# STUB_NCU_FAIL is set (as on gVisor), writes the report -o names, and exports a raw page with a
# warning line before it, a kernel name holding commas, numbers with thousands separators (the
# second run's report holds torch's kernel, the others forge's)
mkdir -p "$FAKE/ncu"
stub "$FAKE/ncu/ncu" '[[ "$1" == --version ]] && { echo "NVIDIA (R) Nsight Compute Command Line Profiler"; echo "Version 2025.3.1.0 (stub)"; exit 0; }
echo "$*" >>"$NCU_CALLS"
if [[ "$1" == --import && "$2" == */profile-[45].ncu-rep ]]; then # the train steps: kernel durations alone
  echo "\"ID\",\"Kernel Name\",\"gpu__time_duration.sum\""
  echo "\"\",\"\",\"nsecond\""
  for k in gemm gemm flash norm norm norm norm; do
    case $k in
      gemm) echo "\"0\",\"ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_64x3_tn\",\"2,000,000\"" ;;
      flash) echo "\"1\",\"flash_fwd_d128_bf16\",\"500,000\"" ;;
      norm) echo "\"2\",\"void rms_norm_fwd_bf16<float>(const float *)\",\"10,000\"" ;;
    esac
  done
  exit 0
fi
if [[ "$1" == --import ]]; then
  echo "==WARNING== stub export"
  echo "\"ID\",\"Kernel Name\",\"Block Size\",\"Grid Size\",\"gpu__time_duration.sum\",\"sm__throughput.avg.pct_of_peak_sustained_elapsed\",\"sm__warps_active.avg.pct_of_peak_sustained_active\",\"sm__maximum_warps_per_active_cycle_pct\",\"launch__registers_per_thread\",\"smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio\",\"smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio\",\"smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio\",\"smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio\""
  echo "\"\",\"\",\"\",\"\",\"nsecond\",\"%\",\"%\",\"%\",\"register/thread\",\"ratio\",\"ratio\",\"ratio\",\"ratio\""
  [[ "$2" == */profile-2.ncu-rep ]] || echo "\"0\",\"flash_bwd_dkdv_d128_bf16\",\"(128, 1, 1)\",\"(128, 8, 1)\",\"1,234,567\",\"61.2\",\"24.1\",\"25\",\"234\",\"4.2\",\"9.3\",\"1.1\",\"0.4\""
  [[ "$2" != */profile-2.ncu-rep ]] || echo "\"1\",\"void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>, true>(pytorch_flash::Flash_fwd_params)\",\"(128, 1, 1)\",\"(64, 32, 1)\",\"812,500\",\"70\",\"12.4\",\"12.5\",\"255\",\"2\",\"1\",\"0.5\",\"3\""
  exit 0
fi
[[ -n "${STUB_NCU_FAIL:-}" ]] && { echo "==ERROR== Failed to initialize the profiler: LibraryNotLoaded" >&2; exit 1; }
while (($#)); do
  case "$1" in
    -o) touch "$2.ncu-rep"; shift 2; break ;;
    *) shift ;;
  esac
done
[[ "$1" == -f ]] && shift
command -v "$1" >/dev/null || { echo "==ERROR== $1: not found" >&2; exit 1; }'
printf 'commit: stub\nnvcc: release 13.0, V13.0.0\n' >"$STAGE/MANIFEST"
mkdir -p "$WORK/repo/.gpu"
tar -C "$STAGE" -cJf "$WORK/repo/.gpu/forge-cuda.tar.xz" .
# the script runs from a copy of the repo, as on the device machine (its own scripts beside it)
cp -r "$REPO/scripts" "$WORK/repo/"

export PATH="$FAKE/bin:$PATH" PYTHONPATH="$FAKE/py${PYTHONPATH:+:$PYTHONPATH}"
# Runs gpu-check.sh STAGES with $OUT as the device tool sets it; its exit status in $rc, its
# output in $WORK/log.
check() {
  rm -rf "$WORK/out" && mkdir "$WORK/out"
  rc=0
  (cd "$WORK/repo" && OUT="$WORK/out" "$@" scripts/gpu/gpu-check.sh "$STAGES") >"$WORK/log" 2>&1 || rc=$?
}
expect() { # file, fixed string
  grep -qF -- "$2" "$1" || { cat "$WORK/log" >&2; fail "'$STAGES': $(basename "$1") lacks: $2"; }
}
succeeded() {
  ((rc == 0)) || { cat "$WORK/log" >&2; fail "'$STAGES' exit $rc"; }
}
took_under() {
  ((SECONDS < $1)) || fail "'$STAGES' took ${SECONDS}s, $1 s at most"
}
files_back() {
  local n
  n="$(find "$WORK/out" -type f | wc -l)"
  ((n <= 8)) || fail "'$STAGES' left $n files in \$OUT, more than the device tool brings back"
}

# --- cases ---------------------------------------------------------------------------------------
STAGES=all
check env
((rc != 0)) || fail "'all' into \$OUT should be refused (10 files)"
expect "$WORK/log" "writes 10 files"

STAGES=parity,kernels,flash
check env
succeeded
files_back
expect "$WORK/out/gpu-parity.md" "| cuda_parity | pass |"
expect "$WORK/out/gpu-parity.md" "- GPU: Stub GPU, 580.00, 81559 MiB"
expect "$WORK/out/gpu-kernels.md" "(no table: its script failed"
expect "$WORK/out/gpu-flash.md" "memcheck of those tests: not run: memcheck could not run on this machine, exit 255"
expect "$WORK/out/gpu-flash.md" "| 4096 | fwd | forge fused | 1.000 | 300 |"
expect "$WORK/out/gpu-check.log" "Device not supported"

# a sanitizer run that hangs is cut at SANITIZER_S, not at the call's budget
STAGES=flash
SECONDS=0
check env SANITIZER_S=2 STUB_SANITIZER_SLEEP=60
took_under 30
succeeded
expect "$WORK/out/gpu-flash.md" "memcheck of those tests: not finished within 2s (SANITIZER_S) or the budget"
expect "$WORK/out/gpu-flash.md" "racecheck (shared-memory hazards) of the packed varlen test: not finished within 2s"

STAGES=train
check env
succeeded
files_back
expect "$WORK/out/gpu-train-step.md" "| 8b | 4096 | forge | 1000 | 4.100 |"
expect "$WORK/out/gpu-train-step.md" "| 8b | 32768 | forge | 1000 | 4.100 |"
expect "$WORK/out/gpu-train-step.md" "| **None** |"
expect "$WORK/out/gpu-train-step.md" "| 0.6b | 4096 | forge | 1000 | 4.100 |"
expect "$WORK/out/gpu-train-step.md" "| 0.6b | 4096 | pytorch | failed, exit 1"
expect "$WORK/out/gpu-check.log" "warming up"

# the budget: the first run is cut off at the deadline, the rest are not started, the table is
# still written
STAGES=decode
SECONDS=0
check env BUDGET_S=16 STUB_SLEEP=60
took_under 45
succeeded
expect "$WORK/out/gpu-decode.md" "gpu_cached_attention not finished within the 16s budget"
expect "$WORK/out/gpu-decode.md" "| 8b | 4096 | 8 | forge | not finished within the 16s budget"
expect "$WORK/out/gpu-check.log" "not started (the 16s budget is spent)"

# the profile stage: ncu's raw export read into the table (units, separators, torch's template
# names), clocks left alone; a machine whose ncu cannot profile, or that has none, fails nothing
STAGES=train,profile
export NCU_CALLS="$WORK/ncu-calls"
check env PATH="$FAKE/ncu:$PATH"
succeeded
files_back
expect "$WORK/out/gpu-profile.md" "| forge fused 8k | flash_bwd_dkdv_d128_bf16 | (128, 8, 1) | (128, 1, 1) | 1234.6 | 61 |  |  |  | 24 / 25 | 234 |  | long_scoreboard 9.3, barrier 4.2, mio_throttle 1.1 |"
expect "$WORK/out/gpu-profile.md" "| torch sdpa flash 8k | flash_fwd_kernel | (64, 32, 1) | (128, 1, 1) | 812.5 | 70 |"
expect "$WORK/out/gpu-profile.md" "Profiler: Version 2025.3.1.0 (stub)"
expect "$WORK/out/gpu-profile.jsonl" '"sm__warps_active.avg.pct_of_peak_sustained_active": ["24.1", "%"]'
expect "$NCU_CALLS" "--clock-control none --target-processes all --kernel-name regex:kv_append|decode_attn|flash_fwd_cached"
expect "$NCU_CALLS" "--csv --page raw --print-units base"
expect "$NCU_CALLS" "--profile-from-start off --target-processes all --metrics gpu__time_duration.sum"
expect "$WORK/out/gpu-profile.md" "## forge train step 0.6b 4k: where one step's GPU time goes"
expect "$WORK/out/gpu-profile.md" "7 kernels, 4.5 ms of GPU time"
expect "$WORK/out/gpu-profile.md" "| ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_64x3_tn | 2 | 4.00 | 88.1% |"
expect "$WORK/out/gpu-profile.md" "| rms_norm_fwd_bf16 | 4 | 0.04 | 0.9% |"
STAGES=profile
check env PATH="$FAKE/ncu:$PATH" STUB_NCU_FAIL=1
succeeded
expect "$WORK/out/gpu-profile.md" "| forge cached 4k | **ncu could not profile it on this machine, exit 1 (see gpu-check.log)** |"
expect "$WORK/out/gpu-profile.md" "## torch train step 0.6b 4k: where one step's GPU time goes"
expect "$WORK/out/gpu-check.log" "LibraryNotLoaded"
check env PATH="$FAKE/ncu:$PATH" PROFILE_STAGE_S=10
succeeded
expect "$WORK/out/gpu-profile.md" "| forge fused 8k | **not started: the profile stage's 10s (PROFILE_STAGE_S) are spent** |"
expect "$WORK/out/gpu-profile.md" "**not started: the profile stage's 10s (PROFILE_STAGE_S) are spent**"
check env
succeeded
expect "$WORK/out/gpu-profile.md" "| all | **not run: no ncu on this machine** |"

STAGES=parity
check env STUB_FAIL_PARITY=1
((rc != 0)) || fail "a failing parity test must fail gpu-check.sh"
expect "$WORK/out/gpu-parity.md" "| cuda_parity | **FAIL**: failed, exit 101"

echo "test-gpu-check: gpu-check.sh behaves on stub binaries (10 cases)" >&2
