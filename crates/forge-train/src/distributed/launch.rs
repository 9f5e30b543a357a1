//! `--nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P]`: torchrun's
//! static launcher. On each node it runs this same command line N times as workers of one run
//! (global rank = R × N + local rank) and waits for them; when one fails, the others on the node
//! are stopped (they would wait for it forever) and the error names it. One node: rank 0 listens
//! on a free loopback port unless told otherwise.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

use crate::{Result, TrainError};

/// Where this node's workers fit in the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    pub nproc_per_node: usize,
    pub nnodes: usize,
    pub node_rank: usize,
    /// Node 0's address (loopback for one node).
    pub master_addr: String,
    /// Rank 0's port; `None`: a free one (one node only).
    pub master_port: Option<u16>,
}

impl LaunchPlan {
    /// N workers on this machine alone.
    pub fn local(nproc_per_node: usize) -> Self {
        Self { nproc_per_node, nnodes: 1, node_rank: 0, master_addr: "127.0.0.1".into(), master_port: None }
    }

    /// Whether this process should launch workers rather than be one: more than one asked for,
    /// and not itself started by a launcher (torchrun's `WORLD_SIZE` is unset).
    pub fn wants_launch(&self) -> bool {
        self.nproc_per_node * self.nnodes > 1 && std::env::var_os("WORLD_SIZE").is_none()
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Distributed(m));
        if self.nproc_per_node == 0 || self.nnodes == 0 {
            return bad("--nproc-per-node and --nnodes must be at least 1".into());
        }
        if self.node_rank >= self.nnodes {
            return bad(format!("--node-rank {} but --nnodes {}: node ranks are 0..{}", self.node_rank, self.nnodes, self.nnodes));
        }
        if self.nnodes > 1 && self.master_port.is_none() {
            return bad(format!(
                "--nnodes {} needs --master-addr (node 0's address) and --master-port, the same on every node",
                self.nnodes
            ));
        }
        Ok(())
    }
}

/// Starts this node's workers: copies of the running program with its arguments and torchrun's
/// variables; returns when all have succeeded.
pub fn run_workers(plan: &LaunchPlan) -> Result<()> {
    plan.validate()?;
    let program = std::env::current_exe().map_err(|e| TrainError::Distributed(format!("cannot find the running program to start its workers: {e}")))?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let port = match plan.master_port {
        Some(port) => port,
        None => TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| TrainError::Distributed(format!("no free loopback port for the workers to meet on: {e}")))?
            .port(),
    };
    let world_size = plan.nproc_per_node * plan.nnodes;
    // like torchrun's OMP_NUM_THREADS: workers sharing a machine share its cores, unless told otherwise
    let threads = match std::env::var_os("RAYON_NUM_THREADS") {
        Some(_) => None,
        None => Some(threads_per_worker(std::thread::available_parallelism().map_or(1, |n| n.get()), plan.nproc_per_node)),
    };
    if let Some(threads) = threads {
        tracing::info!(threads, "CPU threads per worker (set RAYON_NUM_THREADS to choose)");
    }
    tracing::info!(workers = plan.nproc_per_node, node = plan.node_rank, world_size, master = %format!("{}:{port}", plan.master_addr), "starting workers");
    let mut children: Vec<Child> = Vec::with_capacity(plan.nproc_per_node);
    for local_rank in 0..plan.nproc_per_node {
        let rank = plan.node_rank * plan.nproc_per_node + local_rank;
        let mut command = Command::new(&program);
        // SAFETY: prctl is async-signal-safe; a worker must not outlive a launcher that was killed
        // (it would train on, holding its GPU, waiting for peers that are gone)
        unsafe {
            command.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        let child = command
            .args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", local_rank.to_string())
            .env("WORLD_SIZE", world_size.to_string())
            .env("LOCAL_WORLD_SIZE", plan.nproc_per_node.to_string())
            .env("MASTER_ADDR", &plan.master_addr)
            .env("MASTER_PORT", port.to_string())
            .envs(threads.map(|t| ("RAYON_NUM_THREADS", t.to_string())))
            .spawn();
        match child {
            Ok(child) => children.push(child),
            Err(e) => {
                stop(&mut children);
                return Err(TrainError::Distributed(format!("starting worker {rank} ({}): {e}", program.display())));
            }
        }
    }
    let first_rank = plan.node_rank * plan.nproc_per_node;
    let mut running: Vec<bool> = vec![true; children.len()];
    while running.iter().any(|&r| r) {
        // every failure seen in one round is named: the first to die takes the others down within
        // moments (they lose their link to it), so "which died first" is not observable here
        let mut failed = Vec::new();
        for (rank, child) in children.iter_mut().enumerate() {
            if !running[rank] {
                continue;
            }
            let status = child.try_wait().map_err(|e| TrainError::Distributed(format!("waiting for worker {rank}: {e}")))?;
            let Some(status) = status else { continue };
            running[rank] = false;
            if !status.success() {
                failed.push(format!("rank {} ({status})", first_rank + rank));
            }
        }
        if !failed.is_empty() {
            stop(&mut children);
            return Err(TrainError::Distributed(format!(
                "worker {} failed; the other workers were stopped — the workers' own errors are printed above",
                failed.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The machine's cores shared out among its workers (at least one each).
fn threads_per_worker(cores: usize, workers: usize) -> usize {
    (cores / workers.max(1)).max(1)
}

fn stop(children: &mut [Child]) {
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_checked_before_anything_starts() {
        assert!(LaunchPlan::local(2).validate().is_ok());
        let two_nodes = LaunchPlan { nnodes: 2, node_rank: 1, ..LaunchPlan::local(8) };
        let err = two_nodes.validate().unwrap_err().to_string();
        assert!(err.contains("--nnodes 2 needs --master-addr"), "{err}");
        assert!(LaunchPlan { master_port: Some(29500), ..two_nodes.clone() }.validate().is_ok());
        let err = LaunchPlan { node_rank: 2, master_port: Some(29500), ..two_nodes }.validate().unwrap_err().to_string();
        assert!(err.contains("--node-rank 2 but --nnodes 2"), "{err}");
        assert!(LaunchPlan::local(0).validate().is_err());
    }

    #[test]
    fn workers_share_the_cores() {
        assert_eq!(threads_per_worker(16, 8), 2);
        assert_eq!(threads_per_worker(2, 2), 1);
        assert_eq!(threads_per_worker(2, 4), 1, "never zero threads");
        assert_eq!(threads_per_worker(7, 2), 3);
    }
}
