//! forge-train against PyTorch: torch.optim.AdamW + clip_grad_norm_ + transformers' schedules,
//! from fixtures/optim/ (scripts/fixtures/make_optim_fixtures.py).

mod common;

use candle_core::DType;
use common::{rel_err, same_bits, vars_from, Fixture};
use forge_train::{AdamW, AdamWConfig, LrSchedule, ScheduleKind};

/// f32 AdamW against torch: per-tensor max |Δ| / max |ref|.
const F32_TOLERANCE: f64 = 1e-6;

fn config_of(f: &Fixture) -> (AdamWConfig, LrSchedule) {
    let max_grad_norm = match f.meta["max_grad_norm"].as_str() {
        "none" => None,
        _ => Some(f.number("max_grad_norm")),
    };
    let config = AdamWConfig {
        lr: f.number("lr"),
        beta1: f.number("beta1"),
        beta2: f.number("beta2"),
        eps: f.number("eps"),
        weight_decay: f.number("weight_decay"),
        max_grad_norm,
        pure_bf16: false,
    };
    let kind = match f.meta["schedule"].as_str() {
        "cosine" => ScheduleKind::Cosine,
        "linear" => ScheduleKind::Linear,
        other => panic!("schedule {other}"),
    };
    let schedule = LrSchedule {
        kind,
        base_lr: config.lr,
        warmup_steps: f.number("warmup_steps") as u64,
        total_steps: f.number("total_steps") as u64,
        min_lr_ratio: 0.0,
        num_cycles: 0.5,
    };
    (config, schedule)
}

/// Runs a fixture's steps through `optimizer`, checking lr, grad norm and parameters after every
/// step and the moments at the end; returns the worst relative errors (params, moments, norm).
fn run_f32(case: &str, composite: bool) -> (f64, f64, f64) {
    let f = Fixture::load(&format!("adamw_{case}.safetensors"));
    let (config, schedule) = config_of(&f);
    let vars = vars_from(&f, DType::F32);
    let mut optimizer = AdamW::new(vars.clone(), config).unwrap();
    if composite {
        optimizer = optimizer.with_composite_update();
    }
    let groups = optimizer.param_groups();
    assert_eq!(groups.no_decay, f.meta["no_decay"].split(',').map(str::to_string).collect::<Vec<_>>());

    let steps = f.number("steps") as usize;
    let lrs = f.tensor("lr").to_vec1::<f64>().unwrap();
    let norms = f.tensor("grad_norm").to_vec1::<f32>().unwrap();
    let (mut worst_param, mut worst_norm) = (0f64, 0f64);
    for s in 0..steps {
        let lr = schedule.lr(optimizer.steps());
        assert!((lr - lrs[s]).abs() <= 1e-15 * lrs[s].abs().max(1e-30), "{case} step {s}: lr {lr} vs torch {}", lrs[s]);
        optimizer.set_lr(lr);
        let stats = optimizer.step(&f.grads(s, DType::F32)).unwrap();
        let norm_err = ((stats.grad_norm - norms[s]) / norms[s]).abs() as f64;
        assert!(norm_err < 1e-6, "{case} step {s}: grad norm {} vs torch {}", stats.grad_norm, norms[s]);
        worst_norm = worst_norm.max(norm_err);
        for (name, var) in &vars {
            let err = rel_err(var.as_tensor(), f.tensor(&format!("param.{s}.{name}")));
            assert!(err <= F32_TOLERANCE, "{case} step {s} `{name}`: rel err {err:e}");
            worst_param = worst_param.max(err);
        }
    }
    let mut worst_moment = 0f64;
    for (name, _) in &vars {
        for kind in ["exp_avg", "exp_avg_sq"] {
            let ours = match kind {
                "exp_avg" => optimizer.exp_avg(name),
                _ => optimizer.exp_avg_sq(name),
            }
            .unwrap()
            .unwrap();
            let err = rel_err(&ours, f.tensor(&format!("{kind}.{name}")));
            assert!(err <= F32_TOLERANCE, "{case} {kind} `{name}`: rel err {err:e}");
            worst_moment = worst_moment.max(err);
        }
    }
    eprintln!(
        "{case} ({}): max rel err params {worst_param:.2e}, moments {worst_moment:.2e}, grad norm {worst_norm:.2e}",
        if composite { "composite" } else { "fused" }
    );
    (worst_param, worst_moment, worst_norm)
}

