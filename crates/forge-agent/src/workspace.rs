//! Where the agent's tools run: a container from the task's image with `/testbed` at the base
//! commit, and the repository diff that becomes the prediction.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use forge_sandbox::{Fleet, Observation, Placement, Runtime, Sandbox, SandboxSpec, ToolCall};
use forge_swe::{agent_setup_script, TaskInstance};

use crate::episode::AgentConfig;
use crate::error::{AgentError, Result};

/// The environment of one episode.
pub trait Workspace: Send {
    /// Runs one tool call. Mistakes in the call are observations; `Err` is an infrastructure
    /// failure, or one the call caused ([`forge_sandbox::SandboxError::is_policy_fault`]).
    fn call(&mut self, call: &ToolCall) -> impl Future<Output = forge_sandbox::Result<Observation>> + Send;

    /// The repository's changes against the base commit, as a patch `git apply` takes.
    fn patch(&mut self) -> impl Future<Output = Result<String>> + Send;

    /// What the agent is told about its environment (where the repository is, how its tests
    /// run); `None`: nothing beyond the instruction.
    fn environment_note(&self) -> Option<String> {
        None
    }

    /// The image the workspace runs (`name@content id`), recorded in the trajectory.
    fn image(&self) -> Option<String> {
        None
    }
}

/// The environment note of a task from a dataset (forge's own tasks need none: the instruction
/// covers them): the repository, the active environment, the test command.
pub fn environment_note(instance: &TaskInstance) -> Option<String> {
    if forge_swe::resolve::Source::of(instance) == forge_swe::resolve::Source::Forge {
        return None;
    }
    let mut note = format!("The repository is checked out at {REPO}");
    if instance.shell_init.is_some() {
        note.push_str("; its Python environment is already active in your shell (`python` and `pytest` are the project's)");
    }
    note.push('.');
    if let Some(cmd) = forge_swe::resolve::test_command(instance) {
        note.push_str(&format!(" The project's tests run with `{cmd}` followed by test files or test ids, from {REPO}."));
    }
    Some(note)
}

/// Label on agent containers (value: the instance id).
pub const LABEL_INSTANCE: &str = "forge.agent.instance";

const REPO: &str = "/testbed";
const PATCH_FILE: &str = "/tmp/.forge_agent.patch";
const MAX_PATCH_BYTES: usize = 64 << 20;
const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// A task's container: `/testbed` at the start state with no later history reachable.
pub struct TaskWorkspace {
    sandbox: Sandbox,
    /// The room its engine holds for it while it lives (workspaces placed on a [`Fleet`]).
    placement: Option<Placement>,
    note: Option<String>,
    image: String,
    /// The commit the setup left checked out: the agent's diff is taken against it.
    base_commit: String,
}

impl TaskWorkspace {
    /// Starts a container from the instance's image (labelled with `labels` and the instance id)
    /// with the default sandbox limits and prepares its repository.
    pub async fn create(rt: &Runtime, instance: &TaskInstance, labels: &BTreeMap<String, String>) -> Result<Self> {
        Self::create_with(rt, instance, labels, &AgentConfig::default()).await
    }

    /// [`TaskWorkspace::create_with`] on the engine of `fleet` that has room and the image (or
    /// gets it), holding that room until the workspace is dropped.
    pub async fn place(fleet: &Fleet, instance: &TaskInstance, labels: &BTreeMap<String, String>, config: &AgentConfig) -> Result<Self> {
        let image = instance.image.as_deref().ok_or_else(|| AgentError::Invalid(format!("instance {} names no image", instance.instance_id)))?;
        let placement = fleet.place(image, &config.container.limits_for(instance), config.pull).await?;
        let mut workspace = Self::create_with(placement.runtime(), instance, labels, config).await?;
        workspace.placement = Some(placement);
        Ok(workspace)
    }

    /// The engine the container runs on.
    pub fn runtime(&self) -> &Runtime {
        self.sandbox.runtime()
    }

