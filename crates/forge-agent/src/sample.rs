//! `forge sample`: rejection sampling of a teacher's trajectories into SFT data, as the published
//! recipe made its ~1,200 trajectories (up to 8 attempts per task; only patches whose tests pass
//! are kept).
//!
//! Every (instance, attempt k) runs the agent in its own fresh container, sampling at the given
//! temperature with a seed derived from (seed, instance, k) (turn t of the attempt uses that seed
//! plus t); the finished attempt's patch is graded in another fresh container by the harness
//! ([`forge_swe::run_instance_on_fleet`]). The output directory holds:
//!
//! - `attempts.jsonl`: one line per finished attempt (instance, attempt, seed, status, resolved,
//!   the grading outcome, infrastructure retries, infra error), appended as each attempt finishes,
//!   so nothing finished is lost on a crash; `--resume` skips the attempts it lists.
//! - `trajectories/{instance}/{k}.json`: each finished attempt's trajectory (token records too).
//! - `sft.jsonl`: one [`Trajectory::sft_record`] per resolved attempt, deduplicated by identical
//!   messages (what `forge train sft` reads); appended as attempts resolve and rewritten in
//!   (instance, attempt) order at the end.
//! - `solve_rates.jsonl`: per instance, the attempts with a model outcome, the solved ones and the
//!   solve rate (a difficulty label).
//!
//! An infrastructure failure (container, engine, endpoint, grading machinery) is not an attempt:
//! the attempt is run again (the grading alone when only the grading failed), up to
//! [`SampleOptions::infra_retries`] times; an attempt that still fails is recorded with its error,
//! left out of the solve rates, and run again by `--resume`.
//!
//! The task images put the repository at `/testbed`, and the agent's prompts, the setup script
//! and the harness's eval scripts all name that path, so the working directory is not randomised
//! per attempt here.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forge_sandbox::{EngineSpec, Fleet, FleetOptions};
use forge_swe::{ensure_bundled_images, load_instances, run_instance_on_fleet, select_instances, ExecOptions, GradingVersion, Outcome, TaskInstance};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::chat::ChatFormat;
use crate::endpoint::{EndpointConfig, EndpointPolicy};
use crate::episode::AgentConfig;
use crate::eval::{jsonl, read_trajectory, write_atomic};
use crate::error::{AgentError, Result};
use crate::policy::Policy;
use crate::trajectory::{Status, Trajectory};

/// Options of a sampling run.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Instances: parquet, JSONL or JSON.
    pub dataset: PathBuf,
    /// Only these instances (all when empty).
    pub instance_ids: Vec<String>,
    /// Attempts per instance.
    pub attempts: usize,
    /// Stop sampling an instance once it has this many resolved attempts.
    pub max_solutions_per_instance: Option<usize>,
    /// Concurrent attempts (agent and grading containers).
    pub workers: usize,
    /// attempts.jsonl, sft.jsonl, solve_rates.jsonl, trajectories/.
    pub out_dir: PathBuf,
    /// Skip the attempts attempts.jsonl already lists; without it, an output directory with
    /// attempts is refused.
    pub resume: bool,
    /// The agent's limits and sampling; `temperature` is the sampling temperature of every
    /// attempt and `seed` the base of the derived per-attempt seeds ([`attempt_seed`]).
    pub agent: AgentConfig,
    /// Re-runs of an attempt after infrastructure failures, at most.
    pub infra_retries: usize,
    /// Per-attempt test timeout of the grading.
    pub test_timeout: Duration,
    pub grading: GradingVersion,
    /// Extra labels on every container (agent and grading).
    pub labels: BTreeMap<String, String>,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// The Docker engines to run containers on (empty: `$DOCKER_HOST` or the local socket).
    pub engines: Vec<EngineSpec>,
}

