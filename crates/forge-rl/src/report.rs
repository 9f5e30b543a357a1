//! What a step reports: the scalars of `metrics.jsonl`, every finished rollout in
//! `rollouts.jsonl` and each task's solve rate in `solve_rates.jsonl`. Each worker summarises its
//! own groups as a [`StepReport`]; rank 0 gathers them, merges them and writes the step's records,
//! so one worker and many log the same things.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use forge_agent::{FailureCause, Status};
use forge_engine::EngineHandle;
use forge_swe::integrity::{PATCH_REFUSED, SUSPECTED_REWARD_HACK};
use crate::grpo::UpdateStats;
use forge_train::run_log::truncate_after;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::grpo::{FinishedGroup, GroupCounts, Reward, Rollout, TrainSample};
use crate::{Result, RlError};

/// One finished rollout as the metrics see it: everything but its tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RolloutRecord {
    pub group: u64,
    pub sample: usize,
    pub instance_id: String,
    /// `None` for an infrastructure failure.
    pub reward: Option<f32>,
    pub infrastructure_failure: Option<String>,
    pub status: Status,
    /// What the model's commands did to end the episode (status `policy_failure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<FailureCause>,
    /// Why grading scored 0 without the tests deciding (a refused patch, a suspected reward
    /// hack, a grading container the patched code stopped or timed out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grading_note: Option<String>,
    pub turns: usize,
    pub tokens: usize,
    pub generated_tokens: usize,
    /// The sum of the generated tokens' negative sampling log-probs.
    pub generated_nll: f64,
    pub policy_version: u64,
    pub wall_s: f64,
    pub generation_s: f64,
    pub tools_s: f64,
    pub grading_s: f64,
}

impl RolloutRecord {
    pub fn of(rollout: &Rollout) -> Self {
        let records = || rollout.trajectory.token_records();
        let generated = records().flat_map(|r| r.loss_mask.iter().zip(&r.logprobs)).filter(|(m, _)| **m != 0);
        let (generated_tokens, generated_nll) = generated.fold((0, 0.0), |(n, nll), (_, lp)| (n + 1, nll - f64::from(*lp)));
        Self {
            group: rollout.group,
            sample: rollout.sample,
            instance_id: rollout.instance_id.clone(),
            reward: rollout.score(),
            infrastructure_failure: match &rollout.reward {
                Reward::InfrastructureFailure(why) => Some(why.clone()),
                Reward::Scored(_) => None,
            },
            status: rollout.trajectory.status,
            cause: rollout.trajectory.cause,
            grading_note: rollout.grading_note.clone(),
            turns: rollout.trajectory.turns.len(),
            tokens: records().map(|r| r.len()).sum(),
            generated_tokens,
            generated_nll,
            policy_version: rollout.policy_version,
            wall_s: rollout.wall_seconds,
            generation_s: rollout.trajectory.generation_seconds,
            tools_s: rollout.trajectory.tool_seconds,
            grading_s: rollout.grading_seconds,
        }
    }
}

/// One instance's group of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GroupRecord {
    pub group: u64,
    pub instance_id: String,
    pub rollouts: Vec<RolloutRecord>,
}

/// One worker's share of a step (or, merged, the whole step's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepReport {
    /// The groups the step trained on (or skipped).
    pub groups: Vec<GroupRecord>,
    /// The rollouts that finished during the step, whichever step's group they belong to.
    pub arrived: Vec<RolloutRecord>,
    pub counts: GroupCounts,
    /// The policy lag of every trained sample: updates between its sampling and this step's.
    pub lags: Vec<u64>,
    /// What the worker's engine did during the step.
    pub engine: EngineWork,
    /// What the worker's Docker engines did during the step: containers per engine, image
    /// transfers, placement waits, engine failures.
    #[serde(default)]
    pub docker: forge_sandbox::FleetMetrics,
}

/// A worker's engine over an interval: decoding time and prompt tokens, of which how many the
/// prefix cache supplied (an agent's later turns extend its earlier ones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct EngineWork {
    pub busy_s: f64,
    pub prompt_tokens: u64,
    pub reused_tokens: u64,
}

impl EngineWork {
    /// The engine's totals since it started.
    pub fn total(engine: &EngineHandle) -> Self {
        let prefill = engine.prefill_stats();
        Self { busy_s: engine.busy_seconds(), prompt_tokens: prefill.prompt_tokens, reused_tokens: prefill.reused_tokens }
    }

    pub fn since(self, earlier: Self) -> Self {
        Self {
            busy_s: self.busy_s - earlier.busy_s,
            prompt_tokens: self.prompt_tokens - earlier.prompt_tokens,
            reused_tokens: self.reused_tokens - earlier.reused_tokens,
        }
    }

    fn add(&mut self, other: Self) {
        self.busy_s += other.busy_s;
        self.prompt_tokens += other.prompt_tokens;
        self.reused_tokens += other.reused_tokens;
    }
}

