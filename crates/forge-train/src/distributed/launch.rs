//! `--nproc-per-node N`: the single-node launcher (torchrun's `--standalone --nproc-per-node`).
//! Runs this same command line N times as workers of one run and waits for them; when one fails,
//! the others are stopped (they would wait for it forever) and the error names it.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

use crate::{Result, TrainError};

/// Whether this process should launch workers rather than be one: asked for more than one, and
/// not itself started by a launcher (torchrun's `WORLD_SIZE` is unset).
pub fn should_launch(nproc_per_node: usize) -> bool {
    nproc_per_node > 1 && std::env::var_os("WORLD_SIZE").is_none()
}

/// Starts `nproc_per_node` copies of the running program with its arguments and torchrun's
/// variables, rank 0 listening on a free loopback port; returns when all have succeeded.
pub fn run_local_workers(nproc_per_node: usize) -> Result<()> {
    let program = std::env::current_exe().map_err(|e| TrainError::Distributed(format!("cannot find the running program to start its workers: {e}")))?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| TrainError::Distributed(format!("no free loopback port for the workers to meet on: {e}")))?
        .port();
    tracing::info!(workers = nproc_per_node, port, "starting workers");
    let mut children: Vec<Child> = Vec::with_capacity(nproc_per_node);
    for rank in 0..nproc_per_node {
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
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc_per_node.to_string())
            .env("LOCAL_WORLD_SIZE", nproc_per_node.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn();
        match child {
            Ok(child) => children.push(child),
            Err(e) => {
                stop(&mut children);
                return Err(TrainError::Distributed(format!("starting worker {rank} ({}): {e}", program.display())));
            }
        }
    }
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
                failed.push(format!("rank {rank} ({status})"));
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

fn stop(children: &mut [Child]) {
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
