//! Task images: pulled from a registry under a [`PullPolicy`] (with retries for the registry's
//! transient failures), loaded from `docker save` archives on machines without a registry, and
//! kept within a disk budget. Real task sets name thousands of public images
//! (`swebench/sweb.eval.x86_64.*`, SWE-smith's `jyangballin/swesmith.x86_64.*`, ...); a training
//! or evaluation run must fetch them on demand and must not fill the disk with them.
//!
//! Only the images forge pulled itself are ever pruned: they are recorded, with the time each was
//! last used, in a small JSON state file ([`default_state_path`]). Images a user built, loaded
//! or pulled by hand are never touched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::{CreateImageOptions, ImportImageOptions, ListContainersOptions, RemoveImageOptions};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SandboxError};
use crate::runtime::{api, nonce, Runtime};

/// When [`Runtime::ensure_image`] asks a registry for an image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Never: a missing image is an error (machines without a registry; images loaded by hand).
    Never,
    /// Only images that are not in the local engine.
    #[default]
    Missing,
    /// Every image once per process, even when present, so a moved tag (`:latest`) is refreshed
    /// once per run and not once per container (each pull costs a registry request, and Docker
    /// Hub rate-limits them).
    Always,
}

impl PullPolicy {
    pub const NAMES: &'static str = "never, missing, always";
}

impl std::str::FromStr for PullPolicy {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "never" => Ok(PullPolicy::Never),
            "missing" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            other => Err(format!("unknown pull policy {other:?} (expected one of: {})", PullPolicy::NAMES)),
        }
    }
}

impl std::fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PullPolicy::Never => "never",
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
        })
    }
}

/// How far a pull is, over the layers the engine reported so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PullProgress {
    pub image: String,
    pub layers_done: usize,
    pub layers_total: usize,
    /// Compressed bytes downloaded / announced (layers that already exist locally count as 0).
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// The image a run used, as reports record it: the name resolves to different content over time,
/// the id and registry digest do not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The name as asked for (`repo:tag`).
    pub name: String,
    /// The local image id (`sha256:...` of its config).
    pub id: String,
    /// The first RepoDigest (`repo@sha256:...`); `None` for images that never came from a registry
    /// (built or committed locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Bytes the image takes (its layers, shared ones included).
    pub size: u64,
}

/// What [`Runtime::prune_images`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Images removed, least recently used first.
    pub removed: Vec<ImageRecord>,
    /// Bytes freed (images whose last name was removed).
    pub freed_bytes: u64,
    /// Bytes of the images forge pulled that remain.
    pub remaining_bytes: u64,
    /// Images over the budget that were kept because a container uses them.
    pub in_use: Vec<String>,
}

/// Environment variable naming the state file (default [`default_state_path`]).
pub const STATE_ENV: &str = "FORGE_IMAGE_STATE";

/// Where forge records the images it pulled: `$FORGE_IMAGE_STATE`, or
/// `$HOME/.cache/forge/images.json`.
pub fn default_state_path() -> PathBuf {
    if let Some(p) = std::env::var_os(STATE_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/forge/images.json")
}

/// Images forge builds itself (the base image, the bundled tasks'): no registry has them, so
/// asking one would only cost the retries before the build script's advice.
fn built_by_forge(image: &str) -> bool {
    image.starts_with("forge-swe/") || image.starts_with("forge/")
}

/// The fix to suggest for an image that is not there and could not be pulled.
pub(crate) fn missing_fix(image: &str) -> String {
    if image.starts_with("forge-swe/") {
        format!("`{image}` is a bundled task image forge builds itself: scripts/setup/build-task-images.sh (it needs forge/base:py3 from scripts/setup/build-base-image.sh)")
    } else if image.starts_with("forge/") {
        format!("`{image}` is built locally, never pulled: scripts/setup/build-base-image.sh")
    } else {
        "pull it (`forge images pull IMAGE`, or run with --pull missing), or on a machine without \
         registry access `docker save` it elsewhere and `forge images load FILE.tar`"
            .to_string()
    }
}

/// How a failed pull is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// HTTP 429 `toomanyrequests`: retried; in the end `docker login` (authenticated users get
    /// a higher limit).
    RateLimited,
    /// Wrong credentials or a private repository: final.
    Denied,
    /// No such repository, tag or manifest, or a malformed name: final.
    NotFound,
    /// 5xx, connection resets, timeouts and anything unknown: retried.
    Transient,
}