    /// [`TaskWorkspace::create`] with `config`'s sandbox limits (the longest tool-call timeout,
    /// the storage limit).
    pub async fn create_with(rt: &Runtime, instance: &TaskInstance, labels: &BTreeMap<String, String>, config: &AgentConfig) -> Result<Self> {
        let image = instance
            .image
            .as_deref()
            .ok_or_else(|| AgentError::Invalid(format!("instance {} names no image", instance.instance_id)))?;
        let mut spec = SandboxSpec::new(image).workdir(REPO).label(LABEL_INSTANCE, &instance.instance_id);
        spec.limits = config.container.limits_for(instance);
        spec.limits.storage_bytes = config.storage_bytes;
        spec.shell_init = instance.shell_init.clone();
        spec.max_call_timeout = config.max_call_timeout;
        rt.ensure_image(image, config.pull, |_| {}).await?;
        for (key, value) in labels {
            spec = spec.label(key, value);
        }
        let mut sandbox = rt.create(&spec).await?;
        let image_ref = match rt.image_info(image).await {
            Ok(info) => format!("{image}@{}", info.id),
            Err(_) => image.to_string(),
        };
        let setup = sandbox.exec(&["bash", "-c", &agent_setup_script(instance)], Some(GIT_TIMEOUT)).await;
        match setup {
            Ok(out) if out.exit_code == Some(0) => match out.output.lines().last().map(str::trim) {
                // The setup's last line is the start commit (see `agent_setup_script`).
                Some(start) if start.len() >= 40 && start.chars().all(|c| c.is_ascii_hexdigit()) => {
                    Ok(Self { sandbox, placement: None, note: environment_note(instance), image: image_ref, base_commit: start.to_string() })
                }
                _ => {
                    let _ = sandbox.remove().await;
                    Err(AgentError::Setup { instance_id: instance.instance_id.clone(), exit_code: out.exit_code, output: format!("no start commit in the setup's output: {}", out.output) })
                }
            },
            other => {
                let _ = sandbox.remove().await;
                let out = other?;
                Err(AgentError::Setup { instance_id: instance.instance_id.clone(), exit_code: out.exit_code, output: out.output })
            }
        }
    }

    /// Removes the container, then gives its room on the engine back.
    pub async fn remove(mut self) -> Result<()> {
        let removed = self.sandbox.remove().await;
        drop(self.placement.take());
        Ok(removed?)
    }
}

impl Workspace for TaskWorkspace {
    async fn call(&mut self, call: &ToolCall) -> forge_sandbox::Result<Observation> {
        self.sandbox.call(call).await
    }

    fn environment_note(&self) -> Option<String> {
        self.note.clone()
    }

    fn image(&self) -> Option<String> {
        Some(self.image.clone())
    }

    /// Every change, new files included (ignored files are not), binary-safe (`--binary` also
    /// writes full index lines), against the base commit even if the agent committed. Python
    /// byte-code the agent's test runs left behind is not source and is left out. The diff goes
    /// through a file, not the exec output stream, which is clipped.
    ///
    /// git runs with a fixed configuration, whatever the agent wrote into the repository's or
    /// the user's: `a/`/`b/` prefixes (not `diff.noprefix` or `diff.mnemonicPrefix`), no external
    /// diff drivers, text conversions, hooks, file-system monitor or relative diffs, and no
    /// user or system configuration at all.
    async fn patch(&mut self) -> Result<String> {
        let script = format!(
            "cd {REPO} && export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 && \
             git -c 'safe.directory=*' -c core.hooksPath=/dev/null -c core.fsmonitor=false add -A && \
             git -c 'safe.directory=*' -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.quotePath=false \
             -c diff.noprefix=false -c diff.mnemonicPrefix=false -c diff.relative=false \
             diff --cached --binary --no-color --no-ext-diff --no-textconv --src-prefix=a/ --dst-prefix=b/ {} \
             -- . ':(exclude,glob)**/__pycache__/**' ':(exclude,glob)**/*.pyc' > {PATCH_FILE}",
            self.base_commit
        );
        let out = self.sandbox.exec(&["bash", "-c", &script], Some(GIT_TIMEOUT)).await?;
        if out.exit_code != Some(0) {
            return Err(AgentError::Diff { exit_code: out.exit_code, output: out.output });
        }
        let (bytes, _) = self.sandbox.read_file(PATCH_FILE, MAX_PATCH_BYTES).await?;
        // Predictions are JSON strings: bytes that are not UTF-8 (a Latin-1 source file) are
        // replaced, as the official harness's JSON would have to.
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
