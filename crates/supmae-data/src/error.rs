//! Typed errors of the data crate. Every variant names the file or folder at fault.

use std::path::PathBuf;

/// What can go wrong while scanning, reading or decoding a dataset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A path that should be an image file is a directory, FIFO, socket or device.
    #[error("{path} is not a regular file (a directory, FIFO or device)")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A file is larger than the cap on image files.
    #[error("{path} is {size} bytes, over the {max}-byte cap on image files")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// A class folder's name is not valid UTF-8 (class names are written to JSON and
    /// compared as text; dropping the folder would shift every later label).
    #[error("class folder {path} has a name that is not valid UTF-8: rename it")]
    NonUtf8Name {
        /// The folder (printed lossily).
        path: PathBuf,
    },
    /// A resize would produce more pixels than the cap (an extreme aspect ratio).
    #[error(
        "resizing a {width}x{height} image to {to_width}x{to_height} is over the cap of \
         {max_pixels} pixels (extreme aspect ratio)"
    )]
    ResizeTooLarge {
        /// Source width.
        width: u32,
        /// Source height.
        height: u32,
        /// Target width.
        to_width: u64,
        /// Target height.
        to_height: u64,
        /// The cap.
        max_pixels: u64,
    },
    /// A file is empty.
    #[error("{path} is empty (0 bytes)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The bytes are not an image in any supported format (whatever the extension says).
    #[error("{path} is not an image in a supported format (jpeg, png, bmp, tiff, webp, pnm, gif)")]
    NotAnImage {
        /// The file.
        path: PathBuf,
    },
    /// The image is corrupt or truncated.
    #[error("cannot decode {path}: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What the decoder reported.
        message: String,
    },
    /// The image declares dimensions above the memory cap.
    #[error(
        "{path} declares {width}x{height} pixels, above the cap of {max_pixels} pixels \
         (raise `max_pixels` if this is intended)"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The cap.
        max_pixels: u64,
    },
    /// The image would take more memory to decode than the cap allows.
    #[error(
        "{path} is {width}x{height} {color}, which takes {needed_mb} MB to decode and convert, \
         above the cap of {max_mb} MB (raise it with `set_max_decoded_bytes` if this is intended)"
    )]
    TooManyBytes {
        /// The file.
        path: PathBuf,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The declared colour type, e.g. `Rgba16`.
        color: String,
        /// Decoded bytes plus the 8-bit copy, in MB (rounded up).
        needed_mb: u64,
        /// The cap in MB.
        max_mb: u64,
    },
    /// A dataset root or split folder does not exist.
    #[error("{what} not found: {path}")]
    Missing {
        /// What was looked for, e.g. `split "val"`.
        what: String,
        /// Where.
        path: PathBuf,
    },
    /// A folder dataset has no class sub-folders.
    #[error("{path} has no class sub-folders")]
    NoClasses {
        /// The dataset root.
        path: PathBuf,
    },
    /// A class folder holds no image file.
    #[error("class folder {path} holds no image file (extensions: {extensions})")]
    EmptyClass {
        /// The class folder.
        path: PathBuf,
        /// The accepted extensions.
        extensions: String,
    },
    /// Following symbolic links leads back into a folder already being scanned.
    #[error("symlink loop: {path} leads back to {target}")]
    SymlinkLoop {
        /// The link.
        path: PathBuf,
        /// The folder it leads to.
        target: PathBuf,
    },
    /// A labels file does not fit the images it labels.
    #[error("labels file {path}: {message}")]
    Labels {
        /// The labels file.
        path: PathBuf,
        /// What is wrong (line numbers included).
        message: String,
    },
    /// An IDX (MNIST-format) file is malformed.
    #[error("IDX file {path}: {message}")]
    Idx {
        /// The file (or the embedded asset's name).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A pipeline setting is invalid.
    #[error("invalid data config: `{field}` {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}
