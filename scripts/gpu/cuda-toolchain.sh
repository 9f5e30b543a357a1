#!/usr/bin/env bash
# CUDA 13.0 build toolchain for a machine WITHOUT a GPU or a CUDA install:
#   - nvcc, headers and libcudart from NVIDIA's PyPI wheels, unzipped into a project-local prefix;
#   - link stubs for the driver and the libraries that cudarc links (libcuda.so.1, libcublas.so.13,
#     ...): every function cudarc's bindings declare, compiled as an empty C function into a shared
#     object with the real SONAME, so the linker resolves them and the binary records the right
#     NEEDED entries. The stubs are never loaded at run time: the GPU machine provides the real ones.
#
# Usage: scripts/gpu/cuda-toolchain.sh [PREFIX]       (default: $FORGE_CUDA_HOME or <repo>/.cuda)
#        then: source PREFIX/env.sh && cargo build --release --features cuda
# Idempotent: a stamp records the pins and the cudarc version; a second run with the same ones is a no-op.
#
# nvcc stays at 13.0: the GPU machines' driver (580) rejects PTX from a newer nvcc.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/preamble.sh" || exit 1

PREFIX="${1:-${FORGE_CUDA_HOME:-$REPO/.cuda}}"
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)
# cudarc module -> library it links, with the SONAME of the CUDA 13 library that the GPU machine has.
# (NCCL: forge-train links it for gradients between GPUs, see crates/forge-train/src/distributed.)
STUBS=(
  "driver   libcuda.so.1"
  "cublas   libcublas.so.13"
  "cublaslt libcublasLt.so.13"
  "curand   libcurand.so.10"
  "nvrtc    libnvrtc.so.13"
  "nccl     libnccl.so.2"
)

die() { echo "cuda-toolchain: $*" >&2; exit 1; }

CUDARC_VERSION="$(awk '/^name = "cudarc"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$REPO/Cargo.lock")"
[[ -n "$CUDARC_VERSION" ]] || die "no cudarc in $REPO/Cargo.lock (is the cuda feature still wired to candle-core/cuda?)"
STAMP_CONTENT="${WHEELS[*]} | cudarc $CUDARC_VERSION | ${STUBS[*]}"
if [[ -f "$PREFIX/.stamp" && "$(cat "$PREFIX/.stamp")" == "$STAMP_CONTENT" ]]; then
  echo "cuda-toolchain: up to date in $PREFIX" >&2
  exit 0
fi

for tool in python3 unzip gcc; do
  command -v "$tool" >/dev/null || die "'$tool' is required but not on PATH"
done

# Locate cudarc's generated bindings (the symbol lists); fetch the crate if cargo has not yet.
# (`|| true`: on a fresh machine ls finds nothing, and pipefail + set -e would end the script silently)
find_cudarc() { ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$CUDARC_VERSION" 2>/dev/null | head -1 || true; }
CUDARC_SRC="$(find_cudarc)"
if [[ -z "$CUDARC_SRC" ]]; then
  echo "cuda-toolchain: fetching crates to read cudarc $CUDARC_VERSION's bindings" >&2
  (cd "$REPO" && cargo fetch --locked)
  CUDARC_SRC="$(find_cudarc)"
  [[ -n "$CUDARC_SRC" ]] || die "cudarc $CUDARC_VERSION not found in the cargo registry after 'cargo fetch'"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
rm -rf "$PREFIX"
mkdir -p "$PREFIX/lib/stubs"

echo "cuda-toolchain: downloading ${WHEELS[*]}" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
  --dest "$WORK/wheels" "${WHEELS[@]}" || die "pip download failed (PyPI must be reachable)"
for wheel in "$WORK"/wheels/*.whl; do
  unzip -q -o "$wheel" 'nvidia/cu13/*' -d "$WORK/unpacked"
done
# The wheels share one tree (bin/ include/ lib/ nvvm/) under nvidia/cu13: that tree is a CUDA_HOME.
cp -a "$WORK/unpacked/nvidia/cu13/." "$PREFIX/"
chmod +x "$PREFIX"/bin/* "$PREFIX"/nvvm/bin/* 2>/dev/null || true
# candle-kernels links `-lcudart`: the linker needs the unversioned name.
ln -sf libcudart.so.13 "$PREFIX/lib/libcudart.so"

for entry in "${STUBS[@]}"; do
  read -r module soname <<<"$entry"
  bindings="$CUDARC_SRC/src/$module/sys/mod.rs"
  [[ -f "$bindings" ]] || die "missing $bindings (did cudarc's layout change?)"
  src="$WORK/${soname%%.so*}.c"
  grep -oE '^pub unsafe fn [A-Za-z_][A-Za-z0-9_]*\(' "$bindings" \
    | sed -E 's/^pub unsafe fn ([A-Za-z0-9_]+)\($/void \1(void) {}/' | sort -u >"$src"
  count="$(wc -l <"$src")"
  (( count > 0 )) || die "no functions found in $bindings"
  gcc -shared -fPIC -Wl,-soname,"$soname" -o "$PREFIX/lib/stubs/$soname" "$src"
  ln -sf "$soname" "$PREFIX/lib/stubs/${soname%%.so*}.so"
  echo "cuda-toolchain: stub $soname ($count functions from cudarc's $module bindings)" >&2
done

cat >"$PREFIX/env.sh" <<EOF
# source me: build environment for \`cargo build --features cuda\` on a machine without a GPU
export CUDA_HOME="$PREFIX"
export PATH="$PREFIX/bin:\$PATH"
# No nvidia-smi here to detect it: H100/H200 are sm_90.
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-90}"
EOF

version="$("$PREFIX/bin/nvcc" --version | grep -o 'release [0-9.]*')" || die "the unpacked nvcc does not run"
[[ "$version" == "release 13.0" ]] || die "expected nvcc release 13.0, got '$version'"
echo "$STAMP_CONTENT" >"$PREFIX/.stamp"
echo "cuda-toolchain: nvcc $version ready in $PREFIX (source $PREFIX/env.sh)" >&2
