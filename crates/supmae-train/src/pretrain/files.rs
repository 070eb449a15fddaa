//! The pre-training run's files: checkpoint metadata, resume, saving, the log, and
//! loading or writing a pre-trained model from library code.

use std::path::Path;

use burn::module::Module;
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use supmae_data::AnySource;
use supmae_model::SupMae;

use super::{EpochLog, Open, Pretrainer, Rec, load_data};
use crate::checkpoint::{CheckpointParts, write_atomic};
use crate::config::PretrainConfig;
use crate::error::{Result, TrainError, json};
use crate::peers::PeerArg;
use crate::run_dir::CHECKPOINT_FILE;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Meta {
    pub format: u32,
    pub config: PretrainConfig,
    pub epochs_done: usize,
    pub history: Vec<EpochLog>,
    /// Integer buffers that the model does not hold (BatchNorm `num_batches_tracked`),
    /// kept so a converted official checkpoint converts back to an identical state dict.
    #[serde(default)]
    pub extras: std::collections::BTreeMap<String, i64>,
    /// The file this checkpoint was converted from (no optimizer state then).
    #[serde(default)]
    pub converted_from: Option<String>,
}

/// Reads and verifies a run folder's checkpoint and its metadata.
fn read_checkpoint(out_dir: &Path) -> Result<(CheckpointParts, Meta)> {
    read_checkpoint_file(&out_dir.join(CHECKPOINT_FILE))
}

fn read_checkpoint_file(path: &Path) -> Result<(CheckpointParts, Meta)> {
    checkpoint_meta(CheckpointParts::read(path)?, path)
}

/// The checked metadata of a decoded checkpoint.
fn checkpoint_meta(parts: CheckpointParts, path: &Path) -> Result<(CheckpointParts, Meta)> {
    let path = path.to_path_buf();
    let meta: Meta = serde_json::from_slice(&parts.meta).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        reason: format!("bad metadata: {e}"),
    })?;
    crate::checkpoint::check_format(meta.format, &path)?;
    crate::checkpoint::check_counters(
        meta.epochs_done,
        meta.config.epochs,
        meta.history.len(),
        &path,
    )?;
    Ok((parts, meta))
}

/// The recipe of a pre-training checkpoint (`path`: the file), read header-first without
/// loading its tensors. A classifier checkpoint is an error saying so.
pub fn read_pretrain_config(path: &Path) -> Result<PretrainConfig> {
    let meta = CheckpointParts::read_meta(path)?;
    #[derive(Deserialize)]
    struct ConfigOnly {
        config: PretrainConfig,
    }
    serde_json::from_slice::<ConfigOnly>(&meta)
        .map(|m| m.config)
        .map_err(|_| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: "not a pre-training checkpoint (fine-tuned and probed checkpoints are \
                     classifiers: `load_classifier` reads them)"
                .into(),
        })
}

/// The model and recipe of a pre-training checkpoint written by [`Pretrainer`]: `path` is
/// the run folder or its `checkpoint.ckpt`.
pub fn load_pretrained<B: Backend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(SupMae<B>, PretrainConfig)> {
    let path = path.as_ref();
    let file = crate::run_dir::checkpoint_in(path);
    let (parts, meta) = read_checkpoint_file(&file)?;
    pretrained_model(parts, meta, &file, device)
}

/// [`load_pretrained`] from the bytes of a `checkpoint.ckpt` held in memory (a file a
/// browser page was given, weights compiled into a program); `name` stands for the file in
/// errors. Nothing touches the file system.
pub fn load_pretrained_bytes<B: Backend>(
    bytes: &[u8],
    name: &str,
    device: &B::Device,
) -> Result<(SupMae<B>, PretrainConfig)> {
    let path = Path::new(name);
    let (parts, meta) = checkpoint_meta(CheckpointParts::decode(bytes, path)?, path)?;
    pretrained_model(parts, meta, path, device)
}

fn pretrained_model<B: Backend>(
    parts: CheckpointParts,
    meta: Meta,
    file: &Path,
    device: &B::Device,
) -> Result<(SupMae<B>, PretrainConfig)> {
    meta.config.validate()?;
    let model = crate::checkpoint::load_model::<B, _>(
        file,
        parts.model,
        meta.config.model.param_count().total(),
        || meta.config.model.init::<B>(device),
        device,
    )?;
    Ok((model, meta.config))
}

/// The integer buffers (`num_batches_tracked`) a pre-training checkpoint keeps beside the
/// model: those of the file it was converted from, or the number of training steps taken
/// for a checkpoint trained here (PyTorch counts one per training forward).
pub fn pretrained_extras(
    path: impl AsRef<Path>,
) -> Result<std::collections::BTreeMap<String, i64>> {
    let path = path.as_ref();
    let file = crate::run_dir::checkpoint_in(path);
    let (_, meta) = read_checkpoint_file(&file)?;
    if meta.converted_from.is_some() || meta.config.model.cls_head.is_none() {
        return Ok(meta.extras);
    }
    let steps = meta.history.last().map_or(0, |h| h.images_seen) / meta.config.batch_size as u64;
    Ok([("cls_head.1.num_batches_tracked".to_string(), steps as i64)].into())
}

