#!/usr/bin/env bash
# Sequence packing (train.packing) against right-padded rows, side by side in one run, on CPU:
#   1. one GRPO micro-batch of trajectories of mixed lengths in shuffled order (what an RL update
#      sees), padded vs packed, alternating in one process (crates/forge-rl/benches/packing.rs);
#   2. the demo SFT (configs/demo/sft.toml: 162 agent trajectories, ~1M-parameter Qwen3) for EPOCHS
#      epochs each way at the same micro_batch_tokens, alternating padded / packed ROUNDS times
#      (SFT micro-batches are length-sorted within windows, so they carry little padding).
# Writes benches/results/packing.md.
#
# Usage: scripts/bench/bench-packing.sh [EPOCHS] [ROUNDS]     (defaults 2 and 2)
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
EPOCHS="${1:-2}" ROUNDS="${2:-2}"
cargo build --release --locked -p forge-cli
FORGE="$CARGO_TARGET_DIR/release/forge"
BENCH="$(bench_executable forge-rl packing)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# 1. GRPO micro-batches: 6 trajectories of 256..1536 tokens, three seeds
for seed in 0 1 2; do
  "$BENCH" --seed "$seed" | grep '^{' | sed "s/^{/{\"seed\": $seed, /" | tee -a "$WORK/grpo.jsonl" >&2
done

# 2. the demo SFT, whole runs
for round in $(seq 1 "$ROUNDS"); do
  for packing in false true; do
    dir="$WORK/r$round-$packing"
    started=$(date +%s.%N)
    "$FORGE" train sft --config configs/demo/sft.toml --set "train.packing=$packing" --set "train.epochs=$EPOCHS" \
      --set "run.dir=\"$dir\"" --set run.checkpoint_every=100000 >"$dir.log" 2>&1 || { cat "$dir.log" >&2; exit 1; }
    finished=$(date +%s.%N)
    python3 - "$dir/metrics.jsonl" "$packing" "$round" "$started" "$finished" >>"$WORK/sft.jsonl" <<'PY'
import json, sys
path, packing, rnd, started, finished = sys.argv[1], sys.argv[2] == "true", int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
steps = [s for s in (json.loads(l) for l in open(path) if l.strip()) if "loss" in s]
print(json.dumps({"packing": packing, "round": rnd, "wall_s": finished - started, "steps": len(steps),
                  "step_s": sum(s["tokens"] / s["tokens_per_s"] for s in steps), "tokens": sum(s["tokens"] for s in steps),
                  "computed_tokens": sum(s["tokens"] / (1 - s["padding_fraction"]) for s in steps), "last_loss": steps[-1]["loss"]}))
PY
    tail -1 "$WORK/sft.jsonl" >&2
  done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$WORK" "$LOAD_BEFORE" "$LOAD_AFTER" "$EPOCHS" "$ROUNDS" > benches/results/packing.md <<'PY'
import json, sys
sys.path.insert(0, "scripts/bench")
from bench_report import provenance
work, load_before, load_after, epochs, rounds = sys.argv[1:]
read = lambda name: [json.loads(l) for l in open(f"{work}/{name}") if l.startswith("{")]
print("# Sequence packing vs right-padded rows (CPU)\n")
print(provenance(load_before, load_after))
print(f"- Reproduce: `scripts/bench/bench-packing.sh {epochs} {rounds}`\n")
print("## One GRPO micro-batch (crates/forge-rl/benches/packing.rs)\n")
print("Forward + backward of the policy-gradient objective over 6 trajectories of uniformly random length")
print("(256–1536 tokens) in the order an RL mini-batch holds them, demo model (~1M parameters, random f32")
print("weights); padded and packed alternate, median of 5 after a warm-up. `loss diff`: |padded − packed| loss.\n")
print("| seed | tokens | padding of the padded batch | padded s | packed s | padded / packed | loss diff |")
print("|---|---|---|---|---|---|---|")
grpo = read("grpo.jsonl")
for seed in sorted({r["seed"] for r in grpo}):
    layout = {r.get("layout", "summary"): r for r in grpo if r["seed"] == seed}
    pad, pack, summary = layout["padded"], layout["packed"], layout["summary"]
    print(f'| {seed} | {pack["tokens"]} | {summary["padding"]:.0%} | {pad["median_s"]:.2f} | {pack["median_s"]:.2f} | '
          f'{summary["speedup"]:.2f}× | {summary["loss_difference"]:.1e} |')
print("\n## The demo SFT, whole runs\n")
print(f"`forge train sft --config configs/demo/sft.toml --set train.epochs={epochs}`, `train.packing` false / true, the same")
print("micro_batch_tokens (4096), alternating. Step time = the sum of the logged steps; wall = the whole command.")
print("Padding = the share of computed tokens that were padding (`padding_fraction` in metrics.jsonl).\n")
print("| packing | round | optimizer steps | tokens | computed tokens | padding | step time s | tokens/s | wall s | loss after |")
print("|---|---|---|---|---|---|---|---|---|---|")
sft = read("sft.jsonl")
for r in sft:
    print(f'| {str(r["packing"]).lower()} | {r["round"]} | {r["steps"]} | {r["tokens"]:.0f} | {r["computed_tokens"]:.0f} | '
          f'{1 - r["tokens"] / r["computed_tokens"]:.1%} | {r["step_s"]:.1f} | {r["tokens"] / r["step_s"]:.0f} | {r["wall_s"]:.1f} | {r["last_loss"]:.3f} |')
mean = lambda packing: sum(r["step_s"] for r in sft if r["packing"] == packing) / sum(1 for r in sft if r["packing"] == packing)
print(f'\nMean step time: padded {mean(False):.1f} s, packed {mean(True):.1f} s (packed / padded = {mean(True) / mean(False):.2f}).')
PY
cat benches/results/packing.md
