#!/usr/bin/env bash
# Gold SFT trajectories of the demo curriculum: the edit oracle (`forge eval swebench --oracle`)
# runs through the real agent loop in the task containers on the SFT split only (the RL tasks are
# learnt from reward alone, the held-out tasks measure generalisation), every trajectory is graded, and the run must resolve them all.
# Writes assets/sft/demo-trajectories.jsonl (the run's sft.resolved.jsonl).
# Needs Docker and forge/base:py3 (scripts/setup/build-base-image.sh); the task images build on first use.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
cargo build --release --locked -p forge-cli
FORGE="$CARGO_TARGET_DIR/release/forge"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$FORGE" eval swebench --dataset tasks-demo/sft.jsonl --oracle --tokenizer assets/tiny-tokenizer \
  --run-id demo-sft-oracle --scaffold minimal --max-turns 4 --workers 4 --timeout 120 --output-dir "$WORK"
RUN="$WORK/runs/demo-sft-oracle"
tasks=$(grep -c . tasks-demo/sft.jsonl)
resolved=$(grep -c . "$RUN/sft.resolved.jsonl")
if [ "$resolved" != "$tasks" ]; then
  echo "error: the oracle resolved $resolved of $tasks SFT tasks; see $RUN (kept: rerun after fixing)" >&2
  trap - EXIT
  exit 1
fi
cp "$RUN/sft.resolved.jsonl" assets/sft/demo-trajectories.jsonl
echo "wrote assets/sft/demo-trajectories.jsonl: $resolved trajectories"