impl SampleOptions {
    pub fn new(dataset: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        SampleOptions {
            dataset: dataset.into(),
            instance_ids: Vec::new(),
            attempts: 8,
            max_solutions_per_instance: None,
            workers: 4,
            out_dir: out_dir.into(),
            resume: false,
            agent: AgentConfig { temperature: 1.0, ..AgentConfig::default() },
            infra_retries: 3,
            test_timeout: Duration::from_secs(1800),
            grading: GradingVersion::V4,
            labels: BTreeMap::new(),
            progress: true,
            engines: Vec::new(),
        }
    }
}

/// One line of `attempts.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub instance_id: String,
    /// 0-based attempt index.
    pub attempt: usize,
    /// The attempt's sampling seed (turn t samples with seed + t).
    pub seed: u64,
    /// How the episode ended ([`Status`]'s name).
    pub status: String,
    /// The patch made the tests pass.
    pub resolved: bool,
    /// `graded`, `empty_patch`, `patch_not_applied_or_timed_out: ...`, or `infra_error`.
    pub grading: String,
    /// Infrastructure failures retried before this outcome (not counted as attempts).
    pub infra_retries: usize,
    /// Set when the attempt still failed for infrastructure reasons after the retries: it is not
    /// an attempt of the model (left out of the solve rates, run again on resume).
    pub infra_error: Option<String>,
    pub turns: usize,
    pub seconds: f64,
}

impl AttemptRecord {
    /// Whether the attempt says something about the model (is counted, and skipped on resume).
    pub fn is_model_outcome(&self) -> bool {
        self.infra_error.is_none()
    }
}

/// One line of `solve_rates.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SolveRate {
    pub instance_id: String,
    /// Attempts with a model outcome.
    pub attempts: usize,
    pub solved: usize,
    /// solved / attempts (0 without attempts).
    pub solve_rate: f64,
    /// Attempts that ended as infrastructure errors after their retries.
    pub infra_errors: usize,
}

/// What a sampling run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SampleSummary {
    pub out_dir: PathBuf,
    pub instances: usize,
    /// Attempts run now, and reused from attempts.jsonl.
    pub attempts_run: usize,
    pub attempts_reused: usize,
    /// Attempts not run because their instance had its `max_solutions_per_instance`.
    pub attempts_skipped: usize,
    /// Resolved attempts (now and reused).
    pub resolved: usize,
    /// Instances with at least one resolved attempt.
    pub instances_solved: usize,
    /// Lines of sft.jsonl (resolved attempts after deduplication).
    pub sft_records: usize,
    /// Infrastructure failures retried (over the attempts run now).
    pub infra_retries: usize,
    /// Attempts that still failed after their retries: (instance, attempt, error).
    pub infra_failures: Vec<(String, usize, String)>,
    pub wall_seconds: f64,
}

/// The seed of attempt `attempt` of `instance_id`: a fixed mix (FNV-1a of the id, SplitMix64),
/// the same on every platform and Rust version.
pub fn attempt_seed(seed: u64, instance_id: &str, attempt: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in instance_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut x = seed ^ splitmix(h ^ splitmix(attempt as u64));
    x = splitmix(x);
    // leave room for `seed + turn` without wrapping into another attempt's seeds in practice
    x >> 1
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `trajectories/{instance}/{attempt}.json` under the output directory.
pub fn attempt_trajectory_path(out_dir: &Path, instance_id: &str, attempt: usize) -> PathBuf {
    out_dir.join("trajectories").join(instance_id.replace('/', "__")).join(format!("{attempt}.json"))
}

/// The attempts an attempts.jsonl lists (a line cut by a crash is left out).
pub fn read_attempts(path: &Path) -> Result<Vec<AttemptRecord>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(AgentError::io(path, e)),
    }
}

/// Connects to an OpenAI-compatible server: checks that it serves `config.served_model` and
/// returns the policy with the model's context length when the server gives it.
pub async fn connect_endpoint(config: EndpointConfig, chat: Arc<ChatFormat>) -> anyhow::Result<(EndpointPolicy, Option<usize>)> {
    use anyhow::Context;
    let url = config.url.clone();
    let served_model = config.served_model.clone();
    let policy = EndpointPolicy::new(config, chat)?;
    let models = policy.served_models().await.with_context(|| format!("--endpoint {url}: listing its models (GET /v1/models)"))?;
    let Some(served) = models.iter().find(|m| m.id == served_model) else {
        anyhow::bail!("--served-model {served_model} is not served at {url}; it serves {:?}", models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>());
    };
    let max_model_len = served.max_model_len;
    Ok((policy, max_model_len))
}

