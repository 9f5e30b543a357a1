#!/usr/bin/env bash
# CPU decode benchmark, forge-engine vs transformers' `generate`, side by side in one run: greedy
# generation of 128 new tokens after 64-token prompts at batch 1, 8 and 32 with a ~20M Qwen3
# (vocab 8192, hidden 512, 4 layers, 8/4 heads, f32), both loading the same random safetensors
# weights. Runs are interleaved (forge, transformers, ...) so background load hits both alike.
# Writes benches/results/decode-cpu.md.
#
# Usage: scripts/bench/bench-decode.sh [RUNS]    (default 3 measured runs after 1 warm-up, per side)
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
RUNS="${1:-3}"

scripts/setup/setup-python.sh
BENCH="$(bench_executable forge-engine decode)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
.venv/bin/python scripts/bench/bench_decode_torch.py --make-model "$WORK/model"
RESULTS="$WORK/results.jsonl"
run() { echo "+ $*" >&2; "$@" | tail -1 | tee -a "$RESULTS"; }
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for batch in 1 8 32; do
  run "$BENCH" --model "$WORK/model" --batch "$batch" --runs "$RUNS"
  run .venv/bin/python scripts/bench/bench_decode_torch.py --model "$WORK/model" --batch "$batch" --runs "$RUNS"
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RESULTS" "$LOAD_BEFORE" "$LOAD_AFTER" > benches/results/decode-cpu.md <<'PY'
import json, sys
sys.path.insert(0, "scripts/bench")
from bench_report import provenance
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
ref = next((r for r in rows if r["impl"] == "transformers"), {})
print("# CPU decode: forge-engine vs transformers `generate`\n")
print(provenance(sys.argv[2], sys.argv[3]))
print(f"- Reference: torch {ref.get('torch')}, transformers {ref.get('transformers')}: `generate`, greedy, f32, SDPA, DynamicCache")
print("- Model: random Qwen3 of 20,976,640 parameters (vocab 8192, hidden 512, intermediate 1536, 4 layers,")
print("  8 heads / 4 KV heads, head_dim 64, untied), the same safetensors file loaded by both sides.")
print("- Work: `batch` prompts of 64 tokens, each continued by exactly 128 new tokens (no stop token),")
print("  submitted together; time = the whole generation (prefill included); tokens/s = batch·128 / time,")
print("  median of the measured runs. forge: one engine, `max_batch_size` = batch.")
print("- Reproduce: `scripts/bench/bench-decode.sh`\n")
print("| batch | forge s | forge tokens/s | transformers s | transformers tokens/s | forge / transformers | first sequence: same greedy tokens |")
print("|---|---|---|---|---|---|---|")
for batch in sorted({r["batch"] for r in rows}):
    f = next(r for r in rows if r["impl"] == "forge" and r["batch"] == batch)
    t = next(r for r in rows if r["impl"] == "transformers" and r["batch"] == batch)
    same = f["first_sequence_tokens"] == t["first_sequence_tokens"]
    if not same:
        k = next(i for i, (a, b) in enumerate(zip(f["first_sequence_tokens"], t["first_sequence_tokens"])) if a != b)
        same = f"no (from token {k})"
    else:
        same = "yes"
    print(f"| {batch} | {f['generate_s_median']:.3f} | {f['tokens_per_s']:.1f} | {t['generate_s_median']:.3f} | {t['tokens_per_s']:.1f} | **{f['tokens_per_s'] / t['tokens_per_s']:.2f}×** | {same} |")
PY
cat benches/results/decode-cpu.md
