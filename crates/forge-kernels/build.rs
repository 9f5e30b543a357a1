//! With the `cuda` feature, compiles `kernels/*.cu` to PTX for `CUDA_COMPUTE_CAP` (90 = H100/H200)
//! with the toolchain's nvcc (`scripts/gpu/cuda-toolchain.sh` provides one on machines without CUDA)
//! and writes `$OUT_DIR/ptx.rs`: one `&str` constant per file. The CPU build compiles nothing.
//!
//! Cargo decides whether to rerun this script by file mtimes, and its build directories are keyed
//! by paths relative to the workspace: two checkouts sharing one target dir (a CI clone and a
//! working tree) can leave a newer build of *other* kernel sources looking fresh. So freshness is
//! also keyed on content: `scripts/gpu/build-cuda.sh` exports `FORGE_KERNELS_DIGEST`, a hash of
//! `kernels/`, and any change of it reruns the script.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels");
    println!("cargo::rerun-if-env-changed=FORGE_KERNELS_DIGEST");
    #[cfg(feature = "cuda")]
    if let Err(err) = build_ptx() {
        panic!("forge-kernels: compiling kernels/*.cu failed (source scripts/gpu/cuda-toolchain.sh's env.sh, set CUDA_COMPUTE_CAP): {err}");
    }
}

#[cfg(feature = "cuda")]
fn build_ptx() -> cudaforge::Result<()> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    cudaforge::KernelBuilder::new()
        .source_dir("kernels")
        .watch(["kernels/common.cuh"])
        .arg("-std=c++17")
        .arg("-O3")
        .build_ptx()?
        .write(out.join("ptx.rs"))
}
