//! Directory ownership: a run directory (or a shard cache being built) belongs to one process at
//! a time, and a fresh run never mixes with an old one.
//!
//! The lock is an advisory `flock` on `DIR/.lock`, which also holds the holder's PID for the
//! message a second process prints. The kernel drops a `flock` when its holder dies (even by
//! SIGKILL), so a stale `.lock` file never blocks anyone; the PID inside is only a hint.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file inside a locked directory.
pub const LOCK_FILE: &str = ".lock";

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir} is in use by another dino-stream process{} (its lock is {lock}); wait for it to finish or stop it first", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        dir: PathBuf,
        lock: PathBuf,
        holder: Option<u32>,
    },
    #[error("{dir} already holds a run ({found}); pass --resume to continue it, or --restart to move it aside to a new directory and start over")]
    HoldsARun { dir: PathBuf, found: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DirError + '_ {
    move |source| DirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An exclusive lock on a directory, held until dropped (or the process dies).
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    file: File,
    /// Whether this process created the directory (so an untouched one can be removed again).
    created: bool,
}

impl DirLock {
    /// Creates `dir` if needed and locks it, failing at once (never waiting) when another
    /// process holds it. The error names the holder's PID when it wrote one.
    pub fn acquire(dir: &Path) -> Result<DirLock, DirError> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LOCK_FILE);
        loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io(&path))?;
            // SAFETY: flock on a descriptor this function owns; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Err(DirError::Locked {
                        dir: dir.to_path_buf(),
                        lock: path,
                        holder: text.trim().parse().ok(),
                    });
                }
                return Err(io(&path)(err));
            }
            // Someone may have replaced the file between our open and our lock (a holder that
            // removes its lock file on release): then we locked an orphan, so try again.
            let same = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            file.set_len(0).map_err(io(&path))?;
            file.rewind().map_err(io(&path))?;
            writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
            return Ok(DirLock {
                dir: dir.to_path_buf(),
                file,
                created,
            });
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the directory again when this process created it and left nothing in it but the
    /// lock file (a run that trained nothing writes nothing).
    pub fn release_if_untouched(self) {
        let only_lock = std::fs::read_dir(&self.dir).is_ok_and(|entries| {
            entries
                .flatten()
                .all(|e| e.file_name().to_str() == Some(LOCK_FILE))
        });
        if self.created && only_lock {
            let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
            let _ = std::fs::remove_dir(&self.dir);
        }
        drop(self.file);
    }
}

/// What in `dir` belongs to an earlier run: checkpoints and a non-empty step log.
pub fn previous_run(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_checkpoint = name.starts_with("step-") && e.path().is_dir();
            let is_log = name == crate::train::LOG_FILE && e.metadata().is_ok_and(|m| m.len() > 0);
            (is_checkpoint || is_log).then_some(name)
        })
        .collect();
    found.sort();
    found
}

/// Refuses a fresh run into a directory that holds one, unless `restart`: then everything but
/// the lock moves to a new sibling directory `DIR.old-N`, which is returned.
pub fn claim_for_fresh_run(lock: &DirLock, restart: bool) -> Result<Option<PathBuf>, DirError> {
    let dir = lock.dir();
    let found = previous_run(dir);
    if found.is_empty() {
        return Ok(None);
    }
    if !restart {
        let shown = if found.len() > 4 {
            format!("{}, … {} entries", found[..3].join(", "), found.len())
        } else {
            found.join(", ")
        };
        return Err(DirError::HoldsARun {
            dir: dir.to_path_buf(),
            found: shown,
        });
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let parent = dir.parent().unwrap_or(Path::new("."));
    let aside = (1u32..)
        .map(|n| parent.join(format!("{name}.old-{n}")))
        .find(|p| !p.exists())
        .expect("a free name");
    std::fs::create_dir(&aside).map_err(io(&aside))?;
    for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        if entry.file_name().to_str() == Some(LOCK_FILE) {
            continue;
        }
        let to = aside.join(entry.file_name());
        std::fs::rename(entry.path(), &to).map_err(io(&to))?;
    }
    Ok(Some(aside))
}

/// True when a process with this PID exists (signal 0 probes without sending anything).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the target exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_naming_the_holder_and_frees_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let first = DirLock::acquire(&run).unwrap();
        // flock locks belong to the open file description, so a second open in this process
        // conflicts exactly like another process would.
        let err = DirLock::acquire(&run).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("in use"),
            "{err}"
        );
        drop(first);
        DirLock::acquire(&run).unwrap();
    }

    #[test]
    fn a_fresh_run_is_refused_unless_restart_moves_the_old_one_aside() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let lock = DirLock::acquire(&run).unwrap();
        assert_eq!(claim_for_fresh_run(&lock, false).unwrap(), None);
        std::fs::create_dir(run.join("step-000000002")).unwrap();
        std::fs::write(run.join(crate::train::LOG_FILE), "{}\n").unwrap();
        let err = claim_for_fresh_run(&lock, false).unwrap_err().to_string();
        assert!(
            err.contains("step-000000002") && err.contains("--resume") && err.contains("--restart"),
            "{err}"
        );
        let aside = claim_for_fresh_run(&lock, true).unwrap().unwrap();
        assert_eq!(aside, dir.path().join("run.old-1"));
        assert!(aside.join("step-000000002").is_dir());
        assert!(aside.join(crate::train::LOG_FILE).is_file());
        assert!(previous_run(&run).is_empty());
        assert!(run.join(LOCK_FILE).is_file(), "the lock stays where it is");
    }

    #[test]
    fn an_untouched_directory_is_removed_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        DirLock::acquire(&run).unwrap().release_if_untouched();
        assert!(!run.exists());
        let kept = DirLock::acquire(&run).unwrap();
        std::fs::write(run.join("x"), "").unwrap();
        kept.release_if_untouched();
        assert!(run.join("x").exists());
    }

    #[test]
    fn liveness_of_processes() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX));
    }
}
