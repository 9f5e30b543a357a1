#!/usr/bin/env bash
# Exports every fixture model with `forge export` (sharded, and once as bf16) and checks in
# transformers that the export loads, ties/unties lm_head correctly and reproduces the fixture's
# logits (scripts/make_fixtures.py verify). Needs the Python reference env (scripts/setup-python.sh);
# `--gpu-image` checks with its newer torch and transformers (5.x) instead of the fixtures' pins.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/forge/target}"
PY="$(scripts/setup-python.sh --print-python "$@")"
cargo build --release --locked -p forge-cli
FORGE="$CARGO_TARGET_DIR/release/forge"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
for fixture in gqa2-untied-f32 gqa4-tied-f32 mha-bf16 gqa2-sharded-f32; do
  "$FORGE" export --checkpoint "fixtures/$fixture/model" --out "$OUT/$fixture" --shard-size 100KB
  "$PY" scripts/make_fixtures.py verify --fixture "fixtures/$fixture" --model-dir "$OUT/$fixture"
done
"$FORGE" export --checkpoint fixtures/gqa2-untied-f32/model --out "$OUT/bf16" --dtype bf16
"$PY" scripts/make_fixtures.py verify --fixture fixtures/gqa2-untied-f32 --model-dir "$OUT/bf16" --tolerance 2e-2
