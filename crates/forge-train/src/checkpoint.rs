//! Checkpoint directories `<root>/step-N/`, written atomically: the caller fills a temporary
//! sibling directory, which is fsynced and renamed into place, so a crash at any moment leaves
//! either no `step-N/` or a complete one. A `checkpoint.json` marker, written last, is what
//! makes a directory count as complete (it also guards against directories copied by hand).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// File inside every complete checkpoint directory.
pub const MARKER_FILE: &str = "checkpoint.json";
const MARKER_FORMAT: &str = "forge-checkpoint/1";
/// Temporary directories are hidden siblings: `.step-N.tmp-<pid>-<nanos>`.
const TEMP_PREFIX: &str = ".step-";

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format: String,
    step: u64,
    unix_time: u64,
}

#[derive(Debug, Clone)]
pub struct Checkpoints {
    root: PathBuf,
}

impl Checkpoints {
    /// Checkpoints under `root` (usually `<run dir>/checkpoints`); created on the first save.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn step_dir(&self, step: u64) -> PathBuf {
        self.root.join(format!("step-{step}"))
    }

    /// Writes checkpoint `step`: `write` receives an empty temporary directory to fill; when it
    /// succeeds the directory is made durable and renamed to `step-N/` (replacing an existing
    /// one). When it fails, the temporary directory is removed and no `step-N/` appears.
    pub fn save(&self, step: u64, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        let fail = |reason: String| TrainError::CheckpointWrite { step, dir: self.root.clone(), reason };
        fs::create_dir_all(&self.root).map_err(|e| fail(format!("creating the directory: {e}")))?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let tmp = self.root.join(format!("{TEMP_PREFIX}{step}.tmp-{}-{nanos}", std::process::id()));
        fs::create_dir(&tmp).map_err(|e| fail(format!("creating {}: {e}", tmp.display())))?;

        let filled = write(&tmp).and_then(|()| {
            let marker = Marker { format: MARKER_FORMAT.into(), step, unix_time: (nanos / 1_000_000_000) as u64 };
            let path = tmp.join(MARKER_FILE);
            fs::write(&path, serde_json::to_vec_pretty(&marker).expect("marker serialises"))
                .map_err(|e| TrainError::io(&path, e))?;
            sync_tree(&tmp)
        });
        if let Err(e) = filled {
            let _ = fs::remove_dir_all(&tmp);
            return Err(fail(e.to_string()));
        }

        let dest = self.step_dir(step);
        if dest.exists() {
            // Move the old one aside first: rename cannot replace a non-empty directory.
            let old = self.root.join(format!("{TEMP_PREFIX}{step}.tmp-replaced-{}-{nanos}", std::process::id()));
            fs::rename(&dest, &old).map_err(|e| fail(format!("moving the previous step-{step} aside: {e}")))?;
            let renamed = fs::rename(&tmp, &dest);
            if let Err(e) = renamed {
                let _ = fs::rename(&old, &dest);
                let _ = fs::remove_dir_all(&tmp);
                return Err(fail(format!("renaming into place: {e}")));
            }
            let _ = fs::remove_dir_all(&old);
        } else if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(fail(format!("renaming into place: {e}")));
        }
        sync_dir(&self.root).map_err(|e| fail(e.to_string()))?;
        tracing::info!(step, dir = %dest.display(), "checkpoint written");
        Ok(dest)
    }

    /// Where the workers of a run with sharded state write their shards of checkpoint `step`
    /// before rank 0 moves them into it (a temporary: removed by `remove_stale_temporaries`).
    pub fn shard_staging_dir(&self, step: u64) -> PathBuf {
        self.root.join(format!("{TEMP_PREFIX}{step}.tmp-shards"))
    }

    /// Complete checkpoints, oldest first.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(TrainError::io(&self.root, e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| TrainError::io(&self.root, e))?;
            let name = entry.file_name();
            let Some(step) = name.to_str().and_then(|n| n.strip_prefix("step-")).and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            let dir = entry.path();
            if is_complete(&dir, step) {
                found.push((step, dir));
            } else {
                tracing::warn!(dir = %dir.display(), "ignoring an incomplete checkpoint directory (no valid {MARKER_FILE})");
            }
        }
        found.sort();
        Ok(found)
    }

    /// The newest complete checkpoint.
    pub fn latest(&self) -> Result<Option<(u64, PathBuf)>> {
        Ok(self.list()?.pop())
    }

    /// Removes all but the newest `keep_last` complete checkpoints; returns the removed steps.
    /// Each is renamed to a temporary name before deletion, so a crash mid-way never leaves a
    /// partly deleted `step-N/`.
    pub fn prune(&self, keep_last: usize) -> Result<Vec<u64>> {
        let all = self.list()?;
        let excess = all.len().saturating_sub(keep_last);
        let mut removed = Vec::new();
        for (step, dir) in all.into_iter().take(excess) {
            let doomed = self.root.join(format!("{TEMP_PREFIX}{step}.tmp-pruned-{}", std::process::id()));
            fs::rename(&dir, &doomed).map_err(|e| TrainError::io(&dir, e))?;
            fs::remove_dir_all(&doomed).map_err(|e| TrainError::io(&doomed, e))?;
            removed.push(step);
        }
        if !removed.is_empty() {
            sync_dir(&self.root)?;
        }
        Ok(removed)
    }

    /// Deletes temporary directories left by interrupted saves or prunes (call at start-up,
    /// when no other process writes into this root).
    pub fn remove_stale_temporaries(&self) -> Result<usize> {
        let Ok(entries) = fs::read_dir(&self.root) else { return Ok(0) };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) && name.contains(".tmp-") {
                fs::remove_dir_all(entry.path()).map_err(|e| TrainError::io(&entry.path(), e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn is_complete(dir: &Path, step: u64) -> bool {
    let Ok(bytes) = fs::read(dir.join(MARKER_FILE)) else { return false };
    matches!(serde_json::from_slice::<Marker>(&bytes), Ok(m) if m.format == MARKER_FORMAT && m.step == step)
}

/// fsyncs every file and directory under `dir` (files first, then their directory).
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))? {
        let entry = entry.map_err(|e| TrainError::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| TrainError::io(&path, e))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|e| TrainError::io(&path, e))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| TrainError::io(dir, e))
}
