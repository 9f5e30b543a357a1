//! Compiles the SIMT runtime (simt/simt.cpp) and forge-kernels' CUDA sources as host C++: each
//! `.cu` file with simt.h force-included, `simt/include` standing in for the CUDA headers, and
//! FORGE_HOST_EMULATION selecting the emulated forms of the few PTX instructions a kernel uses.
//! Trapping UB checks (no sanitizer runtime needed) turn an out-of-bounds index into a fixed-size
//! array, a misaligned vector access or a signed overflow into a fault the launch reports. The
//! kernels are also compiled with ThreadSanitizer's instrumentation, whose hooks the runtime defines
//! itself (no libtsan): its race tracker sees every shared and global memory access.

const KERNELS: &str = "../forge-kernels/kernels";
const EMULATED: &[&str] = &["adamw.cu", "cross_entropy.cu", "decode_attn.cu", "flash_attn.cu", "rms_norm.cu", "rope.cu", "swiglu.cu"];

fn main() {
    println!("cargo::rerun-if-changed=simt");
    println!("cargo::rerun-if-changed={KERNELS}");
    let runtime = emulation().file("simt/simt.cpp").compile_intermediates();
    // The kernels alone are instrumented for the race tracker: the runtime defines the hooks.
    // Without scalar replacement of aggregates, GCC copies a vector struct (uint4, a kernel's
    // `Lanes<float, 2>`) with one access as nvcc does (st.shared.v2/v4), rather than element by
    // element: the bank-conflict count sees each shared request at its real width.
    let mut kernels = emulation();
    kernels.flag("-fsanitize=thread").flag("-fno-tree-sra").objects(runtime).file("simt/faulty.cu");
    for file in EMULATED {
        kernels.file(format!("{KERNELS}/{file}"));
    }
    // `-include` must follow the language flag for the .cu files; cc passes flags before the file.
    kernels.flag("-include").flag("simt.h").flag("-x").flag("c++");
    kernels.compile("forge_simt");
}

fn emulation() -> cc::Build {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .include("simt")
        .include("simt/include")
        .define("FORGE_HOST_EMULATION", None)
        .flag("-fno-strict-aliasing")
        .flag("-Wno-unknown-pragmas")
        .flag("-Wno-unused-parameter")
        .flag("-fsanitize=bounds,alignment,signed-integer-overflow,shift,vla-bound,null")
        .flag("-fsanitize-undefined-trap-on-error");
    build
}
