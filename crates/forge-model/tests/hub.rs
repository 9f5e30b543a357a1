//! `org/name[@revision]` models: lookup in a Hugging Face cache laid out as huggingface_hub writes
//! it, the offline and unreachable-hub errors, and downloads from a local HTTP server that answers
//! like the hub's `resolve` endpoint (this machine cannot reach huggingface.co).
//!
//! Every test passes its own [`HubSettings`] (a temporary cache, the endpoint): none reads or
//! writes the process environment or the user's ~/.cache/huggingface.
#![cfg(unix)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use common::model_dir;
use forge_model::weights::{resolve_hub_model, HubModelId, HubSettings};

const REPO: &str = "tiny-org/tiny-qwen3";
const COMMIT_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const COMMIT_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SHARD_3: &str = "model-00003-of-00004.safetensors";

fn id(spec: &str) -> HubModelId {
    HubModelId::parse(spec).unwrap_or_else(|| panic!("`{spec}` should parse as a hub id"))
}

fn settings(cache: &Path, endpoint: &str, offline: bool) -> HubSettings {
    HubSettings { cache_dir: cache.to_path_buf(), endpoint: endpoint.to_string(), token: None, offline, progress: false }
}

/// An endpoint where nothing listens: connecting is refused at once.
fn closed_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// ureq 2 (hf-hub's client) sends every request through a proxy named in the environment and
/// ignores NO_PROXY, so the local server is only reachable without one.
fn proxy_in_the_way() -> bool {
    let set = ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
        .iter()
        .find(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()));
    if let Some(name) = set {
        eprintln!("skipped: {name} is set, and hf-hub's HTTP client would send requests for 127.0.0.1 through it");
    }
    set.is_some()
}

fn fixture_files(fixture: &str) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(model_dir(fixture))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().into_string().unwrap(), std::fs::read(entry.path()).unwrap())
        })
        .collect()
}

/// The name the blob of `content` gets: the hub's etag for it, here a hash of the bytes.
fn etag(content: &[u8]) -> String {
    let mut hasher = DefaultHasher::new();
    content.hash(&mut hasher);
    format!("{:016x}{:08x}", hasher.finish(), content.len())
}

/// Writes `files` as huggingface_hub does: blobs/<etag>, snapshots/<commit>/<file> a relative
/// symlink to its blob.
fn cache_snapshot(cache: &Path, commit: &str, files: &BTreeMap<String, Vec<u8>>) -> PathBuf {
    let repo_dir = cache.join("models--tiny-org--tiny-qwen3");
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    for (name, content) in files {
        let blob = etag(content);
        std::fs::write(repo_dir.join("blobs").join(&blob), content).unwrap();
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&blob), snapshot.join(name)).unwrap();
    }
    snapshot
}

fn write_ref(cache: &Path, revision: &str, commit: &str) {
    let refs = cache.join("models--tiny-org--tiny-qwen3/refs");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join(revision), commit).unwrap();
}

fn read_ref(cache: &Path, revision: &str) -> Option<String> {
    std::fs::read_to_string(cache.join("models--tiny-org--tiny-qwen3/refs").join(revision)).ok()
}

fn without(mut files: BTreeMap<String, Vec<u8>>, names: &[&str]) -> BTreeMap<String, Vec<u8>> {
    for name in names {
        assert!(files.remove(*name).is_some(), "the fixture has no {name}");
    }
    files
}

fn assert_snapshot_holds(snapshot: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (name, content) in files {
        let on_disk = std::fs::read(snapshot.join(name)).unwrap_or_else(|e| panic!("{}/{name}: {e}", snapshot.display()));
        assert!(on_disk == *content, "{name} differs from what the hub served");
    }
    forge_model::load_weights(snapshot, DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("the snapshot does not load: {e}"));
}

// ---------------------------------------------------------------------------------------------
// A local server with the hub's `resolve` API.

/// One request the fake hub received: the file (with the revision it was asked at) and the
/// Range header.
#[derive(Debug, Clone)]
struct Logged {
    revision: String,
    file: String,
    range: Option<String>,
}

#[derive(Default)]
struct FakeRepo {
    /// revision (branch or tag) → commit
    refs: HashMap<String, String>,
    /// commit → files
    commits: HashMap<String, BTreeMap<String, Vec<u8>>>,
}

