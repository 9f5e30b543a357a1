#!/usr/bin/env bash
# Does RL raise the demo's held-out solve rate? Per seed: the main job (scripts/quickstart.sh: SFT
# warm start → GRPO on the RL split → greedy held-out eval before SFT, after SFT, after RL), then the
# held-out rate of the SFT and the RL model sampled at temperature 0.5 with 4 sampling seeds (72
# episodes each: less noisy than 18 greedy ones). Writes a table to benches/results/rl-demo.md.
#
# Usage: scripts/bench-rl-demo.sh [SEED...]   (default: 0 1 2; ~25 min per seed on 2 cores)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/forge/target}"
SEEDS=("${@:-0 1 2}")
read -r -a SEEDS <<<"${SEEDS[*]}"
ROOT="runs/rl-demo"
mkdir -p "$ROOT"
sampled() {  # sampled RUN NAME MODEL_DIR: resolved episodes of 4 × 18 at temperature 0.5
  local total=0 seed
  for seed in 1000 2000 3000 4000; do
    "$CARGO_TARGET_DIR/release/forge" eval swebench --dataset tasks-demo/heldout.jsonl --model "$3" \
      --run-id "$2-t05-$seed" --scaffold minimal --max-turns 4 --temperature 0.5 --seed "$seed" \
      --workers 4 --timeout 60 --output-dir "$1/eval" >"$1/eval-$2-t05-$seed.log" 2>&1
    total=$((total + $(python3 -c 'import glob, json, sys; print(json.load(open(glob.glob(sys.argv[1])[0]))["resolved_instances"])' "$1/eval/*.$2-t05-$seed.json")))
  done
  echo "$total"
}
for seed in "${SEEDS[@]}"; do
  start=$(date +%s)
  run="$ROOT/seed$seed"
  SEED="$seed" scripts/quickstart.sh "$run" >"$ROOT/seed$seed.log" 2>&1 \
    || { tail -30 "$ROOT/seed$seed.log" >&2; exit 1; }
  printf '{"after_sft": %s, "after_rl": %s}\n' "$(sampled "$run" after-sft "$run/sft/model")" \
    "$(sampled "$run" after-rl "$run/rl/model")" >"$run/heldout-sampled.json"
  echo "seed $seed: $(cat "$run/heldout.json") sampled $(cat "$run/heldout-sampled.json") ($(( $(date +%s) - start )) s)"
done
python3 - "$ROOT" "$(git rev-parse --short HEAD)" "${SEEDS[@]}" <<'PY' | tee benches/results/rl-demo.md
import datetime, json, sys
root, commit, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = [json.load(open(f"{root}/seed{s}/heldout.json")) for s in seeds]
def rate(text):
    solved, total = map(int, text.split("/"))
    return solved / total
def metrics(seed):
    return [json.loads(l) for l in open(f"{root}/seed{seed}/rl/metrics.jsonl")]
print(f"""# Demo curriculum: held-out solve rate before SFT, after SFT, after RL

- What: `scripts/quickstart.sh` per seed (the README's main job): SFT warm start
  (configs/demo/sft.toml, tasks-demo/sft.jsonl's demonstrations) → GRPO (configs/demo/rl.toml) on
  tasks-demo/rl.jsonl → greedy agent on the 18 held-out tasks (tasks-demo/heldout.jsonl:
  repositories trained on by neither), graded in containers; then the SFT and the RL model sampled
  at temperature 0.5 with seeds 1000–4000 (4 × 18 episodes each).
- Machine: 2 CPU cores, no GPU; date {datetime.date.today()}; commit {commit}
- Reproduce: `scripts/bench-rl-demo.sh {' '.join(seeds)}`

| seed | before SFT (greedy) | after SFT (greedy) | after RL (greedy) | after SFT (sampled) | after RL (sampled) | RL train reward, first → last step |
|---|---|---|---|---|---|---|""")
sampled = [json.load(open(f"{root}/seed{s}/heldout-sampled.json")) for s in seeds]
for seed, row, samp in zip(seeds, rows, sampled):
    m = metrics(seed)
    print(f"| {seed} | {row['before_sft']} | {row['after_sft']} | {row['after_rl']} | {samp['after_sft']}/72 | "
          f"{samp['after_rl']}/72 | {m[0]['reward_mean']:.3f} → {m[-1]['reward_mean']:.3f} |")
mean = lambda key: sum(rate(r[key]) for r in rows) / len(rows)
mean_sampled = lambda key: sum(s[key] for s in sampled) / (72 * len(sampled))
print(f"| mean | {mean('before_sft'):.1%} | {mean('after_sft'):.1%} | {mean('after_rl'):.1%} | "
      f"{mean_sampled('after_sft'):.1%} | {mean_sampled('after_rl'):.1%} | |")
PY