/// Classifies an engine answer (`status`: HTTP status of the engine's reply, when it failed
/// before streaming) by the registry error the engine passes on in `message`.
fn classify(status: Option<u16>, message: &str) -> Failure {
    let m = message.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if any(&["toomanyrequests", "too many requests", "429", "rate limit"]) {
        Failure::RateLimited
    } else if any(&["unauthorized", "denied", "authentication required", "no basic auth credentials", "forbidden"]) {
        Failure::Denied
    } else if any(&["manifest unknown", "not found", "does not exist", "invalid reference format", "name unknown", "no matching manifest"])
        || matches!(status, Some(400 | 404))
    {
        Failure::NotFound
    } else {
        Failure::Transient
    }
}

fn classify_error(e: &bollard::errors::Error) -> Failure {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, message } => classify(Some(*status_code), message),
        bollard::errors::Error::DockerStreamError { error } => classify(None, error),
        other => classify(None, &other.to_string()),
    }
}

/// Pull attempts (the first included) and the backoff between them.
const PULL_ATTEMPTS: u32 = 5;
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A pull with no message from the engine for this long is abandoned (and retried).
const PULL_STALL: Duration = Duration::from_secs(300);
/// Progress lines in the log at most this often per pull.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Request timeout of the engine client for pulls and loads: the engine answers a load only
/// after it has unpacked the whole archive (minutes for a SWE-bench image).
pub(crate) const LONG_REQUEST: Duration = Duration::from_secs(3600);

/// `attempt`-th backoff (0-based): `BACKOFF_BASE * 2^attempt`, capped, times a jitter in
/// [0.5, 1) so that parallel workers rate-limited together do not come back together.
fn backoff(attempt: u32) -> Duration {
    let full = BACKOFF_BASE.saturating_mul(1 << attempt.min(16)).min(BACKOFF_MAX);
    let jitter = u64::from_str_radix(&nonce()[..8], 16).unwrap_or(0) as f64 / u32::MAX as f64;
    full.mul_f64(0.5 + 0.5 * jitter)
}

/// `name` with `:latest` when it names neither a tag nor a digest: the engine pulls EVERY tag of
/// a repository given without one.
fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || image.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// One lock per image name in this process, so that workers asking for the same missing image
/// wait for one pull instead of starting their own; and the images `Always` pulled already.
#[derive(Default)]
struct PullRegistry {
    locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    pulled: HashSet<String>,
}

static PULLS: Mutex<Option<PullRegistry>> = Mutex::new(None);

fn with_pulls<T>(f: impl FnOnce(&mut PullRegistry) -> T) -> T {
    let mut g = PULLS.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(PullRegistry::default))
}

/// The state file: the images forge pulled, by name.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ImageState {
    #[serde(default)]
    images: BTreeMap<String, StateEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateEntry {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    size: u64,
    /// Milliseconds since the Unix epoch.
    pulled_at_ms: u64,
    last_used_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Serialises this process's read-modify-write cycles of state files (another process may still
/// interleave; the writes are atomic, so the worst case is a lost last-used update).
static STATE_LOCK: Mutex<()> = Mutex::new(());

fn read_state(path: &Path) -> Result<ImageState> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| SandboxError::Io {
            what: format!(
                "reading the image state {} ({e}); delete it to start afresh (forge then forgets which images it pulled, and prune leaves them alone)",
                path.display()
            ),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ImageState::default()),
        Err(e) => Err(SandboxError::Io { what: format!("reading the image state {}", path.display()), source: e }),
    }
}

