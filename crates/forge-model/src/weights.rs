//! Reading HF model directories: locating them (a local path, or an `org/name[@revision]` id in
//! the Hugging Face hub cache, downloaded into it when missing), their weight files (single or
//! sharded), and loading tensors into a [`ParamStore`] of the requested dtype.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Var};
use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Repo, RepoType};

use crate::{Config, HubError, ModelError, ParamStore, Result};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";
pub const CONFIG_FILE: &str = "config.json";

/// What a hub snapshot must hold besides the weights: the model config and the tokenizer files
/// (tokenizer_config.json carries the chat template of most repos).
pub const REQUIRED_HUB_FILES: [&str; 3] = [CONFIG_FILE, "tokenizer.json", "tokenizer_config.json"];
/// Fetched along with a download when the repo has them; one it lacks is recorded in the cache
/// (`.no_exist/<commit>/<file>`, as huggingface_hub does) so that later runs do not ask again.
pub const OPTIONAL_HUB_FILES: [&str; 3] = ["generation_config.json", "chat_template.jinja", "special_tokens_map.json"];

pub const DEFAULT_HUB_ENDPOINT: &str = "https://huggingface.co";
pub const DEFAULT_REVISION: &str = "main";
/// Retries of a file transfer that broke off; each resumes from the bytes already on disk.
const TRANSFER_RETRIES: usize = 3;

/// A local directory, or an `org/name[@revision]` id in the Hugging Face hub cache, downloaded
/// there first when the cache lacks it (see [`resolve_hub_model`]; settings from the environment
/// as huggingface_hub reads them, see [`HubSettings::from_env`]).
pub fn resolve_model_dir(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let Some(model) = HubModelId::parse(spec) else {
        return Err(ModelError::NotAModelDir {
            dir: path.to_path_buf(),
            reason: "no such directory (nor is it an `org/name` or `org/name@revision` hub model id)".into(),
        });
    };
    resolve_hub_model(&model, &HubSettings::from_env())
}

/// Looks `id` (`org/name[@revision]`) up in `cache` without the network, as under
/// `HF_HUB_OFFLINE=1`.
pub fn resolve_in_hub_cache(id: &str, cache: &hf_hub::Cache) -> Result<PathBuf> {
    let model = HubModelId::parse(id).ok_or_else(|| ModelError::Invalid(format!("`{id}` is not an `org/name[@revision]` hub model id")))?;
    let settings = HubSettings { cache_dir: cache.path().clone(), offline: true, ..HubSettings::default() };
    resolve_hub_model(&model, &settings)
}

/// `model`'s config.json in the hub cache, if its snapshot holds one (weights or not): enough to
/// plan a run without downloading anything.
pub fn cached_hub_config(model: &HubModelId, cache_dir: &Path) -> Option<PathBuf> {
    HubCacheRepo::new(cache_dir, model).snapshot().map(|snapshot| snapshot.join(CONFIG_FILE)).filter(|config| config.is_file())
}

/// A model on the hub: `org/name`, optionally pinned with `@revision` (a branch, tag or commit
/// sha; `main` without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubModelId {
    pub repo: String,
    pub revision: String,
}

impl HubModelId {
    /// `org/name` or `org/name@revision`; `None` for anything else (a path, say). The name rules are
    /// the hub's (letters, digits, `-`, `_`, `.`), so that a mistyped local path such as
    /// `./runs/x` or `/data/model` is not sent to the hub.
    pub fn parse(spec: &str) -> Option<Self> {
        let (repo, revision) = match spec.split_once('@') {
            Some((repo, revision)) => (repo, revision),
            None => (spec, DEFAULT_REVISION),
        };
        let valid_part = |part: &str| {
            !part.is_empty() && !part.starts_with('.') && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let (org, name) = repo.split_once('/')?;
        // A revision becomes a path under refs/ in the cache: no empty, `.` or `..` components.
        let valid_revision = !revision.is_empty() && revision.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
        (valid_part(org) && valid_part(name) && valid_revision).then(|| HubModelId { repo: repo.to_string(), revision: revision.to_string() })
    }

    /// A revision that is a full commit sha names its snapshot directly, with no refs/ file.
    pub fn commit_sha(&self) -> Option<&str> {
        (self.revision.len() == 40 && self.revision.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())).then_some(&self.revision)
    }
}

