//! Every kernel the launchers load, named in one place: `launch!` and `load` take a [`Kernel`]
//! made here, so the test below can list them all and check, on a machine without a GPU, what
//! would otherwise first fail on one: that each name is an entry of its module's PTX (and each
//! entry is used), and that ptxas (the assembler the driver runs on the PTX when it loads it)
//! gives each kernel its registers and shared memory at the largest block it is launched with,
//! without a stack frame or spills.

use std::borrow::Cow;

use super::{Module, ADAMW, CROSS_ENTROPY, DECODE_ATTN, FLASH_ATTN, RMS_NORM, ROPE, SWIGLU};
use crate::flash_attn::TileKernel;
use crate::signatures::{self, Param};

/// One kernel of one `.cu` module, without its dtype suffix (`load::<T>` appends `_f32`, ...),
/// and its C signature.
pub(crate) struct Kernel {
    pub(super) module: &'static Module,
    pub(super) root: Cow<'static, str>,
    pub(super) signature: &'static [Param],
}

impl Kernel {
    const fn fixed(module: &'static Module, root: &'static str, signature: &'static [Param]) -> Self {
        Self { module, root: Cow::Borrowed(root), signature }
    }

    fn sized(module: &'static Module, root: String, signature: &'static [Param]) -> Self {
        Self { module, root: Cow::Owned(root), signature }
    }
}

pub(crate) const ADAMW_STEP: Kernel = Kernel::fixed(&ADAMW, "adamw", signatures::ADAMW);
pub(crate) const CROSS_ENTROPY_FWD: Kernel = Kernel::fixed(&CROSS_ENTROPY, "cross_entropy_fwd", signatures::CROSS_ENTROPY_FWD);
pub(crate) const CROSS_ENTROPY_GRAD: Kernel = Kernel::fixed(&CROSS_ENTROPY, "cross_entropy_grad", signatures::CROSS_ENTROPY_GRAD);
pub(crate) const RMS_NORM_FWD: Kernel = Kernel::fixed(&RMS_NORM, "rms_norm_fwd", signatures::RMS_NORM_FWD);
pub(crate) const RMS_NORM_GRAD_INPUT: Kernel = Kernel::fixed(&RMS_NORM, "rms_norm_grad_input", signatures::RMS_NORM_GRAD_INPUT);
pub(crate) const RMS_NORM_INV_RMS: Kernel = Kernel::fixed(&RMS_NORM, "rms_norm_inv_rms", signatures::RMS_NORM_INV_RMS);
pub(crate) const RMS_NORM_GRAD_WEIGHT_PARTIAL: Kernel = Kernel::fixed(&RMS_NORM, "rms_norm_grad_weight_partial", signatures::RMS_NORM_GRAD_WEIGHT_PARTIAL);
pub(crate) const RMS_NORM_GRAD_WEIGHT_FINISH: Kernel = Kernel::fixed(&RMS_NORM, "rms_norm_grad_weight_finish", signatures::RMS_NORM_GRAD_WEIGHT_FINISH);
pub(crate) const ROPE_ROTATE: Kernel = Kernel::fixed(&ROPE, "rope", signatures::ROPE);
pub(crate) const SWIGLU_FWD: Kernel = Kernel::fixed(&SWIGLU, "swiglu_fwd", signatures::SWIGLU_FWD);
pub(crate) const SWIGLU_GRAD: Kernel = Kernel::fixed(&SWIGLU, "swiglu_grad", signatures::SWIGLU_GRAD);
pub(crate) const KV_APPEND: Kernel = Kernel::fixed(&DECODE_ATTN, "kv_append", signatures::KV_APPEND);

/// A flash tile kernel (forward, dK/dV, dQ) for head dim `d`.
pub(crate) fn flash_tile(kernel: TileKernel, d: usize) -> Kernel {
    let signature = match kernel {
        TileKernel::Forward => signatures::FLASH_FWD,
        TileKernel::BackwardDkDv => signatures::FLASH_BWD_DKDV,
        TileKernel::BackwardDq => signatures::FLASH_BWD_DQ,
    };
    Kernel::sized(&FLASH_ATTN, kernel.name(d), signature)
}

