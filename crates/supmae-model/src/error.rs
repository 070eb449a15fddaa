//! Typed errors of the model crate.

use std::path::PathBuf;

/// Everything that can go wrong when building, running or loading a model.
///
/// Library code never panics on bad input: invalid configurations, tensors of the wrong shape
/// and unusable checkpoints all come back as one of these variants, naming what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A configuration field has a value the model cannot be built with.
    #[error("invalid model config: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field, e.g. `patch_size`.
        field: &'static str,
        /// Why the value is rejected, e.g. `(7) does not divide img_size (32)`.
        reason: String,
    },
    /// An input tensor does not have the shape the model expects.
    #[error("bad input `{name}`: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which input, e.g. `images`.
        name: &'static str,
        /// The expected shape, in words (e.g. `[N, 3, 224, 224]`).
        expected: String,
        /// The shape that was passed.
        got: Vec<usize>,
    },
    /// A forward-pass argument is out of range (mask ratio, label index, ...).
    #[error("bad argument `{name}`: {reason}")]
    InvalidArgument {
        /// Which argument.
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// A checkpoint could not be read or does not fit the model.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// Why a checkpoint could not be read or applied to a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file does not exist or could not be opened.
    #[error("cannot read checkpoint {path}: {source}")]
    Io {
        /// The checkpoint path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a readable PyTorch / safetensors checkpoint (truncated, corrupt, foreign).
    #[error("cannot parse checkpoint {path}: {message}")]
    Format {
        /// The checkpoint path.
        path: PathBuf,
        /// What the reader reported.
        message: String,
    },
    /// A tensor in the file has a shape that does not match the model.
    #[error("checkpoint tensor `{key}` has shape {found:?} but the model expects {expected:?}")]
    ShapeMismatch {
        /// The checkpoint key.
        key: String,
        /// The shape the model expects (in PyTorch layout).
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor in the file has a dtype that cannot be turned into the model's float type.
    #[error("checkpoint tensor `{key}` cannot be read as float: {message}")]
    DType {
        /// The checkpoint key.
        key: String,
        /// What went wrong.
        message: String,
    },
    /// The file's keys are not the ones this model expects: some weights the model needs are
    /// absent, or the file holds weights the model would silently ignore.
    #[error(
        "checkpoint keys do not match the model: missing {missing:?}; unexpected {unexpected:?} \
         (is this the right kind of checkpoint for this model and config?)"
    )]
    KeyMismatch {
        /// Keys the model needs that the file lacks (and that the load mode does not allow
        /// to be missing).
        missing: Vec<String>,
        /// Keys in the file that the model does not use (and that the load mode does not
        /// allow to be ignored).
        unexpected: Vec<String>,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> ModelError {
    ModelError::InvalidConfig {
        field,
        reason: reason.into(),
    }
}
