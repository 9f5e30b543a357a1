//! No container outlives the `forge` process that made it: every container this process creates
//! is registered until it is removed, SIGINT/SIGTERM remove the registered ones before the
//! process exits ([`remove_on_signal`]), and containers of processes that died anyway (SIGKILL,
//! a crash, a power cut) are found by their owner labels and removed by the next command's
//! [`crate::Runtime::reap_stale`].
//!
//! The registry is process-wide (not per [`crate::Runtime`]) so it covers every container,
//! whichever library created it (agent workspaces, grading containers, pools).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::engine::EngineSpec;
use crate::runtime::Runtime;

/// Live containers: id → their engine.
static LIVE: Mutex<BTreeMap<String, EngineSpec>> = Mutex::new(BTreeMap::new());
/// Container creations in flight (their id is not known yet).
static CREATING: AtomicUsize = AtomicUsize::new(0);
/// Set once a signal arrived: containers created from now on are removed at once.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// How long the signal handler tries to remove containers before exiting anyway.
const CLEANUP_LIMIT: Duration = Duration::from_secs(60);

/// Marks a container creation in flight until dropped.
pub(crate) struct Creating;

impl Creating {
    pub(crate) fn start() -> Self {
        CREATING.fetch_add(1, Ordering::SeqCst);
        Creating
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        CREATING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Records a new container. `false` when the process is shutting down: the caller must remove
/// the container instead of using it.
pub(crate) fn register(id: &str, engine: &EngineSpec) -> bool {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), engine.clone());
    !SHUTTING_DOWN.load(Ordering::SeqCst)
}

/// Once a signal arrived, never returns: the signal handler is removing the containers and
/// will exit the process, so no new container may be started (and the rest of the command must
/// not run on and end the process with its own status first).
pub(crate) async fn wait_if_shutting_down() {
    if SHUTTING_DOWN.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
}

pub(crate) fn unregister(id: &str) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
}

/// Ids of the containers this process created and has not removed.
pub fn live_containers() -> Vec<String> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
}

/// Installs (once per process) a handler of SIGINT and SIGTERM that removes every registered
/// container, waits for creations in flight (and removes what they made), then exits with
/// 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM). Returns once the handler is in
/// place. The handler runs on a thread of its own, so it works whatever the rest of the
/// process is blocked on.
pub fn remove_on_signal() -> std::io::Result<()> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    std::thread::Builder::new().name("forge-signals".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
            let (mut interrupt, mut terminate) = match streams {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let code = tokio::select! {
                _ = interrupt.recv() => 130,
                _ = terminate.recv() => 143,
            };
            SHUTTING_DOWN.store(true, Ordering::SeqCst);
            let n = live_containers().len();
            eprintln!("forge: interrupted; removing {n} container(s) before exiting");
            if tokio::time::timeout(CLEANUP_LIMIT, remove_all()).await.is_err() {
                eprintln!("forge: containers still left after {CLEANUP_LIMIT:?}: {:?}; the next forge command reaps them", live_containers());
            }
            std::process::exit(code);
        });
    })?;
    ready_rx.recv().map_err(|_| std::io::Error::other("the signal thread ended before it was ready"))?
}

/// Removes registered containers until none is registered and no creation is in flight.
async fn remove_all() {
    loop {
        let live: Vec<(String, EngineSpec)> = LIVE.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if live.is_empty() && CREATING.load(Ordering::SeqCst) == 0 {
            return;
        }
        for (id, engine) in live {
            match Runtime::connect_engine(&engine).await {
                Ok(rt) => match rt.remove_container(&id).await {
                    Ok(()) => {}
                    Err(e) => {
                        eprintln!("forge: could not remove container {id}: {e}");
                        unregister(&id);
                    }
                },
                Err(e) => {
                    eprintln!("forge: could not reach the engine to remove {id}: {e}");
                    unregister(&id);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
