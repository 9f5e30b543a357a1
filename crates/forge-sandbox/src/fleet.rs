//! A fleet of Docker engines: each sandbox is placed on an engine with room that has (or gets)
//! its image, engines that stop answering are marked down and checked again with backoff, and
//! the counts of it all are kept for the run's metrics.
//!
//! The distribution mechanism is Docker's own remote API: no sandbox server runs anywhere. An
//! image reaches an engine that lacks it by streaming `docker save` from an engine that has it
//! into `docker load` (no registry needed), or, when no engine has it, by the engine's own pull.
//!
//! ```no_run
//! # async fn demo() -> forge_sandbox::Result<()> {
//! use forge_sandbox::{EngineSpec, Fleet, FleetOptions, Limits, PullPolicy, SandboxSpec};
//! let engines = vec!["unix:///var/run/docker.sock".parse::<EngineSpec>().unwrap(),
//!                    "tcp://10.0.0.2:2376,max_containers=80".parse().unwrap()];
//! let fleet = Fleet::connect(&engines, FleetOptions::default()).await?;
//! let place = fleet.place("forge/base:py3", &Limits::default(), PullPolicy::Missing).await?;
//! let sandbox = place.runtime().create(&SandboxSpec::new("forge/base:py3")).await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::engine::EngineSpec;
use crate::error::{Result, SandboxError};
use crate::images::PullPolicy;
use crate::runtime::{Limits, Runtime};

/// How a fleet watches its engines.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// A ping that takes longer than this counts as no answer.
    pub ping_timeout: Duration,
    /// How often engines that are up are pinged.
    pub check_interval: Duration,
    /// First and largest wait before a down engine is pinged again (doubling in between).
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a placement waits while every engine is down before it fails.
    pub all_down_timeout: Duration,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            ping_timeout: Duration::from_secs(5),
            check_interval: Duration::from_secs(10),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            all_down_timeout: Duration::from_secs(60),
        }
    }
}

/// What one engine did during a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineMetrics {
    pub endpoint: String,
    /// Answering when the metrics were taken.
    pub up: bool,
    /// Sandboxes placed on it, and the most that ran on it at once.
    pub containers: u64,
    pub peak_containers: usize,
    /// Images it received from another engine (`docker save` → `docker load`), their bytes and
    /// seconds.
    pub image_transfers: u64,
    pub transfer_bytes: u64,
    pub transfer_seconds: f64,
    /// Times it was found not answering (marked down).
    pub failures: u64,
}

/// What the fleet did during a run: per engine, and the placements that had to wait for room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetMetrics {
    pub engines: Vec<EngineMetrics>,
    pub placement_waits: u64,
    pub placement_wait_seconds: f64,
}

impl FleetMetrics {
    pub fn failures(&self) -> u64 {
        self.engines.iter().map(|e| e.failures).sum()
    }

    pub fn image_transfers(&self) -> u64 {
        self.engines.iter().map(|e| e.image_transfers).sum()
    }

    pub fn containers(&self) -> u64 {
        self.engines.iter().map(|e| e.containers).sum()
    }

    /// What happened after `earlier` (taken from the same fleet): counts subtracted, the state
    /// (up, peak) as now.
    pub fn since(&self, earlier: &FleetMetrics) -> FleetMetrics {
        let before = |endpoint: &str| earlier.engines.iter().find(|e| e.endpoint == endpoint);
        FleetMetrics {
            engines: self
                .engines
                .iter()
                .map(|e| match before(&e.endpoint) {
                    None => e.clone(),
                    Some(b) => EngineMetrics {
                        endpoint: e.endpoint.clone(),
                        up: e.up,
                        containers: e.containers - b.containers,
                        peak_containers: e.peak_containers,
                        image_transfers: e.image_transfers - b.image_transfers,
                        transfer_bytes: e.transfer_bytes - b.transfer_bytes,
                        transfer_seconds: e.transfer_seconds - b.transfer_seconds,
                        failures: e.failures - b.failures,
                    },
                })
                .collect(),
            placement_waits: self.placement_waits - earlier.placement_waits,
            placement_wait_seconds: self.placement_wait_seconds - earlier.placement_wait_seconds,
        }
    }