/// Shared by the attempts in flight.
struct Shared {
    attempts_file: std::fs::File,
    sft_file: std::fs::File,
    /// messages (as JSON text) already in sft.jsonl
    seen: HashSet<String>,
    solved: BTreeMap<String, usize>,
    resolved_now: usize,
    run_now: usize,
}

/// Samples `options.attempts` attempts of every selected instance with `policy`, grades them and
/// writes the output directory (see the module documentation).
pub async fn run_sampling<P: Policy + 'static>(policy: Arc<P>, chat: Arc<ChatFormat>, options: &SampleOptions) -> Result<SampleSummary> {
    let started = Instant::now();
    if options.attempts == 0 {
        return Err(AgentError::Invalid("--attempts must be at least 1".into()));
    }
    let instances = select_instances(load_instances(&options.dataset)?, &options.instance_ids)
        .map_err(|id| AgentError::Invalid(format!("instance {id} (from --instance-ids) is not in {}", options.dataset.display())))?;
    let out = &options.out_dir;
    std::fs::create_dir_all(out).map_err(|e| AgentError::io(out, e))?;
    let attempts_path = out.join("attempts.jsonl");
    let sft_path = out.join("sft.jsonl");
    let earlier = read_attempts(&attempts_path)?;
    if !earlier.is_empty() && !options.resume {
        return Err(AgentError::Invalid(format!(
            "{} already lists {} attempts: pass --resume to continue that run, or choose another --out",
            attempts_path.display(),
            earlier.len()
        )));
    }
    // Finished attempts: the latest record of each (instance, attempt) with a model outcome.
    let mut done: BTreeMap<(String, usize), AttemptRecord> = BTreeMap::new();
    for record in earlier.iter().filter(|r| r.is_model_outcome()) {
        done.insert((record.instance_id.clone(), record.attempt), record.clone());
    }
    // Rewrite the file with its complete lines only (a crash may have cut the last one).
    write_atomic(&attempts_path, jsonl(earlier.iter().map(|r| serde_json::to_value(r).expect("records serialize"))).as_bytes())?;
    write_atomic(&out.join("sample_config.json"), serde_json::to_string_pretty(&config_json(options)).expect("serializes").as_bytes())?;

    // sft.jsonl of the earlier run, rebuilt from its resolved attempts' trajectories.
    let mut seen = HashSet::new();
    let mut sft = String::new();
    for record in done.values().filter(|r| r.resolved) {
        if let Some(t) = read_trajectory(&attempt_trajectory_path(out, &record.instance_id, record.attempt)) {
            if seen.insert(messages_key(&t)) {
                sft.push_str(&(t.sft_record().to_string() + "\n"));
            }
        }
    }
    write_atomic(&sft_path, sft.as_bytes())?;
    let mut solved: BTreeMap<String, usize> = BTreeMap::new();
    for record in done.values().filter(|r| r.resolved) {
        *solved.entry(record.instance_id.clone()).or_default() += 1;
    }

    let open_append = |path: &Path| std::fs::OpenOptions::new().append(true).create(true).open(path).map_err(|e| AgentError::io(path, e));
    let shared = Arc::new(Mutex::new(Shared {
        attempts_file: open_append(&attempts_path)?,
        sft_file: open_append(&sft_path)?,
        seen,
        solved,
        resolved_now: 0,
        run_now: 0,
    }));

    // Attempt-major order: every instance's attempt 0 first, so that work spreads over instances
    // and --max-solutions-per-instance stops an instance early.
    let mut todo = Vec::new();
    for attempt in 0..options.attempts {
        for instance in &instances {
            if !done.contains_key(&(instance.instance_id.clone(), attempt)) {
                todo.push((instance.clone(), attempt));
            }
        }
    }
    let reused = done.len();
    let total = todo.len();

    let fleet = if total > 0 {
        let fleet = Fleet::connect(&options.engines, FleetOptions::default()).await?;
        ensure_bundled_images(&fleet.any_runtime()?, &options.dataset, &instances).await;
        Some(fleet)
    } else {
        None
    };
    let progress = if options.progress && std::io::stderr().is_terminal() { indicatif::ProgressBar::new(total as u64) } else { indicatif::ProgressBar::hidden() };
    progress.set_style(indicatif::ProgressStyle::with_template("sample {bar:30} {pos}/{len} attempts  eta {eta}  {msg}").expect("valid template"));

    let semaphore = Arc::new(tokio::sync::Semaphore::new(options.workers.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (instance, attempt) in todo {
        let fleet = fleet.clone().expect("connected when there is work");
        let (policy, chat, semaphore, shared, options, progress) = (policy.clone(), chat.clone(), semaphore.clone(), shared.clone(), options.clone(), progress.clone());
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore is never closed");
            if let Some(max) = options.max_solutions_per_instance {
                let solved = shared.lock().expect("not poisoned").solved.get(&instance.instance_id).copied().unwrap_or(0);
                if solved >= max {
                    progress.inc(1);
                    return Ok(None);
                }
            }
            let (record, trajectory) = run_attempt(&fleet, &*policy, &chat, &instance, attempt, &options).await;
            let path = attempt_trajectory_path(&options.out_dir, &instance.instance_id, attempt);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| AgentError::io(dir, e))?;
            }
            write_atomic(&path, serde_json::to_string(&trajectory).expect("trajectories serialize").as_bytes())?;
            {
                let mut s = shared.lock().expect("not poisoned");
                // sft.jsonl first: a crash between the two writes reruns the attempt, and its
                // record (the same for a deterministic policy) is deduplicated on the rebuild
                if record.resolved {
                    s.resolved_now += 1;
                    *s.solved.entry(instance.instance_id.clone()).or_default() += 1;
                    if s.seen.insert(messages_key(&trajectory)) {
                        let line = trajectory.sft_record().to_string() + "\n";
                        s.sft_file.write_all(line.as_bytes()).map_err(|e| AgentError::io(options.out_dir.join("sft.jsonl"), e))?;
                    }
                }
                let line = serde_json::to_string(&record).expect("records serialize") + "\n";
                s.attempts_file.write_all(line.as_bytes()).and_then(|()| s.attempts_file.sync_data()).map_err(|e| AgentError::io(options.out_dir.join("attempts.jsonl"), e))?;
                s.run_now += 1;
                progress.set_message(format!("solved {}/{} attempted", s.resolved_now, s.run_now));
            }
            progress.inc(1);
            tracing::info!(instance = %record.instance_id, attempt, status = %record.status, resolved = record.resolved, infra_retries = record.infra_retries, infra_error = ?record.infra_error, "attempt done");
            Ok::<_, AgentError>(Some(record))
        });
    }
    let mut summary = SampleSummary { out_dir: out.clone(), instances: instances.len(), attempts_reused: reused, ..Default::default() };
    let mut records: Vec<AttemptRecord> = done.into_values().collect();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(|e| AgentError::Invalid(format!("a sampling attempt panicked: {e}"))).and_then(|r| r) {
            Ok(Some(record)) => {
                summary.attempts_run += 1;
                summary.infra_retries += record.infra_retries;
                if let Some(error) = &record.infra_error {
                    summary.infra_failures.push((record.instance_id.clone(), record.attempt, error.clone()));
                }
                records.push(record);
            }
            Ok(None) => summary.attempts_skipped += 1,
            Err(e) => {
                // an output file could not be written: stop scheduling, keep what is recorded
                tasks.abort_all();
                first_error.get_or_insert(e);
            }
        }
    }
    progress.finish_and_clear();
    if let Some(e) = first_error {
        return Err(e);
    }

    // Canonical outputs: sft.jsonl in (dataset order, attempt) order, the solve rates.
    let order: BTreeMap<&str, usize> = instances.iter().enumerate().map(|(i, inst)| (inst.instance_id.as_str(), i)).collect();
    records.sort_by_key(|r| (order.get(r.instance_id.as_str()).copied().unwrap_or(usize::MAX), r.attempt));
    let mut seen = HashSet::new();
    let mut sft = String::new();
    for record in records.iter().filter(|r| r.resolved && r.is_model_outcome()) {
        let path = attempt_trajectory_path(out, &record.instance_id, record.attempt);
        let t = read_trajectory(&path).ok_or_else(|| AgentError::Invalid(format!("the trajectory of a resolved attempt is missing: {}", path.display())))?;
        if seen.insert(messages_key(&t)) {
            sft.push_str(&(t.sft_record().to_string() + "\n"));
        }
    }
    summary.sft_records = seen.len();
    // drop the append handle before replacing the file
    drop(shared);
    write_atomic(&sft_path, sft.as_bytes())?;
    let rates = solve_rates(&instances, &records);
    summary.resolved = rates.iter().map(|r| r.solved).sum();
    summary.instances_solved = rates.iter().filter(|r| r.solved > 0).count();
    write_atomic(&out.join("solve_rates.jsonl"), jsonl(rates.iter().map(|r| serde_json::to_value(r).expect("serializes"))).as_bytes())?;
    summary.wall_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Per instance (dataset order): attempts with a model outcome, solved, solve rate.