impl fmt::Display for HubModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.revision == DEFAULT_REVISION {
            write!(f, "{}", self.repo)
        } else {
            write!(f, "{}@{}", self.repo, self.revision)
        }
    }
}

/// Where and how hub models are looked up and downloaded. Built from the environment in one place
/// ([`HubSettings::from_env`]) so that everything else, tests included, takes it explicitly.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// The hub cache (`models--org--name/{blobs,refs,snapshots}` inside).
    pub cache_dir: PathBuf,
    /// The hub's base URL, without a trailing `/`.
    pub endpoint: String,
    /// Sent as `Authorization: Bearer` (gated and private models).
    pub token: Option<String>,
    /// Never touch the network: cache lookup only.
    pub offline: bool,
    /// Draw a progress bar per file (on a terminal; indicatif hides it elsewhere).
    pub progress: bool,
}

impl Default for HubSettings {
    /// huggingface_hub's defaults for a home directory of `~` (unresolved): only meant to be
    /// overridden field by field.
    fn default() -> Self {
        Self::from_vars(|_| None)
    }
}

impl HubSettings {
    /// The variables huggingface_hub reads: `HF_HUB_CACHE` (legacy `HUGGINGFACE_HUB_CACHE`), else
    /// `$HF_HOME/hub`, with `HF_HOME` defaulting to `$XDG_CACHE_HOME/huggingface`, else
    /// `~/.cache/huggingface`; `HF_ENDPOINT`; `HF_TOKEN` (legacy `HUGGING_FACE_HUB_TOKEN`), else the
    /// file `HF_TOKEN_PATH`, else `$HF_HOME/token` (what `huggingface-cli login` writes);
    /// `HF_HUB_OFFLINE` and `HF_HUB_DISABLE_PROGRESS_BARS` (true for 1, ON, YES or TRUE).
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`HubSettings::from_env`] with the variables read through `var` (empty values count as unset).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let is_true = |name: &str| var(name).is_some_and(|value| ["1", "ON", "YES", "TRUE"].contains(&value.trim().to_ascii_uppercase().as_str()));
        let home = var("HOME").or_else(|| var("USERPROFILE")).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("~"));
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".cache")).join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")).map(PathBuf::from).unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = var("HF_ENDPOINT").map(|e| e.trim().trim_end_matches('/').to_string()).unwrap_or_else(|| DEFAULT_HUB_ENDPOINT.to_string());
        let token = var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")).or_else(|| {
            let file = var("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| hf_home.join("token"));
            std::fs::read_to_string(file).ok()
        });
        let token = token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        HubSettings { cache_dir, endpoint, token, offline: is_true("HF_HUB_OFFLINE"), progress: !is_true("HF_HUB_DISABLE_PROGRESS_BARS") }
    }
}

