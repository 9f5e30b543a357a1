//! Errors of the sandbox runtime. Every variant names what failed and what to do about it.
//!
//! Mistakes of the *agent* (a bad editor argument, a command that fails, a path that does not
//! exist) are not errors here: they come back as tool observations. A `SandboxError` means the
//! sandbox cannot go on: mostly the infrastructure failed, but [`SandboxError::is_policy_fault`]
//! tells the cases the commands run in it caused (the container's main process killed, an OOM
//! kill, the storage limit exceeded).

use std::time::Duration;

/// Result alias of this crate.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// What went wrong in the Docker runtime.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The Docker Engine cannot be reached (socket missing, daemon down, wrong DOCKER_HOST).
    #[error(
        "cannot reach the Docker Engine at {endpoint}: {detail}. Start dockerd (or point DOCKER_HOST \
         at a running engine) and make sure this user may open its socket"
    )]
    DockerUnreachable { endpoint: String, detail: String },

    /// Every engine of the sandbox fleet is down.
    #[error(
        "every Docker engine of the sandbox fleet is down ({engines}); waited {waited:?} for one to answer. \
         Start them, or fix [sandbox] hosts / --docker-host"
    )]
    NoEngineUp { engines: String, waited: Duration },

    /// No engine of the fleet could ever hold a container this large.
    #[error(
        "a container with {cpus} CPUs and {memory_bytes} bytes of memory fits on no engine of the fleet ({engines}); \
         lower the container's --cpus/--memory or raise the engines' cpus/memory in [sandbox] hosts"
    )]
    NoEngineFits { cpus: f64, memory_bytes: u64, engines: String },

    /// Moving an image from one engine to another (`docker save` into `docker load`) failed.
    #[error("moving image `{image}` between Docker engines failed: {detail}")]
    ImageTransfer { image: String, detail: String },

    /// The image is not in the local engine and the pull policy did not fetch it.
    #[error("image `{image}` is not in the local Docker Engine; {}", crate::images::missing_fix(image))]
    ImageMissing { image: String },

    /// Pulling an image failed for good (after retrying what is transient).
    #[error("pulling image `{image}` failed after {attempts} attempt(s): {detail}. Fix: {fix}")]
    ImagePull { image: String, attempts: u32, detail: String, fix: String },

    /// `docker load` of an archive failed.
    #[error("loading images from {} failed: {detail}; it must be an archive written by `docker save IMAGE... -o FILE.tar`", path.display())]
    ImageLoad { path: std::path::PathBuf, detail: String },

    /// A Docker API call failed.
    #[error("Docker API call `{op}` failed: {source}")]
    Docker {
        op: &'static str,
        #[source]
        source: bollard::errors::Error,
    },

    /// The engine did not answer in time.
    #[error("Docker did not answer `{op}` within {after:?}; the engine is hung or overloaded (check `docker info`)")]
    DockerTimeout { op: &'static str, after: Duration },

    /// The container stopped or vanished while we used it (killed, OOM, removed by someone else).
    #[error(
        "container {container} is gone ({state}) while {during}; this sandbox is unusable: \
         remove it and create a new one"
    )]
    ContainerGone {
        container: String,
        state: String,
        during: String,
        /// The kernel's OOM killer ended it (the memory limit was reached).
        oom_killed: bool,
    },

    /// The container's writes exceeded `Limits::storage_bytes`.
    #[error("container {container} has written {used_bytes} bytes, more than its storage limit of {limit_bytes} bytes (disk quota exceeded)")]
    StorageExceeded {
        container: String,
        used_bytes: u64,
        limit_bytes: u64,
    },

    /// The persistent shell could not be (re)started or spoke an unexpected protocol.
    #[error("the shell in container {container} failed: {detail}; the image needs /bin/bash")]
    Shell { container: String, detail: String },

    /// Copying files in or out of the container failed.
    #[error("file transfer of `{path}` in container {container} failed: {detail}")]
    Transfer {
        container: String,
        path: String,
        detail: String,
    },

    /// A line of a tool-call file could not be read as a tool call.
    #[error("{file}:{line}: not a tool call ({detail}); expected {{\"name\": ..., \"arguments\": {{...}}}} per line")]
    BadToolCall {
        file: String,
        line: usize,
        detail: String,
    },

    /// Local I/O (reading a calls file, writing observations).
    #[error("I/O error while {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl SandboxError {
    pub(crate) fn docker(op: &'static str, source: bollard::errors::Error) -> Self {
        SandboxError::Docker { op, source }
    }

    /// Whether the commands run in the sandbox caused this (the container exited or was
    /// OOM-killed while running, or wrote past its storage limit), as opposed to the
    /// infrastructure (engine unreachable, the container removed from outside, API failures).
    pub fn is_policy_fault(&self) -> bool {
        match self {
            SandboxError::ContainerGone { state, .. } => state != "removed",
            SandboxError::StorageExceeded { .. } => true,
            _ => false,
        }
    }

    /// Whether the engine did not answer at all (no connection, no reply in time), as opposed to
    /// answering with an error.
    pub fn is_engine_unreachable(&self) -> bool {
        match self {
            SandboxError::DockerUnreachable { .. } | SandboxError::DockerTimeout { .. } | SandboxError::NoEngineUp { .. } => true,
            SandboxError::Docker { source, .. } => !matches!(source, bollard::errors::Error::DockerResponseServerError { .. }),
            _ => false,
        }
    }

    /// True for a 404 answer from the engine (no such container / image / path).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            SandboxError::Docker {
                source: bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ..
                },
                ..
            }
        )
    }
}
