#!/usr/bin/env bash
# SFT with and without sequence packing (train.packing), side by side in one run: the demo SFT
# (configs/demo/sft.toml: 162 agent trajectories, ~1M-parameter Qwen3, CPU) for EPOCHS epochs each
# way at the same micro_batch_tokens, alternating padded / packed ROUNDS times. Reports wall time,
# optimizer steps, the share of computed tokens that are padding, and the loss after the epochs.
# Writes benches/results/sft-packing.md.
#
# Usage: scripts/bench-sft-packing.sh [EPOCHS] [ROUNDS]     (defaults 2 and 2)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/forge/target}"
EPOCHS="${1:-2}" ROUNDS="${2:-2}"
cargo build --release --locked -p forge-cli
FORGE="$CARGO_TARGET_DIR/release/forge"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
LINES="$WORK/runs.jsonl"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  for packing in false true; do
    dir="$WORK/r$round-$packing"
    started=$(date +%s.%N)
    "$FORGE" train sft --config configs/demo/sft.toml --set "train.packing=$packing" --set "train.epochs=$EPOCHS" \
      --set "run.dir=\"$dir\"" --set run.checkpoint_every=100000 >"$dir.log" 2>&1 || { cat "$dir.log" >&2; exit 1; }
    finished=$(date +%s.%N)
    python3 - "$dir/metrics.jsonl" "$packing" "$round" "$started" "$finished" >>"$LINES" <<'PY'
import json, sys
path, packing, rnd, started, finished = sys.argv[1], sys.argv[2] == "true", int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
steps = [json.loads(l) for l in open(path) if l.strip()]
steps = [s for s in steps if "loss" in s]
tokens = sum(s["tokens"] for s in steps)
computed = sum(s["tokens"] / (1 - s["padding_fraction"]) for s in steps)
step_s = sum(s["tokens"] / s["tokens_per_s"] for s in steps)
print(json.dumps({"packing": packing, "round": rnd, "wall_s": finished - started, "step_s": step_s, "steps": len(steps),
                  "tokens": tokens, "computed_tokens": computed, "last_loss": steps[-1]["loss"]}))
PY
    tail -1 "$LINES" >&2
  done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$LINES" "$LOAD_BEFORE" "$LOAD_AFTER" "$EPOCHS" > benches/results/sft-packing.md <<'PY'
import json, sys
sys.path.insert(0, "scripts")
from bench_report import provenance
rows = [json.loads(l) for l in open(sys.argv[1])]
epochs = sys.argv[4]
print("# SFT with and without sequence packing (CPU)\n")
print(provenance(sys.argv[2], sys.argv[3]))
print(f"- `forge train sft --config configs/demo/sft.toml --set train.epochs={epochs}`, `train.packing` false / true, the same")
print("  micro_batch_tokens (4096), alternating runs. Step time = the sum of the logged steps (forward, backward, optimizer);")
print("  wall = the whole command (data loading, model setup, checkpoint and export included).")
print("- Padding = the share of the tokens the model computed that were padding (`padding_fraction` in metrics.jsonl).")
print("- Packed micro-batches hold more examples, so a packed epoch has fewer optimizer steps: the loss after the same")
print("  epochs is not a like-for-like comparison (crates/forge-train/tests/sft.rs checks equal losses for equal batches).")
print(f"- Reproduce: `scripts/bench-sft-packing.sh {epochs} {max(r['round'] for r in rows)}`\n")
print("| packing | round | optimizer steps | tokens | computed tokens | padding | step time s | tokens/s | wall s | loss after |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f'| {str(r["packing"]).lower()} | {r["round"]} | {r["steps"]} | {r["tokens"]:.0f} | {r["computed_tokens"]:.0f} | '
          f'{1 - r["tokens"] / r["computed_tokens"]:.1%} | {r["step_s"]:.1f} | {r["tokens"] / r["step_s"]:.0f} | {r["wall_s"]:.1f} | {r["last_loss"]:.3f} |')
def mean(packing, key):
    xs = [r[key] for r in rows if r["packing"] == packing]
    return sum(xs) / len(xs)
print(f'\nMean step time: padded {mean(False, "step_s"):.1f} s, packed {mean(True, "step_s"):.1f} s '
      f'({mean(False, "step_s") / mean(True, "step_s"):.2f}× faster packed).')
PY
cat benches/results/sft-packing.md