/// The backward's first step, delta = rowsum(dO∘O), for head dim `d`.
pub(crate) fn flash_delta(d: usize) -> Kernel {
    Kernel::sized(&FLASH_ATTN, format!("flash_bwd_delta_d{d}"), signatures::FLASH_BWD_DELTA)
}

/// The flash forward over KV caches (the engine's prefill runs) for head dim `d`.
pub(crate) fn flash_cached(d: usize) -> Kernel {
    Kernel::sized(&FLASH_ATTN, format!("flash_fwd_cached_d{d}"), signatures::FLASH_FWD_CACHED)
}

/// The split-K decode kernel for head dim `d`, built for groups of up to `group_bound` query heads.
pub(crate) fn decode_split(d: usize, group_bound: usize) -> Kernel {
    Kernel::sized(&DECODE_ATTN, format!("decode_attn_split_d{d}_g{group_bound}"), signatures::DECODE_SPLIT)
}

/// The combine of the split-K partial softmaxes for head dim `d`.
pub(crate) fn decode_combine(d: usize) -> Kernel {
    Kernel::sized(&DECODE_ATTN, format!("decode_attn_combine_d{d}"), signatures::DECODE_COMBINE)
}

#[cfg(test)]
mod tests {
    //! Run by `scripts/gpu/build-cuda.sh --compile-only` (CI): the test binary links the toolchain's
    //! driver stubs and never touches a device.

    use std::collections::{BTreeMap, BTreeSet};
    use std::process::Command;

    use candle_core::cuda_backend::kernel_name;
    use half::{bf16, f16};

    use super::*;
    use crate::adamw::ADAMW_THREADS;
    use crate::decode_attn::{decode_launch, plan, FLASH_TILE_DTYPE, GROUP_BOUNDS, MAX_GROUP};
    use crate::flash_attn::{delta_launch, KERNEL_HEAD_DIMS, TILE_THREADS};
    use crate::launch::{column_reduction, elementwise_packs, per_row, LaunchShape};

    /// A kernel's full name for one dtype: `load::<T>`'s own naming (`kernel_name::<T>`).
    type Named = fn(&str) -> String;
    const FLOATS: &[Named] = &[kernel_name::<f32>, kernel_name::<bf16>, kernel_name::<f16>];
    const BF16: &[Named] = &[kernel_name::<bf16>];
    /// sm_90's limits per block: registers, shared memory, threads (CUDA programming guide, compute capability 9.0).
    const REGISTERS_PER_BLOCK: u32 = 64 * 1024;
    const SHARED_PER_BLOCK: u32 = 227 * 1024;
    const THREADS_PER_BLOCK: u32 = 1024;

    /// A kernel as the launchers use it: the dtypes they load it for, and the largest block and
    /// dynamic shared memory they launch it with.
    struct Use {
        kernel: Kernel,
        dtypes: &'static [Named],
        threads: u32,
        dynamic_shared: u32,
    }

    fn threads(shape: LaunchShape) -> u32 {
        shape.block.iter().product()
    }