fn write_state(path: &Path, state: &ImageState) -> Result<()> {
    let io = |what: String| move |source| SandboxError::Io { what, source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let tmp = path.with_extension(format!("tmp.{}.{}", std::process::id(), &nonce()[..8]));
    let text = serde_json::to_string_pretty(state).expect("the image state serialises");
    std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SandboxError::Io { what: format!("replacing {}", path.display()), source: e }
    })
}

/// Applies `f` to the state file; writes it back when `f` says it changed something.
fn update_state(path: &Path, f: impl FnOnce(&mut ImageState) -> bool) -> Result<()> {
    let _g = STATE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut state = read_state(path)?;
    if f(&mut state) {
        write_state(path, &state)?;
    }
    Ok(())
}

/// Layer bookkeeping of one pull, from the engine's progress messages.
#[derive(Default)]
struct LayerProgress {
    layers: BTreeMap<String, (u64, u64, bool)>,
}

impl LayerProgress {
    /// Takes one message; whether it was about a layer.
    fn update(&mut self, id: Option<&str>, status: &str, current: Option<i64>, total: Option<i64>) -> bool {
        let Some(id) = id else { return false };
        let entry = || (0u64, 0u64, false);
        match status {
            "Pulling fs layer" | "Waiting" | "Verifying Checksum" | "Download complete" | "Extracting" => {
                self.layers.entry(id.to_string()).or_insert_with(entry);
            }
            "Downloading" => {
                let l = self.layers.entry(id.to_string()).or_insert_with(entry);
                l.0 = current.unwrap_or(0).max(0) as u64;
                l.1 = total.unwrap_or(0).max(0) as u64;
            }
            "Pull complete" | "Already exists" => {
                let l = self.layers.entry(id.to_string()).or_insert_with(entry);
                l.0 = l.1;
                l.2 = true;
            }
            _ => return false,
        }
        true
    }

    fn snapshot(&self, image: &str) -> PullProgress {
        PullProgress {
            image: image.to_string(),
            layers_done: self.layers.values().filter(|l| l.2).count(),
            layers_total: self.layers.len(),
            bytes_done: self.layers.values().map(|l| l.0).sum(),
            bytes_total: self.layers.values().map(|l| l.1).sum(),
        }
    }
}

impl Runtime {
    /// Makes sure `image` is in the local engine under `policy`, pulling it if needed (retrying
    /// rate limits, 5xx answers and dropped connections with exponential backoff), and returns
    /// what the run will use. `progress` sees every layer update of a pull.
    pub async fn ensure_image(&self, image: &str, policy: PullPolicy, progress: impl Fn(&PullProgress)) -> Result<ImageRecord> {
        let lock = with_pulls(|p| p.locks.entry(image.to_string()).or_default().clone());
        let _one_pull = lock.lock().await;
        let present = self.inspect_record(image).await?;
        let policy = if built_by_forge(image) { PullPolicy::Never } else { policy };
        let pull = match (&present, policy) {
            (None, PullPolicy::Never) => return Err(SandboxError::ImageMissing { image: image.to_string() }),
            (None, _) => true,
            (Some(_), PullPolicy::Always) => !with_pulls(|p| p.pulled.contains(image)),
            (Some(_), _) => false,
        };
        // recorded only when forge brought the image: prune must never remove a user's image
        let newly_pulled = present.is_none();
        let record = if pull {
            self.pull_with_retries(image, &progress).await?;
            with_pulls(|p| p.pulled.insert(image.to_string()));
            self.inspect_record(image).await?.ok_or_else(|| SandboxError::ImagePull {
                image: image.to_string(),
                attempts: 1,
                detail: "the engine reported the pull as done but does not have the image".into(),
                fix: missing_fix(image),
            })?
        } else {
            present.expect("present unless pulled")
        };
        let path = self.image_state_path().to_path_buf();
        let now = now_ms();
        let recorded = update_state(&path, |state| {
            if newly_pulled {
                let entry = StateEntry { id: record.id.clone(), digest: record.digest.clone(), size: record.size, pulled_at_ms: now, last_used_ms: now };
                state.images.insert(image.to_string(), entry);
                true
            } else if let Some(e) = state.images.get_mut(image) {
                (e.id, e.digest, e.size, e.last_used_ms) = (record.id.clone(), record.digest.clone(), record.size, now);
                true
            } else {
                false
            }
        });
        // the run can go on without the bookkeeping; only pruning would miss this image
        if let Err(e) = recorded {
            tracing::warn!(image, error = %e, "could not record the image's use; `forge images prune` will not know about it");
        }
        Ok(record)
    }