impl StepReport {
    pub fn new(groups: &[FinishedGroup], arrived: &[Rollout], counts: GroupCounts, trained: &[TrainSample], version: u64, engine: EngineWork, docker: forge_sandbox::FleetMetrics) -> Self {
        Self {
            groups: groups
                .iter()
                .map(|g| GroupRecord { group: g.group, instance_id: g.instance_id.clone(), rollouts: g.rollouts.iter().map(RolloutRecord::of).collect() })
                .collect(),
            arrived: arrived.iter().map(RolloutRecord::of).collect(),
            counts,
            lags: trained.iter().map(|s| version.saturating_sub(s.rollout.policy_version)).collect(),
            engine,
            docker,
        }
    }

    /// The step as a whole: the workers' reports in rank order, groups ordered by their index.
    pub fn merge(reports: Vec<StepReport>) -> Self {
        let mut all = StepReport::default();
        for report in reports {
            all.groups.extend(report.groups);
            all.arrived.extend(report.arrived);
            let (c, r) = (&mut all.counts, report.counts);
            c.groups += r.groups;
            c.used += r.used;
            c.skipped_zero_variance += r.skipped_zero_variance;
            c.skipped_too_few += r.skipped_too_few;
            c.infrastructure_failures += r.infrastructure_failures;
            c.stale_samples += r.stale_samples;
            all.lags.extend(report.lags);
            all.engine.add(report.engine);
            all.docker.add(&report.docker);
        }
        all.groups.sort_by_key(|g| g.group);
        all
    }
}

/// One AdamW update of a step.
pub(crate) struct MiniBatchUpdate {
    pub stats: UpdateStats,
    pub grad_norm: f32,
    pub lr: f64,
}

/// Rank 0's clock over the step.
pub(crate) struct Timing {
    /// Seconds since the previous step ended.
    pub wall: f64,
    /// Of which the trainer waited for groups.
    pub idle_seconds: f64,
    pub training_seconds: f64,
    /// Workers whose engines `StepReport::engine` sums.
    pub engines: usize,
}

/// The step's scalars for metrics.jsonl and TensorBoard.
pub(crate) fn step_scalars(report: &StepReport, update: Option<&[MiniBatchUpdate]>, lr: f64, timing: &Timing) -> Vec<(&'static str, f64)> {
    let rollouts: Vec<&RolloutRecord> = report.groups.iter().flat_map(|g| &g.rollouts).collect();
    let outcomes: Vec<&RolloutRecord> = rollouts.iter().copied().filter(|r| r.status.is_model_outcome()).collect();
    let scores: Vec<f64> = rollouts.iter().filter_map(|r| r.reward).map(f64::from).collect();
    let mean = |values: &mut dyn Iterator<Item = f64>, n: usize| values.sum::<f64>() / n.max(1) as f64;
    let share = |status: Status| outcomes.iter().filter(|r| r.status == status).count() as f64 / outcomes.len().max(1) as f64;
    let behaviour_nll = outcomes.iter().map(|r| r.generated_nll).sum::<f64>() / outcomes.iter().map(|r| r.generated_tokens).sum::<usize>().max(1) as f64;
    let solved_tasks = report.groups.iter().filter(|g| g.rollouts.iter().any(|r| r.reward == Some(1.0))).count();
    let counts = &report.counts;
    let mut scalars = vec![
        ("reward_mean", mean(&mut scores.iter().copied(), scores.len())),
        ("solved_task_fraction", solved_tasks as f64 / report.groups.len().max(1) as f64),
        ("finish_ratio", share(Status::Finished)),
        ("stuck_ratio", share(Status::TurnLimit)),
        ("context_exhausted_ratio", share(Status::ContextExhausted)),
        ("policy_failure_ratio", share(Status::PolicyFailure)),
        ("mean_turns", mean(&mut outcomes.iter().map(|r| r.turns as f64), outcomes.len())),
        ("mean_generated_tokens", mean(&mut outcomes.iter().map(|r| r.generated_tokens as f64), outcomes.len())),
        ("mean_trajectory_tokens", mean(&mut outcomes.iter().map(|r| r.tokens as f64), outcomes.len())),
        ("entropy_estimate", behaviour_nll),
        ("groups", counts.groups as f64),
        ("groups_used", counts.used as f64),
        ("groups_skipped_zero_variance", counts.skipped_zero_variance as f64),
        ("groups_skipped_too_few", counts.skipped_too_few as f64),
        ("infrastructure_failures", counts.infrastructure_failures as f64),
        ("stale_samples", counts.stale_samples as f64),
        ("policy_failures", outcomes.iter().filter(|r| r.status == Status::PolicyFailure).count() as f64),
        // patches the reward-integrity checks refused (scored 0), and of them the suspected hacks
        ("refused_patches", outcomes.iter().filter(|r| r.grading_note.as_deref().is_some_and(is_refusal)).count() as f64),
        ("suspected_reward_hacks", outcomes.iter().filter(|r| r.grading_note.as_deref().is_some_and(|n| n.starts_with(SUSPECTED_REWARD_HACK))).count() as f64),
        ("lr", lr),
        ("generation_s", rollouts.iter().map(|r| r.generation_s).sum()),
        ("tools_s", rollouts.iter().map(|r| r.tools_s).sum()),
        ("grading_s", rollouts.iter().map(|r| r.grading_s).sum()),
        ("training_s", timing.training_seconds),
        ("idle_s", timing.idle_seconds),
        ("step_s", timing.wall),
        // the mean over the workers' engines
        ("engine_idle_fraction", (1.0 - report.engine.busy_s / timing.engines.max(1) as f64 / timing.wall.max(1e-9)).clamp(0.0, 1.0)),
        ("prompt_tokens", report.engine.prompt_tokens as f64),
        ("prefix_reused_fraction", report.engine.reused_tokens as f64 / report.engine.prompt_tokens.max(1) as f64),
        ("trajectories_per_min", report.arrived.len() as f64 * 60.0 / timing.wall.max(1e-9)),
        // the Docker engines (per engine in the step's record)
        ("docker_containers", report.docker.containers() as f64),
        ("docker_engines_up", report.docker.engines.iter().filter(|e| e.up).count() as f64),
        ("docker_engine_failures", report.docker.failures() as f64),
        ("docker_image_transfers", report.docker.image_transfers() as f64),
        ("docker_placement_waits", report.docker.placement_waits as f64),
        ("docker_placement_wait_s", report.docker.placement_wait_seconds),
        ("updated", f64::from(u8::from(update.is_some()))),
    ];
    // scored 0 and trained on like any unresolved sample; counted by what the commands did
    scalars.extend(FailureCause::ALL.map(|cause| (cause_metric(cause), outcomes.iter().filter(|r| r.cause == Some(cause)).count() as f64)));
    if let Some(parts) = update {
        let stats = UpdateStats::combine(&parts.iter().map(|p| p.stats.clone()).collect::<Vec<_>>());
        let grad_norm = parts.iter().map(|p| f64::from(p.grad_norm)).sum::<f64>() / parts.len() as f64;
        let lag_mean = report.lags.iter().sum::<u64>() as f64 / report.lags.len().max(1) as f64;
        let lag_max = report.lags.iter().copied().max().unwrap_or(0) as f64;
        scalars.extend([
            ("optimizer_updates", parts.len() as f64),
            ("loss", f64::from(stats.loss)),
            ("kl", f64::from(stats.kl)),
            ("clip_fraction", f64::from(stats.clip_fraction)),
            ("ratio_mean", f64::from(stats.ratio_mean)),
            ("trained_tokens", stats.trained_tokens as f64),
            ("grad_norm", grad_norm),
            ("policy_lag_mean", lag_mean),
            ("policy_lag_max", lag_max),
        ]);
    }
    scalars
}

