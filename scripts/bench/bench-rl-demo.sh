#!/usr/bin/env bash
# Does RL raise the demo's held-out solve rate? Per seed: the main job (scripts/quickstart.sh: SFT
# warm start → GRPO on the RL split → greedy held-out eval before SFT, after SFT, after RL), then the
# held-out rate of the SFT and the RL model sampled at temperature 0.5 with 4 sampling seeds (72
# episodes each: less noisy than 18 greedy ones). Each seed's result is appended (replacing an older
# row of the same seed) to benches/results/rl-demo-seeds.jsonl, and the table between the markers of
# benches/results/rl-demo.md is rebuilt from every row there.
#
# Usage: scripts/bench/bench-rl-demo.sh [SEED...]   (default: 0 1 2 3 4, the seeds of rl-demo.md; ~15–25 min per seed on 2 cores)
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
FORGE="$CARGO_TARGET_DIR/release/forge"
source scripts/lib/demo.sh
SEEDS=("${@:-0 1 2 3 4}")
read -r -a SEEDS <<<"${SEEDS[*]}"
ROOT="runs/rl-demo"
ROWS="benches/results/rl-demo-seeds.jsonl"
mkdir -p "$ROOT"
touch "$ROWS"

for seed in "${SEEDS[@]}"; do
  start=$(date +%s)
  run="$ROOT/seed$seed"
  SEED="$seed" scripts/quickstart.sh "$run" >"$ROOT/seed$seed.log" 2>&1 \
    || { tail -30 "$ROOT/seed$seed.log" >&2; exit 1; }
  sampled_sft=$(heldout_sampled "$run" after-sft "$run/sft/model")
  sampled_rl=$(heldout_sampled "$run" after-rl "$run/rl/model")
  python3 - "$ROWS" "$run" "$seed" "$sampled_sft" "$sampled_rl" "$(git rev-parse --short HEAD)" "$(( $(date +%s) - start ))" <<'PY'
import datetime, json, sys
rows_path, run, seed, sampled_sft, sampled_rl, commit, seconds = sys.argv[1:]
row = json.load(open(f"{run}/heldout.json"))
row.update(seed=int(seed), sampled_after_sft=f"{sampled_sft}/72", sampled_after_rl=f"{sampled_rl}/72",
           rl_reward_per_step=[round(json.loads(l)["reward_mean"], 2) for l in open(f"{run}/rl/metrics.jsonl")],
           commit=commit, date=str(datetime.date.today()), seconds=int(seconds), how="scripts/bench/bench-rl-demo.sh")
rows = [json.loads(l) for l in open(rows_path) if l.strip()]
rows = [r for r in rows if r["seed"] != row["seed"]] + [row]
with open(rows_path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["seed"]))
PY
  echo "seed $seed: $(cat "$run/heldout.json") sampled after SFT $sampled_sft/72, after RL $sampled_rl/72 ($(( $(date +%s) - start )) s)"
done

python3 - "$ROWS" benches/results/rl-demo.md <<'PY'
import json, sys
rows_path, doc_path = sys.argv[1:]
rows = [json.loads(l) for l in open(rows_path) if l.strip()]
def count(text):
    return tuple(map(int, text.split("/")))
def total(key):
    solved, n = map(sum, zip(*(count(r[key]) for r in rows if r[key] != "-")))
    return f"{solved}/{n} ({solved / n:.0%})"
lines = ["| seed | before SFT (greedy) | after SFT (greedy) | after RL (greedy) | after SFT (sampled) | after RL (sampled) | RL train reward per step (T = 1.0) | measured |",
         "|---|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['seed']} | {r['before_sft']} | {r['after_sft']} | {r['after_rl']} | {r['sampled_after_sft']} | "
                 f"{r['sampled_after_rl']} | {' '.join(f'{x:.2f}' for x in r['rl_reward_per_step'])} | {r['date']}, {r['commit']}, {r['how']} |")
lines.append(f"| all | {total('before_sft')} | {total('after_sft')} | {total('after_rl')} | {total('sampled_after_sft')} | "
             f"{total('sampled_after_rl')} | | |")
changes = [count(r["sampled_after_rl"])[0] - count(r["sampled_after_sft"])[0] for r in rows]
mean = sum(changes) / len(changes)
spread = (sum((c - mean) ** 2 for c in changes) / max(len(changes) - 1, 1)) ** 0.5
lines.append("")
lines.append(f"Sampled held-out rate rose after RL for {sum(c > 0 for c in changes)} of {len(rows)} seeds; change per seed "
             f"{', '.join(f'{c:+d}' for c in changes)} of 72 (mean {mean:+.1f}, standard deviation {spread:.1f}).")
table = "\n".join(lines)
doc = open(doc_path).read()
head, rest = doc.split("<!-- table -->", 1)
_, tail = rest.split("<!-- /table -->", 1)
open(doc_path, "w").write(f"{head}<!-- table -->\n{table}\n<!-- /table -->{tail}")
print(table)
PY
