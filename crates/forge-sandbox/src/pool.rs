//! A pool of sandboxes for one spec: a released sandbox is reset (processes killed, git checkout
//! reset and cleaned, shell state and editor history forgotten) and handed out again instead of
//! creating a new container.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::error::Result;
use crate::runtime::{Runtime, SandboxSpec};
use crate::sandbox::Sandbox;

/// Statistics of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolStats {
    pub created: u64,
    pub reused: u64,
    pub discarded: u64,
}

/// Reuses containers of one spec.
#[derive(Clone)]
pub struct SandboxPool {
    rt: Runtime,
    spec: SandboxSpec,
    max_idle: usize,
    inner: Arc<Mutex<(Vec<Sandbox>, PoolStats)>>,
}

impl SandboxPool {
    /// A pool keeping at most `max_idle` idle containers. Reaps containers of dead runs first.
    pub async fn new(rt: Runtime, spec: SandboxSpec, max_idle: usize) -> Result<Self> {
        rt.image_info(&spec.image).await?;
        let reaped = rt.reap_stale().await?;
        if reaped > 0 {
            tracing::info!(reaped, "removed sandboxes left by crashed runs");
        }
        Ok(SandboxPool {
            rt,
            spec,
            max_idle,
            inner: Arc::new(Mutex::new((Vec::new(), PoolStats::default()))),
        })
    }

    /// An idle sandbox if there is one, else a new one.
    pub async fn acquire(&self) -> Result<Sandbox> {
        let idle = {
            let mut g = self.inner.lock().await;
            let s = g.0.pop();
            if s.is_some() {
                g.1.reused += 1;
            } else {
                g.1.created += 1;
            }
            s
        };
        match idle {
            Some(s) => Ok(s),
            None => self.rt.create(&self.spec).await,
        }
    }

    /// Resets `sandbox` and keeps it for reuse; one that cannot be reset (or beyond `max_idle`)
    /// is removed.
    pub async fn release(&self, mut sandbox: Sandbox) -> Result<()> {
        let full = self.inner.lock().await.0.len() >= self.max_idle;
        if full {
            self.inner.lock().await.1.discarded += 1;
            return sandbox.remove().await;
        }
        match sandbox.reset().await {
            Ok(()) => {
                self.inner.lock().await.0.push(sandbox);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(container = %sandbox.id(), error = %e, "sandbox reset failed; removing it");
                self.inner.lock().await.1.discarded += 1;
                sandbox.remove().await
            }
        }
    }

    pub async fn stats(&self) -> PoolStats {
        self.inner.lock().await.1
    }

    pub async fn idle(&self) -> usize {
        self.inner.lock().await.0.len()
    }

    /// Removes every idle container.
    pub async fn drain(&self) -> Result<()> {
        let idle: Vec<Sandbox> = std::mem::take(&mut self.inner.lock().await.0);
        for mut s in idle {
            s.remove().await?;
        }
        Ok(())
    }
}
