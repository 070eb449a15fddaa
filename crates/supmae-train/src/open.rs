//! What a checkpoint path is, read header-first: one entry point for every command.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::checkpoint::{CheckpointParts, MAGIC};
use crate::classifier::ClassifierMeta;
use crate::config::PretrainConfig;
use crate::error::{Result, TrainError, io};
use crate::run_dir::{checkpoint_in, used_file};

/// What [`open`] found.
#[derive(Debug, Clone)]
pub enum Checkpoint {
    /// A pre-training checkpoint of ours.
    Pretrain {
        /// The run's recipe (model included).
        config: Box<PretrainConfig>,
        /// Epochs trained.
        epochs_done: usize,
        /// The official file it was converted from, if it was (then it holds no optimizer
        /// state).
        converted_from: Option<String>,
    },
    /// A fine-tuning or linear-probing checkpoint of ours.
    Classifier(Box<ClassifierMeta>),
    /// Not ours: an official PyTorch `.pth` / `.safetensors` (or something else), for the
    /// model crate's readers to judge.
    Foreign,
}

#[derive(Deserialize)]
struct PretrainHeader {
    format: u32,
    config: PretrainConfig,
    epochs_done: usize,
    #[serde(default)]
    converted_from: Option<String>,
}

impl Checkpoint {
    /// Whether the file is one of ours (not [`Checkpoint::Foreign`]).
    pub fn is_ours(&self) -> bool {
        !matches!(self, Checkpoint::Foreign)
    }
}

/// Resolves `path` and says what it is, reading only the header and metadata of one of
/// ours.
///
/// A run folder means the checkpoint its kind is used from: a fine-tuning or probing run's
/// `best.ckpt` (its `checkpoint.ckpt` while it has none), a pre-training run's
/// `checkpoint.ckpt` (the last epoch, which the official fine-tuning starts from). A file
/// is itself. Resuming always reads the folder's `checkpoint.ckpt`.
pub fn open(path: &Path) -> Result<(PathBuf, Checkpoint)> {
    let (file, what) = open_file(&checkpoint_in(path))?;
    let used = used_file(path, matches!(what, Checkpoint::Classifier(_)));
    if used != file {
        return open_file(&used);
    }
    Ok((file, what))
}

fn open_file(file: &Path) -> Result<(PathBuf, Checkpoint)> {
    let file = file.to_path_buf();
    let mut head = [0u8; 18];
    let n = {
        use std::io::Read;
        let mut f = supmae_model::checkpoint::open_regular(&file).map_err(io(&file))?;
        f.read(&mut head).map_err(io(&file))?
    };
    debug_assert_eq!(MAGIC.len(), head.len());
    if n < head.len() || head != MAGIC {
        return Ok((file, Checkpoint::Foreign));
    }
    let meta = CheckpointParts::read_meta(&file)?;
    if let Ok(m) = serde_json::from_slice::<ClassifierMeta>(&meta) {
        crate::checkpoint::check_format(m.format, &file)?;
        return Ok((file, Checkpoint::Classifier(Box::new(m))));
    }
    match serde_json::from_slice::<PretrainHeader>(&meta) {
        Ok(h) => {
            crate::checkpoint::check_format(h.format, &file)?;
            crate::checkpoint::check_counters(
                h.epochs_done,
                h.config.epochs,
                h.epochs_done,
                &file,
            )?;
            Ok((
                file,
                Checkpoint::Pretrain {
                    config: Box::new(h.config),
                    epochs_done: h.epochs_done,
                    converted_from: h.converted_from,
                },
            ))
        }
        Err(e) => Err(TrainError::Checkpoint {
            path: file,
            reason: format!("unreadable metadata: {e}"),
        }),
    }
}
