#!/usr/bin/env bash
# Creates a small venv with the official `openai` Python client, for scripts/setup/test-serve-openai.py
# (the client against `forge serve`; crates/forge-cli/tests/serve.rs runs it with the python this
# prints). No torch: the client and its own dependencies only.
#
# Usage: scripts/setup/setup-openai-client.sh    prints the venv's python on stdout (all else on stderr)
#
# Idempotent: a stamp file records the python and the pins; a second run with the same ones
# returns at once. Delete the venv (or change a pin) to force a reinstall.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1

VENV="${FORGE_OPENAI_VENV:-$HOME/.cache/forge/venv-openai}"
PYTHON="${PYTHON:-python3.11}"
# the current PyPI release when this was written (`pip index versions openai`)
REQUIREMENTS=("openai==3.63.0")
STAMP="$VENV/.forge-setup-stamp"
WANT="$(printf '%s\n' "$PYTHON" "${REQUIREMENTS[@]}")"

if [[ -x "$VENV/bin/python" && -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi

# a pyenv shim answers `command -v` for versions it does not have enabled: try to run it
if ! "$PYTHON" --version >/dev/null 2>&1; then
  PYTHON=python3
fi
echo "setup-openai-client: creating $VENV with $("$PYTHON" --version 2>&1)" >&2
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV" >&2
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install --quiet --no-input "${REQUIREMENTS[@]}" >&2
"$VENV/bin/python" -c 'import openai; print("setup-openai-client: openai", openai.__version__)' >&2
printf '%s' "$WANT" >"$STAMP"
echo "$VENV/bin/python"
