#!/usr/bin/env bash
# The README's first command: the main job on the embedded default, on CPU, with all set-up —
#   1. SFT warm start: a tiny Qwen3 (random init, ~1M parameters) on the edit oracle's gold agent
#      trajectories of the demo curriculum's SFT tasks (configs/demo/sft.toml);
#   2. GRPO RL on the curriculum's RL tasks (other repositories, never demonstrated): the agent
#      rolls out in Docker, reward 1 iff the tests pass (configs/demo/rl.toml);
#   3. the HELD-OUT solve rate (tasks-demo/heldout.jsonl, greedy, real containers and grading)
#      before SFT, after SFT and after RL.
# Usage: scripts/quickstart.sh [RUN_DIR]   (SEED=n picks the seed of SFT and RL; default 0)
. "$(dirname "${BASH_SOURCE[0]}")/lib/preamble.sh" || exit 1
cd "$REPO"
SEED="${SEED:-0}"
RUN="${1:-runs/quickstart}"

scripts/setup/build-base-image.sh
cargo build --release --locked -p forge-cli
FORGE="$CARGO_TARGET_DIR/release/forge"
rm -rf "$RUN"
mkdir -p "$RUN"

source scripts/lib/demo.sh

echo "== 1. SFT warm start (configs/demo/sft.toml, seed $SEED)"
# the random initialisation, as a model directory, to measure "before SFT"
"$FORGE" train sft --config configs/demo/sft.toml --set "run.dir=\"$RUN/init\"" --set train.max_steps=0 \
  --set 'optim.schedule="constant"' --set "model.init_seed=$SEED" >"$RUN/init.log" 2>&1
"$FORGE" train sft --config configs/demo/sft.toml --set "run.dir=\"$RUN/sft\"" \
  --set "model.init_seed=$SEED" --set "train.seed=$SEED"

echo "== 2. GRPO (configs/demo/rl.toml, seed $SEED)"
"$FORGE" train rl --config configs/demo/rl.toml --set "model.path=\"$RUN/sft/model\"" \
  --set "run.dir=\"$RUN/rl\"" --set "train.seed=$SEED"

echo "== 3. held-out solve rate (tasks-demo/heldout.jsonl, greedy)"
before=$(heldout_solved "$RUN" before-sft "$RUN/init/model" 0)
after_sft=$(heldout_solved "$RUN" after-sft "$RUN/sft/model" 0)
after_rl=$(heldout_solved "$RUN" after-rl "$RUN/rl/model" 0)
printf '{"seed": %s, "before_sft": "%s", "after_sft": "%s", "after_rl": "%s"}\n' "$SEED" "$before" "$after_sft" "$after_rl" | tee "$RUN/heldout.json"
echo "   before SFT $before · after SFT $after_sft · after RL $after_rl   (run directory: $RUN)"
