#!/usr/bin/env bash
# Producer-consumer rollout queue vs a fixed-batch barrier, side by side on the same tasks, model
# and seed: `forge train rl` with configs/demo/rl.toml and rollout.mode = queue, then barrier,
# STEPS steps each. Reports trajectories per minute (consumed trajectories / wall time of the
# steps), the engine's idle fraction and the trainer's waiting share, from each run's metrics.jsonl.
# Writes benches/results/rl-rollouts.md.
#
# Usage: scripts/bench-rl-rollouts.sh SFT_MODEL_DIR [STEPS]   (e.g. runs/quickstart/sft/model)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
MODEL="${1:?usage: scripts/bench-rl-rollouts.sh SFT_MODEL_DIR [STEPS]}"
STEPS="${2:-6}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/forge/target}"
cargo build --release --locked -p forge-cli
FORGE="$CARGO_TARGET_DIR/release/forge"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for mode in queue barrier; do
  "$FORGE" train rl --config configs/demo/rl.toml --set "model.path=\"$MODEL\"" --set "run.dir=\"$WORK/$mode\"" \
    --set "rollout.mode=\"$mode\"" --set "train.steps=$STEPS" --set "run.checkpoint_every=$STEPS" 2>"$WORK/$mode.log"
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$WORK" "$STEPS" "$LOAD_BEFORE" "$LOAD_AFTER" "$(git rev-parse --short HEAD)" <<'PY' | tee benches/results/rl-rollouts.md
import json, sys, datetime, tomllib
work, steps, load_before, load_after, commit = sys.argv[1:]
rollout = tomllib.load(open(f"{work}/queue/config.toml", "rb"))["rollout"]
def summary(mode):
    rows = [json.loads(l) for l in open(f"{work}/{mode}/metrics.jsonl")]
    wall = sum(r["step_s"] for r in rows)
    trajectories = sum(r["groups"] for r in rows) * rollout["group_size"]
    engine_busy = sum((1 - r["engine_idle_fraction"]) * r["step_s"] for r in rows)
    return dict(wall=wall, per_min=trajectories * 60 / wall, engine_idle=1 - engine_busy / wall,
                trainer_wait=sum(r["idle_s"] for r in rows) / wall, train=sum(r["training_s"] for r in rows) / wall,
                reward=sum(r["reward_mean"] for r in rows) / len(rows), lag=max(r.get("policy_lag_max", 0) for r in rows))
q, b = summary("queue"), summary("barrier")
print(f"""# RL rollouts: producer-consumer queue vs fixed-batch barrier

- Machine: 2 CPU cores, no GPU; date {datetime.date.today()}; commit {commit}
- Load average before/after: {load_before} / {load_after}
- Work: `forge train rl --config configs/demo/rl.toml` from the same SFT model, same seed, {steps} steps
  of {rollout["groups_per_step"]} groups × {rollout["group_size"]} trajectories (demo curriculum, {rollout["workers"]} rollout workers, real containers and grading);
  only `rollout.mode` differs. Reproduce: `scripts/bench-rl-rollouts.sh SFT_MODEL_DIR {steps}`.
- trajectories/min = consumed trajectories / wall time of all steps; engine idle = share of that
  wall time the engine had nothing to decode; trainer waiting = share spent waiting for groups.

| mode | wall s | trajectories/min | engine idle | trainer waiting | training share | mean reward | max policy lag |
|---|---|---|---|---|---|---|---|
| queue | {q['wall']:.0f} | **{q['per_min']:.1f}** | {q['engine_idle']:.2f} | {q['trainer_wait']:.2f} | {q['train']:.2f} | {q['reward']:.3f} | {q['lag']:.0f} |
| barrier | {b['wall']:.0f} | **{b['per_min']:.1f}** | {b['engine_idle']:.2f} | {b['trainer_wait']:.2f} | {b['train']:.2f} | {b['reward']:.3f} | {b['lag']:.0f} |

queue / barrier throughput: **{q['per_min'] / b['per_min']:.2f}×**
""")
PY
