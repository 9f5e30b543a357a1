# Sourced by quickstart.sh and bench-rl-demo.sh: the demo's held-out measurement, in one place.
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
