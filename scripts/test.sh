#!/usr/bin/env bash
# The whole test suite, from a fresh clone, with all set-up included (the README's test command;
# .ci/run calls exactly this). Needs: the Rust toolchain, a running Docker Engine, root for
# debootstrap (the sandbox base image is built once and reused).
#
# Docker-backed tests are strict here: a missing engine or image FAILS them (CI=true semantics),
# because a skipped test must never count as a pass.
. "$(dirname "${BASH_SOURCE[0]}")/lib/preamble.sh" || exit 1

cd "$REPO"
export CI="${CI:-true}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n=== %s ===\n' "$*" >&2; }

step "Qwen3's original chat template for the chat-template parity tests (third-party text, not committed)"
FORGE_QWEN3_TEMPLATE_DIR="$(scripts/setup/fetch-qwen3-template.sh)"
export FORGE_QWEN3_TEMPLATE_DIR

step "sandbox base image"
scripts/setup/build-base-image.sh
for script in scripts/setup/build-task-images.sh; do
  if [[ -x "$script" ]]; then
    step "$script"
    "$script"
  fi
done

step "scripts/gpu/gpu-check.sh on stub binaries (what the GPU machine runs: stage lists, budget, tables)"
scripts/gpu/test-gpu-check.sh

step "build (all targets, incl. benches and the CLI)"
cargo build --workspace --all-targets --locked

step "the official openai Python client for forge serve's client test (a small venv, no torch)"
FORGE_OPENAI_PYTHON="$(scripts/setup/setup-openai-client.sh)"  # (not `export X="$(...)"`: that would hide a failure)
export FORGE_OPENAI_PYTHON

step "tests"
cargo test --workspace --locked --no-fail-fast -- --test-threads="${FORGE_TEST_THREADS:-2}"

step "no sandbox containers left behind"
leaked="$(docker ps -aq --filter label=forge.sandbox)"
if [[ -n "$leaked" ]]; then
  echo "containers leaked by the test suite: $leaked" >&2
  docker rm -f $leaked >/dev/null
  exit 1
fi

step "lints (clippy, every target, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "CUDA build and its lint (compile only: no GPU here; scripts/gpu/gpu-check.sh runs the GPU tests on a GPU machine)"
# Its own target dir outside the clone ($HOME/.cache/forge/target-cuda, kept warm between runs),
# so it neither locks nor invalidates the CPU one. Sets up its toolchain (scripts/gpu/cuda-toolchain.sh).
scripts/gpu/build-cuda.sh --compile-only

echo "all tests passed" >&2
