//! Connection to the Docker Engine, container creation with our labels and limits, and the reaper.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};

use crate::engine::EngineSpec;
use crate::error::{Result, SandboxError};
use crate::sandbox::Sandbox;

/// Label present on every container this crate creates.
pub const LABEL_SANDBOX: &str = "forge.sandbox";
/// Label naming the creating process as `host:pid` (used by the reaper).
pub const LABEL_OWNER: &str = "forge.owner";
/// Label telling the creating process apart from a later one with the same pid:
/// `boot_id/start_time` (the kernel's boot id, the process's start in clock ticks after boot).
pub const LABEL_OWNER_START: &str = "forge.owner.start";

/// Default image built by `scripts/setup/build-base-image.sh`.
pub const DEFAULT_IMAGE: &str = "forge/base:py3";

/// How long a plain API call may take before we call the engine hung.
const API_TIMEOUT: Duration = Duration::from_secs(60);

/// Resource limits of a sandbox container.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes (swap is disabled: memory+swap = memory).
    pub memory_bytes: i64,
    /// CPU quota in units of 1e-9 CPUs (1_000_000_000 = one CPU).
    pub nano_cpus: i64,
    /// Maximum number of processes/threads in the container (contains fork bombs).
    pub pids: i64,
    /// Bytes the container may write (its writable layer); `None`: unlimited. Checked after
    /// every tool call ([`crate::Sandbox::check_storage`]: past it the call fails with
    /// [`SandboxError::StorageExceeded`]); where the storage driver supports a quota (overlay2 on
    /// xfs with pquota) the layer is also hard-limited to this plus [`STORAGE_QUOTA_SLACK`], so
    /// one command cannot fill the host's disk before the check.
    pub storage_bytes: Option<u64>,
}

/// Room above `Limits::storage_bytes` in the hard quota, so that the check after the call, not
/// ENOSPC in the middle of it, is what normally ends an episode.
pub const STORAGE_QUOTA_SLACK: u64 = 256 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 2 << 30,
            nano_cpus: 1_000_000_000,
            pids: 512,
            storage_bytes: Some(DEFAULT_STORAGE_BYTES),
        }
    }
}

/// Default of [`Limits::storage_bytes`]: room for a test run's caches and a dependency install.
pub const DEFAULT_STORAGE_BYTES: u64 = 4 << 30;
/// Default of [`SandboxSpec::max_call_timeout`].
pub const DEFAULT_MAX_CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Everything needed to create a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub image: String,
    /// Working directory of the shell (created by Docker if missing).
    pub workdir: String,
    /// Extra environment (`KEY=VALUE`).
    pub env: Vec<String>,
    /// Extra labels (the crate always adds `forge.sandbox` and `forge.owner`).
    pub labels: HashMap<String, String>,
    pub limits: Limits,
    /// Network access; off by default (`--network none`).
    pub network: bool,
    /// Default timeout of `execute_bash` when the call gives none.
    pub default_timeout: Duration,
    /// The longest timeout a call may ask for (a larger one is lowered to this): no tool call
    /// blocks its episode for longer.
    pub max_call_timeout: Duration,
    /// Bytes of command output kept (head + tail); the middle is replaced by a marker.
    pub max_output_bytes: usize,
    /// Bash the persistent shell runs when it starts (the task's environment activation: the
    /// shell is `--norc`, so an image's `/root/.bashrc` is not read).
    pub shell_init: Option<String>,
}

impl SandboxSpec {
    pub fn new(image: impl Into<String>) -> Self {
        SandboxSpec {
            image: image.into(),
            workdir: "/".into(),
            env: Vec::new(),
            labels: HashMap::new(),
            limits: Limits::default(),
            network: false,
            default_timeout: Duration::from_secs(120),
            max_call_timeout: DEFAULT_MAX_CALL_TIMEOUT,
            max_output_bytes: 30_000,
            shell_init: None,
        }
    }

    pub fn workdir(mut self, dir: impl Into<String>) -> Self {
        self.workdir = dir.into();
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn env(mut self, kv: impl Into<String>) -> Self {
        self.env.push(kv.into());
        self
    }
}

/// Facts about a local image.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub id: String,
    pub size_bytes: i64,
}

/// A connection to the Docker Engine. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Runtime {
    docker: Docker,
    engine: EngineSpec,
    /// The record of the images forge pulled ([`crate::images`]).
    image_state: std::path::PathBuf,
}

static NAME_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

pub(crate) fn owner_label() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// The kernel's boot id: pids and start times are only comparable within one boot.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// `boot_id/start_time` of process `pid` (field 22 of /proc/PID/stat), `None` if it is gone.
fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name (field 2) may hold spaces and parentheses: count from the last ')'
    let start = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?;
    Some(format!("{}/{start}", boot_id()))
}