/// Answers `GET /{org}/{name}/resolve/{revision}/{file}` as huggingface.co does for what hf-hub
/// reads: `x-repo-commit`, `etag` (`x-linked-etag` for safetensors, as for LFS files), `Range`
/// requests with `206` and `Content-Range`, and `x-error-code` on 401/404.
struct FakeHub {
    endpoint: String,
    log: Arc<Mutex<Vec<Logged>>>,
}

impl FakeHub {
    fn start(repo: FakeRepo) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let server_log = Arc::clone(&log);
        // Serves until the test process exits; one connection at a time is all hf-hub uses.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = serve(stream, &repo, &server_log) {
                    eprintln!("fake hub: {e}");
                }
            }
        });
        FakeHub { endpoint, log }
    }

    fn take_log(&self) -> Vec<Logged> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    /// The files transferred (not the `bytes=0-0` metadata probes that precede each), in order.
    fn downloads(log: &[Logged]) -> Vec<String> {
        log.iter().filter(|r| r.range.as_deref() != Some("bytes=0-0")).map(|r| r.file.clone()).collect()
    }

    /// The files asked about (a probe, then the transfer unless the probe failed), in order.
    fn asked(log: &[Logged]) -> Vec<String> {
        let mut files: Vec<String> = log.iter().map(|r| r.file.clone()).collect();
        files.dedup();
        files
    }
}

fn serve(stream: TcpStream, repo: &FakeRepo, log: &Mutex<Vec<Logged>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or_default();
    let prefix = format!("/{REPO}/resolve/");
    let mut out = stream;
    let Some(rest) = path.strip_prefix(&prefix) else {
        return respond(&mut out, 401, &[("x-error-code", "RepoNotFound".into())], b"Repository not found");
    };
    let (revision, file) = rest.split_once('/').unwrap_or((rest, ""));
    let revision = revision.replace("%2F", "/");
    log.lock().unwrap().push(Logged { revision: revision.clone(), file: file.to_string(), range: range.clone() });
    let commit = repo.refs.get(&revision).cloned().unwrap_or(revision);
    let Some(files) = repo.commits.get(&commit) else {
        return respond(&mut out, 404, &[("x-error-code", "RevisionNotFound".into())], b"Revision not found");
    };
    let commit_header = ("x-repo-commit", commit.clone());
    let Some(content) = files.get(file) else {
        return respond(&mut out, 404, &[commit_header, ("x-error-code", "EntryNotFound".into())], b"Entry not found");
    };
    let tag = format!("\"{}\"", etag(content));
    let etag_header = if file.ends_with(".safetensors") { ("x-linked-etag", tag) } else { ("etag", tag) };
    let total = content.len();
    let Some(range) = range else {
        return respond(&mut out, 200, &[commit_header, etag_header], content);
    };
    let (start, end) = range.strip_prefix("bytes=").and_then(|r| r.split_once('-')).expect("hf-hub sends bytes=a-[b]");
    let start: usize = start.parse().unwrap();
    let end: usize = if end.is_empty() { total - 1 } else { end.parse::<usize>().unwrap().min(total - 1) };
    if start >= total {
        return respond(&mut out, 416, &[("content-range", format!("bytes */{total}"))], b"");
    }
    let content_range = ("content-range", format!("bytes {start}-{end}/{total}"));
    respond(&mut out, 206, &[commit_header, etag_header, content_range], &content[start..=end])
}

fn respond(out: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}

fn hub_with(commits: &[(&str, &str)], refs: &[(&str, &str)]) -> FakeHub {
    let mut repo = FakeRepo::default();
    for (commit, fixture) in commits {
        repo.commits.insert(commit.to_string(), fixture_files(fixture));
    }
    for (revision, commit) in refs {
        repo.refs.insert(revision.to_string(), commit.to_string());
    }
    FakeHub::start(repo)
}

// ---------------------------------------------------------------------------------------------
// Cache lookup: no network when the cache holds the model.