    /// The local image `image` as a record; `None` when the engine does not have it.
    pub async fn inspect_record(&self, image: &str) -> Result<Option<ImageRecord>> {
        match api("inspect image", self.docker().inspect_image(image)).await {
            Ok(i) => Ok(Some(ImageRecord {
                name: image.to_string(),
                id: i.id.unwrap_or_default(),
                digest: i.repo_digests.and_then(|d| d.into_iter().next()),
                size: i.size.unwrap_or(0).max(0) as u64,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn pull_with_retries(&self, image: &str, progress: &impl Fn(&PullProgress)) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (failure, detail) = match self.pull_once(image, progress).await {
                Ok(()) => return Ok(()),
                Err(PullError::Engine(e)) => (classify_error(&e), e.to_string()),
                Err(PullError::Stalled) => (Failure::Transient, format!("no progress from the engine for {} s", PULL_STALL.as_secs())),
            };
            let retry = matches!(failure, Failure::RateLimited | Failure::Transient) && attempt < PULL_ATTEMPTS;
            if !retry {
                let fix = match failure {
                    Failure::RateLimited => format!(
                        "the registry rate-limits anonymous pulls: `docker login` (authenticated pulls have a higher limit), pull fewer images at once, or `forge images load FILE.tar`; {}",
                        missing_fix(image)
                    ),
                    Failure::Denied => format!("check the name; if the repository is private, `docker login` to its registry; {}", missing_fix(image)),
                    Failure::NotFound => format!("check the name and tag; {}", missing_fix(image)),
                    Failure::Transient => format!("the registry or the network failed repeatedly; try again later, or {}", missing_fix(image)),
                };
                return Err(SandboxError::ImagePull { image: image.to_string(), attempts: attempt, detail, fix });
            }
            let wait = backoff(attempt - 1);
            tracing::warn!(image, attempt, error = %detail, retry_in_ms = wait.as_millis() as u64, "pull failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn pull_once(&self, image: &str, progress: &impl Fn(&PullProgress)) -> std::result::Result<(), PullError> {
        let opts = CreateImageOptions { from_image: Some(with_tag(image)), ..Default::default() };
        let docker = self.docker().clone().with_timeout(LONG_REQUEST);
        let mut stream = docker.create_image(Some(opts), None, login_for(image));
        let mut layers = LayerProgress::default();
        let started = Instant::now();
        let mut logged = Instant::now();
        tracing::info!(image, "pulling");
        loop {
            let msg = match tokio::time::timeout(PULL_STALL, stream.next()).await {
                Err(_) => return Err(PullError::Stalled),
                Ok(None) => break,
                Ok(Some(m)) => m.map_err(PullError::Engine)?,
            };
            let detail = msg.progress_detail.as_ref();
            let status = msg.status.as_deref().unwrap_or("");
            if layers.update(msg.id.as_deref(), status, detail.and_then(|d| d.current), detail.and_then(|d| d.total)) {
                let p = layers.snapshot(image);
                progress(&p);
                if logged.elapsed() >= LOG_EVERY {
                    logged = Instant::now();
                    tracing::info!(image, layers = format!("{}/{}", p.layers_done, p.layers_total), mb = p.bytes_done >> 20, of_mb = p.bytes_total >> 20, "pulling");
                }
            }
        }
        let p = layers.snapshot(image);
        tracing::info!(image, layers = p.layers_total, mb = p.bytes_total >> 20, seconds = started.elapsed().as_secs_f64(), "pulled");
        Ok(())
    }

    /// Loads the images of a `docker save` archive (for machines without registry access) and
    /// returns their tags (or ids, for images saved without one).
    pub async fn load_images(&self, archive: &Path) -> Result<Vec<String>> {
        let load_err = |detail: String| SandboxError::ImageLoad { path: archive.to_path_buf(), detail };
        let file = tokio::fs::File::open(archive).await.map_err(|e| SandboxError::Io { what: format!("opening {}", archive.display()), source: e })?;
        // streamed: archives of SWE-bench images are gigabytes
        let chunks = futures_util::stream::unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 1 << 20];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        let loaded = self.load_stream(chunks).await.map_err(load_err)?;
        tracing::info!(archive = %archive.display(), images = ?loaded, "loaded");
        Ok(loaded)
    }

    /// `docker load` of a `docker save` archive arriving as `chunks` (a file, another engine's
    /// `docker save`): the tags (or ids, for images saved without one) it loaded, or why not.
    pub(crate) async fn load_stream<S, E>(&self, chunks: S) -> std::result::Result<Vec<String>, String>
    where
        S: futures_util::Stream<Item = std::result::Result<bytes::Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let docker = self.docker().clone().with_timeout(LONG_REQUEST);
        let mut stream = docker.import_image_stream(ImportImageOptions { quiet: true, ..Default::default() }, chunks, None);
        let mut loaded = Vec::new();
        while let Some(msg) = stream.next().await {
            let msg = msg.map_err(|e| crate::runtime::error_chain(&e))?;
            if let Some(error) = msg.error_detail.and_then(|d| d.message) {
                return Err(error);
            }
            for line in msg.stream.as_deref().unwrap_or("").lines() {
                if let Some(name) = line.strip_prefix("Loaded image: ").or_else(|| line.strip_prefix("Loaded image ID: ")) {
                    loaded.push(name.trim().to_string());
                }
            }
        }
        if loaded.is_empty() {
            return Err("the engine loaded no image from it".into());
        }
        Ok(loaded)
    }

    /// Removes the least recently used images forge pulled until those left take at most
    /// `budget_bytes`. Images forge did not pull and images a container (running or not) uses
    /// are never removed; an image under several names loses only forge's name for it.
    pub async fn prune_images(&self, budget_bytes: u64) -> Result<PruneReport> {
        let path = self.image_state_path().to_path_buf();
        let recorded = {
            let _g = STATE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            read_state(&path)?
        };
        // what is still there, as the engine sees it now
        let mut live: Vec<(u64, ImageRecord)> = Vec::new();
        let mut gone: Vec<String> = Vec::new();
        for (name, entry) in &recorded.images {
            match self.inspect_record(name).await? {
                Some(r) => live.push((entry.last_used_ms, r)),
                None => gone.push(name.clone()),
            }
        }
        live.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        let containers = api(
            "list containers",
            self.docker().list_containers(Some(ListContainersOptions { all: true, ..Default::default() })),
        )
        .await?;
        let used: HashSet<String> = containers.into_iter().filter_map(|c| c.image_id).collect();
        let size_of_ids = |live: &[(u64, ImageRecord)]| -> u64 {
            let mut seen = HashSet::new();
            live.iter().filter(|(_, r)| seen.insert(r.id.clone())).map(|(_, r)| r.size).sum()
        };
        let mut report = PruneReport::default();
        let mut i = 0;
        while size_of_ids(&live) > budget_bytes && i < live.len() {
            let record = live[i].1.clone();
            if used.contains(&record.id) {
                report.in_use.push(record.name.clone());
                i += 1;
                continue;
            }
            let opts = RemoveImageOptions { force: false, noprune: false, ..Default::default() };
            match api("remove image", self.docker().remove_image(&record.name, Some(opts), None)).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                // 409: a container created meanwhile uses it
                Err(SandboxError::Docker { source: bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }, .. }) => {
                    report.in_use.push(record.name.clone());
                    i += 1;
                    continue;
                }
                Err(e) => return Err(e),
            }
            live.remove(i);
            gone.push(record.name.clone());
            if !live.iter().any(|(_, r)| r.id == record.id) && self.inspect_record(&record.id).await?.is_none() {
                report.freed_bytes += record.size;
            }
            tracing::info!(image = %record.name, mb = record.size >> 20, "pruned");
            report.removed.push(record);
        }
        report.remaining_bytes = size_of_ids(&live);
        update_state(&path, |state| {
            let before = state.images.len();
            for name in &gone {
                state.images.remove(name);
            }
            state.images.len() != before
        })?;
        Ok(report)
    }
}

/// The credentials `docker login` stored for `image`'s registry (`auths` of
/// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`): the engine does not read them itself,
/// its clients send them. Credential helpers (`credsStore`) are not consulted.
fn login_for(image: &str) -> Option<bollard::auth::DockerCredentials> {
    let first = image.split('/').next().unwrap_or("");
    let host = if image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") { first } else { "docker.io" };
    let dir = std::env::var_os("DOCKER_CONFIG").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).ok()?).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let (key, entry) = auths.iter().find(|(k, _)| {
        let k = k.trim_start_matches("https://").trim_start_matches("http://");
        let k = k.split('/').next().unwrap_or(k);
        k == host || (host == "docker.io" && (k == "index.docker.io" || k == "registry-1.docker.io"))
    })?;
    let decoded = base64_decode(entry.get("auth")?.as_str()?)?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(bollard::auth::DockerCredentials {
        username: Some(user.to_string()),
        password: Some(password.to_string()),
        serveraddress: Some(key.clone()),
        ..Default::default()
    })
}

