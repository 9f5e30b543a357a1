//! One process per run directory: `forge train`, `forge sample` and `forge eval` hold an
//! exclusive lock on `DIR/.forge.lock` while they write there, so a second `--resume` (or a
//! second run on the same directory) refuses at once, naming the holder, instead of two processes
//! interleaving checkpoints and logs. The lock is the OS's (`flock`, std's `File::try_lock`): it
//! goes with the process, however that ends, so a crash never leaves a stale lock behind.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file inside a run directory.
pub const LOCK_FILE: &str = ".forge.lock";

/// Held while alive; released when dropped or when the process ends.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RunLockError {
    #[error("{} is in use by another forge process (pid {holder}, holding {}): wait for it to end or stop it; two processes must not write one run", dir.display(), dir.join(LOCK_FILE).display())]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RunLock {
    /// Locks `dir` (created if missing) for this process; fails at once if another holds it.
    pub fn acquire(dir: &Path) -> Result<Self, RunLockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| RunLockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(RunLockError::Held { dir: dir.to_path_buf(), holder: if holder.is_empty() { "unknown".into() } else { holder.to_string() } });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // the holder's pid, for the message of the next one
        file.set_len(0).and_then(|()| file.rewind()).and_then(|()| write!(file, "{}", std::process::id())).and_then(|()| file.flush()).map_err(io)?;
        Ok(RunLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_run_directory_refuses_naming_the_holder_until_the_first_is_released() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let first = RunLock::acquire(&dir).unwrap();
        assert!(first.path().is_file());
        // a second open file description conflicts like a second process would
        let err = RunLock::acquire(&dir).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, RunLockError::Held { .. }), "{err:?}");
        assert!(message.contains(&format!("pid {}", std::process::id())) && message.contains(".forge.lock"), "{message}");
        drop(first);
        RunLock::acquire(&dir).expect("released with its holder");
    }
}
