# Sourced (after scripts/lib/preamble.sh) by scripts/quickstart.sh, scripts/bench/bench-rl-demo.sh and scripts/bench/bench-rl-data-parallel.sh: the demo's held-out measurement, in one place.
# Needs FORGE (the release binary).
#
# heldout_solved RUN_DIR NAME MODEL_DIR TEMPERATURE [SEED]: the agent (minimal scaffold, 4 turns) on
# the 18 held-out tasks of tasks-demo/heldout.jsonl, graded in containers; prints "resolved/total".
heldout_solved() {
  local run="$1" name="$2" model="$3" temperature="$4" seed="${5:-0}"
  "$FORGE" eval swebench --dataset tasks-demo/heldout.jsonl --model "$model" --run-id "$name" \
    --scaffold minimal --max-turns 4 --temperature "$temperature" --seed "$seed" \
    --workers 4 --timeout 60 --output-dir "$run/eval" >"$run/eval-$name.log" 2>&1 \
    || { cat "$run/eval-$name.log" >&2; return 1; }
  python3 - "$run/eval" "$name" <<'PY'
import glob, json, sys
summary = json.load(open(glob.glob(f"{sys.argv[1]}/*.{sys.argv[2]}.json")[0]))
print(f"{summary['resolved_instances']}/{summary['total_instances']}")
PY
}

# heldout_sampled RUN_DIR NAME MODEL_DIR: resolved episodes of 4 × 18 at temperature 0.5 (sampling
# seeds 1000–4000): less noisy than 18 greedy ones.
heldout_sampled() {
  local total=0 seed solved
  for seed in 1000 2000 3000 4000; do
    solved=$(heldout_solved "$1" "$2-t05-$seed" "$3" 0.5 "$seed")
    total=$((total + ${solved%/*}))
  done
  echo "$total"
}
