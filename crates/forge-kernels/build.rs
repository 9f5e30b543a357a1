//! With the `cuda` feature, compiles `kernels/*.cu` to PTX for `CUDA_COMPUTE_CAP` (90 = H100/H200)
//! with the toolchain's nvcc (`scripts/cuda-toolchain.sh` provides one on machines without CUDA)
//! and writes `$OUT_DIR/ptx.rs`: one `&str` constant per file. The CPU build compiles nothing.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels");
    #[cfg(feature = "cuda")]
    if let Err(err) = build_ptx() {
        panic!("forge-kernels: compiling kernels/*.cu failed (source scripts/cuda-toolchain.sh's env.sh, set CUDA_COMPUTE_CAP): {err}");
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
