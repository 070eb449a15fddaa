//! The run folder: the one place that knows its file names, owns it for the run's lifetime and
//! writes into it without ever leaving a torn or foreign file behind.
//!
//! A run folder holds [`CONFIG_FILE`], [`LOG_FILE`], [`CHECKPOINT_FILE`] and, for classifiers,
//! [`BEST_FILE`]. [`RunDir`] guarantees, for every learner:
//!
//! - **One run at a time.** Opening takes an exclusive OS lock on [`LOCK_FILE`] for as long
//!   as the `RunDir` lives (released by the OS if the process dies). A second run on the same
//!   folder is refused with [`TrainError::RunFolderBusy`], naming the holder's pid.
//! - **No clobbering.** A new run refuses a folder that already holds a checkpoint
//!   ([`TrainError::RunFolderInUse`]) unless [`Overwrite::Yes`] is given; then the old run's
//!   files are removed first, so a half-started run never sits next to an old checkpoint.
//! - **Atomic, private writes.** [`RunDir::write_atomic`] writes through a temporary file
//!   whose name is unique to the process and the write, flushes it and renames it into
//!   place; on error the temporary file is removed. Temporary files that a killed run left
//!   behind are removed when the folder is next opened (the lock guarantees that no live
//!   writer owns them).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, TrainError, io};

/// The run's configuration (pretty JSON).
pub const CONFIG_FILE: &str = "config.json";
/// One JSON line per epoch.
pub const LOG_FILE: &str = "log.jsonl";
/// The latest checkpoint (model, optimizer, schedule position), replaced atomically.
pub const CHECKPOINT_FILE: &str = "checkpoint.ckpt";
/// The checkpoint with the best validation top-1 (classifier runs).
pub const BEST_FILE: &str = "best.ckpt";
/// The lock file; it holds the pid of the process that owns the folder.
pub const LOCK_FILE: &str = ".lock";

/// Files of a previous run that [`Overwrite::Yes`] removes.
const RUN_FILES: [&str; 4] = [CONFIG_FILE, LOG_FILE, CHECKPOINT_FILE, BEST_FILE];
/// Temporary files are named `.<file>.<pid>.<n>.tmp`.
const TMP_SUFFIX: &str = ".tmp";

/// Whether a new run may replace a previous run's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overwrite {
    /// Refuse a folder that holds a checkpoint (the default).
    #[default]
    No,
    /// Remove the previous run's files and start afresh.
    Yes,
}

/// Where a new run goes, and whether it may replace a previous run there. The learners'
/// constructors take anything that converts into it: a path alone never overwrites.
///
/// ```
/// use supmae_train::run_dir::{NewRun, Overwrite};
/// let target = NewRun::from("runs/pretrain").overwrite(Overwrite::Yes);
/// assert_eq!(target.path(), std::path::Path::new("runs/pretrain"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    path: PathBuf,
    overwrite: Overwrite,
}

impl NewRun {
    /// A new run in `path` that refuses a previous run's checkpoint.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            overwrite: Overwrite::No,
        }
    }

    /// Sets whether a previous run's files may be removed.
    pub fn overwrite(mut self, overwrite: Overwrite) -> Self {
        self.overwrite = overwrite;
        self
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the folder with [`RunDir::create`].
    pub fn open(&self) -> Result<RunDir> {
        RunDir::create(&self.path, self.overwrite)
    }
}

macro_rules! new_run_from {
    ($($t:ty),*) => {$(
        impl From<$t> for NewRun {
            fn from(path: $t) -> Self {
                Self::new(path)
            }
        }
    )*};
}
new_run_from!(&Path, PathBuf, &PathBuf, &str, String);

/// An open run folder (see the module documentation).
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// Held open for the lock; `None` on data-parallel peers that do not write.
    _lock: Option<File>,
}

static WRITES: AtomicU64 = AtomicU64::new(0);

impl RunDir {
    /// Opens `path` for a new run: creates it, locks it, removes stale temporary files, and
    /// refuses it if it holds a checkpoint, unless `overwrite` says to remove the old run.
    pub fn create(path: impl AsRef<Path>, overwrite: Overwrite) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(io(&path))?;
        let dir = Self::lock(path)?;
        let has_run = [CHECKPOINT_FILE, BEST_FILE]
            .iter()
            .any(|f| dir.file(f).exists());
        match overwrite {
            Overwrite::No if has_run => {
                return Err(TrainError::RunFolderInUse { path: dir.path });
            }
            Overwrite::Yes => {
                for name in RUN_FILES {
                    let file = dir.file(name);
                    match std::fs::remove_file(&file) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(&file)(e)),
                    }
                }
            }
            Overwrite::No => {}
        }
        Ok(dir)
    }

    /// Opens the existing run in `path` to continue it: locks it and removes stale temporary
    /// files. Fails if there is no checkpoint to continue from.
    pub fn resume(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let checkpoint = path.join(CHECKPOINT_FILE);
        if !checkpoint.is_file() {
            return Err(TrainError::Checkpoint {
                path: checkpoint,
                reason: "no checkpoint to resume from (start a new run instead)".into(),
            });
        }
        let dir = Self::lock(path)?;
        if !checkpoint.is_file() {
            // Removed by the run that held the lock a moment ago.
            return Err(TrainError::Checkpoint {
                path: checkpoint,
                reason: "no checkpoint to resume from (start a new run instead)".into(),
            });
        }
        Ok(dir)
    }

    /// A handle on `path` that takes no lock and writes nothing: data-parallel peers other
    /// than rank 0 read the run's files through it.
    pub fn unlocked(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            _lock: None,
        }
    }

    fn lock(path: PathBuf) -> Result<Self> {
        let lock_path = path.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(TrainError::RunFolderBusy {
                    path,
                    holder: if holder.is_empty() {
                        "another process".into()
                    } else {
                        format!("process {holder}")
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        file.set_len(0).map_err(io(&lock_path))?;
        file.rewind().map_err(io(&lock_path))?;
        write!(file, "{}", std::process::id()).map_err(io(&lock_path))?;
        file.flush().map_err(io(&lock_path))?;
        let dir = Self {
            path,
            _lock: Some(file),
        };
        dir.remove_stale_temps()?;
        Ok(dir)
    }

    fn remove_stale_temps(&self) -> Result<()> {
        let entries = std::fs::read_dir(&self.path).map_err(io(&self.path))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(TMP_SUFFIX) {
                let file = entry.path();
                std::fs::remove_file(&file).map_err(io(&file))?;
            }
        }
        Ok(())
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file of the folder (`name` is one of the `*_FILE` constants).
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `bytes` to the folder's `name` atomically (see the module documentation).
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.file(name), bytes)
    }
}