    fn uses() -> Vec<Use> {
        let plain = |kernel, dtypes, threads| Use { kernel, dtypes, threads, dynamic_shared: 0 };
        // per_row's two shapes: a warp per row up to 1024 columns, a block per row above
        let row = threads(per_row(1, 1)).max(threads(per_row(1, 1 << 20)));
        let columns = column_reduction(1, 1);
        let mut uses = vec![
            plain(ADAMW_STEP, FLOATS, ADAMW_THREADS),
            plain(CROSS_ENTROPY_FWD, FLOATS, row),
            plain(CROSS_ENTROPY_GRAD, FLOATS, row),
            plain(RMS_NORM_FWD, FLOATS, row),
            plain(RMS_NORM_GRAD_INPUT, FLOATS, row),
            plain(RMS_NORM_INV_RMS, FLOATS, row),
            plain(RMS_NORM_GRAD_WEIGHT_PARTIAL, FLOATS, threads(columns.partial)),
            plain(RMS_NORM_GRAD_WEIGHT_FINISH, FLOATS, threads(columns.finish)),
            plain(ROPE_ROTATE, FLOATS, super::super::rope::THREADS),
            plain(SWIGLU_FWD, FLOATS, threads(elementwise_packs(1, 2))),
            plain(SWIGLU_GRAD, FLOATS, threads(elementwise_packs(1, 2))),
            plain(KV_APPEND, FLOATS, threads(plan(&[(0, 0)], 1, 1, KERNEL_HEAD_DIMS[0], FLASH_TILE_DTYPE, 1).unwrap().append)),
        ];
        for d in KERNEL_HEAD_DIMS {
            for kernel in [TileKernel::Forward, TileKernel::BackwardDkDv, TileKernel::BackwardDq] {
                uses.push(Use { kernel: flash_tile(kernel, d), dtypes: BF16, threads: TILE_THREADS, dynamic_shared: kernel.shared_bytes(d) as u32 });
            }
            uses.push(plain(flash_delta(d), BF16, threads(delta_launch(1, 1))));
            let cached = plan(&[(0, 0)], 1, 1, d, FLASH_TILE_DTYPE, 1).unwrap().flash.unwrap();
            uses.push(Use { kernel: flash_cached(d), dtypes: BF16, threads: threads(cached), dynamic_shared: cached.shared_bytes });
            let decode = decode_launch(1, MAX_GROUP, 1, d, 1).unwrap();
            for g in GROUP_BOUNDS {
                uses.push(plain(decode_split(d, g), FLOATS, threads(decode.split)));
            }
            uses.push(plain(decode_combine(d), FLOATS, threads(decode.combine)));
        }
        uses
    }

    /// One `.entry` of a PTX module: the `.maxntid` (launch bound) it declares and the type of
    /// each `.param` (`.u64`, `.u32`, `.f32`, ...).
    #[derive(Debug, Default)]
    struct Entry {
        bound: Option<u32>,
        params: Vec<String>,
    }