/// Writes `model` as a pre-training checkpoint of ours (no optimizer state: it can be
/// fine-tuned, probed, embedded or reconstructed with, not resumed), atomically.
pub fn write_pretrained<B: Backend>(
    path: impl AsRef<Path>,
    model: &SupMae<B>,
    config: PretrainConfig,
    extras: std::collections::BTreeMap<String, i64>,
    converted_from: &str,
) -> Result<()> {
    let path = path.as_ref();
    let bad = |e: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: e,
    };
    let meta = Meta {
        format: 1,
        config,
        epochs_done: 0,
        history: Vec::new(),
        extras,
        converted_from: Some(converted_from.to_string()),
    };
    let parts = CheckpointParts {
        meta: serde_json::to_vec(&meta).map_err(json("checkpoint metadata"))?,
        model: Recorder::<B>::record(&Rec::new(), model.clone().into_record(), ())
            .map_err(|e| bad(e.to_string()))?,
        optim_decay: Vec::new(),
        optim_no_decay: Vec::new(),
    };
    write_atomic(path, &parts.encode())
}

impl<B: AutodiffBackend> Pretrainer<B> {
    /// Continues the run saved in `out_dir` from its last checkpoint, with the same data.
    pub fn resume(out_dir: impl AsRef<Path>, device: B::Device) -> Result<Self> {
        let out_dir = out_dir.as_ref();
        let (parts, meta) = read_checkpoint(out_dir)?;
        let (train, val) = load_data(&meta.config.data)?;
        Self::resume_with_sources(out_dir, parts, meta, train, val, device, None)
    }

    /// [`resume`](Self::resume) on explicit datasets.
    pub fn resume_on(
        out_dir: impl AsRef<Path>,
        train: AnySource,
        val: Option<AnySource>,
        device: B::Device,
    ) -> Result<Self> {
        let out_dir = out_dir.as_ref();
        let (parts, meta) = read_checkpoint(out_dir)?;
        Self::resume_with_sources(out_dir, parts, meta, train, val, device, None)
    }

    /// [`resume`](Self::resume) as one peer of a data-parallel run (the data of the saved
    /// config).
    #[cfg(feature = "distributed")]
    pub fn resume_peer(
        out_dir: impl AsRef<Path>,
        device: B::Device,
        peer: crate::distributed::Peer<B::InnerBackend>,
    ) -> Result<Self> {
        let out_dir = out_dir.as_ref();
        let (parts, meta) = read_checkpoint(out_dir)?;
        let (train, val) = load_data(&meta.config.data)?;
        Self::resume_with_sources(out_dir, parts, meta, train, val, device, Some(peer))
    }

    /// [`resume_on`](Self::resume_on) as one peer of a data-parallel run: every peer reads
    /// the checkpoint of `out_dir` (shared storage, or a copy on every node), rank 0 goes on
    /// writing it.
    #[cfg(feature = "distributed")]
    pub fn resume_on_peer(
        out_dir: impl AsRef<Path>,
        train: AnySource,
        val: Option<AnySource>,
        device: B::Device,
        peer: crate::distributed::Peer<B::InnerBackend>,
    ) -> Result<Self> {
        let out_dir = out_dir.as_ref();
        let (parts, meta) = read_checkpoint(out_dir)?;
        Self::resume_with_sources(out_dir, parts, meta, train, val, device, Some(peer))
    }

    fn resume_with_sources(
        out_dir: &Path,
        parts: CheckpointParts,
        meta: Meta,
        train: AnySource,
        val: Option<AnySource>,
        device: B::Device,
        peer: PeerArg<B>,
    ) -> Result<Self> {
        let path = out_dir.join(CHECKPOINT_FILE);
        let bad = |what: &str, e: String| TrainError::Checkpoint {
            path: path.clone(),
            reason: format!("{what}: {e}"),
        };
        if let Some(source) = &meta.converted_from {
            return Err(bad(
                "cannot resume",
                format!(
                    "converted from {source}, it holds no optimizer state; fine-tune, probe, \
                     evaluate or embed it instead"
                ),
            ));
        }
        meta.config.validate()?;
        let model = crate::checkpoint::load_model::<B, _>(
            &path,
            parts.model,
            meta.config.model.param_count().total(),
            || meta.config.model.init::<B>(&device),
            &device,
        )?;
        let mut trainer = Self::assemble_pretrain(
            meta.config,
            model,
            train,
            val,
            Open::Resume(out_dir),
            device,
            peer,
            meta.history,
        )?;
        let dec = crate::checkpoint::decode_record::<B, _>(parts.optim_decay, &trainer.device)
            .map_err(|e| bad("optimizer record", e))?;
        let nodec = crate::checkpoint::decode_record::<B, _>(parts.optim_no_decay, &trainer.device)
            .map_err(|e| bad("optimizer record", e))?;
        let task = &mut trainer.task;
        task.opt_decay = task.opt_decay.clone().load_record(dec);
        task.opt_no_decay = task.opt_no_decay.clone().load_record(nodec);
        Ok(trainer)
    }
}
