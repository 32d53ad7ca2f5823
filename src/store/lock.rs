//! One run per output: an advisory lock on `OUT`'s `<stem>.lock` beside it.
//!
//! Two runs appending to the same vectors file would interleave half-written
//! records and each would believe it owns the resume state. The lock is taken
//! before the output is opened (so `--restart` cannot truncate a file another
//! run is writing) and released by the OS when the process ends, however it
//! ends: a killed run leaves no stale lock behind. The `.lock` file itself
//! stays (removing it would race with a run that is just opening it).

use anyhow::{Context, Result, bail};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

pub use super::companions::lock_path;

/// Held for the whole run; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
}

/// Takes the lock for `out`, or explains which run holds it. A file system
/// without locks (some network mounts) gets a warning, not a refusal.
pub fn lock_output(out: &Path) -> Result<Option<OutputLock>> {
    let path = lock_path(out);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(OutputLock { _file: file })),
        Err(TryLockError::WouldBlock) => bail!(
            "another rmac-native run is writing {} (it holds {}); wait for it to finish, \
             or pass another --output",
            out.display(),
            path.display()
        ),
        Err(TryLockError::Error(e)) => {
            eprintln!(
                "warning: cannot lock {} ({e}); make sure no other run writes {}",
                path.display(),
                out.display()
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_output_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("vectors.jsonl");
        assert_eq!(lock_path(&out), dir.path().join("vectors.lock"));
        let first = lock_output(&out).unwrap();
        assert!(first.is_some());
        let err = lock_output(&out).unwrap_err().to_string();
        assert!(err.contains("another rmac-native run"), "{err}");
        drop(first);
        assert!(lock_output(&out).unwrap().is_some());
    }
}