/// The snapshot directory of `model` in the hub cache, downloading what it lacks.
///
/// A cached snapshot that holds the config, tokenizer files and every weight file is used as it
/// is, without the network (so a cached `main` is not checked for newer commits: pin `@<sha>`, or
/// remove the cached ref, to move). Otherwise, unless `settings.offline`, the files come from
/// `{endpoint}/{org}/{name}/resolve/{revision}/{file}` into huggingface_hub's layout (blobs,
/// snapshots/<commit> symlinks, refs/<revision>), so that transformers and huggingface-cli share
/// the cache: only the missing ones, in the snapshot of the commit the revision is at now.
/// A transfer that breaks off resumes from its `blobs/*.part` file, now or on the next run.
pub fn resolve_hub_model(model: &HubModelId, settings: &HubSettings) -> Result<PathBuf> {
    let cache = HubCacheRepo::new(&settings.cache_dir, model);
    let cached = cache.snapshot();
    if let Some(snapshot) = &cached {
        if snapshot_gaps(snapshot)?.is_empty() {
            return Ok(snapshot.clone());
        }
    }
    if settings.offline {
        return Err(ModelError::from(match cached {
            Some(snapshot) if snapshot.join(CONFIG_FILE).exists() => HubError::IncompleteInHubCache {
                id: model.to_string(),
                missing: snapshot_gaps(&snapshot)?.describe(),
                snapshot,
            },
            _ => HubError::NotInHubCache {
                id: model.to_string(),
                cache: settings.cache_dir.clone(),
            },
        }));
    }
    let lacking = match &cached {
        Some(snapshot) => format!("its snapshot {} lacks {}", snapshot.display(), snapshot_gaps(snapshot)?.describe()),
        None => format!("no snapshot of revision `{}`", model.revision),
    };
    HubDownload::new(model, settings, lacking)?.run(&cache)
}

/// `<cache>/models--org--name`, as huggingface_hub lays it out.
struct HubCacheRepo {
    dir: PathBuf,
    model: HubModelId,
}

impl HubCacheRepo {
    fn new(cache_dir: &Path, model: &HubModelId) -> Self {
        let dir = cache_dir.join(Repo::model(model.repo.clone()).folder_name());
        HubCacheRepo { dir, model: model.clone() }
    }

    /// The commit the revision names: itself for a full sha, else what refs/<revision> holds.
    fn commit(&self) -> Option<String> {
        if let Some(sha) = self.model.commit_sha() {
            return Some(sha.to_string());
        }
        let commit = std::fs::read_to_string(self.dir.join("refs").join(&self.model.revision)).ok()?;
        Some(commit.trim().to_string()).filter(|c| !c.is_empty())
    }

    fn snapshot(&self) -> Option<PathBuf> {
        self.commit().map(|commit| self.dir.join("snapshots").join(commit)).filter(|dir| dir.is_dir())
    }

    /// huggingface_hub's record that the repo has no `file` at the snapshot's commit.
    fn no_exist_marker(&self, snapshot: &Path, file: &str) -> PathBuf {
        let commit = snapshot.file_name().unwrap_or_default();
        self.dir.join(".no_exist").join(commit).join(file)
    }
}

/// What a snapshot directory lacks of a loadable model.
#[derive(Debug, Default)]
struct SnapshotGaps {
    /// Required files and index-named shards that are not there (or are dangling symlinks).
    files: Vec<String>,
    /// Neither model.safetensors nor its index is there, so which weight files it needs is unknown.
    weights_unknown: bool,
}

impl SnapshotGaps {
    fn is_empty(&self) -> bool {
        self.files.is_empty() && !self.weights_unknown
    }

    fn describe(&self) -> String {
        let mut parts = self.files.clone();
        if self.weights_unknown {
            parts.push(format!("weights ({SINGLE_FILE}, or {INDEX_FILE} and its shards)"));
        }
        parts.join(", ")
    }
}

fn snapshot_gaps(snapshot: &Path) -> Result<SnapshotGaps> {
    // exists() follows symlinks: a snapshot entry whose blob is gone counts as missing.
    let present = |file: &str| snapshot.join(file).exists();
    let mut gaps = SnapshotGaps { files: REQUIRED_HUB_FILES.iter().filter(|f| !present(f)).map(|f| f.to_string()).collect(), weights_unknown: false };
    if present(INDEX_FILE) {
        gaps.files.extend(index_shards(snapshot)?.into_iter().filter(|shard| !present(shard)));
    } else if !present(SINGLE_FILE) {
        gaps.weights_unknown = true;
    }
    Ok(gaps)
}

/// One download of the files a cached snapshot lacks, through hf-hub's blocking client.
struct HubDownload<'a> {
    model: &'a HubModelId,
    settings: &'a HubSettings,
    /// What the cache lacked, for the error when the hub cannot be reached.
    lacking: String,
    repo: ApiRepo,
}

