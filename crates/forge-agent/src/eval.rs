//! `forge eval swebench --model`: the agent on every instance inside its image (bounded parallel
//! episodes), `predictions.jsonl` and the trajectories in the run directory, then grading with
//! the harness. Resumable: an instance whose trajectory ended for a reason of the model's own
//! (finished, turn limit, context) is not run again; infrastructure failures are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_sandbox::{EngineSpec, Fleet, FleetOptions};
use forge_swe::{ensure_bundled_images, load_instances, run_evaluation, select_instances, EvalOptions, GradingVersion, PredictionsSource, RunSummary, TaskInstance};
use serde::Serialize;
use serde_json::{json, Value};

use crate::chat::ChatFormat;
use crate::endpoint::EndpointUsage;
use crate::episode::{run_episode, AgentConfig};
use crate::error::{AgentError, Result};
use crate::policy::Policy;
use crate::trajectory::{Status, Trajectory};
use crate::workspace::TaskWorkspace;

/// Options of an agent evaluation run.
#[derive(Debug, Clone)]
pub struct AgentEvalOptions {
    /// Instances: parquet, JSONL or JSON.
    pub dataset: PathBuf,
    pub run_id: String,
    /// `model_name_or_path` of the predictions.
    pub model_name: String,
    /// Only these instances (all when empty).
    pub instance_ids: Vec<String>,
    /// Concurrent episodes (and grading containers).
    pub workers: usize,
    /// Root of `runs/{run_id}/` (agent outputs) and of the harness's `logs/` and summary.
    pub output_root: PathBuf,
    pub agent: AgentConfig,
    /// Per-instance test timeout of the grading.
    pub test_timeout: Duration,
    pub grading: GradingVersion,
    /// Extra labels on every container (agent and grading).
    pub labels: BTreeMap<String, String>,
    /// The Docker engines to run containers on (empty: `$DOCKER_HOST` or the local socket).
    pub engines: Vec<EngineSpec>,
}

impl AgentEvalOptions {
    pub fn new(dataset: impl Into<PathBuf>, run_id: &str, model_name: &str) -> Self {
        AgentEvalOptions {
            dataset: dataset.into(),
            run_id: run_id.to_string(),
            model_name: model_name.to_string(),
            instance_ids: Vec::new(),
            workers: 4,
            output_root: PathBuf::from("."),
            agent: AgentConfig::default(),
            test_timeout: Duration::from_secs(1800),
            grading: GradingVersion::V4,
            labels: BTreeMap::new(),
            engines: Vec::new(),
        }
    }

    /// `{output_root}/runs/{run_id}`: predictions.jsonl, sft.jsonl, sft.resolved.jsonl,
    /// trajectories/{instance_id}.json.
    pub fn run_dir(&self) -> PathBuf {
        self.output_root.join("runs").join(&self.run_id)
    }
}

/// What an agent evaluation did.
#[derive(Debug, Clone, Serialize)]
pub struct AgentEvalSummary {
    pub run_dir: PathBuf,
    /// Episodes run now / reused from an earlier run.
    pub episodes_run: usize,
    pub episodes_reused: usize,
    /// Episodes by status.
    pub statuses: BTreeMap<String, usize>,
    /// Episodes the model's own commands ended (`policy_failure`, unresolved), by cause.
    pub failure_causes: BTreeMap<String, usize>,
    /// Tool-call turns of the episodes run now, and their time.
    pub agent_steps: usize,
    pub generation_seconds: f64,
    pub tool_seconds: f64,
    /// Wall time of the episodes (without grading).
    pub agent_wall_seconds: f64,
    /// With an [`crate::EndpointPolicy`]: the endpoint's token usage and requests (the caller
    /// fills it in from [`crate::EndpointPolicy::usage`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointUsage>,
    /// The Docker engines of the episodes (the grading's are in `grading.fleet`).
    pub fleet: forge_sandbox::FleetMetrics,
    pub grading: RunSummary,
}

