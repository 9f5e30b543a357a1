#!/usr/bin/env bash
# The engine's paged KV cache against contiguous per-sequence caches, side by side in one run
# (crates/forge-engine/benches/paged_kv.rs): 8 sequences at once on the decode bench's ~20M Qwen3
# (vocab 8192, hidden 512, 4 layers, 8/4 heads, head_dim 64), random weights, f32, CPU, sampled at
# T = 1 seeded per sequence; the 8 as one GRPO group (one prompt) and as 8 different prompts, at
# two prompt lengths. Writes benches/results/paged-kv.md.
#
# Usage: scripts/bench/bench-paged-kv.sh [RUNS] [PROFILE]
#   RUNS: measured runs per side after 1 warm-up (default 5); PROFILE: cargo profile (default
#   bench; `dev` is opt-level 2/3 with debug assertions, for a tree without a release build).
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
RUNS="${1:-5}"
PROFILE="${2:-bench}"

BENCH="$(cargo bench --profile "$PROFILE" -p forge-engine --bench paged_kv --no-run --locked --message-format=json 2>/dev/null \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "paged_kv" and m.get("executable"):
        print(m["executable"])')"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python3 - "$WORK/qwen3-20m.json" <<'PY'
import json, sys
config = json.load(open("configs/demo/qwen3-demo.json"))
config.update(vocab_size=8192, hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
              num_key_value_heads=4, head_dim=64, max_position_embeddings=8192, tie_word_embeddings=False)
json.dump(config, open(sys.argv[1], "w"))
PY
RESULTS="$WORK/results.jsonl"
run() { echo "+ $*" >&2; "$@" | tee -a "$RESULTS"; }
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for PROMPT in 512 2048; do
  for SAMPLES in 8 1; do
    run "$BENCH" --config "$WORK/qwen3-20m.json" --sequences 8 --samples "$SAMPLES" --prompt-len "$PROMPT" --new-tokens 64 --block-size 16 --runs "$RUNS"
  done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RESULTS" "$LOAD_BEFORE" "$LOAD_AFTER" "$PROFILE" "$RUNS" > benches/results/paged-kv.md <<'PY'
import json, sys
sys.path.insert(0, "scripts/bench")
from bench_report import provenance
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
profile, runs = sys.argv[4], sys.argv[5]
print("# Paged KV cache vs contiguous per-sequence caches (CPU)\n")
print(provenance(sys.argv[2], sys.argv[3]))
print(f"- Build: cargo profile `{profile}`; {runs} measured runs per side after 1 warm-up, alternating sides; median.")
print("- Model: random Qwen3 of 20,976,640 parameters (vocab 8192, hidden 512, intermediate 1536, 4 layers,")
print("  8 heads / 4 KV heads, head_dim 64, untied), f32, std 0.02, seed 0.")
print("- Work: 8 sequences at once, each `prompt` tokens then exactly 64 new tokens sampled at T = 1 (seeded")
print("  per sequence); `group`: the 8 share one prompt (a GRPO group's samples), `distinct`: 8 prompts.")
print("  paged = the engine (one pool, blocks of 16, prefix shared by reference, pool sized for all 8")
print("  unshared); contiguous = the former scheme driven step by step in the bench: one cache per sequence")
print("  allocated for prompt + 64, a group's prompt computed once and copied into the others' caches.")
print("  Time = all 8 sequences, prompt processing included; tokens/s = 8·64 / time.")
print("  Peak KV bytes: paged = most blocks in use at once × bytes per block; contiguous = the caches' capacity.")
print(f"- Reproduce: `scripts/bench/bench-paged-kv.sh {runs} {profile}`\n")
print("| prompt | prompts | contiguous s | contiguous tokens/s | paged s | paged tokens/s | paged / contiguous | contiguous peak KV | paged peak KV (blocks) | KV saved | sequences identical |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
mib = lambda b: f"{b / 2**20:.1f} MiB"
for c, p in zip(rows[0::2], rows[1::2]):
    assert c["side"] == "contiguous" and p["side"] == "paged"
    kind = "group" if p["samples"] == 8 else "distinct"
    print(f"| {p['prompt_len']} | {kind} | {c['seconds_median']:.3f} | {c['tokens_per_s']:.0f} | {p['seconds_median']:.3f} | {p['tokens_per_s']:.0f} "
          f"| **{c['seconds_median'] / p['seconds_median']:.2f}×** | {mib(c['peak_kv_bytes'])} | {mib(p['peak_kv_bytes'])} ({p['paged_peak_blocks']}) "
          f"| {1 - p['peak_kv_bytes'] / c['peak_kv_bytes']:.0%} | {p['sequences_identical']}/{p['sequences_compared']} |")
PY
cat benches/results/paged-kv.md