/// Whether the process that created a container (its owner labels) is still running here.
fn owner_alive(pid: &str, start: Option<&str>) -> bool {
    let Ok(pid) = pid.parse::<u32>() else { return false };
    if pid == std::process::id() {
        return true;
    }
    match (process_start(pid), start) {
        (None, _) => false,
        // containers made before the start label existed: the pid alone decides
        (Some(_), None) => true,
        (Some(now), Some(then)) => now == then,
    }
}

/// Whether the engine refused a create (with a storage quota): the quota may be what it refused
/// ("--storage-opt is supported only for overlay over xfs with 'pquota' mount option").
fn refused(e: &SandboxError) -> bool {
    matches!(e, SandboxError::Docker { source: bollard::errors::Error::DockerResponseServerError { status_code: 400 | 500, .. }, .. })
}

/// Set once the engine refused a storage quota: later containers rely on the size check alone.
static STORAGE_QUOTA_UNSUPPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Some randomness without a crate: std's per-process random hash keys, time and a counter.
pub(crate) fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NAME_COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// A client of `engine` (nothing is sent yet).
fn client(engine: &EngineSpec) -> Result<Docker> {
    let endpoint = engine.endpoint.as_str();
    let unreachable = |detail: String| SandboxError::DockerUnreachable { endpoint: endpoint.to_string(), detail };
    if let Some(path) = endpoint.strip_prefix("unix://") {
        return Docker::connect_with_unix(path, API_TIMEOUT.as_secs(), API_DEFAULT_VERSION).map_err(|e| unreachable(e.to_string()));
    }
    let Some(certs) = &engine.tls else {
        return Docker::connect_with_http(endpoint, API_TIMEOUT.as_secs(), API_DEFAULT_VERSION).map_err(|e| unreachable(e.to_string()));
    };
    // bollard's client config takes the process-wide provider; both rustls providers are
    // compiled in (reqwest brings ring's verifier too), so pick one explicitly
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        if !certs.join(file).is_file() {
            return Err(unreachable(format!(
                "TLS: {} is missing; the certificate directory (tls = ... or DOCKER_CERT_PATH) must hold ca.pem, cert.pem and key.pem",
                certs.join(file).display()
            )));
        }
    }
    Docker::connect_with_ssl(endpoint, &certs.join("key.pem"), &certs.join("cert.pem"), &certs.join("ca.pem"), API_TIMEOUT.as_secs(), API_DEFAULT_VERSION)
        .map_err(|e| unreachable(error_chain(&e)))
}

/// An error and its sources, for messages (a TLS or connection failure hides its cause inside).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

pub(crate) async fn api<T>(
    op: &'static str,
    fut: impl std::future::Future<Output = std::result::Result<T, bollard::errors::Error>>,
) -> Result<T> {
    match tokio::time::timeout(API_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| SandboxError::docker(op, e)),
        Err(_) => Err(SandboxError::DockerTimeout {
            op,
            after: API_TIMEOUT,
        }),
    }
}

impl Runtime {
    /// Connects to `$DOCKER_HOST` (TLS per `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`) or the local
    /// socket, negotiates the API version and checks that the engine answers (within 10 s), so an
    /// absent daemon is a clear error, never a hang.
    pub async fn connect() -> Result<Self> {
        let engine = EngineSpec::from_env().map_err(|detail| SandboxError::DockerUnreachable { endpoint: "$DOCKER_HOST".into(), detail })?;
        Self::connect_engine(&engine).await
    }

    /// Connects to an explicit endpoint: `unix:///path/docker.sock` or `tcp://host:port`.
    pub async fn connect_to(endpoint: &str) -> Result<Self> {
        let engine = EngineSpec::new(endpoint).map_err(|detail| SandboxError::DockerUnreachable { endpoint: endpoint.to_string(), detail })?;
        Self::connect_engine(&engine).await
    }

    /// Connects to one engine of a fleet (over TLS when it names certificates).
    pub async fn connect_engine(engine: &EngineSpec) -> Result<Self> {
        let unreachable = |detail: String| SandboxError::DockerUnreachable { endpoint: engine.endpoint.clone(), detail };
        let docker = match tokio::time::timeout(Duration::from_secs(10), client(engine)?.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(unreachable(error_chain(&e))),
            Err(_) => return Err(unreachable("no answer within 10 s".into())),
        };
        Ok(Runtime { docker, engine: engine.clone(), image_state: crate::images::default_state_path() })
    }