#[test]
fn cached_main_branch_tag_and_sha_resolve_without_the_network() {
    let cache = tempfile::tempdir().unwrap();
    let snapshot_a = cache_snapshot(cache.path(), COMMIT_A, &fixture_files("gqa4-tied-f32"));
    let snapshot_b = cache_snapshot(cache.path(), COMMIT_B, &fixture_files("gqa2-sharded-f32"));
    write_ref(cache.path(), "main", COMMIT_A);
    write_ref(cache.path(), "v1", COMMIT_B);
    // Online, but with nothing listening: any request would fail the lookup.
    let online = settings(cache.path(), &closed_endpoint(), false);
    assert_eq!(resolve_hub_model(&id(REPO), &online).unwrap(), snapshot_a);
    assert_eq!(resolve_hub_model(&id(&format!("{REPO}@main")), &online).unwrap(), snapshot_a);
    assert_eq!(resolve_hub_model(&id(&format!("{REPO}@v1")), &online).unwrap(), snapshot_b);
    // A full sha names its snapshot directly: huggingface_hub writes no refs/<sha> file.
    assert_eq!(resolve_hub_model(&id(&format!("{REPO}@{COMMIT_B}")), &online).unwrap(), snapshot_b);
    let offline = settings(cache.path(), &closed_endpoint(), true);
    assert_eq!(resolve_hub_model(&id(&format!("{REPO}@{COMMIT_A}")), &offline).unwrap(), snapshot_a);
    assert_snapshot_holds(&snapshot_b, &fixture_files("gqa2-sharded-f32"));
}

/// Planning reads a cached snapshot's config.json alone: a snapshot without weights has one, a
/// repo not in the cache (or a revision not cached) has none.
#[test]
fn a_cached_config_is_found_without_the_weights() {
    let cache = tempfile::tempdir().unwrap();
    assert_eq!(forge_model::weights::cached_hub_config(&id(REPO), cache.path()), None);
    let snapshot = cache_snapshot(cache.path(), COMMIT_A, &without(fixture_files("gqa2-sharded-f32"), &[SHARD_3]));
    write_ref(cache.path(), "main", COMMIT_A);
    assert_eq!(forge_model::weights::cached_hub_config(&id(REPO), cache.path()), Some(snapshot.join("config.json")));
    assert_eq!(forge_model::weights::cached_hub_config(&id(&format!("{REPO}@v2")), cache.path()), None);
}

