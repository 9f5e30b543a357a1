//! Rollout workers: a queue of (instance, sample) jobs that agent workers pull as they free up.
//! Each job is one episode in the instance's container (generations batched by the shared
//! engine), then the patch graded in a fresh container: reward 1 iff the tests pass.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use forge_agent::{run_episode, ChatFormat, Policy, Status, TaskWorkspace, Trajectory};
use forge_sandbox::Fleet;
use forge_swe::{run_instance_on_fleet, ExecOptions, Outcome, TaskInstance};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;

use crate::config::AgentSection;
use crate::grpo::{Reward, Rollout};

/// One sample to roll out.
#[derive(Debug, Clone)]
pub struct RolloutJob {
    pub group: u64,
    pub sample: usize,
    pub instance: Arc<TaskInstance>,
    /// Sampling seed of the episode (turn k uses `seed + k`).
    pub seed: u64,
}

/// What every worker shares.
pub struct RolloutEnv<P> {
    /// The Docker engines the episodes and gradings are placed on.
    pub fleet: Fleet,
    pub policy: Arc<P>,
    pub chat: Arc<ChatFormat>,
    pub agent: AgentSection,
    /// Grading settings (test timeout, grading version).
    pub grading: ExecOptions,
    /// Labels on every container (agent and grading).
    pub labels: BTreeMap<String, String>,
    /// Steps whose update has been applied so far; read when an episode starts.
    pub policy_version: Arc<AtomicU64>,
}

/// A pool of workers pulling jobs; results arrive in completion order.
pub struct RolloutWorkers {
    jobs: mpsc::UnboundedSender<RolloutJob>,
    results: mpsc::UnboundedReceiver<Rollout>,
    cancelled: Arc<AtomicBool>,
    workers: JoinSet<()>,
}

impl RolloutWorkers {
    pub fn start<P: Policy + 'static>(env: Arc<RolloutEnv<P>>, workers: usize) -> Self {
        let (jobs, inbox) = mpsc::unbounded_channel::<RolloutJob>();
        let (results_tx, results) = mpsc::unbounded_channel();
        let inbox = Arc::new(Mutex::new(inbox));
        let cancelled = Arc::new(AtomicBool::new(false));
        let mut set = JoinSet::new();
        for _ in 0..workers.max(1) {
            let (env, inbox, results_tx, cancelled) = (env.clone(), inbox.clone(), results_tx.clone(), cancelled.clone());
            set.spawn(async move {
                loop {
                    let Some(job) = inbox.lock().await.recv().await else { return };
                    if cancelled.load(Ordering::Relaxed) {
                        continue;
                    }
                    if results_tx.send(roll_out(&env, job).await).is_err() {
                        return;
                    }
                }
            });
        }
        Self { jobs, results, cancelled, workers: set }
    }

    pub fn submit(&self, job: RolloutJob) {
        // the workers outlive the handle's sender, so this cannot fail while `self` exists
        let _ = self.jobs.send(job);
    }

    /// The next finished rollout (`None` once every worker has stopped).
    pub async fn next(&mut self) -> Option<Rollout> {
        self.results.recv().await
    }

    /// Drops the queued jobs, lets the episodes in flight end (their containers are removed as
    /// usual) and waits for the workers.
    pub async fn shutdown(self) {
        let RolloutWorkers { jobs, results, cancelled, mut workers } = self;
        cancelled.store(true, Ordering::Relaxed);
        drop(jobs);
        drop(results);
        while workers.join_next().await.is_some() {}
    }
}

/// Runs one episode and grades its patch. Never fails: problems become
/// [`Reward::InfrastructureFailure`] when they are not the model's doing; what the model's
/// commands caused ([`Status::PolicyFailure`]: its container killed, OOM, the storage limit, the
/// wall clock) is scored 0.
pub async fn roll_out<P: Policy>(env: &RolloutEnv<P>, job: RolloutJob) -> Rollout {
    let started = Instant::now();
    let policy_version = env.policy_version.load(Ordering::Acquire);
    let instance = &job.instance;
    // the agent's container pulls its image as the grading one would
    let agent = forge_agent::AgentConfig { pull: env.grading.pull, ..env.agent.agent_config(job.seed) };
    let trajectory = match TaskWorkspace::place(&env.fleet, instance, &env.labels, &agent).await {
        Ok(mut workspace) => {
            let trajectory = run_episode(&*env.policy, &mut workspace, &env.chat, &instance.instance_id, &instance.problem_statement, &agent).await;
            // an episode its engine lost is excluded (an infrastructure failure) like any other;
            // the engine is marked down so that the next episodes go elsewhere
            if trajectory.status == Status::InfraError {
                env.fleet.confirm_down(workspace.runtime()).await;
            }
            if let Err(e) = workspace.remove().await {
                tracing::warn!(instance = %instance.instance_id, error = %e, "could not remove the agent container");
            }
            trajectory
        }
        Err(e) => Trajectory::failed_to_start(&instance.instance_id, e.to_string()),
    };
    let (reward, grading_note, grading_seconds) = grade(env, instance, &trajectory).await;
    Rollout {
        group: job.group,
        sample: job.sample,
        instance_id: instance.instance_id.clone(),
        policy_version,
        trajectory,
        reward,
        grading_note,
        grading_seconds,
        wall_seconds: started.elapsed().as_secs_f64(),
    }
}

/// The reward, why grading scored 0 without the tests deciding (if so), and the grading seconds.
async fn grade<P>(env: &RolloutEnv<P>, instance: &TaskInstance, trajectory: &Trajectory) -> (Reward, Option<String>, f64) {
    if trajectory.status == Status::InfraError {
        let reason = trajectory.error.clone().unwrap_or_else(|| "the episode failed".into());
        return (Reward::InfrastructureFailure(reason), None, 0.0);
    }
    // FAIL_TO_PASS tests fail at the base commit by construction: no change cannot pass them
    if trajectory.status == Status::PolicyFailure || trajectory.patch.trim().is_empty() {
        return (Reward::Scored(0.0), None, 0.0);
    }
    let started = Instant::now();
    let mut options = env.grading.clone();
    options.labels.extend(env.labels.clone());
    // the patch is the episode's; a grading its engine lost is run again on another engine
    let (reward, note) = match run_instance_on_fleet(&env.fleet, instance, Some(&trajectory.patch), &options).await {
        Ok((run, _, _)) => match (&run.outcome, run.outcome.infrastructure_failure()) {
            (_, Some(reason)) => (Reward::InfrastructureFailure(reason.to_string()), None),
            (Outcome::Graded { report }, None) if report.resolved => (Reward::Scored(1.0), None),
            (Outcome::Graded { report }, None) => (Reward::Scored(0.0), report.refused.clone()),
            (Outcome::Error { reason }, None) => (Reward::Scored(0.0), Some(reason.clone())),
            (Outcome::EmptyPatch, None) => (Reward::Scored(0.0), None),
        },
        Err(e) => (Reward::InfrastructureFailure(format!("grading failed: {e}")), None),
    };
    (reward, note, started.elapsed().as_secs_f64())
}