impl<'a> HubDownload<'a> {
    fn new(model: &'a HubModelId, settings: &'a HubSettings, lacking: String) -> Result<Self> {
        let api = ApiBuilder::from_cache(hf_hub::Cache::new(settings.cache_dir.clone()))
            .with_endpoint(settings.endpoint.clone())
            .with_token(settings.token.clone())
            .with_progress(settings.progress)
            .with_retries(TRANSFER_RETRIES)
            .with_user_agent("forge", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| HubError::HubDownload {
                id: model.to_string(),
                file: CONFIG_FILE.into(),
                cache: settings.cache_dir.clone(),
                reason: format!("cannot set up the HTTP client: {e}"),
            })?;
        let repo = api.repo(Repo::with_revision(model.repo.clone(), RepoType::Model, model.revision.clone()));
        Ok(HubDownload { model, settings, lacking, repo })
    }

    fn run(&self, cache: &HubCacheRepo) -> Result<PathBuf> {
        // config.json comes from the hub even when cached: the response names the commit the
        // revision is at now, and every other file must come from that commit's snapshot (a
        // `main` that moved since the cache was filled must not mix two commits' files).
        let snapshot = self.fetch(CONFIG_FILE, None)?.parent().map(Path::to_path_buf).unwrap_or_default();
        let gaps = snapshot_gaps(&snapshot)?;
        for file in &gaps.files {
            self.fetch(file, Some(&snapshot))?;
        }
        if gaps.weights_unknown {
            // transformers' order: the single file, else the sharded index.
            match self.fetch(SINGLE_FILE, Some(&snapshot)) {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {
                    self.fetch(INDEX_FILE, Some(&snapshot)).map_err(|e| self.explain_missing_weights(e))?;
                }
                Err(e) => return Err(e),
            }
        }
        // Shards that the index (just fetched, or cached) names and that are not there yet.
        for shard in snapshot_gaps(&snapshot)?.files {
            self.fetch(&shard, Some(&snapshot))?;
        }
        for file in OPTIONAL_HUB_FILES {
            let marker = cache.no_exist_marker(&snapshot, file);
            if snapshot.join(file).exists() || marker.exists() {
                continue;
            }
            match self.fetch(file, Some(&snapshot)) {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {
                    // Best effort: without the marker the next download merely asks again.
                    if let Some(dir) = marker.parent() {
                        let _ = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&marker, b""));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let gaps = snapshot_gaps(&snapshot)?;
        if !gaps.is_empty() {
            return Err(self.download_error(CONFIG_FILE, format!("after the download {} still lacks {}", snapshot.display(), gaps.describe())));
        }
        Ok(snapshot)
    }

    /// Downloads `file` into the cache; with `snapshot`, it must land there (else the revision
    /// moved to another commit on the hub while this download ran).
    fn fetch(&self, file: &str, snapshot: Option<&Path>) -> Result<PathBuf> {
        tracing::info!(model = %self.model, file, endpoint = %self.settings.endpoint, "downloading from the Hugging Face hub");
        let path = self.repo.download(file).map_err(|e| self.classify(file, e))?;
        if let Some(snapshot) = snapshot {
            if path.parent() != Some(snapshot) {
                return Err(self.download_error(
                    file,
                    format!(
                        "revision `{}` moved to another commit on the hub during the download ({} instead of {}); run again to download that commit",
                        self.model.revision,
                        path.parent().unwrap_or(&path).display(),
                        snapshot.display()
                    ),
                ));
            }
        }
        Ok(path)
    }

    fn download_error(&self, file: &str, reason: String) -> ModelError {
        HubError::HubDownload { id: self.model.to_string(), file: file.to_string(), cache: self.settings.cache_dir.clone(), reason }.into()
    }

    /// hf-hub's error as what it means to the user: the hub not reachable, the hub saying no (with
    /// what to do about the status), or a local failure.
    fn classify(&self, file: &str, error: ApiError) -> ModelError {
        let request_error = match error {
            ApiError::RequestError(request_error) => request_error,
            ApiError::TooManyRetries(last) => {
                return self.download_error(file, format!("the transfer kept breaking off ({TRANSFER_RETRIES} retries, last: {last}); run again to resume it"))
            }
            ApiError::LockAcquisition(lock) => {
                return self.download_error(file, format!("another process holds {} (is it downloading the same file?); wait for it, or remove the lock file if no process is", lock.display()))
            }
            ApiError::InvalidResume => {
                return self.download_error(file, format!("a partial download (`*.part`) in {} is longer than the file: delete it and run again", self.blobs_dir().display()))
            }
            ApiError::MissingHeader(header) | ApiError::InvalidHeader(header) => {
                return self.download_error(
                    file,
                    format!("the response lacks a valid `{header}` header: is HF_ENDPOINT ({}) a Hugging Face hub, and is no proxy rewriting its responses?", self.settings.endpoint),
                )
            }
            other => return self.download_error(file, other.to_string()),
        };
        let reason = request_error.to_string();
        // ureq's error is either a status the server sent or a transport failure (DNS, connect,
        // TLS, proxy); methods are used rather than its variants so that ureq need not be a
        // direct dependency.
        let Some(response) = request_error.into_response() else {
            return HubError::HubUnreachable {
                id: self.model.to_string(),
                endpoint: self.settings.endpoint.clone(),
                cache: self.settings.cache_dir.clone(),
                lacking: self.lacking.clone(),
                reason,
            }
            .into();
        };
        let status = response.status();
        let error_code = response.header("x-error-code").map(str::to_string);
        let hint = self.refusal_hint(file, status, error_code.as_deref());
        HubError::HubRefused { id: self.model.to_string(), file: file.to_string(), endpoint: self.settings.endpoint.clone(), status, error_code, hint }.into()
    }

    fn refusal_hint(&self, file: &str, status: u16, error_code: Option<&str>) -> String {
        let (repo, revision) = (&self.model.repo, &self.model.revision);
        let not_local = if file == CONFIG_FILE { format!(" (nor is there a local directory `{}`)", self.model) } else { String::new() };
        match (status, error_code) {
            (404, Some("RevisionNotFound")) => format!("`{repo}` has no branch, tag or commit `{revision}`"),
            (401 | 403, _) | (404, Some("RepoNotFound" | "GatedRepo")) => {
                let access = if self.settings.token.is_some() {
                    "the token in use (HF_TOKEN, or the token file under HF_HOME) has no access to it: check that this account accepted the model's conditions on its hub page"
                } else {
                    "for a gated or private model accept its conditions on its hub page and set HF_TOKEN (or run `huggingface-cli login`)"
                };
                format!("`{repo}` does not exist{not_local}, or it is gated or private: check the id; {access}")
            }
            (404, _) if file == CONFIG_FILE => format!("`{repo}` at `{revision}` has no {CONFIG_FILE}{not_local}: is it a transformers model repo?"),
            (404, _) => format!("`{repo}` at `{revision}` has no `{file}`"),
            (416, _) => format!("a partial download (`*.part`) in {} does not fit the file: delete it and run again", self.blobs_dir().display()),
            (429, _) => "the hub is rate-limiting these requests: wait and run again (requests with HF_TOKEN get higher limits)".into(),
            (500..=599, _) => "the hub failed to serve it: run again later".into(),
            _ => "check HF_ENDPOINT and any proxy between here and the hub".into(),
        }
    }

    /// The error for a repo with neither weights layout, in place of the index's bare 404.
    fn explain_missing_weights(&self, error: ModelError) -> ModelError {
        match error {
            ModelError::Hub(hub) => match *hub {
                HubError::HubRefused { id, file, endpoint, status: 404, error_code, .. } => HubError::HubRefused {
                    hint: format!("`{}` has neither {SINGLE_FILE} nor {INDEX_FILE} at `{}`: only safetensors checkpoints are supported", self.model.repo, self.model.revision),
                    id,
                    file,
                    endpoint,
                    status: 404,
                    error_code,
                }
                .into(),
                other => other.into(),
            },
            other => other,
        }
    }

    fn blobs_dir(&self) -> PathBuf {
        HubCacheRepo::new(&self.settings.cache_dir, self.model).dir.join("blobs")
    }
}

/// The hub answered that the file is not in the repo (as opposed to any other failure).
fn is_not_found(error: &ModelError) -> bool {
    matches!(error, ModelError::Hub(hub) if matches!(&**hub, HubError::HubRefused { status: 404, error_code, .. } if error_code.as_deref().is_none_or(|code| code == "EntryNotFound")))
}

/// The shard file names `model.safetensors.index.json` in `dir` maps tensors to.
fn index_shards(dir: &Path) -> Result<BTreeSet<String>> {
    let index = dir.join(INDEX_FILE);
    let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
    let parsed: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::NotAModelDir { dir: dir.into(), reason: format!("{INDEX_FILE} is not valid JSON: {e}") })?;
    let map = parsed.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ModelError::NotAModelDir {
        dir: dir.into(),
        reason: format!("{INDEX_FILE} has no \"weight_map\" object"),
    })?;
    Ok(map.values().filter_map(|v| v.as_str()).map(str::to_string).collect())
}

