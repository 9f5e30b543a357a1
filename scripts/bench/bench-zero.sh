#!/usr/bin/env bash
# ZeRO on CPU: per-worker memory of the sharded training state at train.zero_stage 0-3, forge's
# workers (TCP link) beside PyTorch's (gloo: DDP, ZeroRedundancyOptimizer for stage 1, FSDP2
# fully_shard for 2 and 3) in one run, for the ~50M-parameter Qwen3 (f32, batch 1×256 per
# worker, activation recompute on so that every stage runs the same step), 1, 2 and 4 workers.
# Writes benches/results/zero-cpu.md.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
scripts/setup/setup-python.sh
BENCH="$(bench_executable forge-train sft_step)"
RESULTS="$(mktemp)"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
ARGS=(--model 50m --batch 1 --seq 256 --warmup 1 --steps 3 --recompute)
for workers in 1 2 4; do
  for stage in 0 1 2 3; do
    if [[ "$workers" == 1 && "$stage" != 0 ]]; then continue; fi
    RAYON_NUM_THREADS=1 "$BENCH" "${ARGS[@]}" --workers "$workers" --zero-stage "$stage" | grep '^{' | tee -a "$RESULTS"
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/bench_sft_torch.py "${ARGS[@]}" --workers "$workers" --zero "$stage" | grep '^{' | tee -a "$RESULTS"
  done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RESULTS" "$LOAD_BEFORE" "$LOAD_AFTER" > benches/results/zero-cpu.md <<'PY'
import json, sys
sys.path.insert(0, "scripts/bench")
from bench_report import provenance
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
mib = lambda b: f"{b / 2**20:.0f}"
print("# ZeRO on CPU: per-worker memory of the sharded state, forge vs PyTorch\n")
print(provenance(sys.argv[2], sys.argv[3]))
print("- One SFT step per measurement: forward + backward (activation recompute per layer) + gradient reduction")
print("  + clip_grad_norm(1.0) + AdamW, f32, ~50M-parameter Qwen3, batch 1×256 random tokens per worker, median of")
print("  3 steps after 1 warm-up; 1 thread per worker. Rank 0's numbers (the workers are symmetric up to a few rows).")
print("- forge: `sft_step --workers N --zero-stage S --recompute` (the TCP link); optimizer state, reduced gradients")
print("  and weights are the bytes this worker holds between steps, counted from its tensors.")
print("- PyTorch: DDP (stage 0), `ZeroRedundancyOptimizer` over DDP (1), FSDP2 `fully_shard` per decoder layer with")
print("  `reshard_after_forward` False (2) / True (3), gloo; peak RSS only.")
print("- Reproduce: `scripts/bench/bench-zero.sh`\n")
print("| impl | workers | zero_stage | peak RSS MiB | optimizer state MiB | reduced grads MiB | weights MiB | step s |")
print("|---|---|---|---|---|---|---|---|")
for r in sorted(rows, key=lambda r: (r["workers"], r["zero_stage"], r["impl"] != "forge")):
    forge = r["impl"] == "forge"
    cells = [mib(r[k]) if forge else "–" for k in ("optimizer_state_bytes", "reduced_gradient_bytes", "weight_bytes")]
    print(f'| {r["impl"]} | {r["workers"]} | {r["zero_stage"]} | {r["peak_rss_mib"]:.0f} | {" | ".join(cells)} | {r["step_s_median"]:.2f} |')
PY
cat benches/results/zero-cpu.md