    /// A client of an engine that does not answer now (a fleet's engine that is down at the
    /// start): it speaks the default API version until it is reconnected.
    pub(crate) fn unconnected(engine: &EngineSpec) -> Result<Self> {
        Ok(Runtime { docker: client(engine)?, engine: engine.clone(), image_state: crate::images::default_state_path() })
    }

    /// Whether the engine answers a ping within `within`.
    pub async fn ping(&self, within: Duration) -> std::result::Result<(), String> {
        match tokio::time::timeout(within, self.docker.ping()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err(format!("no answer within {within:?}")),
        }
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn endpoint(&self) -> &str {
        &self.engine.endpoint
    }

    /// The engine this runtime talks to.
    pub fn engine(&self) -> &EngineSpec {
        &self.engine
    }

    /// This runtime with its record of pulled images at `path` instead of
    /// [`crate::images::default_state_path`] (tests keep theirs apart).
    pub fn with_image_state(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.image_state = path.into();
        self
    }

    /// Where this runtime records the images it pulled.
    pub fn image_state_path(&self) -> &std::path::Path {
        &self.image_state
    }

    /// Checks that `image` exists locally (never pulls; [`Runtime::ensure_image`] does).
    pub async fn image_info(&self, image: &str) -> Result<ImageInfo> {
        match api("inspect image", self.docker.inspect_image(image)).await {
            Ok(i) => Ok(ImageInfo {
                id: i.id.unwrap_or_default(),
                size_bytes: i.size.unwrap_or(0),
            }),
            Err(e) if e.is_not_found() => Err(SandboxError::ImageMissing {
                image: image.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Creates and starts a sandbox container and its persistent shell.
    pub async fn create(&self, spec: &SandboxSpec) -> Result<Sandbox> {
        let id = self.create_container(spec).await?;
        // From here on the container is ours: any failure removes it.
        let mut sandbox = Sandbox::adopt(self.clone(), id, spec.clone());
        if let Err(e) = self.start(sandbox.id()).await {
            let _ = sandbox.remove().await;
            return Err(e);
        }
        if let Err(e) = sandbox.start_shell().await {
            let _ = sandbox.remove().await;
            return Err(e);
        }
        if spec.limits.storage_bytes.is_some() {
            if let Err(e) = sandbox.locate_upper_dir().await {
                let _ = sandbox.remove().await;
                return Err(e);
            }
        }
        Ok(sandbox)
    }

    pub(crate) async fn start(&self, id: &str) -> Result<()> {
        api("start container", self.docker.start_container(id, None)).await
    }

    /// Creates (does not start) a container for `spec`; returns its id.
    pub async fn create_container(&self, spec: &SandboxSpec) -> Result<String> {
        self.image_info(&spec.image).await?;
        let mut labels = spec.labels.clone();
        labels.insert(LABEL_SANDBOX.into(), "1".into());
        labels.entry(LABEL_OWNER.into()).or_insert_with(owner_label);
        if let Some(start) = process_start(std::process::id()) {
            labels.entry(LABEL_OWNER_START.into()).or_insert(start);
        }
        let host_config = HostConfig {
            memory: Some(spec.limits.memory_bytes),
            memory_swap: Some(spec.limits.memory_bytes),
            nano_cpus: Some(spec.limits.nano_cpus),
            pids_limit: Some(spec.limits.pids),
            network_mode: Some(if spec.network { "bridge" } else { "none" }.into()),
            privileged: Some(false),
            cap_drop: Some(vec!["ALL".into()]),
            // What root needs to work on a repository it owns; no network, mknod, chroot, ptrace.
            cap_add: Some(
                [
                    "CHOWN",
                    "DAC_OVERRIDE",
                    "FOWNER",
                    "FSETID",
                    "KILL",
                    "SETGID",
                    "SETUID",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ),
            security_opt: Some(vec!["no-new-privileges".into()]),
            // tini as PID 1 reaps the orphans left by killed commands (they count against pids).
            init: Some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(vec!["sleep".into(), "infinity".into()]),
            working_dir: Some(spec.workdir.clone()),
            env: Some(spec.env.clone()),
            labels: Some(labels),
            network_disabled: Some(!spec.network),
            host_config: Some(host_config),
            ..Default::default()
        };
        crate::cleanup::wait_if_shutting_down().await;
        let creating = crate::cleanup::Creating::start();
        let quota = spec.limits.storage_bytes.filter(|_| !STORAGE_QUOTA_UNSUPPORTED.load(Ordering::Relaxed));
        let resp = match quota {
            Some(bytes) => {
                let mut with_quota = body.clone();
                if let Some(h) = with_quota.host_config.as_mut() {
                    h.storage_opt = Some(HashMap::from([("size".to_string(), (bytes + STORAGE_QUOTA_SLACK).to_string())]));
                }
                match self.create_named(spec, with_quota).await {
                    Err(e) if refused(&e) => {
                        // the same create without the quota succeeding tells it was the quota
                        let id = self.create_named(spec, body).await?;
                        STORAGE_QUOTA_UNSUPPORTED.store(true, Ordering::Relaxed);
                        tracing::info!(error = %e, "the storage driver has no per-container quota; container writes are limited by a size check after every call");
                        id
                    }
                    r => r?,
                }
            }
            None => self.create_named(spec, body).await?,
        };
        let registered = crate::cleanup::register(&resp, &self.engine);
        if !registered {
            // a signal arrived meanwhile: the process is exiting
            let _ = self.remove_container(&resp).await;
        }
        drop(creating);
        if !registered {
            crate::cleanup::wait_if_shutting_down().await;
        }
        Ok(resp)
    }

    async fn create_named(&self, spec: &SandboxSpec, body: ContainerCreateBody) -> Result<String> {
        let name = format!("forge-{}-{}", std::process::id(), &nonce()[..10]);
        let opts = CreateContainerOptions {
            name: Some(name),
            ..Default::default()
        };
        match api("create container", self.docker.create_container(Some(opts), body)).await {
            Err(e) if e.is_not_found() => Err(SandboxError::ImageMissing { image: spec.image.clone() }),
            r => Ok(r?.id),
        }
    }

    /// Force-removes a container (and its anonymous volumes). A missing container is not an error.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let removed = match api(
            "remove container",
            self.docker.remove_container(id, Some(opts)),
        )
        .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            // 409: removal already in progress.
            Err(SandboxError::Docker {
                source:
                    bollard::errors::Error::DockerResponseServerError {
                        status_code: 409, ..
                    },
                ..
            }) => Ok(()),
            r => r,
        };
        // a container its engine cut off is no longer this process's to remove: the fleet removes
        // it when the engine returns (`remove_lost_sandboxes`), the reaper after this process
        if removed.as_ref().is_ok() || removed.as_ref().is_err_and(SandboxError::is_engine_unreachable) {
            crate::cleanup::unregister(id);
        }
        removed
    }

    /// Ids of our containers (running or not), optionally narrowed by one more `key=value` label.
    pub async fn list_sandboxes(&self, label: Option<(&str, &str)>) -> Result<Vec<String>> {
        let mut filters = vec![LABEL_SANDBOX.to_string()];
        if let Some((k, v)) = label {
            filters.push(format!("{k}={v}"));
        }
        let opts = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), filters)])),
            ..Default::default()
        };
        let list = api("list containers", self.docker.list_containers(Some(opts))).await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Removes every sandbox carrying `key=value`. Returns how many were removed.
    pub async fn remove_labeled(&self, key: &str, value: &str) -> Result<usize> {
        let ids = self.list_sandboxes(Some((key, value))).await?;
        for id in &ids {
            self.remove_container(id).await?;
        }
        Ok(ids.len())
    }

    /// Removes this process's sandboxes on this engine that it no longer tracks: those an engine
    /// outage cut off (their removal failed while the engine was down). Call it only while no
    /// sandbox is being created on this engine (a fleet does so before it uses a returning
    /// engine again). Returns how many it removed.
    pub async fn remove_lost_sandboxes(&self) -> Result<usize> {
        let live = crate::cleanup::live_containers();
        let mine = self.list_sandboxes(Some((LABEL_OWNER, &owner_label()))).await?;
        let mut removed = 0;
        for id in mine.iter().filter(|id| !live.contains(id)) {
            tracing::info!(container = %id, engine = %self.endpoint(), "removing a sandbox an engine outage cut off");
            self.remove_container(id).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The reaper: removes sandboxes left behind by crashed runs on this host, i.e. those whose
    /// owner process (label `forge.owner=host:pid`) no longer exists, or is another process that
    /// got the same pid (label `forge.owner.start`). Returns how many it removed.
    pub async fn reap_stale(&self) -> Result<usize> {
        let opts = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![LABEL_SANDBOX.to_string()],
            )])),
            ..Default::default()
        };
        let list = api("list containers", self.docker.list_containers(Some(opts))).await?;
        let host = hostname();
        let mut removed = 0;
        for c in list {
            let (Some(id), Some(labels)) = (c.id, c.labels) else {
                continue;
            };
            let Some(owner) = labels.get(LABEL_OWNER) else {
                continue;
            };
            let Some((h, pid)) = owner.rsplit_once(':') else {
                continue;
            };
            if h != host {
                continue;
            }
            if !owner_alive(pid, labels.get(LABEL_OWNER_START).map(String::as_str)) {
                tracing::info!(container = %id, owner = %owner, "reaping sandbox of a dead run");
                self.remove_container(&id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