/// The safetensors files of a model directory: the shards named by the index, else the single file.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.join(INDEX_FILE).is_file() {
        return index_shards(dir)?
            .into_iter()
            .map(|f| {
                let p = dir.join(&f);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(ModelError::NotAModelDir { dir: dir.into(), reason: format!("shard {f} named in {INDEX_FILE} is missing") })
                }
            })
            .collect();
    }
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ModelError::NotAModelDir {
        dir: dir.into(),
        reason: format!("neither {SINGLE_FILE} nor {INDEX_FILE} is there (only safetensors weights are supported)"),
    })
}

fn open(files: &[PathBuf]) -> Result<MmapedSafetensors> {
    for file in files {
        // SAFETY: the file is only read; a concurrent writer would corrupt the values, not memory safety of Rust objects we hand out (tensors are copied out below).
        unsafe { MmapedSafetensors::new(file) }
            .map_err(|e| ModelError::Safetensors { path: file.clone(), reason: e.to_string() })?;
    }
    // SAFETY: as above.
    unsafe { MmapedSafetensors::multi(files) }.map_err(|e| ModelError::Safetensors {
        path: files.first().cloned().unwrap_or_default(),
        reason: e.to_string(),
    })
}

/// The dtype the weights are stored in (that of the first tensor).
pub fn stored_dtype(dir: &Path) -> Result<DType> {
    let files = weight_files(dir)?;
    let st = open(&files)?;
    let tensors = st.tensors();
    let (_, view) = tensors
        .first()
        .ok_or_else(|| ModelError::Safetensors { path: files[0].clone(), reason: "it holds no tensors".into() })?;
    DType::try_from(view.dtype()).map_err(|e| ModelError::Safetensors { path: files[0].clone(), reason: e.to_string() })
}