#[test]
fn adamw_cosine_schedule_and_clipping_match_torch() {
    run_f32("cosine_clip", false);
}

#[test]
fn adamw_linear_schedule_without_clipping_matches_torch() {
    run_f32("linear_noclip", false);
}

#[test]
fn composite_update_matches_torch_too() {
    run_f32("cosine_clip", true);
    run_f32("linear_noclip", true);
}

/// bf16 parameters with f32 master weights: the masters follow torch's f32 run, and the bf16
/// parameters are exactly the masters rounded to bf16.
#[test]
fn bf16_master_weights_track_the_f32_run() {
    let f = Fixture::load("adamw_bf16_master.safetensors");
    assert_eq!(f.meta["bf16_exact"], "true");
    let (config, schedule) = config_of(&f);
    let vars = vars_from(&f, DType::BF16);
    let mut optimizer = AdamW::new(vars.clone(), config).unwrap();
    let steps = f.number("steps") as usize;
    let (mut worst, mut rounding_differs, mut total) = (0f64, 0usize, 0usize);
    for s in 0..steps {
        optimizer.set_lr(schedule.lr(optimizer.steps()));
        // Gradients of a bf16 model are bf16; the fixture's are bf16-exact.
        optimizer.step(&f.grads(s, DType::BF16)).unwrap();
        for (name, var) in &vars {
            let master = optimizer.master_weight(name).unwrap().expect("bf16 parameters keep a master copy");
            let expected = f.tensor(&format!("param.{s}.{name}"));
            let err = rel_err(&master, expected);
            assert!(err <= F32_TOLERANCE, "step {s} `{name}`: master rel err {err:e}");
            worst = worst.max(err);
            assert_eq!(var.dtype(), DType::BF16);
            assert!(same_bits(var.as_tensor(), &master.to_dtype(DType::BF16).unwrap()), "step {s} `{name}`: param != bf16(master)");
            // Against torch rounded to bf16: equal except where a last-bit difference of the
            // master straddles a bf16 rounding boundary.
            let ours = common::bits(var.as_tensor());
            let theirs = common::bits(&expected.to_dtype(DType::BF16).unwrap());
            total += ours.len();
            rounding_differs += ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
        }
    }
    eprintln!("bf16_master: max rel err masters {worst:.2e}; bf16 params differing from bf16(torch): {rounding_differs}/{total}");
    assert!(rounding_differs * 100 <= total, "{rounding_differs} of {total} bf16 values differ from torch rounded");
}

#[test]
fn schedules_match_transformers() {
    let f = Fixture::load("schedules.safetensors");
    let base = f.number("base_lr");
    let cases = [
        ("constant_warmup", LrSchedule::constant(base, 3)),
        ("linear", LrSchedule::linear(base, 3, 12)),
        ("cosine", LrSchedule::cosine(base, 3, 12)),
        ("cosine_nowarmup", LrSchedule::cosine(base, 0, 10)),
        ("cosine_min_lr", LrSchedule::cosine(base, 3, 12).with_min_lr_ratio(0.1)),
    ];
    for (name, schedule) in cases {
        schedule.validate().unwrap();
        let expected = f.tensor(name).to_vec1::<f64>().unwrap();
        for (step, want) in expected.iter().enumerate() {
            let got = schedule.lr(step as u64);
            assert!((got - want).abs() <= 1e-15 * want.abs().max(1e-30), "{name} step {step}: {got} vs transformers {want}");
        }
    }
}
