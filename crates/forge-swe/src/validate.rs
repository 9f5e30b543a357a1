//! `forge tasks validate`: eval-readiness of task instances. With the test patch and without the
//! gold patch every FAIL_TO_PASS test must fail and every PASS_TO_PASS test pass; with the gold
//! patch the instance must be resolved.

use std::sync::Arc;

use forge_sandbox::Runtime;
use serde::{Deserialize, Serialize};

use crate::harness::{run_instance, ExecOptions, Outcome};
use crate::instance::TaskInstance;

/// The verdict on one instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskValidation {
    pub instance_id: String,
    pub ok: bool,
    /// What is wrong (empty when ok).
    pub problems: Vec<String>,
    pub before_seconds: f64,
    pub after_seconds: f64,
}

/// `forge tasks validate --tasks FILE`: loads the instances (parquet, JSONL, JSON), builds the
/// bundled images if needed, pulls the others under `pull`, and validates every instance.
pub async fn validate_file(
    tasks: &std::path::Path,
    workers: usize,
    timeout: std::time::Duration,
    version: crate::GradingVersion,
    pull: forge_sandbox::PullPolicy,
) -> crate::Result<Vec<TaskValidation>> {
    let instances = crate::load_instances(tasks)?;
    let rt = Runtime::connect().await?;
    crate::harness::ensure_bundled_images(&rt, tasks, &instances).await;
    let opts = ExecOptions {
        timeout,
        version,
        pull,
        ..Default::default()
    };
    Ok(validate_tasks(&rt, &instances, &opts, workers).await)
}

/// Validates `instances` with up to `workers` instances at a time (two containers each, one
/// after the other). Grading uses `opts.version`.
pub async fn validate_tasks(
    rt: &Runtime,
    instances: &[TaskInstance],
    opts: &ExecOptions,
    workers: usize,
) -> Vec<TaskValidation> {
    let sem = Arc::new(tokio::sync::Semaphore::new(workers.max(1)));
    let opts = Arc::new(opts.clone());
    let mut set = tokio::task::JoinSet::new();
    for (idx, inst) in instances.iter().cloned().enumerate() {
        let (rt, sem, opts) = (rt.clone(), sem.clone(), opts.clone());
        set.spawn(async move {
            let _p = sem.acquire_owned().await.expect("semaphore open");
            (idx, validate_one(&rt, &inst, &opts).await)
        });
    }
    let mut out: Vec<(usize, TaskValidation)> = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(v) => out.push(v),
            Err(e) => out.push((
                usize::MAX,
                TaskValidation {
                    instance_id: "?".into(),
                    ok: false,
                    problems: vec![format!("validation task panicked: {e}")],
                    before_seconds: 0.0,
                    after_seconds: 0.0,
                },
            )),
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, v)| v).collect()
}

/// FAIL_TO_PASS and PASS_TO_PASS of an instance, derived by running its test files (with its
/// test patch) without and with the gold patch: fail → pass and pass → pass, per test, as the
/// instance's log parser reads the output. A run without test output is an error naming the
/// instance (the tests could not run at all).
pub async fn derive_tests(
    rt: &Runtime,
    inst: &TaskInstance,
    opts: &ExecOptions,
) -> crate::Result<(Vec<String>, Vec<String>)> {
    let parser = crate::parsers::LogParser::for_instance(inst.log_parser.as_deref(), &inst.repo);
    let mut maps = Vec::new();
    for (patch, when) in [(None, "without"), (Some(inst.patch.as_str()), "with")] {
        let run = run_instance(rt, inst, patch, opts).await?;
        let region = crate::grading::test_region(&run.log).ok_or_else(|| {
            let tail: String = run.log.chars().rev().take(3000).collect::<Vec<_>>().into_iter().rev().collect();
            crate::SweError::Invalid(format!(
                "{}: no test output {when} the gold patch:\n{tail}",
                inst.instance_id
            ))
        })?;
        maps.push(parser.parse(region));
    }
    let (before, after) = (&maps[0], &maps[1]);
    let pass = |m: &crate::parsers::StatusMap, t: &str| m.get(t).is_some_and(|s| s == "PASSED");
    let f2p = after.keys().filter(|t| pass(after, t) && !pass(before, t)).cloned().collect();
    let p2p = after.keys().filter(|t| pass(after, t) && pass(before, t)).cloned().collect();
    Ok((f2p, p2p))
}

/// The official verdict on one instance (see the module docs).
pub async fn validate_one(rt: &Runtime, inst: &TaskInstance, opts: &ExecOptions) -> TaskValidation {
    let mut problems = Vec::new();
    if inst.fail_to_pass.is_empty() {
        problems.push("FAIL_TO_PASS is empty".to_string());
    }
    let t = std::time::Instant::now();
    match run_instance(rt, inst, None, opts).await {
        Ok(run) => match run.outcome {
            Outcome::Graded { report } => {
                let ts = report.tests_status.unwrap_or_default();
                for t in &ts.fail_to_pass.success {
                    problems.push(format!(
                        "before the gold patch FAIL_TO_PASS test passes: {t}"
                    ));
                }
                let judged: usize = ts.fail_to_pass.success.len() + ts.fail_to_pass.failure.len();
                if judged < inst.fail_to_pass.len() {
                    problems
                        .push("before the gold patch some FAIL_TO_PASS tests were skipped".into());
                }
                for t in &ts.pass_to_pass.failure {
                    problems.push(format!(
                        "before the gold patch PASS_TO_PASS test fails: {t}"
                    ));
                }
            }
            Outcome::Error { reason } => problems.push(format!("before the gold patch: {reason}")),
            Outcome::EmptyPatch => {}
        },
        Err(e) => problems.push(format!("before the gold patch: {e}")),
    }
    let before_seconds = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    match run_instance(rt, inst, Some(&inst.patch), opts).await {
        Ok(run) => match run.outcome {
            Outcome::Graded { report } if report.resolved => {}
            Outcome::Graded { report } => {
                let ts = report.tests_status.unwrap_or_default();
                problems.push(format!(
                    "the gold patch does not resolve it: FAIL_TO_PASS failing {:?}, PASS_TO_PASS failing {:?}, applied: {}",
                    ts.fail_to_pass.failure, ts.pass_to_pass.failure, report.patch_successfully_applied
                ));
            }
            Outcome::Error { reason } => problems.push(format!("with the gold patch: {reason}")),
            Outcome::EmptyPatch => problems.push("the gold patch is empty".into()),
        },
        Err(e) => problems.push(format!("with the gold patch: {e}")),
    }
    TaskValidation {
        instance_id: inst.instance_id.clone(),
        ok: problems.is_empty(),
        problems,
        before_seconds,
        after_seconds: t.elapsed().as_secs_f64(),
    }
}
