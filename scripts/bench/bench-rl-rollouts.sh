#!/usr/bin/env bash
# One setting of `forge train rl`, both ways, side by side on the same tasks, model and seed:
# configs/demo/rl.toml for STEPS steps with KEY set to each of its two values —
#   mode            rollout.mode: queue (producer-consumer) vs barrier (fixed batch)
#                                                                  → benches/results/rl-rollouts.md
#   prefix_caching  rollout.prefix_caching: true vs false (the engine's KV reuse across an episode's turns)
#                                                                  → benches/results/rl-prefix-cache.md
#   packing         train.packing: true vs false (the update's trajectories back to back, no padding)
#                                                                  → benches/results/rl-packing.md
# Reports trajectories per minute (consumed trajectories / wall time of the steps), the engine's
# busy seconds and idle fraction, the episodes' generation seconds, the share of prompt tokens the
# prefix cache supplied, the trainer's waiting share and its seconds training, from each run's metrics.jsonl.
#
# Usage: scripts/bench/bench-rl-rollouts.sh SFT_MODEL_DIR [STEPS] [KEY]   (e.g. runs/quickstart/sft/model 6 mode)
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
MODEL="${1:?usage: scripts/bench/bench-rl-rollouts.sh SFT_MODEL_DIR [STEPS] [mode|prefix_caching|packing]}"
STEPS="${2:-6}"
KEY="${3:-mode}"
case "$KEY" in
  mode) VALUES=(queue barrier); OUT=benches/results/rl-rollouts.md ;;
  prefix_caching) VALUES=(true false); OUT=benches/results/rl-prefix-cache.md ;;
  packing) VALUES=(true false); OUT=benches/results/rl-packing.md ;;
  *) echo "KEY must be mode, prefix_caching or packing, not '$KEY'" >&2; exit 2 ;;
esac
cargo build --release --locked -p forge-cli
FORGE="$CARGO_TARGET_DIR/release/forge"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for value in "${VALUES[@]}"; do
  case "$KEY" in
    mode) setting="rollout.mode=\"$value\"" ;;
    packing) setting="train.packing=$value" ;;
    *) setting="rollout.$KEY=$value" ;;
  esac
  "$FORGE" train rl --config configs/demo/rl.toml --set "model.path=\"$MODEL\"" --set "run.dir=\"$WORK/$value\"" \
    --set "$setting" --set "train.steps=$STEPS" --set "run.checkpoint_every=$STEPS" 2>"$WORK/$value.log"
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$WORK" "$STEPS" "$LOAD_BEFORE" "$LOAD_AFTER" "$(git rev-parse --short HEAD)" "$KEY" "${VALUES[@]}" <<'PY' | tee "$OUT"
import json, sys, datetime, tomllib
work, steps, load_before, load_after, commit, key, *values = sys.argv[1:]
rollout = tomllib.load(open(f"{work}/{values[0]}/config.toml", "rb"))["rollout"]
def summary(value):
    rows = [json.loads(l) for l in open(f"{work}/{value}/metrics.jsonl")]
    wall = sum(r["step_s"] for r in rows)
    trajectories = sum(r["groups"] for r in rows) * rollout["group_size"]
    engine_busy = sum((1 - r["engine_idle_fraction"]) * r["step_s"] for r in rows)
    prompt = sum(r.get("prompt_tokens", 0) for r in rows)
    reused = sum(r.get("prefix_reused_fraction", 0) * r.get("prompt_tokens", 0) for r in rows)
    return dict(wall=wall, per_min=trajectories * 60 / wall, engine_busy=engine_busy, engine_idle=1 - engine_busy / wall,
                generation=sum(r["generation_s"] for r in rows), prompt=prompt, reused=reused / max(prompt, 1),
                turns=sum(r["mean_turns"] for r in rows) / len(rows), trainer_wait=sum(r["idle_s"] for r in rows) / wall,
                reward=sum(r["reward_mean"] for r in rows) / len(rows), lag=max(r.get("policy_lag_max", 0) for r in rows),
                training=sum(r["training_s"] for r in rows))
runs = {v: summary(v) for v in values}
title = {"mode": "producer-consumer queue vs fixed-batch barrier", "prefix_caching": "engine prefix caching on vs off",
         "packing": "update micro-batches packed vs padded"}[key]
setting = "train.packing" if key == "packing" else f"rollout.{key}"
print(f"""# RL rollouts: {title}

- Machine: 2 CPU cores, no GPU; date {datetime.date.today()}; commit {commit}
- Load average before/after: {load_before} / {load_after}
- Work: `forge train rl --config configs/demo/rl.toml` from the same SFT model, same seed, {steps} steps
  of {rollout["groups_per_step"]} groups × {rollout["group_size"]} trajectories (demo curriculum, {rollout["workers"]} rollout workers, real containers and grading);
  only `{setting}` differs. Reproduce: `scripts/bench/bench-rl-rollouts.sh SFT_MODEL_DIR {steps} {key}`.
- trajectories/min = consumed trajectories / wall time of all steps; engine busy = seconds the engine
  decoded; generation = the episodes' seconds waiting on the engine (summed over episodes); prompt
  reused = share of prompt tokens the prefix cache supplied; trainer waiting = share spent waiting for groups;
  training = the trainer's seconds in updates (forward, backward, optimizer).

| {key} | wall s | trajectories/min | engine busy s | engine idle | generation s | prompt tokens | prompt reused | mean turns | trainer waiting | training s | mean reward | max policy lag |
|---|---|---|---|---|---|---|---|---|---|---|---|---|""")
for v, r in runs.items():
    print(f"| {v} | {r['wall']:.0f} | **{r['per_min']:.1f}** | {r['engine_busy']:.0f} | {r['engine_idle']:.2f} | {r['generation']:.0f} | {int(r['prompt']):,} | {r['reused']:.1%} | "
          f"{r['turns']:.1f} | {r['trainer_wait']:.2f} | {r['training']:.0f} | {r['reward']:.3f} | {r['lag']:.0f} |")
a, b = (runs[v] for v in values)
print(f"\n{values[0]} / {values[1]} throughput: **{a['per_min'] / b['per_min']:.2f}×**; engine busy time: **{a['engine_busy'] / b['engine_busy']:.2f}×**; "
      f"training time: **{a['training'] / b['training']:.2f}×**")
PY
