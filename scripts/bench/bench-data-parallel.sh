#!/usr/bin/env bash
# Data-parallel SFT steps on CPU: forge's workers (TCP link, rank-ordered sums) vs PyTorch DDP
# (gloo), side by side in one run, for the tiny config and a ~50M-parameter Qwen3 (batch 2×512 per
# worker). Each is measured as 1 worker × 1 thread, 2 workers × 1 thread and 1 worker × 2 threads,
# so the table shows what a second worker buys against giving the one worker both cores.
# Writes benches/results/data-parallel-cpu.md.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
scripts/setup/setup-python.sh
BENCH="$(bench_executable forge-train sft_step)"
RESULTS="$(mktemp)"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for model in tiny 50m; do
  for shape in "1 1" "2 1" "1 2"; do
    read -r workers threads <<<"$shape"
    RAYON_NUM_THREADS="$threads" "$BENCH" --model "$model" --workers "$workers" | grep '^{' | sed "s/}\$/, \"threads_per_worker\": $threads}/" | tee -a "$RESULTS"
    OMP_NUM_THREADS="$threads" .venv/bin/python scripts/bench/bench_sft_torch.py --model "$model" --workers "$workers" | grep '^{' | sed "s/}\$/, \"threads_per_worker\": $threads}/" | tee -a "$RESULTS"
  done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RESULTS" "$LOAD_BEFORE" "$LOAD_AFTER" > benches/results/data-parallel-cpu.md <<'PY'
import json, sys
sys.path.insert(0, "scripts/bench")
from bench_report import provenance
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("# Data-parallel SFT step on CPU: forge workers vs PyTorch DDP (gloo)\n")
print(provenance(sys.argv[2], sys.argv[3]))
print("- Step = forward + backward + gradient averaging over the workers + clip_grad_norm(1.0) + AdamW (fp32);")
print("  batch 2×512 random tokens per worker, f32; median of 10 steps after 2 warm-up steps.")
print("  forge: `sft_step --workers N` (N processes, gradients summed over the TCP link by rank 0);")
print("  PyTorch: `DistributedDataParallel`, gloo backend (all-reduce overlapped with the backward).")
print("- Reproduce: `scripts/bench/bench-data-parallel.sh`\n")
print("| model | impl | workers × threads | tokens/s | step s | of which averaging s | × vs 1×1 |")
print("|---|---|---|---|---|---|---|")
base = {(r["model"], r["impl"]): r["tokens_per_s"] for r in rows if r["workers"] == 1 and r["threads_per_worker"] == 1}
for r in rows:
    reduce_s = f'{r["all_reduce_s_median"]:.3f}' if "all_reduce_s_median" in r and r["workers"] > 1 else "–"
    speedup = r["tokens_per_s"] / base[(r["model"], r["impl"])]
    print(f'| {r["model"]} | {r["impl"]} | {r["workers"]} × {r["threads_per_worker"]} | {r["tokens_per_s"]:.0f} | {r["step_s_median"]:.3f} | {reduce_s} | {speedup:.2f}× |')
PY
cat benches/results/data-parallel-cpu.md