    /// Adds another process's metrics of the same engines (data-parallel workers each have a
    /// fleet): counts add up, an engine is up only if every process sees it up.
    pub fn add(&mut self, other: &FleetMetrics) {
        for e in &other.engines {
            match self.engines.iter_mut().find(|m| m.endpoint == e.endpoint) {
                Some(m) => {
                    m.up &= e.up;
                    m.containers += e.containers;
                    m.peak_containers += e.peak_containers;
                    m.image_transfers += e.image_transfers;
                    m.transfer_bytes += e.transfer_bytes;
                    m.transfer_seconds += e.transfer_seconds;
                    m.failures += e.failures;
                }
                None => self.engines.push(e.clone()),
            }
        }
        self.placement_waits += other.placement_waits;
        self.placement_wait_seconds += other.placement_wait_seconds;
    }
}

#[derive(Debug)]
struct EngineState {
    up: bool,
    /// Why it was last marked down.
    last_error: Option<String>,
    down_since: Option<Instant>,
    next_check: Instant,
    backoff: Duration,
    /// Room in use by the sandboxes placed on it.
    containers: usize,
    cpus: f64,
    memory: u64,
    /// Images known to be present (an image found missing is not cached: it may arrive).
    images: std::collections::HashSet<String>,
    metrics: EngineMetrics,
}

#[derive(Debug)]
struct Engine {
    index: usize,
    spec: EngineSpec,
    runtime: Runtime,
    state: Mutex<EngineState>,
}

impl Engine {
    fn state(&self) -> std::sync::MutexGuard<'_, EngineState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a container with these limits could ever fit (on an idle engine).
    fn could_fit(&self, cpus: f64, memory: u64) -> bool {
        self.spec.cpus.is_none_or(|c| cpus <= c + 1e-9) && self.spec.memory_bytes.is_none_or(|m| memory <= m)
    }

    fn has_room(&self, state: &EngineState, cpus: f64, memory: u64) -> bool {
        self.spec.max_containers.is_none_or(|m| state.containers < m)
            && self.spec.cpus.is_none_or(|c| state.cpus + cpus <= c + 1e-9)
            && self.spec.memory_bytes.is_none_or(|m| state.memory + memory <= m)
    }

    /// Load as the fraction of its tightest bound in use (containers when it has no bound).
    fn load(&self, state: &EngineState) -> f64 {
        let mut load: f64 = 0.0;
        if let Some(m) = self.spec.max_containers {
            load = load.max(state.containers as f64 / m as f64);
        }
        if let Some(c) = self.spec.cpus {
            load = load.max(state.cpus / c);
        }
        if let Some(m) = self.spec.memory_bytes {
            load = load.max(state.memory as f64 / m as f64);
        }
        if load == 0.0 {
            // unbounded engines: spread by count
            load = state.containers as f64 * 1e-6;
        }
        load
    }