fn is_refusal(note: &str) -> bool {
    note.starts_with(PATCH_REFUSED) || note.starts_with(SUSPECTED_REWARD_HACK)
}

/// The metric counting a step's episodes that ended by `cause`.
fn cause_metric(cause: FailureCause) -> &'static str {
    match cause {
        FailureCause::ContainerExited => "policy_failures_container_exited",
        FailureCause::OomKilled => "policy_failures_oom_killed",
        FailureCause::DiskQuotaExceeded => "policy_failures_disk_quota_exceeded",
        FailureCause::WallClock => "policy_failures_wall_clock",
    }
}

/// `rollouts.jsonl` (every finished rollout, under the step during which it arrived) and
/// `solve_rates.jsonl` (per step: each task's solve rate among its group's scored samples).
pub(crate) struct Records {
    rollouts: std::fs::File,
    solve_rates: std::fs::File,
    dir: PathBuf,
}

impl Records {
    pub fn open(dir: &Path, resume_step: Option<u64>) -> Result<Self> {
        let open = |name: &str| -> Result<std::fs::File> {
            let path = dir.join(name);
            match resume_step {
                Some(step) if path.exists() => truncate_after(&path, step)?,
                None if path.exists() => std::fs::remove_file(&path).map_err(|e| RlError::io(&path, e))?,
                _ => {}
            }
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| RlError::io(&path, e))
        };
        Ok(Self { rollouts: open("rollouts.jsonl")?, solve_rates: open("solve_rates.jsonl")?, dir: dir.to_path_buf() })
    }

    pub fn write(&mut self, step: u64, report: &StepReport) -> Result<()> {
        let mut text = String::new();
        for r in &report.arrived {
            let mut record = serde_json::to_value(r).expect("a record serialises");
            record.as_object_mut().expect("a struct is an object").insert("step".into(), json!(step));
            text.push_str(&record.to_string());
            text.push('\n');
        }
        let path = self.dir.join("rollouts.jsonl");
        self.rollouts.write_all(text.as_bytes()).map_err(|e| RlError::io(&path, e))?;
        let rates: BTreeMap<&str, f64> = report
            .groups
            .iter()
            .map(|g| {
                let scores: Vec<f32> = g.rollouts.iter().filter_map(|r| r.reward).collect();
                (g.instance_id.as_str(), scores.iter().map(|&s| f64::from(s)).sum::<f64>() / scores.len().max(1) as f64)
            })
            .collect();
        let path = self.dir.join("solve_rates.jsonl");
        writeln!(self.solve_rates, "{}", json!({"step": step, "tasks": rates})).map_err(|e| RlError::io(&path, e))
    }
}
