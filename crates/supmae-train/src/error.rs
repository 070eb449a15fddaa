//! Typed errors of the training crate.

use std::path::PathBuf;

use supmae_data::DataError;
use supmae_model::ModelError;

/// What can stop a training run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A recipe setting is invalid.
    #[error("invalid training config: `{field}` {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model rejected its config or input.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A PyTorch checkpoint could not be used (unreadable, foreign keys, wrong shapes).
    #[error(transparent)]
    PytorchCheckpoint(#[from] supmae_model::CheckpointError),
    /// The loss became NaN or infinite; training stopped and the last good checkpoint is kept.
    #[error(
        "loss is {value} at epoch {epoch}, iteration {iteration}; training stopped \
         (the last good checkpoint, if any, is untouched: {checkpoint})"
    )]
    NonFiniteLoss {
        /// The epoch.
        epoch: usize,
        /// The iteration within the epoch.
        iteration: usize,
        /// The offending value.
        value: f64,
        /// The checkpoint that is kept.
        checkpoint: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A peer of a data-parallel run saw a NaN or an infinity; every peer stopped at the
    /// same step.
    #[error(
        "{what} is NaN or infinite on rank(s) {ranks:?} of {peers}; every rank stopped at this \
         step (the last good checkpoint, if any, is untouched)"
    )]
    NonFiniteOnPeers {
        /// What was not finite (`"the loss"`, `"a gradient"`).
        what: &'static str,
        /// The ranks that saw it.
        ranks: Vec<usize>,
        /// Peers in the run.
        peers: usize,
    },
    /// A data-parallel collective operation failed (a peer left, a network error, peers
    /// that disagree).
    #[error("data-parallel training: {0}")]
    Collective(String),
    /// Another process is running in this run folder.
    #[error("run folder {path} is in use by {holder}; wait for it, or choose another folder")]
    RunFolderBusy {
        /// The folder.
        path: PathBuf,
        /// Who holds its lock (a pid when known).
        holder: String,
    },
    /// A new run was started in a folder that holds a previous run's checkpoint.
    /// Resume it (the learners' `resume`, [`crate::run_dir::RunDir::resume`]), replace it
    /// ([`crate::run_dir::Overwrite::Yes`], which deletes it) or choose another folder.
    #[error("run folder {path} already holds a run (a checkpoint)")]
    RunFolderInUse {
        /// The folder.
        path: PathBuf,
    },
    /// A checkpoint file is not a complete supmae training checkpoint.
    #[error("checkpoint {path} is unusable: {reason}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A record could not be written as JSON (a run's config, log line or checkpoint
    /// recipe); nothing was written in its place.
    #[error("could not write {what} as JSON: {source}")]
    Serialize {
        /// What was being written (`"config.json"`, `"a log.jsonl line"`, ...).
        what: &'static str,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// A tensor could not be read back from its device.
    #[error("could not read {what} from the device: {reason}")]
    TensorRead {
        /// The tensor.
        what: &'static str,
        /// The backend's error.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}

pub(crate) fn json(what: &'static str) -> impl FnOnce(serde_json::Error) -> TrainError {
    move |source| TrainError::Serialize { what, source }
}