/// Writes `bytes` to `path` atomically: a temporary file unique to this process and write,
/// flushed to disk, renamed over `path`; removed again if anything fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, |file, bytes| file.write_all(bytes))
}

/// [`write_atomic`] with the data written by `write` (tests use it to simulate a failure in
/// the middle of a write).
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    write: impl FnOnce(&mut File, &[u8]) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(io(&tmp))?;
        write(&mut file, bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        // Persist the rename itself (best effort: not every platform can fsync a folder).
        let _ = d.sync_all();
    }
    Ok(())
}

/// A fresh temporary name next to `path`: `.<name>.<pid>.<n>.tmp`, unique to this process
/// and this write, hidden, and recognised as stale by [`RunDir`] when the folder is next
/// opened.
pub fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}{TMP_SUFFIX}", std::process::id()))
}

/// The checkpoint a run folder is used from, by its kind: a fine-tuning or probing run's
/// [`BEST_FILE`] (its [`CHECKPOINT_FILE`] while it has none), a pre-training run's
/// [`CHECKPOINT_FILE`] (the last epoch, which the official fine-tuning starts from). A file
/// is itself. (`crate::open::open` applies this after reading what the folder holds.)
pub(crate) fn used_file(path: &Path, classifier: bool) -> PathBuf {
    let best = path.join(BEST_FILE);
    if classifier && path.is_dir() && best.is_file() {
        best
    } else {
        checkpoint_in(path)
    }
}

/// The checkpoint a path names: the file itself, or for a run folder its
/// [`CHECKPOINT_FILE`] (the latest state; [`BEST_FILE`] is chosen only where asked for).
pub fn checkpoint_in(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(CHECKPOINT_FILE)
    } else {
        path.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("supmae-run-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_run_on_a_locked_folder_is_refused_with_the_holder_pid() {
        let dir = scratch("busy");
        let first = RunDir::create(&dir, Overwrite::No).unwrap();
        let err = RunDir::create(&dir, Overwrite::No).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, TrainError::RunFolderBusy { .. }), "{text}");
        assert!(
            text.contains(&std::process::id().to_string()),
            "names the holder: {text}"
        );
        drop(first);
        RunDir::create(&dir, Overwrite::No).unwrap();
    }

    #[test]
    fn a_folder_with_a_checkpoint_needs_overwrite_which_removes_the_old_run() {
        let dir = scratch("clobber");
        std::fs::create_dir_all(&dir).unwrap();
        for f in [CHECKPOINT_FILE, LOG_FILE, CONFIG_FILE] {
            std::fs::write(dir.join(f), b"old").unwrap();
        }
        let err = RunDir::create(&dir, Overwrite::No).unwrap_err();
        assert!(matches!(err, TrainError::RunFolderInUse { .. }), "{err}");
        assert_eq!(std::fs::read(dir.join(LOG_FILE)).unwrap(), b"old");
        let run = RunDir::create(&dir, Overwrite::Yes).unwrap();
        for f in [CHECKPOINT_FILE, LOG_FILE, CONFIG_FILE] {
            assert!(!run.file(f).exists(), "{f} of the old run is gone");
        }
    }

    #[test]
    fn failed_writes_leave_no_temp_and_stale_temps_are_cleaned_on_open() {
        let dir = scratch("temps");
        let run = RunDir::create(&dir, Overwrite::No).unwrap();
        run.write_atomic(CONFIG_FILE, b"good").unwrap();
        let err = write_atomic_with(&run.file(CONFIG_FILE), b"new", |_, _| {
            Err(std::io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(run.file(CONFIG_FILE)).unwrap(), b"good");
        let names = || -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(), [LOCK_FILE, CONFIG_FILE]);
        drop(run);
        // A killed run's leftover, and a same-named file of the user's that is not ours.
        std::fs::write(dir.join(".checkpoint.ckpt.123.0.tmp"), b"torn").unwrap();
        std::fs::write(dir.join("notes.tmp"), b"mine").unwrap();
        let _run = RunDir::resume_or_create_for_test(&dir);
        assert_eq!(names(), [LOCK_FILE, CONFIG_FILE, "notes.tmp"]);
    }

    #[test]
    fn temp_names_are_unique_per_write() {
        let p = Path::new("/x/checkpoint.ckpt");
        assert_ne!(tmp_path(p), tmp_path(p));
    }

    impl RunDir {
        fn resume_or_create_for_test(path: &Path) -> Self {
            Self::lock(path.to_path_buf()).unwrap()
        }
    }
}