/// Runs the agent (`policy` through `chat`) on the dataset's instances and grades the patches.
pub async fn run_agent_eval<P: Policy + 'static>(policy: Arc<P>, chat: Arc<ChatFormat>, options: &AgentEvalOptions) -> Result<AgentEvalSummary> {
    let instances = selected_instances(options)?;
    let run_dir = options.run_dir();
    let trajectories_dir = run_dir.join("trajectories");
    std::fs::create_dir_all(&trajectories_dir).map_err(|e| AgentError::io(&trajectories_dir, e))?;
    let fleet = Fleet::connect(&options.engines, FleetOptions::default()).await?;
    ensure_bundled_images(&fleet.any_runtime()?, &options.dataset, &instances).await;

    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(options.workers.max(1)));
    let mut episodes = tokio::task::JoinSet::new();
    let mut trajectories: BTreeMap<String, Trajectory> = BTreeMap::new();
    let mut reused = 0;
    for instance in &instances {
        let path = trajectory_path(&trajectories_dir, &instance.instance_id);
        if let Some(done) = read_trajectory(&path).filter(|t| t.status.is_model_outcome()) {
            reused += 1;
            trajectories.insert(instance.instance_id.clone(), done);
            continue;
        }
        let (fleet, policy, chat, semaphore) = (fleet.clone(), policy.clone(), chat.clone(), semaphore.clone());
        let (instance, agent, labels) = (instance.clone(), options.agent.clone(), options.labels.clone());
        episodes.spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore is never closed");
            let trajectory = run_placed_episode(&fleet, &*policy, &chat, &instance, &labels, &agent).await;
            let written = write_atomic(&path, serde_json::to_string(&trajectory).expect("trajectories serialize").as_bytes());
            tracing::info!(instance = %instance.instance_id, status = ?trajectory.status, turns = trajectory.turns.len(), "episode done");
            (trajectory, written)
        });
    }
    let (mut episodes_run, mut agent_steps, mut generation_seconds, mut tool_seconds) = (0, 0, 0.0, 0.0);
    while let Some(joined) = episodes.join_next().await {
        let (trajectory, written) = joined.map_err(|e| AgentError::Invalid(format!("an agent episode panicked: {e}")))?;
        written?;
        episodes_run += 1;
        agent_steps += trajectory.tool_turns();
        generation_seconds += trajectory.generation_seconds;
        tool_seconds += trajectory.tool_seconds;
        trajectories.insert(trajectory.instance_id.clone(), trajectory);
    }
    let agent_wall_seconds = started.elapsed().as_secs_f64();

    // Dataset order; infrastructure failures get no prediction (the harness reports them as
    // incomplete) and no SFT record.
    let done: Vec<&Trajectory> = instances
        .iter()
        .filter_map(|i| trajectories.get(&i.instance_id))
        .filter(|t| t.status.is_model_outcome())
        .collect();
    let predictions_path = run_dir.join("predictions.jsonl");
    let predictions = jsonl(done.iter().map(|t| json!({"instance_id": t.instance_id, "model_name_or_path": options.model_name, "model_patch": t.patch})));
    write_atomic(&predictions_path, predictions.as_bytes())?;
    write_atomic(&run_dir.join("sft.jsonl"), jsonl(done.iter().map(|t| t.sft_record())).as_bytes())?;

    let mut grading = EvalOptions::new(&options.dataset, PredictionsSource::File(predictions_path), &options.run_id);
    grading.instance_ids = instances.iter().map(|i| i.instance_id.clone()).collect();
    grading.workers = options.workers;
    grading.pull = options.agent.pull;
    grading.timeout = options.test_timeout;
    grading.grading = options.grading;
    grading.output_root = options.output_root.clone();
    grading.labels = options.labels.clone();
    grading.container = options.agent.container.clone();
    grading.engines = options.engines.clone();
    let grading = run_evaluation(&grading).await?;
    let resolved = done.iter().filter(|t| grading.resolved_ids.contains(&t.instance_id)).map(|t| t.sft_record());
    write_atomic(&run_dir.join("sft.resolved.jsonl"), jsonl(resolved).as_bytes())?;

    let (mut statuses, mut failure_causes) = (BTreeMap::new(), BTreeMap::new());
    for t in trajectories.values() {
        *statuses.entry(status_name(t.status)).or_insert(0) += 1;
        if let Some(cause) = t.cause {
            *failure_causes.entry(cause.name().to_string()).or_insert(0) += 1;
        }
    }
    Ok(AgentEvalSummary {
        run_dir,
        episodes_run,
        episodes_reused: reused,
        statuses,
        failure_causes,
        agent_steps,
        generation_seconds,
        tool_seconds,
        agent_wall_seconds,
        endpoint: None,
        fleet: fleet.metrics(),
        grading,
    })
}

/// One episode of `instance` on the fleet; an episode that failed because its engine stopped
/// answering runs again from the start on another engine (at most once per engine).
pub async fn run_placed_episode<P: Policy>(
    fleet: &Fleet,
    policy: &P,
    chat: &ChatFormat,
    instance: &TaskInstance,
    labels: &BTreeMap<String, String>,
    agent: &crate::episode::AgentConfig,
) -> Trajectory {
    let mut lost = 0;
    loop {
        let (trajectory, engine) = match TaskWorkspace::place(fleet, instance, labels, agent).await {
            Ok(mut workspace) => {
                let trajectory = run_episode(policy, &mut workspace, chat, &instance.instance_id, &instance.problem_statement, agent).await;
                let engine = workspace.runtime().clone();
                if let Err(e) = workspace.remove().await {
                    tracing::warn!(instance = %instance.instance_id, error = %e, "could not remove the agent container");
                }
                (trajectory, Some(engine))
            }
            Err(e) => (Trajectory::failed_to_start(&instance.instance_id, e.to_string()), None),
        };
        let engine_down = match &engine {
            Some(rt) if trajectory.status == Status::InfraError && lost < fleet.len() => fleet.confirm_down(rt).await,
            _ => false,
        };
        if !engine_down {
            return trajectory;
        }
        lost += 1;
        tracing::warn!(instance = %instance.instance_id, "the episode's engine stopped answering; running the episode again on another engine");
    }
}

fn selected_instances(options: &AgentEvalOptions) -> Result<Vec<TaskInstance>> {
    select_instances(load_instances(&options.dataset)?, &options.instance_ids)
        .map_err(|id| AgentError::Invalid(format!("instance {id} (from --instance-ids) is not in {}", options.dataset.display())))
}

fn status_name(status: Status) -> String {
    serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The trajectory file of an instance (ids are file-name safe in SWE-bench: `owner__repo-N`).
pub fn trajectory_path(dir: &Path, instance_id: &str) -> PathBuf {
    dir.join(format!("{}.json", instance_id.replace('/', "__")))
}

/// A complete earlier trajectory; a missing or unreadable file (a crash mid-write cannot leave
/// one: writes are atomic) means the instance runs again.
pub fn read_trajectory(path: &Path) -> Option<Trajectory> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

pub(crate) fn jsonl(records: impl Iterator<Item = Value>) -> String {
    records.map(|r| r.to_string() + "\n").collect()
}

pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| AgentError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| AgentError::io(path, e))
}
