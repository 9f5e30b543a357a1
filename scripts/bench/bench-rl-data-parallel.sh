#!/usr/bin/env bash
# Data-parallel RL on the demo curriculum, side by side with one worker, from the same SFT model:
#   - one worker:  configs/demo/rl.toml as it is (6 groups per step, 4 agent workers);
#   - two workers: --nproc-per-node 2 with rollout.groups_per_step=3 and rollout.workers=2 each
#     (the same 6 groups × 8 samples per step and the same 4 concurrent episodes, split in two);
# then the held-out solve rate of the SFT model and of both RL models, sampled at temperature 0.5
# with 4 sampling seeds (4 × 18 episodes, as in bench-rl-demo.sh). Appends one row per seed to
# benches/results/rl-data-parallel.jsonl and prints it.
#
# Usage: scripts/bench/bench-rl-data-parallel.sh [SEED]   (default 0; ~30–40 min on 2 cores)
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
SEED="${1:-0}"
RUN="runs/rl-data-parallel/seed$SEED"
ROWS="benches/results/rl-data-parallel.jsonl"

scripts/setup/build-base-image.sh
cargo build --release --locked -p forge-cli
FORGE="$CARGO_TARGET_DIR/release/forge"
source scripts/lib/demo.sh
rm -rf "$RUN"
mkdir -p "$RUN"

"$FORGE" train sft --config configs/demo/sft.toml --set "run.dir=\"$RUN/sft\"" \
  --set "model.init_seed=$SEED" --set "train.seed=$SEED" >"$RUN/sft.log" 2>&1
rl() {  # rl NAME [ARGS...]: prints the run's wall seconds (with setup: loading, task images)
  local name="$1" start
  shift
  start=$(date +%s.%N)
  "$FORGE" train rl --config configs/demo/rl.toml --set "model.path=\"$RUN/sft/model\"" \
    --set "run.dir=\"$RUN/$name\"" --set "train.seed=$SEED" "$@" >"$RUN/$name.log" 2>&1 \
    || { tail -30 "$RUN/$name.log" >&2; return 1; }
  python3 -c "import sys; print(round($(date +%s.%N) - $start, 1))"
}
one_s=$(rl rl-1-worker)
two_s=$(rl rl-2-workers --nproc-per-node 2 --set rollout.groups_per_step=3 --set rollout.workers=2)

sft=$(heldout_sampled "$RUN" after-sft "$RUN/sft/model")
one=$(heldout_sampled "$RUN" rl-1-worker "$RUN/rl-1-worker/model")
two=$(heldout_sampled "$RUN" rl-2-workers "$RUN/rl-2-workers/model")

mkdir -p "$(dirname "$ROWS")"
python3 - "$RUN" "$SEED" "$sft" "$one" "$two" "$one_s" "$two_s" "$(git rev-parse --short HEAD)" <<'PY' | tee -a "$ROWS"
import datetime, json, sys
run, seed, sft, one, two, one_s, two_s, commit = sys.argv[1:]
def metrics(name):
    return [json.loads(l) for l in open(f"{run}/{name}/metrics.jsonl")]
def run_row(name, seconds, held_out):
    m = metrics(name)
    return {"wall_s": float(seconds), "steps_s": round(sum(x["step_s"] for x in m), 1), "trajectories": sum(x["groups"] for x in m) * 8,
            "reward_per_step": [round(x["reward_mean"], 2) for x in m], "updates": sum(x.get("optimizer_updates", 0) for x in m),
            "sampled_heldout": f"{held_out}/72"}
print(json.dumps({"seed": int(seed), "sampled_heldout_after_sft": f"{sft}/72",
                  "one_worker": run_row("rl-1-worker", one_s, one), "two_workers": run_row("rl-2-workers", two_s, two),
                  "date": str(datetime.date.today()), "commit": commit, "how": "scripts/bench/bench-rl-data-parallel.sh"}))
PY
