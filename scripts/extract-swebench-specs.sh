#!/usr/bin/env bash
# Writes data/swebench-specs.json: swebench's per-repository, per-version specifications
# (MAP_REPO_VERSION_TO_SPECS for every language, MAP_REPO_TO_EXT, the log parser per repository,
# NON_TEST_EXTS, the test-output markers and heredoc tag of the eval scripts, ...). forge-swe
# (crates/forge-swe/src/specs.rs) builds the official eval script, image name and log parser of
# an instance from them, so that datasets without `eval_script`/`image` columns (the hub's
# SWE-bench Verified) can run.
#
# swebench is pinned to 4.1.0: it is the release whose eval scripts forge's grading semantics and
# data/swebench_verified.parquet (its `eval_script` column) match, and swebench 5.x no longer has
# these tables (the specifications moved out of swebench.harness.constants).
#
# Usage: scripts/extract-swebench-specs.sh [OUT]
#   OUT defaults to data/swebench-specs.json (relative to the repository root). The throw-away
#   venv lives in $HOME/.cache/forge/swebench-4.1.0-venv (set VENV to move it); PyPI must be
#   reachable the first time. Idempotent: the same swebench release writes the same file.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/data/swebench-specs.json}"
SWEBENCH_VERSION="4.1.0"
VENV="${VENV:-$HOME/.cache/forge/swebench-$SWEBENCH_VERSION-venv}"
PYTHON="${PYTHON:-python3}"

if ! "$VENV/bin/python" -c "import swebench, sys; sys.exit(swebench.__version__ != '$SWEBENCH_VERSION')" 2>/dev/null; then
  echo "extract-swebench-specs: creating $VENV with swebench==$SWEBENCH_VERSION" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet "swebench==$SWEBENCH_VERSION" >&2
fi

"$VENV/bin/python" "$ROOT/scripts/extract_swebench_specs.py" "$OUT"
