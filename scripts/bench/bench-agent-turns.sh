#!/usr/bin/env bash
# Automatic prefix caching in the engine, with it and without, side by side in one run: multi-turn
# agent-shaped conversations (each prompt = the previous prompt + the generated turn + an
# observation) through forge-engine on CPU, random weights, on two model shapes:
#   demo  — configs/demo/qwen3-demo.json (~1M parameters), turns the size of the demo's episodes,
#           as RL rolls them out: 2 tasks × 4 samples at temperature 1;
#   20m   — the decode bench's ~20M Qwen3 (vocab 8192, hidden 512, 4 layers, 8/4 heads, head_dim 64),
#           SWE-agent-shaped turns (1024-token task prompt, 64 new tokens, 256-token observations):
#           4 tasks greedy (an eval), then 1 task × 4 samples at temperature 1 (a GRPO group).
# Writes benches/results/prefix-cache.md.
#
# Usage: scripts/bench/bench-agent-turns.sh [RUNS]    (default 3 measured runs per side after 1 warm-up)
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
RUNS="${1:-3}"

BENCH="$(bench_executable forge-engine agent_turns)"
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
run() { echo "+ $*" >&2; "$@" | sed "s/^{/{\"shape\":\"$SHAPE\",/" | tee -a "$RESULTS"; }
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
SHAPE=demo run "$BENCH" --config configs/demo/qwen3-demo.json --conversations 8 --samples 4 --temperature 1 --turns 5 --prompt-len 300 --new-tokens 40 --observation-len 60 --runs "$RUNS"
SWE=(--config "$WORK/qwen3-20m.json" --conversations 4 --turns 8 --prompt-len 1024 --new-tokens 64 --observation-len 256 --runs "$RUNS")
SHAPE=20m run "$BENCH" "${SWE[@]}"
SHAPE=20m run "$BENCH" "${SWE[@]}" --samples 4 --temperature 1
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$RESULTS" "$LOAD_BEFORE" "$LOAD_AFTER" > benches/results/prefix-cache.md <<'PY'
import json, sys
sys.path.insert(0, "scripts/bench")
from bench_report import provenance
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
print("# Engine prefix caching on multi-turn agent conversations (CPU)\n")
print(provenance(sys.argv[2], sys.argv[3]))
print("- Work: `conversations` conversations at once (engine batch = conversations), each `turns` turns of")
print("  `new` tokens (no stop token; greedy, or sampled at T = 1 seeded per conversation and turn); turn k+1's")
print("  prompt = turn k's prompt + its new tokens + an observation of `obs` tokens, as the agent builds them;")
print("  `tasks × samples`: every `samples` conversations start from one prompt (a GRPO group).")
print("  Random weights (std 0.02, seed 0), f32.")
print("  The reference is the same engine without prefix caching (every turn prefills its whole prompt,")
print("  as before), runs alternating in one process; time = all conversations, median of the measured runs.")
print("- Reproduce: `scripts/bench/bench-agent-turns.sh`\n")
print("| shape | parameters | tasks × samples, sampling | turns | prompt / new / obs → final length | without s | with s | speed-up | prompt tokens reused | conversations identical to without; max \\|Δ log p\\| before a difference |")
print("|---|---|---|---|---|---|---|---|---|---|")
for off, on in zip(rows[0::2], rows[1::2]):
    assert not off["prefix_caching"] and on["prefix_caching"]
    reused = f"{on['reused_tokens'] / on['prompt_tokens']:.1%}"
    sampling = "greedy" if on["temperature"] == 0 else f"T = {on['temperature']:g}"
    print(f"| {on['shape']} | {on['parameters']:,} | {on['conversations'] // on['samples']} × {on['samples']}, {sampling} | {on['turns']} | {on['prompt_len']} / {on['new_tokens']} / {on['observation_len']} → {on['final_len']} "
          f"| {off['seconds_median']:.2f} | {on['seconds_median']:.2f} | **{off['seconds_median'] / on['seconds_median']:.2f}×** | {reused} "
          f"| {on['conversations_identical']}/{on['conversations_compared']}; {on['max_logprob_difference_before_divergence']:.1e} |")
PY
cat benches/results/prefix-cache.md
