//! The CUDA build's check of the kernel table (`crate::kernels`) against the PTX, on a machine
//! without a GPU, of what would otherwise first fail on one: that each declared entry point is an
//! entry of its module's PTX with the declared parameters (and each PTX entry is declared), and
//! that ptxas (the assembler the driver runs on the PTX when it loads it) gives each kernel its
//! registers and shared memory at the largest block the launch code (`src/launch`) launches it
//! with, without a stack frame or spills.

#[cfg(test)]
mod tests {
    //! Run by `scripts/gpu/build-cuda.sh --compile-only` (CI): the test binary links the toolchain's
    //! driver stubs and never touches a device.

    use std::collections::{BTreeMap, BTreeSet};
    use std::process::Command;

    use crate::adamw::ADAMW_THREADS;
    use crate::decode_attn::{decode_launch, plan, FLASH_TILE_DTYPE, MAX_GROUP};
    use crate::flash_attn::{delta_launch, TileKernel, KERNEL_HEAD_DIMS, TILE_THREADS};
    use crate::kernels::{instantiate, ptx_carries, Declaration, Module, DECLARATIONS};
    use crate::launch::{column_reduction, elementwise_packs, per_row, LaunchShape};

    /// sm_90's limits per block: registers, shared memory, threads (CUDA programming guide, compute capability 9.0).
    const REGISTERS_PER_BLOCK: u32 = 64 * 1024;
    const SHARED_PER_BLOCK: u32 = 227 * 1024;
    const THREADS_PER_BLOCK: u32 = 1024;

    /// An entry point as the launch code uses it: its declaration, and the largest block and
    /// dynamic shared memory it is launched with.
    struct Use {
        declaration: &'static Declaration,
        threads: u32,
        dynamic_shared: u32,
    }

    fn threads(shape: LaunchShape) -> u32 {
        shape.block.iter().product()
    }

    /// The head dim of a variant (`d128_g4` → 128).
    fn head_dim(variant: &str) -> usize {
        variant.trim_start_matches('d').split('_').next().unwrap().parse().expect("a variant starting with the head dim")
    }

    /// The largest block (threads) and dynamic shared memory the launch code (src/launch) gives
    /// `kernel`'s `variant`.
    fn launch_of(kernel: &str, variant: &str) -> (u32, u32) {
        // per_row's two shapes: a warp per row up to 1024 columns, a block per row above
        let row = threads(per_row(1, 1)).max(threads(per_row(1, 1 << 20)));
        let columns = column_reduction(1, 1);
        let tile = |t: TileKernel| (TILE_THREADS, t.shared_bytes(head_dim(variant)) as u32);
        let plain = |threads| (threads, 0);
        match kernel {
            "adamw" => plain(ADAMW_THREADS),
            "cross_entropy_fwd" | "cross_entropy_grad" | "rms_norm_fwd" | "rms_norm_grad_input" | "rms_norm_inv_rms" => plain(row),
            "rms_norm_grad_weight_partial" => plain(threads(columns.partial)),
            "rms_norm_grad_weight_finish" => plain(threads(columns.finish)),
            "rope" => plain(crate::launch::rope::THREADS),
            "swiglu_fwd" | "swiglu_grad" => plain(threads(elementwise_packs(1, 2))),
            "kv_append" => plain(threads(plan(&[(0, 0)], 1, 1, KERNEL_HEAD_DIMS[0], FLASH_TILE_DTYPE, 1).unwrap().append)),
            "flash_fwd" => tile(TileKernel::Forward),
            "flash_bwd_dkdv" => tile(TileKernel::BackwardDkDv),
            "flash_bwd_dq" => tile(TileKernel::BackwardDq),
            "flash_bwd_delta" => plain(threads(delta_launch(1, 1))),
            "flash_fwd_cached" => {
                let cached = plan(&[(0, 0)], 1, 1, head_dim(variant), FLASH_TILE_DTYPE, 1).unwrap().flash.unwrap();
                (threads(cached), cached.shared_bytes)
            }
            "decode_attn_split" => plain(threads(decode_launch(1, MAX_GROUP, 1, head_dim(variant), 1).unwrap().split)),
            "decode_attn_combine" => plain(threads(decode_launch(1, MAX_GROUP, 1, head_dim(variant), 1).unwrap().combine)),
            other => panic!("{other}: a kernel of the table whose launch this check does not know (add it here)"),
        }
    }

    /// Every entry point of the kernel table, by module.
    fn uses() -> BTreeMap<&'static str, (&'static Module, BTreeMap<String, Use>)> {
        let mut uses: BTreeMap<&str, (&Module, BTreeMap<String, Use>)> = BTreeMap::new();
        for declaration in DECLARATIONS {
            let variants: &[&str] = if declaration.variants.is_empty() { &[""] } else { declaration.variants };
            for variant in variants {
                let (threads, dynamic_shared) = launch_of(declaration.kernel, variant);
                for dtype in declaration.dtypes {
                    let name = declaration.entry_name(variant, dtype);
                    let module = &mut uses.entry(declaration.module.name).or_insert_with(|| (declaration.module, BTreeMap::new())).1;
                    assert!(module.insert(name.clone(), Use { declaration, threads, dynamic_shared }).is_none(), "{name} declared twice");
                }
            }
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
        let mut problems = Vec::new();
        println!("{:<40} {:>9} {:>8} {:>13} {:>14}", "kernel", "registers", "threads", "shared bytes", "block regs");
        for (module_name, (module, wanted)) in uses() {
            let in_ptx = entries(module.ptx);
            let resources = assemble(module_name, module.ptx);
            for name in in_ptx.keys().filter(|n| !wanted.contains_key(*n)) {
                problems.push(format!("{module_name}: the PTX entry {name} is not in the kernel table (crate::kernels: a dead kernel, or the table's name is off)"));
            }
            for (name, u) in &wanted {
                let Some(entry) = in_ptx.get(name) else {
                    problems.push(format!("{module_name}: the kernel table declares {name}, which its PTX does not define ({} entries: {:?})", in_ptx.len(), in_ptx.keys().collect::<BTreeSet<_>>()));
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
                let signature = instantiate(u.declaration.params, "T");
                if entry.params.len() != signature.len() || !entry.params.iter().zip(&signature).all(|(ty, &p)| ptx_carries(ty, p)) {
                    problems.push(format!("{name}: its PTX takes parameters {:?}, the kernel table declares {signature:?} (crate::kernels)", entry.params));
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