/// Standard base64 (what `docker login` writes), padding optional.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

enum PullError {
    Engine(bollard::errors::Error),
    Stalled,
}

/// Parses a size as `forge images prune --budget` takes it: bytes, or a number with K, M, G, T
/// (powers of 1024; a trailing `B`/`iB` is allowed), e.g. `200G`, `500M`, `1.5T`.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let upper = t.to_ascii_uppercase();
    let stripped = upper.strip_suffix("IB").or_else(|| upper.strip_suffix('B')).unwrap_or(&upper);
    let (number, unit) = match stripped.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => stripped.split_at(i),
        None => (stripped, ""),
    };
    let scale: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("size {text:?}: unknown unit {unit:?} (use bytes or K, M, G, T, e.g. 200G)")),
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("size {text:?}: not a number (use bytes or K, M, G, T, e.g. 200G)"))?;
    if !(value >= 0.0) || !value.is_finite() {
        return Err(format!("size {text:?}: must be a non-negative number"));
    }
    Ok((value * scale as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_round_trip() {
        for p in [PullPolicy::Never, PullPolicy::Missing, PullPolicy::Always] {
            assert_eq!(p.to_string().parse::<PullPolicy>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert_eq!(PullPolicy::default(), PullPolicy::Missing);
        assert!("sometimes".parse::<PullPolicy>().unwrap_err().contains("never, missing, always"));
    }

    #[test]
    fn registry_errors_are_classified() {
        let cases = [
            (Some(500), "toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating", Failure::RateLimited),
            (Some(500), "received unexpected HTTP status: 429 Too Many Requests", Failure::RateLimited),
            (Some(404), "manifest for swebench/x:latest not found: manifest unknown: manifest unknown", Failure::NotFound),
            (Some(404), "pull access denied for x, repository does not exist or may require 'docker login'", Failure::Denied),
            (Some(500), "Head \"https://registry-1.docker.io/v2/x/manifests/latest\": unauthorized: incorrect username or password", Failure::Denied),
            (Some(500), "received unexpected HTTP status: 503 Service Unavailable", Failure::Transient),
            (None, "read tcp 10.0.0.2:443: read: connection reset by peer", Failure::Transient),
            (Some(500), "Get \"https://registry-1.docker.io/v2/\": net/http: request canceled (Client.Timeout exceeded)", Failure::Transient),
            (Some(400), "invalid reference format", Failure::NotFound),
        ];
        for (status, msg, want) in cases {
            assert_eq!(classify(status, msg), want, "{msg}");
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempt in 0..8 {
            let full = BACKOFF_BASE.saturating_mul(1 << attempt).min(BACKOFF_MAX);
            let d = backoff(attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn untagged_names_get_latest() {
        assert_eq!(with_tag("swebench/sweb.eval.x86_64.django_1776_django-11099"), "swebench/sweb.eval.x86_64.django_1776_django-11099:latest");
        assert_eq!(with_tag("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        assert_eq!(with_tag("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b:v1");
        assert_eq!(with_tag("a/b@sha256:00"), "a/b@sha256:00");
    }

    #[test]
    fn docker_login_credentials_are_found_per_registry() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(base64_decode("dXNlcjpwYXNzMQ==").unwrap(), b"user:pass1");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"}, "127.0.0.1:5000": {"auth": "YTpi"}}}"#,
        )
        .unwrap();
        std::env::set_var("DOCKER_CONFIG", dir.path());
        let hub = login_for("swebench/sweb.eval.x86_64.x:latest").unwrap();
        assert_eq!((hub.username.as_deref(), hub.password.as_deref()), (Some("user"), Some("pass")));
        assert_eq!(login_for("127.0.0.1:5000/a/b:v1").unwrap().username.as_deref(), Some("a"));
        assert!(login_for("ghcr.io/a/b:v1").is_none());
        std::env::remove_var("DOCKER_CONFIG");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("200G").unwrap(), 200 << 30);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse_size("1.5t").unwrap(), 3 << 39);
        assert_eq!(parse_size("12345").unwrap(), 12345);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn layer_progress_counts_layers_and_bytes() {
        let mut p = LayerProgress::default();
        assert!(!p.update(Some("v1"), "Pulling from forge-test/base", None, None));
        assert!(p.update(Some("a"), "Pulling fs layer", None, None));
        assert!(p.update(Some("b"), "Already exists", None, None));
        assert!(p.update(Some("a"), "Downloading", Some(50), Some(100)));
        let s = p.snapshot("x");
        assert_eq!((s.layers_done, s.layers_total, s.bytes_done, s.bytes_total), (1, 2, 50, 100));
        p.update(Some("a"), "Pull complete", None, None);
        let s = p.snapshot("x");
        assert_eq!((s.layers_done, s.bytes_done), (2, 100));
    }

    #[test]
    fn state_file_round_trips_and_writes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/images.json");
        update_state(&path, |s| {
            s.images.insert("a:1".into(), StateEntry { id: "sha256:1".into(), digest: None, size: 5, pulled_at_ms: 1, last_used_ms: 2 });
            true
        })
        .unwrap();
        let s = read_state(&path).unwrap();
        assert_eq!(s.images["a:1"].last_used_ms, 2);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("images.json")], "no temporary file is left");
        std::fs::write(&path, "{not json").unwrap();
        let e = read_state(&path).unwrap_err().to_string();
        assert!(e.contains("delete it"), "{e}");
    }
}
