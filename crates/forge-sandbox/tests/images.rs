//! Pulls through the real Docker Engine from a real registry: a minimal Docker Registry HTTP API
//! v2 server on 127.0.0.1 (an insecure registry Docker accepts without TLS) that serves
//! `forge/base:py3` as exported by `docker save`, as schema-2 manifests with gzipped layers.
//!
//! Under `CI=true` a missing engine or image FAILS the tests; elsewhere they are skipped loudly.
//! Every image a test pulls has a name unique to the run and is removed at the end.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use forge_sandbox::testing::require_docker;
use forge_sandbox::*;
use sha2::{Digest, Sha256};

const BASE: &str = DEFAULT_IMAGE;
const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The base image's layers, gzipped, and its config: made once per test binary (`docker save`
/// and compressing 200 MB take a few seconds).
struct Exported {
    /// (digest, gzipped bytes) in the manifest's order.
    layers: Vec<(String, bytes::Bytes)>,
    config: serde_json::Value,
}

fn exported() -> &'static Exported {
    static CELL: OnceLock<Exported> = OnceLock::new();
    CELL.get_or_init(|| {
        let out = std::process::Command::new("docker").args(["save", BASE]).output().expect("docker save runs");
        assert!(out.status.success(), "docker save {BASE}: {}", String::from_utf8_lossy(&out.stderr));
        let mut files: HashMap<String, Vec<u8>> = HashMap::new();
        let mut archive = tar::Archive::new(&out.stdout[..]);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
        // Docker 20.10's legacy layout: manifest.json → <id>.json config, <dir>/layer.tar layers
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        let config = serde_json::from_slice(&files[manifest[0]["Config"].as_str().unwrap()]).unwrap();
        let layers = manifest[0]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&files[l.as_str().unwrap()]).unwrap();
                let gz = gz.finish().unwrap();
                (sha256(&gz), bytes::Bytes::from(gz))
            })
            .collect();
        Exported { layers, config }
    })
}

/// What the registry serves and what it saw.
#[derive(Default)]
struct Registry {
    blobs: HashMap<String, bytes::Bytes>,
    /// "repo:tag" → (manifest bytes, its digest).
    manifests: HashMap<String, (bytes::Bytes, String)>,
    requests: AtomicUsize,
    manifest_requests: AtomicUsize,
    /// Pull attempts (each starts with a `GET /v2/` ping) seen so far.
    pings: AtomicUsize,
    /// The first this many pull attempts get 429 Too Many Requests for every manifest request
    /// (the engine asks twice per attempt: HEAD, then GET).
    rate_limited_attempts: usize,
}

impl Registry {
    /// Serves the base image as `repo:tag`, made a distinct image by a label `variant` in its
    /// config (same layers, another config digest, so another image id); returns the
    /// manifest's digest.
    fn add(&mut self, repo: &str, tag: &str, variant: &str) -> String {
        let ex = exported();
        let mut config = ex.config.clone();
        config["config"]["Labels"]["forge.test.variant"] = variant.into();
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = sha256(&config);
        let layers: Vec<serde_json::Value> = ex
            .layers
            .iter()
            .map(|(d, b)| serde_json::json!({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": b.len(), "digest": d}))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": config_digest},
            "layers": layers,
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let digest = sha256(&manifest);
        self.blobs.insert(config_digest, config.into());
        for (d, b) in &ex.layers {
            self.blobs.insert(d.clone(), b.clone());
        }
        self.manifests.insert(format!("{repo}:{tag}"), (manifest.clone().into(), digest.clone()));
        self.manifests.insert(format!("{repo}:{digest}"), (manifest.into(), digest.clone()));
        digest
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string()))
        .unwrap()
}

async fn serve(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    reg.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    let head = req.method() == Method::HEAD;
    let ok = |content_type: &str, digest: &str, data: &bytes::Bytes| {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, data.len())
            .header("Docker-Content-Digest", digest)
            .body(if head { Body::empty() } else { Body::from(data.clone()) })
            .unwrap()
    };
    if path == "/v2/" || path == "/v2" {
        reg.pings.fetch_add(1, Ordering::SeqCst);
        return Response::builder().status(StatusCode::OK).header("Docker-Distribution-API-Version", "registry/2.0").body(Body::from("{}")).unwrap();
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found");
    };
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        reg.manifest_requests.fetch_add(1, Ordering::SeqCst);
        if reg.pings.load(Ordering::SeqCst) <= reg.rate_limited_attempts {
            return error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", "You have reached your pull rate limit.");
        }
        return match reg.manifests.get(&format!("{repo}:{reference}")) {
            Some((data, digest)) => ok(MANIFEST_V2, digest, data),
            None => error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown"),
        };
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        return match reg.blobs.get(digest) {
            Some(data) => ok("application/octet-stream", digest, data),
            None => error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown"),
        };
    }
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found")
}

