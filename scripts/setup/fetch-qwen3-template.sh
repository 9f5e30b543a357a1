#!/usr/bin/env bash
# Fetches Qwen3's original chat template (the one of Qwen/Qwen3-8B's tokenizer_config.json) and
# TRL's prefix-preserving training variant, for the chat-template parity tests and fixtures.
#
# The template text is third-party, so it is not committed: it comes from PyPI's trl==1.16.0 wheel
# (trl/chat_templates/qwen3.jinja, which TRL documents as the original Qwen3 template, and
# trl/chat_templates/qwen3_training.jinja), checked against the sha256 pinned below.
#
# Usage: scripts/setup/fetch-qwen3-template.sh [DIR]
#   DIR defaults to $HOME/.cache/forge/qwen3-template. Prints DIR on stdout (everything else goes
#   to stderr); the Rust tests read it from FORGE_QWEN3_TEMPLATE_DIR:
#     export FORGE_QWEN3_TEMPLATE_DIR="$(scripts/setup/fetch-qwen3-template.sh)"
# Idempotent: files already there with the pinned sha256 are kept without a download.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1

DIR="${1:-$HOME/.cache/forge/qwen3-template}"
TRL_VERSION="1.16.0"
# file name -> sha256 of the file inside trl-$TRL_VERSION's wheel
declare -A PINNED=(
  [qwen3.jinja]=a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8
  [qwen3_training.jinja]=1d944ff8f268b611abb296cdd24d0f51981eef1c8647ac321c3a0258f61eb6c9
)
PYTHON="${PYTHON:-python3}"

all_verified() {
  local name
  for name in "${!PINNED[@]}"; do
    [[ -f "$DIR/$name" ]] || return 1
    [[ "$(sha256sum "$DIR/$name" | cut -d' ' -f1)" == "${PINNED[$name]}" ]] || return 1
  done
}

mkdir -p "$DIR"
if ! all_verified; then
  wheels="$DIR/wheel"
  mkdir -p "$wheels"
  echo "fetch-qwen3-template: downloading trl==$TRL_VERSION from PyPI into $wheels" >&2
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" "trl==$TRL_VERSION" >&2
  wheel="$wheels/trl-$TRL_VERSION-py3-none-any.whl"
  [[ -f "$wheel" ]] || { echo "fetch-qwen3-template: pip did not leave $wheel (see its output above)" >&2; exit 1; }
  "$PYTHON" - "$wheel" "$DIR" "${!PINNED[@]}" <<'PY'
import pathlib, sys, zipfile
wheel, out, names = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        (out / name).write_bytes(z.read(f"trl/chat_templates/{name}"))
PY
  for name in "${!PINNED[@]}"; do
    got="$(sha256sum "$DIR/$name" | cut -d' ' -f1)"
    if [[ "$got" != "${PINNED[$name]}" ]]; then
      rm -f "$DIR/$name"
      echo "fetch-qwen3-template: $name from trl==$TRL_VERSION has sha256 $got, expected ${PINNED[$name]}; the wheel changed or is corrupt (delete $wheels and retry; if it persists, the pin in $0 needs review)" >&2
      exit 1
    fi
  done
fi
echo "fetch-qwen3-template: $DIR/qwen3.jinja and qwen3_training.jinja verified (trl==$TRL_VERSION)" >&2
echo "$DIR"