#[test]
fn offline_without_the_model_names_the_cache_and_hf_hub_offline() {
    let cache = tempfile::tempdir().unwrap();
    let offline = settings(cache.path(), &closed_endpoint(), true);
    let err = resolve_hub_model(&id("tiny-org/absent"), &offline).unwrap_err().to_string();
    for needle in ["`tiny-org/absent`", &cache.path().display().to_string(), "HF_HUB_OFFLINE", "huggingface-cli download tiny-org/absent"] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }

    // Cached at main, asked for at a revision the cache has no ref for.
    cache_snapshot(cache.path(), COMMIT_A, &fixture_files("gqa4-tied-f32"));
    write_ref(cache.path(), "main", COMMIT_A);
    let err = resolve_hub_model(&id(&format!("{REPO}@v2")), &offline).unwrap_err().to_string();
    assert!(err.contains(&format!("`{REPO}@v2`")) && err.contains("--revision v2") && err.contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn offline_partial_cache_names_each_missing_file() {
    let cache = tempfile::tempdir().unwrap();
    let snapshot = cache_snapshot(cache.path(), COMMIT_A, &without(fixture_files("gqa2-sharded-f32"), &[SHARD_3, "tokenizer.json"]));
    write_ref(cache.path(), "main", COMMIT_A);
    // A snapshot entry whose blob is gone (an interrupted `rm`, a pruned blob) is missing too.
    let shard_1 = snapshot.join("model-00001-of-00004.safetensors");
    std::fs::remove_file(std::fs::canonicalize(&shard_1).unwrap()).unwrap();
    let err = resolve_hub_model(&id(REPO), &settings(cache.path(), &closed_endpoint(), true)).unwrap_err().to_string();
    for needle in [SHARD_3, "model-00001-of-00004.safetensors", "tokenizer.json", &snapshot.display().to_string(), "HF_HUB_OFFLINE"] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    assert!(!err.contains("model-00002-of-00004"), "a present shard was named missing: {err}");
}

#[test]
fn unreachable_hub_fails_at_once_naming_id_endpoint_cache_and_hf_hub_offline() {
    let cache = tempfile::tempdir().unwrap();
    let endpoint = closed_endpoint();
    let started = Instant::now();
    let err = resolve_hub_model(&id(REPO), &settings(cache.path(), &endpoint, false)).unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    for needle in [&format!("`{REPO}`"), &endpoint, &cache.path().display().to_string(), "HF_HUB_OFFLINE", "no snapshot of revision `main`"] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }

    // With a partial cache the error says what is missing from it.
    cache_snapshot(cache.path(), COMMIT_A, &without(fixture_files("gqa2-sharded-f32"), &[SHARD_3]));
    write_ref(cache.path(), "main", COMMIT_A);
    let err = resolve_hub_model(&id(REPO), &settings(cache.path(), &endpoint, false)).unwrap_err().to_string();
    assert!(err.contains(SHARD_3) && err.contains(&endpoint) && err.contains("HF_HUB_OFFLINE"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Downloads.

#[test]
fn downloads_a_sharded_model_into_the_huggingface_hub_cache_layout() {
    if proxy_in_the_way() {
        return;
    }
    let hub = hub_with(&[(COMMIT_A, "gqa2-sharded-f32")], &[("main", COMMIT_A)]);
    let cache = tempfile::tempdir().unwrap();
    let online = settings(cache.path(), &hub.endpoint, false);
    let snapshot = resolve_hub_model(&id(REPO), &online).unwrap();
    assert_eq!(snapshot, cache.path().join("models--tiny-org--tiny-qwen3/snapshots").join(COMMIT_A));
    assert_snapshot_holds(&snapshot, &fixture_files("gqa2-sharded-f32"));
    assert_eq!(read_ref(cache.path(), "main").as_deref(), Some(COMMIT_A));
    // Snapshot entries are symlinks into blobs/, named by the etag (x-linked-etag for LFS files).
    let shard = fixture_files("gqa2-sharded-f32").remove(SHARD_3).unwrap();
    assert!(std::fs::symlink_metadata(snapshot.join(SHARD_3)).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::canonicalize(snapshot.join(SHARD_3)).unwrap(), std::fs::canonicalize(cache.path().join("models--tiny-org--tiny-qwen3/blobs").join(etag(&shard))).unwrap());
    // The repo has no chat_template.jinja: recorded as huggingface_hub does, so it is not asked for again.
    assert!(cache.path().join("models--tiny-org--tiny-qwen3/.no_exist").join(COMMIT_A).join("chat_template.jinja").is_file());

    let log = hub.take_log();
    let downloads = FakeHub::downloads(&log);
    assert_eq!(downloads.iter().filter(|f| f.starts_with("model-0000")).count(), 4, "{downloads:?}");
    // transformers' order: the single file first; the index after its 404.
    let asked = FakeHub::asked(&log);
    let single = asked.iter().position(|f| f == "model.safetensors");
    let index = asked.iter().position(|f| f == "model.safetensors.index.json");
    assert!(single < index && !downloads.contains(&"model.safetensors".to_string()), "{asked:?}");

    // A complete cache is used without asking the hub anything.
    assert_eq!(resolve_hub_model(&id(REPO), &online).unwrap(), snapshot);
    let log = hub.take_log();
    assert!(log.is_empty(), "the cached model made requests: {log:?}");
}

#[test]
fn a_partial_cache_is_repaired_by_downloading_only_the_missing_files() {
    if proxy_in_the_way() {
        return;
    }
    let hub = hub_with(&[(COMMIT_A, "gqa2-sharded-f32")], &[("main", COMMIT_A)]);
    let cache = tempfile::tempdir().unwrap();
    cache_snapshot(cache.path(), COMMIT_A, &without(fixture_files("gqa2-sharded-f32"), &[SHARD_3]));
    write_ref(cache.path(), "main", COMMIT_A);
    let snapshot = resolve_hub_model(&id(REPO), &settings(cache.path(), &hub.endpoint, false)).unwrap();
    assert_snapshot_holds(&snapshot, &fixture_files("gqa2-sharded-f32"));
    // config.json names the commit main is at now; then the shard, and the one optional file the
    // snapshot neither has nor is known to lack.
    let log = hub.take_log();
    assert_eq!(FakeHub::asked(&log), ["config.json", SHARD_3, "chat_template.jinja"]);
    assert_eq!(FakeHub::downloads(&log), ["config.json", SHARD_3]);
}

#[test]
fn a_stale_partial_main_is_completed_from_the_commit_main_is_at_now() {
    if proxy_in_the_way() {
        return;
    }
    // The cache holds part of an older main (A); the hub's main has moved to B.
    let hub = hub_with(&[(COMMIT_A, "gqa2-sharded-f32"), (COMMIT_B, "gqa2-sharded-f32")], &[("main", COMMIT_B)]);
    let cache = tempfile::tempdir().unwrap();
    cache_snapshot(cache.path(), COMMIT_A, &without(fixture_files("gqa2-sharded-f32"), &[SHARD_3]));
    write_ref(cache.path(), "main", COMMIT_A);
    let snapshot = resolve_hub_model(&id(REPO), &settings(cache.path(), &hub.endpoint, false)).unwrap();
    assert!(snapshot.ends_with(COMMIT_B), "{}", snapshot.display());
    assert_snapshot_holds(&snapshot, &fixture_files("gqa2-sharded-f32"));
    assert_eq!(read_ref(cache.path(), "main").as_deref(), Some(COMMIT_B));
}

#[test]
fn a_pinned_revision_downloads_that_commit() {
    if proxy_in_the_way() {
        return;
    }
    let hub = hub_with(&[(COMMIT_A, "gqa4-tied-f32"), (COMMIT_B, "gqa2-sharded-f32")], &[("main", COMMIT_A), ("v1", COMMIT_B)]);
    let cache = tempfile::tempdir().unwrap();
    let online = settings(cache.path(), &hub.endpoint, false);

    let tagged = resolve_hub_model(&id(&format!("{REPO}@v1")), &online).unwrap();
    assert!(tagged.ends_with(COMMIT_B), "{}", tagged.display());
    assert_snapshot_holds(&tagged, &fixture_files("gqa2-sharded-f32"));
    assert_eq!(read_ref(cache.path(), "v1").as_deref(), Some(COMMIT_B));
    assert_eq!(read_ref(cache.path(), "main"), None, "a pinned download must not move main");
    assert!(hub.take_log().iter().all(|r| r.revision == "v1"));

    let by_sha = resolve_hub_model(&id(&format!("{REPO}@{COMMIT_A}")), &online).unwrap();
    assert!(by_sha.ends_with(COMMIT_A), "{}", by_sha.display());
    assert_snapshot_holds(&by_sha, &fixture_files("gqa4-tied-f32"));
    // Offline afterwards, both pins resolve from the cache.
    let offline = settings(cache.path(), &closed_endpoint(), true);
    assert_eq!(resolve_hub_model(&id(&format!("{REPO}@v1")), &offline).unwrap(), tagged);
    assert_eq!(resolve_hub_model(&id(&format!("{REPO}@{COMMIT_A}")), &offline).unwrap(), by_sha);
}

#[test]
fn an_interrupted_download_resumes_from_its_part_file() {
    if proxy_in_the_way() {
        return;
    }
    let hub = hub_with(&[(COMMIT_A, "gqa4-tied-f32")], &[("main", COMMIT_A)]);
    let cache = tempfile::tempdir().unwrap();
    let weights = fixture_files("gqa4-tied-f32").remove("model.safetensors").unwrap();
    // What a transfer killed half way leaves: blobs/<etag>.part with the first bytes.
    let blobs = cache.path().join("models--tiny-org--tiny-qwen3/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let half = weights.len() / 2;
    std::fs::write(blobs.join(format!("{}.part", etag(&weights))), &weights[..half]).unwrap();

    let snapshot = resolve_hub_model(&id(REPO), &settings(cache.path(), &hub.endpoint, false)).unwrap();
    assert_snapshot_holds(&snapshot, &fixture_files("gqa4-tied-f32"));
    let log = hub.take_log();
    let weight_requests: Vec<_> = log.iter().filter(|r| r.file == "model.safetensors").map(|r| r.range.clone()).collect();
    assert_eq!(weight_requests, [Some("bytes=0-0".to_string()), Some(format!("bytes={half}-"))], "{log:?}");
}

#[test]
fn hub_refusals_say_what_to_do() {
    if proxy_in_the_way() {
        return;
    }
    let mut no_tokenizer = FakeRepo::default();
    no_tokenizer.commits.insert(COMMIT_A.into(), without(fixture_files("gqa4-tied-f32"), &["tokenizer.json"]));
    no_tokenizer.refs.insert("main".into(), COMMIT_A.into());
    let hub = FakeHub::start(no_tokenizer);
    let cache = tempfile::tempdir().unwrap();
    let online = settings(cache.path(), &hub.endpoint, false);

    let err = resolve_hub_model(&id("tiny-org/absent"), &online).unwrap_err().to_string();
    assert!(err.contains("HTTP 401 (RepoNotFound)") && err.contains("does not exist") && err.contains("HF_TOKEN"), "{err}");
    let err = resolve_hub_model(&id(&format!("{REPO}@no-such-branch")), &online).unwrap_err().to_string();
    assert!(err.contains("has no branch, tag or commit `no-such-branch`"), "{err}");
    let err = resolve_hub_model(&id(REPO), &online).unwrap_err().to_string();
    assert!(err.contains("HTTP 404 (EntryNotFound)") && err.contains("has no `tokenizer.json`"), "{err}");
}
