#!/usr/bin/env bash
# Builds the CUDA binaries (release, --features cuda, sm_90 = H100/H200) on a machine without a GPU
# and packs them, xz-compressed, for the GPU machine: the `forge` CLI, the GPU parity tests and the
# GPU benchmarks that scripts/gpu/gpu-check.sh runs there.
#
# Usage: scripts/gpu/build-cuda.sh [TARBALL]      (default: .gpu/forge-cuda.tar.xz, git-ignored)
#        scripts/gpu/build-cuda.sh --compile-only  (what CI runs: compile and lint, pack nothing)
# Then, with the device tool: run `scripts/gpu/gpu-check.sh all` with carry [".gpu"].
#
# The target dir defaults to $HOME/.cache/forge/target-cuda (outside the clone, apart from the CPU
# one, so CPU and CUDA builds neither invalidate nor lock each other). A clean build takes ~16 min
# on 2 cores (most of it candle-kernels); an up-to-date one seconds.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1
cd "$REPO"
MODE=pack
if [[ "${1:-}" == --compile-only ]]; then
  MODE=compile-only
  shift
fi
TARBALL="${1:-.gpu/forge-cuda.tar.xz}"
# The device tool carries at most 64 MiB: the working tree (tracked and untracked files that git
# does not ignore) and the carried tarball together; 1 MiB is left for files added before the call.
TREE_BYTES="$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')"
MAX_BYTES=$((63 * 1024 * 1024 - TREE_BYTES))

scripts/gpu/cuda-toolchain.sh
# shellcheck source=/dev/null
source .cuda/env.sh
export CARGO_TARGET_DIR="${FORGE_CUDA_TARGET_DIR:-$HOME/.cache/forge/target-cuda}"
export CUDA_COMPUTE_CAP=90
# forge-kernels' build script reruns when this changes (see its build.rs: mtimes alone are not
# enough when several checkouts share the target dir)
FORGE_KERNELS_DIGEST="$(cd crates/forge-kernels/kernels && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
export FORGE_KERNELS_DIGEST

# What the build is of, taken before it starts (sources edited during a long build would otherwise
# be named by a manifest they are not in).
SOURCE="$(git rev-parse HEAD)$(git diff --quiet HEAD -- crates scripts Cargo.toml Cargo.lock || echo ' (+ uncommitted changes)')"

# One cargo invocation for everything (the same one CI runs), so features unify identically and
# nothing is built twice: the CLI, and all targets (tests, benches) of the cuda-featured crates.
echo "build-cuda: cargo build --release --features cuda (all targets of forge-kernels, -model, -train, -cli)" >&2
ARTIFACTS="$(mktemp)"
trap 'rm -f "$ARTIFACTS"' EXIT
cargo build --release --locked --features cuda --all-targets \
  -p forge-kernels -p forge-model -p forge-train -p forge-cli --message-format=json-render-diagnostics >"$ARTIFACTS"

# The executables cargo reported: "kind name harness path" per line (harness: "test" for a test
# harness build of the target, else "-"; the bin is built both ways).
EXECUTABLES="$(python3 - "$ARTIFACTS" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["kind"][0], m["target"]["name"], "test" if m["profile"]["test"] else "-", m["executable"])
PY
)"
# executable KIND NAME [HARNESS]: the path of that executable; fails naming it when cargo built none
executable() {
  local path
  path="$(awk -v kind="$1" -v name="$2" -v harness="${3:-}" '$1 == kind && $2 == name && (harness == "" || $3 == harness) { print $4; exit }' <<<"$EXECUTABLES")"
  [[ -n "$path" ]] || { echo "build-cuda: cargo reported no executable for $1 $2 ${3:-}" >&2; return 1; }
  echo "$path"
}

# What would otherwise first fail on the GPU machine (src/cuda/kernels.rs): every kernel the
# launchers load is an entry of its PTX, and ptxas fits each in the block it is launched with (no
# spills, registers and shared memory within a block's). The unit-test binary links the driver
# stubs and never touches a device.
KERNELS_TEST="$(executable lib forge_kernels test)"
echo "build-cuda: the launchers' kernels against the PTX and ptxas (sm_$CUDA_COMPUTE_CAP)" >&2
CHECK="cuda::kernels::tests::every_launched_kernel_is_in_the_ptx_and_fits_its_block"
LOG="$(LD_LIBRARY_PATH="$CUDA_HOME/lib/stubs:$CUDA_HOME/lib" "$KERNELS_TEST" --test-threads=1 --nocapture cuda::kernels::tests:: 2>&1)" || {
  echo "$LOG" >&2
  exit 1
}
echo "$LOG" >&2
# a filter that matched nothing would pass too
grep -q "^test $CHECK " <<<"$LOG" || { echo "build-cuda: $CHECK did not run" >&2; exit 1; }
if [[ "$MODE" == compile-only ]]; then
  # The CPU lint (scripts/test.sh) never sees the code behind the cuda feature; lint it here, in the
  # same target dir, where the build scripts (candle's kernels, ours) have already run.
  echo "build-cuda: cargo clippy --release --features cuda (same crates, warnings are errors)" >&2
  cargo clippy --release --locked --features cuda --all-targets \
    -p forge-kernels -p forge-model -p forge-train -p forge-cli -- -D warnings
  echo "build-cuda: compiled and linted" >&2
  exit 0
fi

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE" "$ARTIFACTS"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/tests" "$STAGE/benches"
cp "$(executable bin forge -)" "$STAGE/bin/forge"
for name in cuda_parity cuda_adamw cuda_sft cuda_decode; do cp "$(executable test "$name")" "$STAGE/tests/$name"; done
for name in gpu_kernels gpu_train_step gpu_flash gpu_decode gpu_cached_attention; do cp "$(executable bench "$name")" "$STAGE/benches/$name"; done
strip "$STAGE"/bin/* "$STAGE"/tests/* "$STAGE"/benches/*

{
  echo "commit: $SOURCE"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
  echo "nvcc: $(nvcc --version | grep -o 'release [0-9.]*, V[0-9.]*')"
  echo "compute capability: $CUDA_COMPUTE_CAP"
} >"$STAGE/MANIFEST"

mkdir -p "$(dirname "$TARBALL")"
# Every executable embeds the same ~40 MB of candle's PTX: a dictionary larger than one binary lets
# xz store it once (58 MB at the default 8 MiB dictionary, 13 MB with this; 256 MiB to unpack).
tar -C "$STAGE" -cf - . | xz --lzma2=preset=6,dict=256MiB >"$TARBALL.tmp"
mv "$TARBALL.tmp" "$TARBALL"
size="$(stat -c %s "$TARBALL")"
if (( size > MAX_BYTES )); then
  echo "build-cuda: $TARBALL is $((size >> 20)) MiB; with the $((TREE_BYTES >> 20)) MiB working tree it is over the 64 MiB the device tool carries" >&2
  exit 1
fi
echo "build-cuda: packed $TARBALL ($((size >> 20)) MiB):" >&2
cat "$STAGE/MANIFEST" >&2
