#!/usr/bin/env bash
# The README's first command: builds `forge` and runs the main job on the embedded default —
# SFT of a tiny Qwen3 (random init, ~1M parameters) on the bundled repair trajectories, on CPU,
# in a few minutes; then shows how the trainer saw one example, scores a trajectory with the
# trained model, and exports it in the Hugging Face layout. (RL arrives with `forge train rl`.)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/forge/target}"
cargo build --release --locked -p forge-cli
FORGE="$CARGO_TARGET_DIR/release/forge"
RUN="${1:-runs/quickstart-sft}"
rm -rf "$RUN"

echo "== forge data inspect: what the model learns (trained spans in ⟦ ⟧)"
"$FORGE" data inspect --model assets/tiny-tokenizer --data assets/sft/tiny-trajectories.jsonl --limit 1 | head -c 1500
echo

echo "== forge train sft --config configs/tiny/sft.toml"
"$FORGE" train sft --config configs/tiny/sft.toml --set "run.dir=\"$RUN\""
python3 - "$RUN/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first, last = rows[0], rows[-1]
print(f"  {len(rows)} steps: loss {first['loss']:.3f} -> {last['loss']:.3f}; "
      f"{sum(r['tokens'] for r in rows) / sum(r['tokens'] / r['tokens_per_s'] for r in rows):.0f} tokens/s")
PY
echo "  run directory: $RUN (config.toml, metrics.jsonl, events.out.tfevents.*, loss.svg, checkpoints/, model/)"

echo "== forge export (HF layout, bf16)"
"$FORGE" export --checkpoint "$RUN/model" --out "$RUN/export-bf16" --dtype bf16 --force
ls "$RUN/export-bf16"