/// Loads every parameter `config` implies from the directory's safetensors, converting to `dtype`.
pub fn load_params(dir: &Path, config: &Config, dtype: DType, device: &Device) -> Result<ParamStore> {
    let files = weight_files(dir)?;
    let st = open(&files)?;
    let mut entries = Vec::new();
    let expected = config.parameter_shapes();
    for (name, shape) in &expected {
        let tensor = st.load(name, device).map_err(|_| ModelError::MissingTensor {
            dir: dir.into(),
            name: name.clone(),
            hint: if name == "lm_head.weight" {
                "the checkpoint ties embeddings: set \"tie_word_embeddings\": true in config.json".into()
            } else {
                format!("is the checkpoint a Qwen3 model with {} layers?", config.num_hidden_layers)
            },
        })?;
        if tensor.dims() != shape.as_slice() {
            return Err(ModelError::ShapeMismatch { name: name.clone(), expected: shape.clone(), found: tensor.dims().to_vec() });
        }
        entries.push((name.clone(), Var::from_tensor(&tensor.to_dtype(dtype)?)?));
    }
    let known: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for (name, _) in st.tensors() {
        if !(known.contains(name.as_str()) || config.tie_word_embeddings && name == "lm_head.weight") {
            tracing::warn!(tensor = %name, dir = %dir.display(), "ignoring a tensor the Qwen3 config does not use");
        }
    }
    Ok(ParamStore::from_entries(entries))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn hub_ids_parse_with_and_without_revision() {
        let parse = |spec: &str| HubModelId::parse(spec).map(|m| (m.repo, m.revision));
        assert_eq!(parse("Qwen/Qwen3-0.6B"), Some(("Qwen/Qwen3-0.6B".into(), "main".into())));
        assert_eq!(parse("Qwen/Qwen3-0.6B@v1.0"), Some(("Qwen/Qwen3-0.6B".into(), "v1.0".into())));
        assert_eq!(parse("org/name@refs/pr/3"), Some(("org/name".into(), "refs/pr/3".into())));
        for path_like in ["model", "/data/model", "./runs/x", "../x/y", "a/b/c", "org/", "/name", "org/name@", "org/name@../../etc", "org/na me"] {
            assert_eq!(parse(path_like), None, "{path_like}");
        }
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(HubModelId::parse(&format!("o/n@{sha}")).unwrap().commit_sha(), Some(sha));
        assert_eq!(HubModelId::parse("o/n@0123abc").unwrap().commit_sha(), None);
        assert_eq!(HubModelId::parse("o/n@main").unwrap().to_string(), "o/n");
    }

    fn settings(vars: &[(&str, &str)]) -> HubSettings {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        HubSettings::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn hub_settings_follow_huggingface_hub_precedence() {
        let base = settings(&[("HOME", "/home/u")]);
        assert_eq!(base.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(base.endpoint, DEFAULT_HUB_ENDPOINT);
        assert!(!base.offline && base.progress && base.token.is_none());

        assert_eq!(settings(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")]).cache_dir, PathBuf::from("/xdg/huggingface/hub"));
        assert_eq!(settings(&[("HOME", "/home/u"), ("HF_HOME", "/hf")]).cache_dir, PathBuf::from("/hf/hub"));
        assert_eq!(settings(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/cache")]).cache_dir, PathBuf::from("/cache"));
        assert_eq!(settings(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "")]).cache_dir, PathBuf::from("/hf/hub"), "empty counts as unset");
        assert_eq!(settings(&[("HF_ENDPOINT", "http://mirror:8080/")]).endpoint, "http://mirror:8080");
        for (value, offline) in [("1", true), ("true", true), ("ON", true), ("yes", true), ("0", false), ("false", false), ("", false)] {
            assert_eq!(settings(&[("HF_HUB_OFFLINE", value)]).offline, offline, "HF_HUB_OFFLINE={value}");
        }
        assert!(!settings(&[("HF_HUB_DISABLE_PROGRESS_BARS", "1")]).progress);
    }

    #[test]
    fn token_comes_from_hf_token_else_the_login_file() {
        let home = tempfile::tempdir().unwrap();
        let hf_home = home.path().to_str().unwrap();
        assert_eq!(settings(&[("HF_HOME", hf_home)]).token, None);
        std::fs::write(home.path().join("token"), "hf_from_file\n").unwrap();
        assert_eq!(settings(&[("HF_HOME", hf_home)]).token.as_deref(), Some("hf_from_file"));
        assert_eq!(settings(&[("HF_HOME", hf_home), ("HF_TOKEN", "hf_from_env")]).token.as_deref(), Some("hf_from_env"));
        let elsewhere = home.path().join("elsewhere");
        std::fs::write(&elsewhere, "hf_from_path").unwrap();
        assert_eq!(settings(&[("HF_HOME", hf_home), ("HF_TOKEN_PATH", elsewhere.to_str().unwrap())]).token.as_deref(), Some("hf_from_path"));
    }
}
