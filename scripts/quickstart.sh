#!/usr/bin/env bash
# The README's first command: builds `forge` and runs the main job available today on the embedded
# default (a bundled tiny Qwen3 and the bundled tiny tokenizer, CPU): score sequences, export the
# model in the Hugging Face layout, and score the export again (identical numbers).
# Training (`forge train sft|rl`) arrives with the SFT/RL issues; this script will then run it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/forge/target}"
cargo build --release --locked -p forge-cli
FORGE="$CARGO_TARGET_DIR/release/forge"
MODEL=fixtures/gqa2-untied-f32/model
OUT="${1:-runs/quickstart}"
mkdir -p "$(dirname "$OUT")"

echo "== forge score (per-token log-probs of bundled sequences and a text line)"
"$FORGE" score --model "$MODEL" --input fixtures/gqa2-untied-f32/score_input.jsonl --out "$OUT.scores.jsonl"
python3 -c 'import json,sys
for l in open(sys.argv[1]): r=json.loads(l); print(f"  {len(r[\"logprobs\"])+1:3d} tokens  sum log p = {r[\"sum\"]:9.4f}  mean NLL = {r[\"mean_nll\"]:.4f}")' "$OUT.scores.jsonl"

echo "== forge export (sharded safetensors + index + config + tokenizer)"
"$FORGE" export --checkpoint "$MODEL" --out "$OUT.export" --shard-size 200KB --force
ls "$OUT.export"

echo "== the export scores identically"
"$FORGE" score --model "$OUT.export" --input fixtures/gqa2-untied-f32/score_input.jsonl --out "$OUT.rescored.jsonl"
cmp "$OUT.scores.jsonl" "$OUT.rescored.jsonl" && echo "  identical"
