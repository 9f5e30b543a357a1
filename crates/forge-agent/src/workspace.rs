//! Where the agent's tools run: a container from the task's image with `/testbed` at the base
//! commit, and the repository diff that becomes the prediction.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use forge_sandbox::{Observation, Runtime, Sandbox, SandboxSpec, ToolCall};
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
}

/// Label on agent containers (value: the instance id).
pub const LABEL_INSTANCE: &str = "forge.agent.instance";

const REPO: &str = "/testbed";
const PATCH_FILE: &str = "/tmp/.forge_agent.patch";
const MAX_PATCH_BYTES: usize = 64 << 20;
const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// A task's container: `/testbed` at the base commit with no later history reachable.
pub struct TaskWorkspace {
    sandbox: Sandbox,
    base_commit: String,
}

impl TaskWorkspace {
    /// Starts a container from the instance's image (labelled with `labels` and the instance id)
    /// with the default sandbox limits and prepares its repository.
    pub async fn create(rt: &Runtime, instance: &TaskInstance, labels: &BTreeMap<String, String>) -> Result<Self> {
        Self::create_with(rt, instance, labels, &AgentConfig::default()).await
    }

    /// [`TaskWorkspace::create`] with `config`'s sandbox limits (the longest tool-call timeout,
    /// the storage limit).
    pub async fn create_with(rt: &Runtime, instance: &TaskInstance, labels: &BTreeMap<String, String>, config: &AgentConfig) -> Result<Self> {
        let image = instance
            .image
            .as_deref()
            .ok_or_else(|| AgentError::Invalid(format!("instance {} names no image", instance.instance_id)))?;
        let mut spec = SandboxSpec::new(image).workdir(REPO).label(LABEL_INSTANCE, &instance.instance_id);
        spec.limits.storage_bytes = config.storage_bytes;
        spec.max_call_timeout = config.max_call_timeout;
        rt.ensure_image(image, config.pull, |_| {}).await?;
        for (key, value) in labels {
            spec = spec.label(key, value);
        }
        let mut sandbox = rt.create(&spec).await?;
        let setup = sandbox.exec(&["bash", "-c", &agent_setup_script(instance)], Some(GIT_TIMEOUT)).await;
        match setup {
            Ok(out) if out.exit_code == Some(0) => Ok(Self { sandbox, base_commit: instance.base_commit.clone() }),
            other => {
                let _ = sandbox.remove().await;
                let out = other?;
                Err(AgentError::Setup { instance_id: instance.instance_id.clone(), exit_code: out.exit_code, output: out.output })
            }
        }
    }

    /// Removes the container.
    pub async fn remove(mut self) -> Result<()> {
        Ok(self.sandbox.remove().await?)
    }
}

impl Workspace for TaskWorkspace {
    async fn call(&mut self, call: &ToolCall) -> forge_sandbox::Result<Observation> {
        self.sandbox.call(call).await
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
