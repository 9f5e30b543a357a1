#!/usr/bin/env bash
# Exports every fixture model with `forge export` (sharded, and once as bf16) and checks in
# transformers that the export loads, ties/unties lm_head correctly and reproduces the fixture's
# logits (scripts/make_fixtures.py verify), in BOTH transformers majors: the fixtures' 4.57 pins
# (.venv) and the current 5.x (.venv-tf5), then that the two gave identical logits for each export.
# The fixtures include model directories written by transformers 5 (rope_parameters) and YaRN models.
# `--gpu-image` checks with the GPU image's torch and transformers instead of the 5.x pins.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/forge/target}"
PY4="$(scripts/setup-python.sh --print-python)"
PY5="$(scripts/setup-python.sh --print-python "${1:---transformers-5}")"
# FORGE_BIN: an already built forge (export's output does not depend on the build profile)
if [[ -z "${FORGE_BIN:-}" ]]; then
  cargo build --release --locked -p forge-cli
fi
FORGE="${FORGE_BIN:-$CARGO_TARGET_DIR/release/forge}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
FIXTURES=(gqa2-untied-f32 gqa4-tied-f32 mha-bf16 gqa2-sharded-f32 tf5-gqa2-f32 tf5-yarn-f32 yarn-f32)
for fixture in "${FIXTURES[@]}"; do
  "$FORGE" export --checkpoint "fixtures/$fixture/model" --out "$OUT/$fixture" --shard-size 100KB
  for py in "$PY4" "$PY5"; do
    echo "== $fixture with transformers $("$py" -c 'import transformers; print(transformers.__version__)')"
    "$py" scripts/make_fixtures.py verify --fixture "fixtures/$fixture" --model-dir "$OUT/$fixture" \
      --dump "$OUT/$fixture.$(basename "$(dirname "$(dirname "$py")")").safetensors"
  done
done
"$FORGE" export --checkpoint fixtures/gqa2-untied-f32/model --out "$OUT/bf16" --dtype bf16
"$PY4" scripts/make_fixtures.py verify --fixture fixtures/gqa2-untied-f32 --model-dir "$OUT/bf16" --tolerance 2e-2
"$PY4" - "$OUT" "${FIXTURES[@]}" <<'PYEOF'
import glob, os, sys
from safetensors.torch import load_file
out, fixtures = sys.argv[1], sys.argv[2:]
worst = 0.0
for name in fixtures:
    dumps = sorted(glob.glob(os.path.join(out, f"{name}.*.safetensors")))
    assert len(dumps) == 2, dumps
    a, b = (load_file(d)["logits"] for d in dumps)
    diff = (a - b).abs().max().item()
    worst = max(worst, diff)
    print(f"{name}: max |logits(transformers 4) - logits(transformers 5)| = {diff:.3e}")
sys.exit(0 if worst <= 1e-5 else 1)
PYEOF
echo "verify-export: every export loads in both transformers versions with the fixtures' logits"