    fn entries(ptx: &str) -> BTreeMap<String, Entry> {
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        let mut current: Option<String> = None;
        let mut in_params = false;
        for line in ptx.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix(".visible .entry ").or_else(|| line.strip_prefix(".entry ")) {
                let name = rest.split('(').next().unwrap().trim().to_string();
                entries.insert(name.clone(), Entry::default());
                current = Some(name);
                in_params = !rest.contains(')');
            } else if line.starts_with(".func") || line.starts_with(".visible .func") {
                current = None;
            } else if let (true, Some(rest), Some(name)) = (in_params, line.strip_prefix(".param "), &current) {
                let ty = rest.split_whitespace().next().expect("a .param type");
                entries.get_mut(name).unwrap().params.push(ty.to_string());
            } else if line.starts_with(')') {
                in_params = false;
            } else if let (Some(rest), Some(name)) = (line.strip_prefix(".maxntid "), &current) {
                let dims: u32 = rest.split(',').map(|v| v.trim().parse::<u32>().expect("a .maxntid dimension")).product();
                entries.get_mut(name).unwrap().bound = Some(dims);
            }
        }
        entries
    }

    #[test]
    fn entries_reads_each_kernels_params_and_bound() {
        let ptx = ".visible .entry k_bf16(\n\t.param .u64 .ptr .align 1 k_bf16_param_0,\n\t.param .u32 k_bf16_param_1,\n\t.param .f32 k_bf16_param_2\n)\n.maxntid 128, 1, 1\n{\n}\n.func (.param .b32 func_retval0) helper(\n\t.param .b64 helper_param_0\n)\n{\n}\n";
        let e = entries(ptx);
        assert_eq!(e.len(), 1);
        assert_eq!((e["k_bf16"].bound, e["k_bf16"].params.clone()), (Some(128), vec![".u64".to_string(), ".u32".into(), ".f32".into()]));
    }

    /// What ptxas reports for one kernel.
    #[derive(Debug, Default)]
    struct Resources {
        registers: u32,
        static_shared: u32,
        stack: u32,
        spills: u32,
    }

    /// The first integer before `unit` in `text` (`"16640 bytes smem"` → 16640).
    fn count_before(text: &str, unit: &str) -> Option<u32> {
        let at = text.find(unit)?;
        text[..at].split(|c: char| !c.is_ascii_digit()).rfind(|s| !s.is_empty())?.parse().ok()
    }

    /// ptxas -v of one module for the architecture its PTX targets.
    fn assemble(name: &str, ptx: &str) -> BTreeMap<String, Resources> {
        let target = ptx.lines().find_map(|l| l.trim().strip_prefix(".target ")).expect("a PTX .target line").split(',').next().unwrap().trim();
        let dir = std::env::temp_dir().join(format!("forge-ptxas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.ptx"));
        std::fs::write(&path, ptx).unwrap();
        let out = Command::new("ptxas")
            .args(["-v", &format!("-arch={target}"), "-o", "/dev/null"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("running ptxas (source scripts/gpu/cuda-toolchain.sh's .cuda/env.sh): {e}"));
        let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ptxas failed on {name}'s PTX:\n{log}");
        let mut kernels = BTreeMap::new();
        let mut current = None;
        for line in log.lines() {
            if let Some(rest) = line.split("Function properties for ").nth(1) {
                current = Some(rest.trim().to_string());
                kernels.insert(rest.trim().to_string(), Resources::default());
            } else if let Some(r) = current.as_ref().and_then(|k| kernels.get_mut(k)) {
                if line.contains("stack frame") {
                    r.stack = count_before(line, "bytes stack frame").unwrap();
                    r.spills = count_before(line, "bytes spill stores").unwrap() + count_before(line, "bytes spill loads").unwrap();
                } else if line.contains("Used") && line.contains("registers") {
                    r.registers = count_before(line, "registers").unwrap();
                    r.static_shared = count_before(line, "bytes smem").unwrap_or(0);
                }
            }
        }
        kernels
    }

    /// Registers a block of `threads` takes: allocated per warp in units of 256.
    fn block_registers(registers: u32, threads: u32) -> u32 {
        (registers * 32).div_ceil(256) * 256 * threads.div_ceil(32)
    }

    #[test]
    fn a_launch_whose_arguments_are_not_the_signature_is_refused_by_name() {
        use crate::cuda::{check_arguments, KernelArg};
        use Param::{Float, Int, Ptr};
        let cached = flash_cached(128);
        let (h, scale) = (8i32, 0.125f32);
        let right = [Ptr("bf16"), Ptr("u64"), Ptr("u64"), Ptr("i32"), Ptr("i32"), Ptr("bf16"), h.param(), h.param(), scale.param()];
        assert_eq!(right[6..], [Int, Int, Float]);
        check_arguments::<bf16>(&cached, &right).unwrap();
        let mut swapped = right;
        swapped.swap(7, 8);
        let err = check_arguments::<bf16>(&cached, &swapped).unwrap_err().to_string();
        assert!(err.contains("flash_fwd_cached_d128_bf16: launched with"), "{err}");
        // an f32 buffer where the kernel takes its own dtype's elements, and a missing argument
        let f32_input = [Ptr("f32"), Ptr("bf16"), Ptr("bf16"), Int, Int, Float];
        assert!(check_arguments::<bf16>(&RMS_NORM_FWD, &f32_input).is_err());
        assert!(check_arguments::<f32>(&RMS_NORM_FWD, &f32_input).is_err());
        assert!(check_arguments::<bf16>(&RMS_NORM_FWD, &[Ptr("bf16"), Ptr("bf16"), Ptr("bf16"), Int, Int]).is_err());
    }

    #[test]
    fn block_registers_round_per_warp() {
        assert_eq!(block_registers(32, 256), 8192);
        assert_eq!(block_registers(33, 32), 1280);
        assert_eq!(block_registers(255, 256), 65536);
    }

    #[test]
    fn count_before_reads_the_number_before_a_unit() {
        let line = "ptxas info    : Used 118 registers, used 1 barriers, 16640 bytes smem";
        assert_eq!((count_before(line, "registers"), count_before(line, "bytes smem")), (Some(118), Some(16640)));
        assert_eq!(count_before("Used 23 registers, used 0 barriers", "bytes smem"), None);
    }

    #[test]
    fn every_launched_kernel_is_in_the_ptx_and_fits_its_block() {
        let uses = uses();
        let mut wanted: BTreeMap<&str, BTreeMap<String, &Use>> = BTreeMap::new();
        let mut modules: BTreeMap<&str, &Module> = BTreeMap::new();
        for u in &uses {
            modules.insert(u.kernel.module.name, u.kernel.module);
            for named in u.dtypes {
                let name = named(&u.kernel.root);
                assert!(wanted.entry(u.kernel.module.name).or_default().insert(name.clone(), u).is_none(), "{name} listed twice");
            }
        }
        let mut problems = Vec::new();
        println!("{:<40} {:>9} {:>8} {:>13} {:>14}", "kernel", "registers", "threads", "shared bytes", "block regs");
        for (module_name, module) in modules {
            let in_ptx = entries(module.ptx);
            let resources = assemble(module_name, module.ptx);
            let wanted = &wanted[module_name];
            for name in in_ptx.keys().filter(|n| !wanted.contains_key(*n)) {
                problems.push(format!("{module_name}: the PTX entry {name} is loaded by no launcher (dead kernel, or a launcher's name is off)"));
            }
            for (name, u) in wanted {
                let Some(entry) = in_ptx.get(name) else {
                    problems.push(format!("{module_name}: a launcher loads {name}, which its PTX does not define ({} entries: {:?})", in_ptx.len(), in_ptx.keys().collect::<BTreeSet<_>>()));
                    continue;
                };
                let r = &resources[name];
                let shared = r.static_shared + u.dynamic_shared;
                let regs = block_registers(r.registers, u.threads);
                println!("{name:<40} {:>9} {:>8} {shared:>13} {regs:>14}", r.registers, u.threads);
                if r.stack > 0 || r.spills > 0 {
                    problems.push(format!("{name}: {} bytes of stack frame, {} bytes of spills (state that should be in registers is in local memory)", r.stack, r.spills));
                }
                if u.threads > THREADS_PER_BLOCK {
                    problems.push(format!("{name}: launched with {} threads, more than a block's {THREADS_PER_BLOCK}", u.threads));
                }
                if regs > REGISTERS_PER_BLOCK {
                    problems.push(format!("{name}: {} registers × {} threads take {regs} of a block's {REGISTERS_PER_BLOCK} registers: the launch would fail", r.registers, u.threads));
                }
                if shared > SHARED_PER_BLOCK {
                    problems.push(format!("{name}: {shared} bytes of shared memory exceed a block's {SHARED_PER_BLOCK}"));
                }
                let signature = u.kernel.signature;
                if entry.params.len() != signature.len() || !entry.params.iter().zip(signature).all(|(ty, &p)| signatures::ptx_carries(ty, p)) {
                    problems.push(format!("{name}: its PTX takes parameters {:?}, its launchers pass {signature:?} (crate::signatures)", entry.params));
                }
                if let Some(bound) = entry.bound {
                    if u.threads > bound {
                        problems.push(format!("{name}: launched with {} threads, above its __launch_bounds__ of {bound}", u.threads));
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    }
}