    async fn has_image(&self, image: &str) -> Result<bool> {
        if self.state().images.contains(image) {
            return Ok(true);
        }
        match self.runtime.image_info(image).await {
            Ok(_) => {
                self.state().images.insert(image.to_string());
                Ok(true)
            }
            Err(SandboxError::ImageMissing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// (engine index, image).
type TransferKey = (usize, String);

struct Inner {
    engines: Vec<Arc<Engine>>,
    options: FleetOptions,
    /// Signalled when room frees up or an engine comes back.
    changed: tokio::sync::Notify,
    /// One transfer of an image to an engine at a time.
    transfers: Mutex<HashMap<TransferKey, Arc<tokio::sync::Mutex<()>>>>,
    placement_waits: AtomicU64,
    placement_wait_micros: AtomicU64,
    /// Set when a placement gave up on every engine being down; later placements then fail at
    /// once until an engine answers again (a run stops instead of waiting out each instance).
    gave_up: std::sync::atomic::AtomicBool,
}

/// Sandboxes spread over several Docker engines. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("engines", &self.endpoints()).finish()
    }
}

/// Room reserved on one engine for one sandbox, held while the sandbox lives; dropping it gives
/// the room back.
#[derive(Debug)]
pub struct Placement {
    engine: Arc<Engine>,
    fleet: Weak<Inner>,
    cpus: f64,
    memory: u64,
}

impl Placement {
    /// The engine to create the sandbox on.
    pub fn runtime(&self) -> &Runtime {
        &self.engine.runtime
    }

    pub fn endpoint(&self) -> &str {
        &self.engine.spec.endpoint
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        {
            let mut state = self.engine.state();
            state.containers = state.containers.saturating_sub(1);
            state.cpus = (state.cpus - self.cpus).max(0.0);
            state.memory = state.memory.saturating_sub(self.memory);
        }
        if let Some(fleet) = self.fleet.upgrade() {
            fleet.changed.notify_waiters();
        }
    }
}

impl Fleet {
    /// Connects to every engine. Engines that do not answer start marked down (and are checked
    /// again with backoff); none answering is an error naming each one's problem.
    pub async fn connect(engines: &[EngineSpec], options: FleetOptions) -> Result<Fleet> {
        let engines = EngineSpec::fleet_or_env(engines).map_err(|detail| SandboxError::DockerUnreachable { endpoint: "[sandbox] hosts".into(), detail })?;
        let mut connections = futures_util::future::join_all(engines.iter().map(Runtime::connect_engine)).await;
        if connections.iter().all(|c| c.is_err()) {
            if let [Err(only)] = connections.as_mut_slice() {
                // one engine: its own error says best what is wrong
                return Err(std::mem::replace(only, SandboxError::NoEngineUp { engines: String::new(), waited: Duration::ZERO }));
            }
            let problems: Vec<String> = engines.iter().zip(&connections).filter_map(|(spec, c)| c.as_ref().err().map(|e| format!("{}: {e}", spec.endpoint))).collect();
            return Err(SandboxError::NoEngineUp { engines: problems.join("; "), waited: Duration::ZERO });
        }
        let engines = engines
            .iter()
            .zip(connections)
            .map(|(spec, connection)| match connection {
                Ok(rt) => Ok((rt, None)),
                Err(e) => {
                    // an engine down at the start gets a client now and is used once it answers
                    tracing::warn!(engine = %spec.endpoint, error = %e, "Docker engine down at the start; checking it again with backoff");
                    Ok((Runtime::unconnected(spec)?, Some(e.to_string())))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::assemble(engines, options))
    }

    /// A fleet of one engine already connected (tests, single-engine tools). Must be called
    /// within a tokio runtime (it starts the health checks).
    pub fn of(runtime: Runtime) -> Fleet {
        Self::assemble(vec![(runtime, None)], FleetOptions::default())
    }

    /// The fleet of `engines` (with the error of each that is down), its health checks started.
    fn assemble(engines: Vec<(Runtime, Option<String>)>, options: FleetOptions) -> Fleet {
        let now = Instant::now();
        let engines = engines
            .into_iter()
            .enumerate()
            .map(|(index, (runtime, error))| {
                Arc::new(Engine {
                    index,
                    spec: runtime.engine().clone(),
                    state: Mutex::new(EngineState {
                        up: error.is_none(),
                        down_since: error.as_ref().map(|_| now),
                        last_error: error,
                        next_check: now + options.first_backoff,
                        backoff: options.first_backoff,
                        containers: 0,
                        cpus: 0.0,
                        memory: 0,
                        images: Default::default(),
                        metrics: EngineMetrics { endpoint: runtime.endpoint().to_string(), ..Default::default() },
                    }),
                    runtime,
                })
            })
            .collect();
        let inner = Arc::new(Inner {
            engines,
            options,
            changed: tokio::sync::Notify::new(),
            transfers: Mutex::new(HashMap::new()),
            placement_waits: AtomicU64::new(0),
            placement_wait_micros: AtomicU64::new(0),
            gave_up: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(health_checks(Arc::downgrade(&inner)));
        Fleet { inner }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.inner.engines.iter().map(|e| e.spec.endpoint.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.inner.engines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.engines.is_empty()
    }

    /// The engines that answer now.
    pub fn runtimes_up(&self) -> Vec<Runtime> {
        self.inner.engines.iter().filter(|e| e.state().up).map(|e| e.runtime.clone()).collect()
    }

    /// An engine that answers now (for work done once per run, like building bundled images,
    /// which then reach the others by transfer).
    pub fn any_runtime(&self) -> Result<Runtime> {
        self.runtimes_up().into_iter().next().ok_or_else(|| self.all_down(Duration::ZERO))
    }

    /// Reserves room for a sandbox of `image` with `limits` on the engine that has room and
    /// already holds the image (the least loaded such), else on the least loaded engine with
    /// room, which then gets the image from a peer or by pull. Waits while every engine is full;
    /// fails when no engine could ever fit the limits, or when every engine has been down for
    /// [`FleetOptions::all_down_timeout`].
    pub async fn place(&self, image: &str, limits: &Limits, pull: PullPolicy) -> Result<Placement> {
        let inner = &self.inner;
        let cpus = limits.nano_cpus as f64 / 1e9;
        let memory = limits.memory_bytes.max(0) as u64;
        if !inner.engines.iter().any(|e| e.could_fit(cpus, memory)) {
            return Err(SandboxError::NoEngineFits { cpus, memory_bytes: memory, engines: self.endpoints().join(", ") });
        }
        let started = Instant::now();
        let mut all_down_since: Option<Instant> = None;
        let mut waited = false;
        loop {
            let changed = inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let up: Vec<Arc<Engine>> = inner.engines.iter().filter(|e| e.state().up && e.could_fit(cpus, memory)).cloned().collect();
            if up.is_empty() {
                let since = *all_down_since.get_or_insert_with(Instant::now);
                if inner.gave_up.load(Ordering::SeqCst) || since.elapsed() >= inner.options.all_down_timeout {
                    inner.gave_up.store(true, Ordering::SeqCst);
                    return Err(self.all_down(since.elapsed()));
                }
            } else {
                all_down_since = None;
                // which engines with room hold the image (asked outside the lock)
                let mut candidates = Vec::new();
                for e in &up {
                    let load = {
                        let state = e.state();
                        e.has_room(&state, cpus, memory).then(|| e.load(&state))
                    };
                    let Some(load) = load else { continue };
                    match e.has_image(image).await {
                        Ok(has) => candidates.push((e.clone(), has, load)),
                        Err(_) if self.confirm_down(&e.runtime).await => {}
                        // it answers, but not about this image: let the placement find out
                        Err(_) => candidates.push((e.clone(), false, load)),
                    }
                }
                candidates.sort_by(|(_, a_has, a_load), (_, b_has, b_load)| b_has.cmp(a_has).then(a_load.total_cmp(b_load)));
                for (engine, _, _) in candidates {
                    let reserved = {
                        let mut state = engine.state();
                        let ok = state.up && engine.has_room(&state, cpus, memory);
                        if ok {
                            state.containers += 1;
                            state.cpus += cpus;
                            state.memory += memory;
                        }
                        ok
                    };
                    if !reserved {
                        continue;
                    }
                    let waited_seconds = started.elapsed().as_secs_f64();
                    let placement = Placement { engine: engine.clone(), fleet: Arc::downgrade(inner), cpus, memory };
                    match self.provision(&engine, image, pull).await {
                        Ok(()) => {
                            let mut state = engine.state();
                            state.metrics.containers += 1;
                            state.metrics.peak_containers = state.metrics.peak_containers.max(state.containers);
                            drop(state);
                            if waited {
                                inner.placement_waits.fetch_add(1, Ordering::Relaxed);
                                inner.placement_wait_micros.fetch_add((waited_seconds * 1e6) as u64, Ordering::Relaxed);
                            }
                            return Ok(placement);
                        }
                        Err(e) => {
                            // the image is missing everywhere (or cannot be fetched): the caller's
                            // error, unless the engine died meanwhile, then try another
                            if self.confirm_down(placement.runtime()).await {
                                drop(placement);
                                break;
                            }
                            return Err(e);
                        }
                    }
                }
            }
            waited = true;
            // room frees up, an engine returns, or a periodic recheck
            let _ = tokio::time::timeout(Duration::from_millis(500), changed).await;
        }
    }

    /// Gets `image` onto `engine`: nothing if it has it, else from a peer that has it, else the
    /// engine's own pull under `pull`.
    async fn provision(&self, engine: &Arc<Engine>, image: &str, pull: PullPolicy) -> Result<()> {
        if engine.has_image(image).await? {
            return Ok(());
        }
        let lock = {
            let mut transfers = self.inner.transfers.lock().unwrap_or_else(|e| e.into_inner());
            transfers.entry((engine.index, image.to_string())).or_default().clone()
        };
        let _one_at_a_time = lock.lock().await;
        if engine.has_image(image).await? {
            return Ok(());
        }
        for source in self.inner.engines.iter().filter(|e| e.index != engine.index && e.state().up) {
            if !matches!(source.has_image(image).await, Ok(true)) {
                continue;
            }
            match transfer(&source.runtime, &engine.runtime, image).await {
                Ok((bytes, seconds)) => {
                    let mut state = engine.state();
                    state.images.insert(image.to_string());
                    state.metrics.image_transfers += 1;
                    state.metrics.transfer_bytes += bytes;
                    state.metrics.transfer_seconds += seconds;
                    tracing::info!(image, from = %source.spec.endpoint, to = %engine.spec.endpoint, mb = bytes >> 20, seconds, "image moved between engines");
                    return Ok(());
                }
                Err(e) => tracing::warn!(image, from = %source.spec.endpoint, to = %engine.spec.endpoint, error = %e, "image transfer failed; trying another way"),
            }
        }
        engine.runtime.ensure_image(image, pull, |_| {}).await?;
        engine.state().images.insert(image.to_string());
        Ok(())
    }

    /// After a failure on `runtime`'s engine: whether the engine itself stopped answering (then
    /// it is marked down, and the work belongs on another engine).
    pub async fn confirm_down(&self, runtime: &Runtime) -> bool {
        let Some(engine) = self.inner.engines.iter().find(|e| e.spec.endpoint == runtime.endpoint()) else { return false };
        match engine.runtime.ping(self.inner.options.ping_timeout).await {
            Ok(()) => false,
            Err(e) => {
                mark_down(&self.inner, engine, &e);
                true
            }
        }
    }

    fn all_down(&self, waited: Duration) -> SandboxError {
        let engines = self
            .inner
            .engines
            .iter()
            .map(|e| format!("{}: {}", e.spec.endpoint, e.state().last_error.clone().unwrap_or_else(|| "down".into())))
            .collect::<Vec<_>>()
            .join("; ");
        SandboxError::NoEngineUp { engines, waited }
    }

    /// The counts so far.
    pub fn metrics(&self) -> FleetMetrics {
        FleetMetrics {
            engines: self
                .inner
                .engines
                .iter()
                .map(|e| {
                    let state = e.state();
                    EngineMetrics { up: state.up, ..state.metrics.clone() }
                })
                .collect(),
            placement_waits: self.inner.placement_waits.load(Ordering::Relaxed),
            placement_wait_seconds: self.inner.placement_wait_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// Containers of this process running per engine now.
    pub fn containers_now(&self) -> BTreeMap<String, usize> {
        self.inner.engines.iter().map(|e| (e.spec.endpoint.clone(), e.state().containers)).collect()
    }
}

fn mark_down(inner: &Inner, engine: &Engine, error: &str) {
    let mut state = engine.state();
    if state.up {
        tracing::warn!(engine = %engine.spec.endpoint, error, "Docker engine stopped answering; marked down");
        state.up = false;
        state.down_since = Some(Instant::now());
        state.metrics.failures += 1;
        state.backoff = inner.options.first_backoff;
        state.next_check = Instant::now() + state.backoff;
        // what it held may be gone with it (a restarted engine, a new disk)
        state.images.clear();
    }
    state.last_error = Some(error.to_string());
}

/// Pings engines that are up every `check_interval` and down ones with doubling backoff, for as
/// long as the fleet exists.
async fn health_checks(fleet: Weak<Inner>) {
    let mut last_round = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(inner) = fleet.upgrade() else { return };
        let now = Instant::now();
        let check_up = now.duration_since(last_round) >= inner.options.check_interval;
        if check_up {
            last_round = now;
        }
        let due: Vec<Arc<Engine>> = inner
            .engines
            .iter()
            .filter(|e| {
                let state = e.state();
                if state.up { check_up } else { state.next_check <= now }
            })
            .cloned()
            .collect();
        let timeout = inner.options.ping_timeout;
        drop(inner);
        let answers = futures_util::future::join_all(due.iter().map(|e| e.runtime.ping(timeout))).await;
        let Some(inner) = fleet.upgrade() else { return };
        for (engine, answer) in due.iter().zip(answers) {
            match answer {
                Ok(()) => {
                    if !engine.state().up {
                        // before placements may use it again: what the outage cut off goes
                        if let Err(e) = engine.runtime.remove_lost_sandboxes().await {
                            tracing::warn!(engine = %engine.spec.endpoint, error = %e, "could not remove the sandboxes the outage cut off");
                        }
                    }
                    let mut state = engine.state();
                    if !state.up {
                        tracing::info!(engine = %engine.spec.endpoint, down_s = state.down_since.map(|t| t.elapsed().as_secs_f64()), "Docker engine answers again; back in the fleet");
                        state.up = true;
                        state.down_since = None;
                        drop(state);
                        inner.gave_up.store(false, Ordering::SeqCst);
                        inner.changed.notify_waiters();
                    }
                }
                Err(e) => {
                    mark_down(&inner, engine, &e);
                    let mut state = engine.state();
                    state.next_check = Instant::now() + state.backoff;
                    state.backoff = (state.backoff * 2).min(inner.options.max_backoff);
                }
            }
        }
    }
}

/// Streams `docker save image` from `from` into `docker load` on `to`; returns the bytes moved
/// and the seconds it took.
async fn transfer(from: &Runtime, to: &Runtime, image: &str) -> Result<(u64, f64)> {
    let started = Instant::now();
    let source = from.docker().clone().with_timeout(crate::images::LONG_REQUEST);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::result::Result<bytes::Bytes, std::io::Error>>(8);
    let moved = Arc::new(AtomicU64::new(0));
    let name = image.to_string();
    let counter = moved.clone();
    // the export runs as its own task so that its stream need not outlive a borrow of `from`
    let export = tokio::spawn(async move {
        let mut chunks = source.export_image(&name);
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(bytes) => {
                    counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    if tx.send(Ok(bytes)).await.is_err() {
                        // the load ended early: its error says why
                        return Ok(());
                    }
                }
                Err(e) => {
                    let message = crate::runtime::error_chain(&e);
                    let _ = tx.send(Err(std::io::Error::other(message.clone()))).await;
                    return Err(message);
                }
            }
        }
        Ok(())
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let loaded = to.load_stream(chunks).await;
    let exported = export.await.map_err(|e| e.to_string()).and_then(|r| r);
    // a failed save truncates the load: the save's error is the cause
    let failure = match (exported, loaded) {
        (Err(e), _) => Some(format!("docker save on {}: {e}", from.endpoint())),
        (Ok(()), Err(e)) => Some(format!("docker load on {}: {e}", to.endpoint())),
        (Ok(()), Ok(_)) => None,
    };
    if let Some(detail) = failure {
        return Err(SandboxError::ImageTransfer { image: image.to_string(), detail });
    }
    // the load answered; the image must now be there under its name
    to.image_info(image).await?;
    Ok((moved.load(Ordering::Relaxed), started.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(spec: &str) -> Engine {
        let spec: EngineSpec = spec.parse().unwrap();
        Engine {
            index: 0,
            runtime: Runtime::unconnected(&spec).unwrap(),
            state: Mutex::new(EngineState {
                up: true,
                last_error: None,
                down_since: None,
                next_check: Instant::now(),
                backoff: Duration::from_secs(1),
                containers: 0,
                cpus: 0.0,
                memory: 0,
                images: Default::default(),
                metrics: EngineMetrics::default(),
            }),
            spec,
        }
    }

    #[tokio::test]
    async fn room_is_bounded_by_count_cpus_and_memory() {
        let e = engine("tcp://h:1,max_containers=3,cpus=4,memory=8G");
        let mut s = e.state();
        assert!(e.has_room(&s, 1.0, 2 << 30));
        s.containers = 3;
        assert!(!e.has_room(&s, 0.0, 0), "container count");
        s.containers = 1;
        s.cpus = 3.5;
        assert!(!e.has_room(&s, 1.0, 0), "CPUs");
        assert!(e.has_room(&s, 0.5, 0));
        s.cpus = 0.0;
        s.memory = 7 << 30;
        assert!(!e.has_room(&s, 0.0, 2 << 30), "memory");
        drop(s);
        assert!(!e.could_fit(5.0, 0) && !e.could_fit(1.0, 9 << 30) && e.could_fit(4.0, 8 << 30));
        let unbounded = engine("tcp://h:2");
        assert!(unbounded.has_room(&unbounded.state(), 1000.0, u64::MAX / 2));
    }

    #[tokio::test]
    async fn load_follows_the_tightest_bound() {
        let e = engine("tcp://h:1,max_containers=10,cpus=4");
        let mut s = e.state();
        s.containers = 2;
        s.cpus = 3.0;
        assert!((e.load(&s) - 0.75).abs() < 1e-9);
        drop(s);
        let unbounded = engine("tcp://h:2");
        let mut s = unbounded.state();
        let idle = unbounded.load(&s);
        s.containers = 5;
        assert!(unbounded.load(&s) > idle);
    }

    #[test]
    fn metrics_of_an_interval_and_of_several_processes() {
        let engine = |endpoint: &str, up, containers, failures| EngineMetrics { endpoint: endpoint.into(), up, containers, peak_containers: 3, image_transfers: containers / 2, transfer_bytes: 100 * containers, transfer_seconds: 1.0, failures };
        let before = FleetMetrics { engines: vec![engine("a", true, 4, 0), engine("b", true, 2, 0)], placement_waits: 1, placement_wait_seconds: 0.5 };
        let now = FleetMetrics { engines: vec![engine("a", true, 10, 0), engine("b", false, 3, 1)], placement_waits: 3, placement_wait_seconds: 2.0 };
        let step = now.since(&before);
        assert_eq!((step.engines[0].containers, step.engines[1].containers, step.failures()), (6, 1, 1));
        assert_eq!((step.placement_waits, step.engines[1].up), (2, false));
        assert_eq!(step.engines[0].transfer_bytes, 600);
        let mut all = step.clone();
        all.add(&FleetMetrics { engines: vec![engine("b", true, 5, 0), engine("c", true, 1, 0)], placement_waits: 1, placement_wait_seconds: 1.0 });
        assert_eq!(all.engines.len(), 3);
        assert_eq!((all.engines[1].containers, all.engines[1].up), (6, false), "up only if every process sees it up");
        assert_eq!((all.containers(), all.placement_waits), (6 + 6 + 1, 3));
    }

    #[tokio::test]
    async fn a_fleet_with_no_engine_answering_says_which_and_why() {
        let engines: Vec<EngineSpec> = vec!["tcp://127.0.0.1:1".parse().unwrap(), "unix:///nonexistent/docker.sock".parse().unwrap()];
        let e = Fleet::connect(&engines, FleetOptions::default()).await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("tcp://127.0.0.1:1") && text.contains("unix:///nonexistent/docker.sock"), "{text}");
        assert!(text.contains("every Docker engine"), "{text}");
    }
}