/// A registry on a free port of 127.0.0.1, serving until the test's runtime ends.
async fn start_registry(reg: Registry) -> (String, Arc<Registry>) {
    let reg = Arc::new(reg);
    let app = axum::Router::new().fallback(serve).with_state(reg.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("127.0.0.1:{}", addr.port()), reg)
}

/// A repository name no other run uses.
fn unique_repo(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("forge-test/{test}-{}-{nanos}", std::process::id())
}

/// Removes the named images when the test ends, failed or not.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::process::Command::new("docker").args(["rmi", name]).output();
        }
    }
}

struct Ctx {
    rt: Runtime,
    _state: tempfile::TempDir,
}

async fn ctx(test: &str) -> Option<Ctx> {
    let rt = require_docker(test, BASE).await?;
    let state = tempfile::tempdir().unwrap();
    let rt = rt.with_image_state(state.path().join("images.json"));
    // made before any registry starts, outside the async runtime's hot path
    tokio::task::block_in_place(exported);
    Some(Ctx { rt, _state: state })
}

fn state_json(rt: &Runtime) -> serde_json::Value {
    std::fs::read_to_string(rt.image_state_path()).map(|t| serde_json::from_str(&t).unwrap()).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_missing_records_the_digest_and_the_second_call_stays_local() {
    let Some(c) = ctx("pull_missing").await else { return };
    let repo = unique_repo("pull");
    let mut reg = Registry::default();
    let digest = reg.add(&repo, "v1", "pull");
    let (addr, reg) = start_registry(reg).await;
    let image = format!("{addr}/{repo}:v1");
    let _cleanup = Cleanup(vec![image.clone()]);

    let seen = std::sync::Mutex::new(Vec::new());
    let t = Instant::now();
    let record = c.rt.ensure_image(&image, PullPolicy::Missing, |p| seen.lock().unwrap().push(p.clone())).await.unwrap();
    eprintln!("pulled {image} in {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(record.digest.as_deref(), Some(format!("{addr}/{repo}@{digest}").as_str()));
    assert!(record.id.starts_with("sha256:") && record.size > 0, "{record:?}");
    let last = seen.lock().unwrap().last().cloned().expect("progress was reported");
    assert_eq!(last.layers_total, exported().layers.len());
    assert_eq!(last.layers_done, last.layers_total);
    let state = state_json(&c.rt);
    assert_eq!(state["images"][&image]["id"], record.id.as_str(), "{state}");

    let requests = reg.requests.load(Ordering::SeqCst);
    assert!(requests > 0);
    let again = c.rt.ensure_image(&image, PullPolicy::Missing, |_| panic!("no pull expected")).await.unwrap();
    assert_eq!(again, record);
    let never = c.rt.ensure_image(&image, PullPolicy::Never, |_| panic!("no pull expected")).await.unwrap();
    assert_eq!(never, record);
    assert_eq!(reg.requests.load(Ordering::SeqCst), requests, "a present image does not hit the registry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_pulls_are_retried_with_backoff() {
    let Some(c) = ctx("rate_limit").await else { return };
    let repo = unique_repo("ratelimit");
    let mut reg = Registry::default();
    reg.add(&repo, "v1", "ratelimit");
    reg.rate_limited_attempts = 2;
    let (addr, reg) = start_registry(reg).await;
    let image = format!("{addr}/{repo}:v1");
    let _cleanup = Cleanup(vec![image.clone()]);

    let t = Instant::now();
    let record = c.rt.ensure_image(&image, PullPolicy::Missing, |_| {}).await.unwrap();
    let took = t.elapsed();
    eprintln!("pulled {image} after two rate-limited attempts in {:.1} s ({} manifest requests)", took.as_secs_f64(), reg.manifest_requests.load(Ordering::SeqCst));
    assert!(record.digest.is_some());
    assert_eq!(reg.pings.load(Ordering::SeqCst), 3, "two rate-limited attempts, then one that pulled");
    // two backoffs of at least 0.5 s and 1 s (jitter halves them at most)
    assert!(took >= Duration::from_millis(1500), "retried without backing off: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_manifest_fails_fast_with_the_fix() {
    let Some(c) = ctx("missing_manifest").await else { return };
    let repo = unique_repo("missing");
    let (addr, reg) = start_registry(Registry::default()).await;
    let image = format!("{addr}/{repo}:nope");
    let _cleanup = Cleanup(vec![image.clone()]);

    let t = Instant::now();
    let e = c.rt.ensure_image(&image, PullPolicy::Missing, |_| {}).await.unwrap_err();
    let took = t.elapsed();
    let text = e.to_string();
    eprintln!("{text} ({:.2} s)", took.as_secs_f64());
    assert!(matches!(e, SandboxError::ImagePull { attempts: 1, .. }), "{e:?}");
    assert!(text.contains(&image) && text.contains("forge images load"), "{text}");
    assert!(took < Duration::from_secs(5), "not retried: {took:?}");
    assert!(reg.manifest_requests.load(Ordering::SeqCst) <= 2, "asked once (per endpoint)");
    assert!(state_json(&c.rt)["images"].get(&image).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_with_a_missing_image_fails_without_asking_the_registry() {
    let Some(c) = ctx("never").await else { return };
    let repo = unique_repo("never");
    let mut reg = Registry::default();
    reg.add(&repo, "v1", "never");
    let (addr, reg) = start_registry(reg).await;
    let image = format!("{addr}/{repo}:v1");
    let _cleanup = Cleanup(vec![image.clone()]);

    let e = c.rt.ensure_image(&image, PullPolicy::Never, |_| {}).await.unwrap_err();
    assert!(matches!(e, SandboxError::ImageMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("forge images load"), "{e}");
    assert_eq!(reg.requests.load(Ordering::SeqCst), 0);
    // images forge builds itself are never asked of a registry, whatever the policy
    let e = c.rt.ensure_image("forge/no-such-image:nope", PullPolicy::Always, |_| {}).await.unwrap_err();
    assert!(matches!(e, SandboxError::ImageMissing { .. }) && e.to_string().contains("scripts/setup/build-base-image.sh"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_the_least_recently_used_pulled_image_only() {
    let Some(c) = ctx("prune").await else { return };
    let repo = unique_repo("prune");
    let mut reg = Registry::default();
    reg.add(&repo, "a", "prune-a");
    reg.add(&repo, "b", "prune-b");
    let (addr, _reg) = start_registry(reg).await;
    let (a, b) = (format!("{addr}/{repo}:a"), format!("{addr}/{repo}:b"));
    let _cleanup = Cleanup(vec![a.clone(), b.clone()]);

    let base = c.rt.ensure_image(BASE, PullPolicy::Missing, |_| {}).await.unwrap();
    let ra = c.rt.ensure_image(&a, PullPolicy::Missing, |_| {}).await.unwrap();
    let rb = c.rt.ensure_image(&b, PullPolicy::Missing, |_| {}).await.unwrap();
    assert_ne!(ra.id, rb.id);
    // `a` used again after `b` was pulled: `b` is now the least recently used
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.rt.ensure_image(&a, PullPolicy::Missing, |_| {}).await.unwrap();
    let state = state_json(&c.rt);
    assert!(state["images"].get(BASE).is_none(), "an image forge did not pull is not recorded: {state}");

    let report = c.rt.prune_images(ra.size.max(rb.size) + 1).await.unwrap();
    eprintln!("{report:?}");
    assert_eq!(report.removed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), [b.as_str()]);
    assert_eq!(report.freed_bytes, rb.size);
    assert_eq!(report.remaining_bytes, ra.size);
    assert!(c.rt.inspect_record(&b).await.unwrap().is_none(), "{b} removed");
    assert!(c.rt.inspect_record(&a).await.unwrap().is_some(), "{a} kept");
    assert_eq!(c.rt.inspect_record(BASE).await.unwrap().map(|r| r.id), Some(base.id), "the base image stays");
    let state = state_json(&c.rt);
    assert!(state["images"].get(&b).is_none() && state["images"].get(&a).is_some(), "{state}");

    // a budget of 0 removes `a` too, and never the base image
    let report = c.rt.prune_images(0).await.unwrap();
    assert_eq!(report.removed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), [a.as_str()]);
    assert!(c.rt.inspect_record(BASE).await.unwrap().is_some());
}