pub fn solve_rates(instances: &[TaskInstance], records: &[AttemptRecord]) -> Vec<SolveRate> {
    instances
        .iter()
        .map(|inst| {
            let mine = records.iter().filter(|r| r.instance_id == inst.instance_id);
            let (mut attempts, mut solved, mut infra_errors) = (0, 0, 0);
            for r in mine {
                if r.is_model_outcome() {
                    attempts += 1;
                    solved += usize::from(r.resolved);
                } else {
                    infra_errors += 1;
                }
            }
            let solve_rate = if attempts == 0 { 0.0 } else { solved as f64 / attempts as f64 };
            SolveRate { instance_id: inst.instance_id.clone(), attempts, solved, solve_rate, infra_errors }
        })
        .collect()
}

/// One attempt: the episode in a fresh container, then its grading in another, each retried on
/// infrastructure failures.
async fn run_attempt<P: Policy>(fleet: &Fleet, policy: &P, chat: &ChatFormat, instance: &TaskInstance, attempt: usize, options: &SampleOptions) -> (AttemptRecord, Trajectory) {
    let started = Instant::now();
    let seed = attempt_seed(options.agent.seed, &instance.instance_id, attempt);
    let agent = AgentConfig { seed, ..options.agent.clone() };
    let mut retries = 0;
    let record = |trajectory: &Trajectory, resolved: bool, grading: String, retries: usize, infra_error: Option<String>| AttemptRecord {
        instance_id: instance.instance_id.clone(),
        attempt,
        seed,
        status: status_name(trajectory.status),
        resolved,
        grading,
        infra_retries: retries,
        infra_error,
        turns: trajectory.turns.len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    // the episode
    let trajectory = loop {
        let trajectory = crate::eval::run_placed_episode(fleet, policy, chat, instance, &options.labels, &agent).await;
        if trajectory.status.is_model_outcome() {
            break trajectory;
        }
        let error = trajectory.error.clone().unwrap_or_else(|| "infrastructure error".into());
        if retries >= options.infra_retries {
            let r = record(&trajectory, false, "infra_error".into(), retries, Some(error));
            return (r, trajectory);
        }
        retries += 1;
        tracing::warn!(instance = %instance.instance_id, attempt, retry = retries, error = %error, "infrastructure failure in the episode; running the attempt again");
    };
    if trajectory.patch.trim().is_empty() {
        let r = record(&trajectory, false, "empty_patch".into(), retries, None);
        return (r, trajectory);
    }
    // the grading
    let exec = ExecOptions { timeout: options.test_timeout, version: options.grading, labels: options.labels.clone(), container: options.agent.container.clone(), ..Default::default() };
    loop {
        let error = match run_instance_on_fleet(fleet, instance, Some(&trajectory.patch), &exec).await {
            Ok((run, _, _)) => match &run.outcome {
                Outcome::Graded { report } => {
                    let r = record(&trajectory, report.resolved, "graded".into(), retries, None);
                    return (r, trajectory);
                }
                Outcome::EmptyPatch => {
                    let r = record(&trajectory, false, "empty_patch".into(), retries, None);
                    return (r, trajectory);
                }
                outcome => match outcome.infrastructure_failure() {
                    Some(reason) => reason.to_string(),
                    None => {
                        let Outcome::Error { reason } = outcome else { unreachable!("graded and empty outcomes are handled above") };
                        let r = record(&trajectory, false, format!("unresolved: {reason}"), retries, None);
                        return (r, trajectory);
                    }
                },
            },
            Err(e) => e.to_string(),
        };
        if retries >= options.infra_retries {
            let r = record(&trajectory, false, "infra_error".into(), retries, Some(format!("grading: {error}")));
            return (r, trajectory);
        }
        retries += 1;
        tracing::warn!(instance = %instance.instance_id, attempt, retry = retries, error = %error, "infrastructure failure in the grading; grading again");
    }
}

fn messages_key(trajectory: &Trajectory) -> String {
    Value::Array(trajectory.messages.clone()).to_string()
}

fn config_json(options: &SampleOptions) -> Value {
    let a = &options.agent;
    json!({
        "dataset": options.dataset,
        "attempts": options.attempts,
        "max_solutions_per_instance": options.max_solutions_per_instance,
        "temperature": a.temperature,
        "top_p": a.top_p,
        "top_k": a.top_k,
        "seed": a.seed,
        "max_turns": a.max_turns,
        "max_context_tokens": a.max_context_tokens,
        "max_new_tokens": a.max_new_tokens,
        "grading": format!("{:?}", options.grading),
    })
}

fn status_name(status: Status) -> String {
    serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_seeds_are_fixed_and_distinct() {
        assert_eq!(attempt_seed(0, "a__b-1", 0), attempt_seed(0, "a__b-1", 0));
        let mut seeds = HashSet::new();
        for seed in 0..3 {
            for id in ["a__b-1", "a__b-2", "c__d-1"] {
                for attempt in 0..8 {
                    assert!(seeds.insert(attempt_seed(seed, id, attempt)), "{seed} {id} {attempt}");
                }
            }
        }
        assert!(seeds.iter().all(|s| s.checked_add(1000).is_some()), "turn offsets do not wrap");
    }

    #[test]
    fn solve_rates_count_model_outcomes_only() {
        let inst = |id: &str| -> TaskInstance { serde_json::from_value(json!({"instance_id": id, "repo": "r", "base_commit": "c", "FAIL_TO_PASS": [], "PASS_TO_PASS": []})).unwrap() };
        let rec = |id: &str, attempt, resolved, infra: bool| AttemptRecord {
            instance_id: id.into(),
            attempt,
            seed: 0,
            status: "finished".into(),
            resolved,
            grading: "graded".into(),
            infra_retries: 0,
            infra_error: infra.then(|| "docker".into()),
            turns: 1,
            seconds: 0.0,
        };
        let rates = solve_rates(&[inst("a"), inst("b")], &[rec("a", 0, true, false), rec("a", 1, false, false), rec("a", 2, false, true), rec("b", 0, false, false)]);
        assert_eq!((rates[0].attempts, rates[0].solved, rates[0].infra_errors), (2, 1, 1));
        assert_eq!(rates[0].solve_rate, 0.5);
        assert_eq!((rates[1].attempts, rates[1].solved, rates[1].solve_rate), (1, 0, 0.0));
    }
}
