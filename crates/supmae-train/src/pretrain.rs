//! The pre-training learner (`main_pretrain_supmae.py` + `engine_pretrain.py`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use supmae_data::fashion_mnist::{self, Split};
use supmae_data::{
    AnySource, DataLoader, FashionMnist, FolderDataset, Geometry, ImageNet, ImageSource,
    LoaderConfig, SampleRng, ScanOptions, Shard, Transform,
};
use supmae_model::{SupMae, SupMaeInput};

use crate::checkpoint::{CheckpointParts, write_atomic};
use crate::config::{DataSpec, PretrainConfig};
use crate::error::{Result, TrainError, io};
use crate::progress::{Progress, ProgressMode};
pub use crate::run_dir::{CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE};
use crate::run_dir::{NewRun, RunDir};
use crate::schedule::{LrSchedule, ParamGroups};

type Opt<B> = OptimizerAdaptor<AdamW, SupMae<B>, B>;

type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// One line of `log.jsonl`: the official log's keys plus throughput and validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// Epoch index (from 0).
    pub epoch: usize,
    /// Mean learning rate over the epoch's iterations.
    pub lr: f64,
    /// Mean total loss.
    pub loss: f64,
    /// Mean reconstruction loss.
    pub rec_loss: f64,
    /// Mean classification loss, `λ` included (0 for MAE).
    pub cls_loss: f64,
    /// Training images per second.
    pub images_per_sec: f64,
    /// Wall-clock seconds of the epoch (training only).
    pub seconds: f64,
    /// Images processed so far in the run.
    pub images_seen: u64,
    /// Top-1 accuracy (%) of the classification branch on validation with every patch
    /// visible.
    pub val_acc1_full: Option<f64>,
    /// Top-1 accuracy (%) with the training mask ratio.
    pub val_acc1_masked: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    format: u32,
    config: PretrainConfig,
    epochs_done: usize,
    history: Vec<EpochLog>,
    /// Integer buffers that the model does not hold (BatchNorm `num_batches_tracked`),
    /// kept so a converted official checkpoint converts back to an identical state dict.
    #[serde(default)]
    extras: std::collections::BTreeMap<String, i64>,
    /// The file this checkpoint was converted from (no optimizer state then).
    #[serde(default)]
    converted_from: Option<String>,
}

/// Reads and verifies a run folder's checkpoint and its metadata.
fn read_checkpoint(out_dir: &Path) -> Result<(CheckpointParts, Meta)> {
    read_checkpoint_file(&out_dir.join(CHECKPOINT_FILE))
}

fn read_checkpoint_file(path: &Path) -> Result<(CheckpointParts, Meta)> {
    let path = path.to_path_buf();
    let parts = CheckpointParts::read(&path)?;
    let meta = serde_json::from_slice(&parts.meta).map_err(|e| TrainError::Checkpoint {
        path,
        reason: format!("bad metadata: {e}"),
    })?;
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
            reason: "not a pre-training checkpoint (use `supmae eval` for fine-tuned or \
                     probed ones)"
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
    let file = if path.is_dir() {
        path.join(CHECKPOINT_FILE)
    } else {
        path.to_path_buf()
    };
    let (parts, meta) = read_checkpoint_file(&file)?;
    meta.config.validate()?;
    let model = meta.config.model.init::<B>(device)?;
    let record = Recorder::<B>::load(&Rec::new(), parts.model, device).map_err(|e| {
        TrainError::Checkpoint {
            path: file.clone(),
            reason: format!("model record: {e}"),
        }
    })?;
    Ok((model.load_record(record), meta.config))
}

/// The integer buffers (`num_batches_tracked`) a pre-training checkpoint keeps beside the
/// model: those of the file it was converted from, or the number of training steps taken
/// for a checkpoint trained here (PyTorch counts one per training forward).
pub fn pretrained_extras(
    path: impl AsRef<Path>,
) -> Result<std::collections::BTreeMap<String, i64>> {
    let path = path.as_ref();
    let file = if path.is_dir() {
        path.join(CHECKPOINT_FILE)
    } else {
        path.to_path_buf()
    };
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
        meta: serde_json::to_vec(&meta).map_err(|e| bad(e.to_string()))?,
        model: Recorder::<B>::record(&Rec::new(), model.clone().into_record(), ())
            .map_err(|e| bad(e.to_string()))?,
        optim_decay: Vec::new(),
        optim_no_decay: Vec::new(),
    };
    write_atomic(path, &parts.encode())
}

/// Builds the train and validation sources of a [`DataSpec`].
pub fn load_data(spec: &DataSpec) -> Result<(AnySource, Option<AnySource>)> {
    Ok(match spec {
        DataSpec::EmbeddedFashionMnist => (
            AnySource::FashionMnist(FashionMnist::embedded(Split::Train)?),
            Some(AnySource::FashionMnist(FashionMnist::embedded(
                Split::Test,
            )?)),
        ),
        DataSpec::FashionMnist { path } => {
            let dir = path
                .clone()
                .unwrap_or_else(|| PathBuf::from(fashion_mnist::DEBIAN_PATH));
            (
                AnySource::FashionMnist(FashionMnist::from_dir(&dir, Split::Train)?),
                Some(AnySource::FashionMnist(FashionMnist::from_dir(
                    &dir,
                    Split::Test,
                )?)),
            )
        }
        DataSpec::Folder { path } => {
            let opts = ScanOptions::default();
            if path.join("train").is_dir() {
                let (train, _) = ImageNet::train(path, &opts)?;
                let val = if path.join("val").is_dir() {
                    Some(AnySource::Folder(ImageNet::val(path, &opts)?.0))
                } else {
                    None
                };
                (AnySource::Folder(train), val)
            } else {
                (AnySource::Folder(FolderDataset::scan(path, &opts)?.0), None)
            }
        }
    })
}

/// The train and eval transforms for a recipe.
pub fn transforms(config: &PretrainConfig) -> (Transform, Transform) {
    let size = config.model.img_size as u32;
    let chans = config.model.in_chans as u8;
    if config.data.is_fashion_mnist() {
        let (mean, std) = (fashion_mnist::MEAN, fashion_mnist::STD);
        let (mean, std) = (vec![mean; chans.into()], vec![std; chans.into()]);
        let train = Transform {
            geometry: Geometry::Resize,
            hflip: 0.5,
            ..Transform::pretrain(size)
        }
        .with_normalization(chans, mean.clone(), std.clone());
        let eval = Transform {
            geometry: Geometry::Resize,
            hflip: 0.0,
            ..Transform::pretrain(size)
        }
        .with_normalization(chans, mean, std);
        (train, eval)
    } else {
        let (mut train, mut eval) = (Transform::pretrain(size), Transform::eval(size));
        if chans == 1 {
            train = train.with_normalization(1, vec![0.449], vec![0.226]);
            eval = eval.with_normalization(1, vec![0.449], vec![0.226]);
        }
        (train, eval)
    }
}

/// Masking noise for one step, drawn from the run's seed (not from the backend's global
/// RNG), so a resumed run draws the same masks.
fn mask_noise(seed: u64, epoch: usize, step: usize, n: usize, l: usize) -> Vec<f32> {
    let mut rng = SampleRng::for_sample(seed ^ 0x6d61_736b, epoch as u64, step as u64);
    (0..n * l)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
        .collect()
}

/// Pre-trains a SupMAE / MAE with the official recipe, writing `config.json`, `log.jsonl`
/// and an atomically replaced `checkpoint.ckpt` into its run folder.
pub struct Pretrainer<B: AutodiffBackend> {
    config: PretrainConfig,
    model: Option<SupMae<B>>,
    opt_decay: Opt<B>,
    opt_no_decay: Opt<B>,
    decay_ids: Vec<ParamId>,
    no_decay_ids: HashSet<ParamId>,
    train: DataLoader<AnySource>,
    val: Option<DataLoader<AnySource>>,
    run: RunDir,
    device: B::Device,
    epochs_done: usize,
    history: Vec<EpochLog>,
    step_lrs: Vec<f64>,
    progress: ProgressMode,
    #[cfg(feature = "distributed")]
    peer: Option<crate::distributed::Peer<B::InnerBackend>>,
}

/// This process's peer in a data-parallel run, if any.
#[cfg(feature = "distributed")]
type PeerArg<B> = Option<crate::distributed::Peer<<B as AutodiffBackend>::InnerBackend>>;
#[cfg(not(feature = "distributed"))]
type PeerArg<B> = Option<std::marker::PhantomData<B>>;

impl<B: AutodiffBackend> Pretrainer<B> {
    /// Starts a new run in `out_dir` (created if needed) with the data of `config.data`.
    /// The folder is locked for the trainer's lifetime; a folder holding a previous run's
    /// checkpoint is refused unless `out_dir` says to overwrite it (see [`NewRun`]).
    pub fn new(
        config: PretrainConfig,
        out_dir: impl Into<NewRun>,
        device: B::Device,
    ) -> Result<Self> {
        config.validate()?;
        let (train, val) = load_data(&config.data)?;
        Self::with_sources(config, train, val, out_dir, device)
    }

    /// Starts a new run on explicit datasets.
    pub fn with_sources(
        config: PretrainConfig,
        train: AnySource,
        val: Option<AnySource>,
        out_dir: impl Into<NewRun>,
        device: B::Device,
    ) -> Result<Self> {
        Self::start(config, train, val, out_dir.into(), device, None)
    }

    /// Starts a new run as one peer of a data-parallel run (see [`crate::distributed`]):
    /// `config.peers` must equal the run's peers. Every peer must call this with the same
    /// config and data; rank 0 writes the run folder, the others write nothing.
    ///
    /// Checks that every peer starts from the same weights.
    #[cfg(feature = "distributed")]
    pub fn with_sources_on_peer(
        config: PretrainConfig,
        train: AnySource,
        val: Option<AnySource>,
        out_dir: impl Into<NewRun>,
        device: B::Device,
        peer: crate::distributed::Peer<B::InnerBackend>,
    ) -> Result<Self> {
        Self::start(config, train, val, out_dir.into(), device, Some(peer))
    }

    fn start(
        config: PretrainConfig,
        train: AnySource,
        val: Option<AnySource>,
        target: NewRun,
        device: B::Device,
        peer: PeerArg<B>,
    ) -> Result<Self> {
        config.validate()?;
        let model = config.model.init_seeded::<B>(config.seed, &device)?;
        let trainer = Self::assemble(config, model, train, val, Open::New(target), device, peer)?;
        trainer.check_peers_agree()?;
        if !trainer.is_main() {
            return Ok(trainer);
        }
        let json =
            serde_json::to_vec_pretty(&trainer.config).map_err(|e| TrainError::InvalidConfig {
                field: "config",
                reason: e.to_string(),
            })?;
        trainer.run.write_atomic(CONFIG_FILE, &json)?;
        trainer.run.write_atomic(LOG_FILE, b"")?;
        Ok(trainer)
    }

    fn assemble(
        config: PretrainConfig,
        model: SupMae<B>,
        train: AnySource,
        val: Option<AnySource>,
        folder: Open<'_>,
        device: B::Device,
        peer: PeerArg<B>,
    ) -> Result<Self> {
        #[cfg(feature = "distributed")]
        let (rank, peers) = peer.as_ref().map_or((0, 1), |p| (p.rank(), p.peers()));
        #[cfg(not(feature = "distributed"))]
        let (rank, peers) = {
            let _ = &peer;
            (0, 1)
        };
        if config.peers != peers {
            return Err(TrainError::InvalidConfig {
                field: "peers",
                reason: format!(
                    "the run is set up for {} data-parallel peer(s) but {peers} take part; \
                     a run (and its resume) needs the same number of peers throughout",
                    config.peers
                ),
            });
        }
        let classes = config.model.cls_head.as_ref().map(|h| h.num_classes);
        if let Some(classes) = classes
            && train.classes().len() > classes
        {
            return Err(TrainError::InvalidConfig {
                field: "model.cls_head.num_classes",
                reason: format!(
                    "({classes}) is smaller than the dataset's {} classes",
                    train.classes().len()
                ),
            });
        }
        if train.len() < config.batch_size * peers {
            return Err(TrainError::InvalidConfig {
                field: "batch_size",
                reason: format!(
                    "({} x {peers} peer(s)) is larger than the training set ({} images); the \
                     last incomplete batch is dropped, as in the official loader",
                    config.batch_size,
                    train.len()
                ),
            });
        }
        let (train_t, eval_t) = transforms(&config);
        let loader_cfg = LoaderConfig {
            drop_last: true,
            seed: config.seed,
            threads: config.data_threads,
            ..LoaderConfig::new(config.batch_size)
        };
        let train = DataLoader::new(
            Arc::new(train),
            train_t,
            LoaderConfig {
                shard: Some(Shard { rank, peers }),
                ..loader_cfg.clone()
            },
        )?;
        let val = match val {
            // Rank 0 evaluates; the others go on to the next epoch.
            Some(v) if config.eval && config.model.cls_head.is_some() && rank == 0 => {
                let cfg = LoaderConfig {
                    shuffle: false,
                    drop_last: false,
                    ..loader_cfg
                };
                Some(DataLoader::new(Arc::new(v), eval_t, cfg)?)
            }
            _ => None,
        };
        // Rank 0 owns (locks and writes) the folder; the other peers only read it.
        let run = match folder {
            _ if rank != 0 => RunDir::unlocked(folder.path()),
            Open::New(target) => target.open()?,
            Open::Resume(path) => RunDir::resume(path)?,
        };
        let groups = ParamGroups::of(&model);
        let adamw = |wd: f64| {
            AdamWConfig::new()
                .with_beta_1(config.betas.0 as f32)
                .with_beta_2(config.betas.1 as f32)
                .with_epsilon(config.eps as f32)
                .with_weight_decay(wd as f32)
                .init::<B, SupMae<B>>()
        };
        Ok(Self {
            opt_decay: adamw(config.weight_decay),
            opt_no_decay: adamw(0.0),
            decay_ids: groups.decay.iter().map(|(_, id)| *id).collect(),
            no_decay_ids: groups.no_decay.iter().map(|(_, id)| *id).collect(),
            model: Some(model),
            config,
            train,
            val,
            run,
            device,
            epochs_done: 0,
            history: Vec::new(),
            step_lrs: Vec::new(),
            progress: ProgressMode::Quiet,
            #[cfg(feature = "distributed")]
            peer,
        })
    }

    /// This process's rank in a data-parallel run (0 without one).
    pub fn rank(&self) -> usize {
        #[cfg(feature = "distributed")]
        if let Some(p) = &self.peer {
            return p.rank();
        }
        0
    }

    /// Whether this process writes the run folder (rank 0).
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    fn peers(&self) -> usize {
        self.config.peers
    }

    fn check_peers_agree(&self) -> Result<()> {
        #[cfg(feature = "distributed")]
        if let Some(p) = &self.peer {
            p.check_same(self.model())?;
        }
        Ok(())
    }

    /// Averages `values` over the peers (unchanged without any).
    fn reduce_values(&self, values: Vec<f64>) -> Result<Vec<f64>> {
        #[cfg(feature = "distributed")]
        if let Some(p) = &self.peer {
            let n = values.len();
            let t = Tensor::<B::InnerBackend, 1>::from_data(
                TensorData::new(values.iter().map(|&v| v as f32).collect(), [n]),
                &self.device,
            );
            return Ok(p
                .all_reduce_mean(t)?
                .into_data()
                .convert::<f64>()
                .to_vec::<f64>()
                .unwrap_or_else(|_| vec![f64::NAN; n]));
        }
        Ok(values)
    }

    /// Averages the gradients over the peers (unchanged without any).
    fn reduce_grads(&self, model: &SupMae<B>, grads: GradientsParams) -> Result<GradientsParams> {
        #[cfg(feature = "distributed")]
        if let Some(p) = &self.peer {
            return p.all_reduce_grads(model, grads);
        }
        let _ = model;
        Ok(grads)
    }

    /// A hash of every trainable parameter's bits (FNV-1a over the f32 values in the
    /// module's order): equal on all peers of a data-parallel run after every step.
    pub fn parameter_fingerprint(&self) -> u64 {
        let mut f = Fingerprint::<B> {
            hash: 0xcbf2_9ce4_8422_2325,
            _b: std::marker::PhantomData,
        };
        self.model().visit(&mut f);
        f.hash
    }

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
        let model = meta.config.model.init::<B>(&device)?;
        let record = Recorder::<B>::load(&Rec::new(), parts.model, &device)
            .map_err(|e| bad("model record", e.to_string()))?;
        let model = model.load_record(record);
        let mut trainer = Self::assemble(
            meta.config,
            model,
            train,
            val,
            Open::Resume(out_dir),
            device,
            peer,
        )?;
        trainer.check_peers_agree()?;
        let dec = Recorder::<B>::load(&Rec::new(), parts.optim_decay, &trainer.device)
            .map_err(|e| bad("optimizer record", e.to_string()))?;
        let nodec = Recorder::<B>::load(&Rec::new(), parts.optim_no_decay, &trainer.device)
            .map_err(|e| bad("optimizer record", e.to_string()))?;
        trainer.opt_decay = trainer.opt_decay.load_record(dec);
        trainer.opt_no_decay = trainer.opt_no_decay.load_record(nodec);
        trainer.epochs_done = meta.epochs_done;
        trainer.history = meta.history;
        // Epochs logged after the checkpoint are redone: rewrite the log to match.
        if trainer.is_main() {
            trainer.rewrite_log()?;
        }
        Ok(trainer)
    }

    /// Changes the run's length to `epochs` (to extend a resumed run): the cosine schedule
    /// is recomputed for the new length from the next step on, and `config.json` is
    /// rewritten. Extending a run is not the same as having set the longer schedule from the
    /// start (the learning rates of the epochs already done stay as they were).
    pub fn set_epochs(&mut self, epochs: usize) -> Result<()> {
        if epochs < self.epochs_done.max(1) {
            return Err(TrainError::InvalidConfig {
                field: "epochs",
                reason: format!(
                    "({epochs}) is fewer than the {} epochs already done",
                    self.epochs_done
                ),
            });
        }
        self.config.epochs = epochs;
        self.config.validate()?;
        if self.is_main() {
            let json =
                serde_json::to_vec_pretty(&self.config).map_err(|e| TrainError::InvalidConfig {
                    field: "config",
                    reason: e.to_string(),
                })?;
            self.run.write_atomic(CONFIG_FILE, &json)?;
        }
        Ok(())
    }

    /// Shows progress on stderr (`Bar`/`Lines`) or not (`Quiet`, the default).
    pub fn with_progress(mut self, mode: ProgressMode) -> Self {
        self.progress = mode;
        self
    }

    /// The recipe.
    pub fn config(&self) -> &PretrainConfig {
        &self.config
    }

    /// The model being trained.
    pub fn model(&self) -> &SupMae<B> {
        self.model
            .as_ref()
            .unwrap_or_else(|| unreachable!("the model is only taken during a step"))
    }

    /// Replaces the model (keeps optimizer state keyed by parameter id).
    pub fn set_model(&mut self, model: SupMae<B>) {
        self.model = Some(model);
    }

    /// Epochs finished so far.
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// The per-epoch logs so far.
    pub fn history(&self) -> &[EpochLog] {
        &self.history
    }

    /// The learning rate of every optimizer step taken by this process.
    pub fn step_lrs(&self) -> &[f64] {
        &self.step_lrs
    }

    /// The run folder.
    pub fn out_dir(&self) -> &Path {
        self.run.path()
    }

    /// Optimizer steps per epoch.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            lr: self.config.peak_lr(),
            min_lr: self.config.min_lr,
            warmup_epochs: self.config.warmup_epochs,
            epochs: self.config.epochs as f64,
            iters_per_epoch: self.train.num_batches(),
            accum_iter: self.config.accum_iter,
        }
    }

    /// Trains to the end of the run.
    pub fn run(&mut self) -> Result<()> {
        self.train_until(self.config.epochs)
    }

    /// Trains until `epoch_end` epochs are done (at most the run's length), checkpointing
    /// every `checkpoint_every` epochs and after the run's last epoch.
    pub fn train_until(&mut self, epoch_end: usize) -> Result<()> {
        let end = epoch_end.min(self.config.epochs);
        while self.epochs_done < end {
            let epoch = self.epochs_done;
            let mut log = self.train_epoch(epoch)?;
            if let Some((full, masked)) = self.evaluate()? {
                log.val_acc1_full = Some(full);
                log.val_acc1_masked = Some(masked);
            }
            self.epochs_done += 1;
            if self.is_main() {
                self.append_log(&log)?;
            }
            self.history.push(log);
            if self.is_main()
                && (self
                    .epochs_done
                    .is_multiple_of(self.config.checkpoint_every)
                    || self.epochs_done == self.config.epochs)
            {
                self.save_checkpoint()?;
            }
        }
        Ok(())
    }

    fn train_epoch(&mut self, epoch: usize) -> Result<EpochLog> {
        let schedule = self.schedule();
        let iters = self.train.num_batches();
        let accum = self.config.accum_iter;
        let l = self.config.model.num_patches();
        let supmae = self.config.model.cls_head.is_some();
        let mut progress = Progress::new(self.progress, epoch, self.config.epochs, iters);
        let start = Instant::now();
        let (mut sum_loss, mut sum_rec, mut sum_cls, mut sum_lr) = (0.0, 0.0, 0.0, 0.0);
        let mut images = 0usize;
        let mut done = 0usize;
        let mut accumulator = GradientsAccumulator::<SupMae<B>>::new();
        for (it, batch) in self.train.epoch(epoch as u64).enumerate() {
            let batch = batch?;
            let lr = schedule.lr_at(epoch, it);
            let n = batch.len();
            let (x, y) = batch.into_tensors::<B>(&self.device);
            // The masks of the global batch; this peer takes its rows.
            let (peers, rank) = (self.peers(), self.rank());
            let mut noise = mask_noise(self.config.seed, epoch, it, n * peers, l);
            if peers > 1 {
                noise = noise[rank * n * l..(rank + 1) * n * l].to_vec();
            }
            let noise = Tensor::<B, 2>::from_data(TensorData::new(noise, [n, l]), &self.device);
            let model = self
                .model
                .take()
                .unwrap_or_else(|| unreachable!("model present"));
            let mut input = SupMaeInput::new(x)
                .with_mask_ratio(self.config.mask_ratio)
                .with_noise(noise)
                .with_training(true);
            if supmae {
                input = input.with_labels(y);
            }
            let out = match model.forward(input) {
                Ok(out) => out,
                Err(e) => {
                    self.model = Some(model);
                    return Err(e.into());
                }
            };
            let cls = out
                .cls_loss
                .clone()
                .unwrap_or_else(|| Tensor::zeros([1], &self.device));
            let values: Vec<f64> =
                Tensor::cat(vec![out.loss.clone(), out.rec_loss.clone(), cls], 0)
                    .into_data()
                    .convert::<f64>()
                    .to_vec::<f64>()
                    .unwrap_or_default();
            // Logged losses are the global batch's; every peer stops on a non-finite one.
            let values = match self.reduce_values(values) {
                Ok(v) => v,
                Err(e) => {
                    self.model = Some(model);
                    return Err(e);
                }
            };
            // An unreadable value counts as non-finite below.
            let value = |i: usize| values.get(i).copied().unwrap_or(f64::NAN);
            let (loss, rec, cls) = (value(0), value(1), value(2));
            if !loss.is_finite() {
                self.model = Some(model);
                let ckpt = self.run.file(CHECKPOINT_FILE);
                return Err(TrainError::NonFiniteLoss {
                    epoch,
                    iteration: it,
                    value: loss,
                    checkpoint: if ckpt.exists() {
                        ckpt.display().to_string()
                    } else {
                        "none written yet".into()
                    },
                });
            }
            let scaled = if accum > 1 {
                out.loss.div_scalar(accum as f64)
            } else {
                out.loss
            };
            let grads = GradientsParams::from_grads(scaled.backward(), &model);
            let grads = if accum > 1 {
                accumulator.accumulate(&model, grads);
                ((it + 1) % accum == 0).then(|| accumulator.grads())
            } else {
                Some(grads)
            };
            let model = match grads {
                Some(grads) => match self.reduce_grads(&model, grads) {
                    Ok(grads) => self.step(model, grads, lr),
                    Err(e) => {
                        self.model = Some(model);
                        return Err(e);
                    }
                },
                None => model,
            };
            self.model = Some(model);
            sum_loss += loss;
            sum_rec += rec;
            sum_cls += cls;
            sum_lr += lr;
            images += n * self.peers();
            done += 1;
            progress.update(done, images, sum_loss / done as f64);
        }
        progress.finish();
        // Like the official loop, gradients of an incomplete final accumulation window are
        // dropped (the optimizer's gradients are zeroed at the next epoch's start).
        let seconds = start.elapsed().as_secs_f64();
        let d = done.max(1) as f64;
        let seen = self.history.last().map_or(0, |h| h.images_seen) + images as u64;
        Ok(EpochLog {
            epoch,
            lr: sum_lr / d,
            loss: sum_loss / d,
            rec_loss: sum_rec / d,
            cls_loss: sum_cls / d,
            images_per_sec: images as f64 / seconds.max(1e-9),
            seconds,
            images_seen: seen,
            val_acc1_full: None,
            val_acc1_masked: None,
        })
    }

    /// One AdamW step of both parameter groups with learning rate `lr`.
    fn step(&mut self, model: SupMae<B>, mut grads: GradientsParams, lr: f64) -> SupMae<B> {
        let mut no_decay = GradientsParams::new();
        model.visit(&mut MoveGrads::<B> {
            from: &mut grads,
            to: &mut no_decay,
            ids: &self.no_decay_ids,
            _b: std::marker::PhantomData,
        });
        // What is left in `grads` is the decayed group (frozen tables have no gradient).
        debug_assert!(
            self.decay_ids
                .iter()
                .all(|id| !self.no_decay_ids.contains(id))
        );
        let model = self.opt_decay.step(lr, model, grads);
        let model = self.opt_no_decay.step(lr, model, no_decay);
        self.step_lrs.push(lr);
        model
    }

    /// Top-1 accuracy (%) of the classification branch on the validation split, with every
    /// patch visible and with the training mask ratio; `None` without a branch or a split.
    pub fn evaluate(&self) -> Result<Option<(f64, f64)>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let model = self.model().valid();
        let device = self.device.clone();
        let l = self.config.model.num_patches();
        let (mut full, mut masked, mut total) = (0usize, 0usize, 0usize);
        for (i, batch) in val.epoch(0).enumerate() {
            let batch = batch?;
            let n = batch.len();
            if n < 1 {
                continue;
            }
            let (x, y) = batch.into_tensors::<B::InnerBackend>(&device);
            let y = y.reshape([n, 1]);
            let correct =
                |ratio: f64, noise: Option<Tensor<B::InnerBackend, 2>>| -> Result<usize> {
                    let enc = model.forward_encoder(x.clone(), ratio, noise)?;
                    let Some(logits) = model.forward_classification(enc.latent, false)? else {
                        return Ok(0);
                    };
                    let hits: i64 = logits
                        .argmax(1)
                        .equal(y.clone())
                        .int()
                        .sum()
                        .into_scalar()
                        .elem();
                    Ok(hits as usize)
                };
            full += correct(0.0, None)?;
            let noise = Tensor::from_data(
                TensorData::new(mask_noise(self.config.seed ^ 0xe7a1, 0, i, n, l), [n, l]),
                &device,
            );
            masked += correct(self.config.mask_ratio, Some(noise))?;
            total += n;
        }
        if total == 0 {
            return Ok(None);
        }
        let pct = |c: usize| 100.0 * c as f64 / total as f64;
        Ok(Some((pct(full), pct(masked))))
    }

    /// Writes `checkpoint.ckpt` atomically and returns its path.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let path = self.run.file(CHECKPOINT_FILE);
        let bad = |e: String| TrainError::Checkpoint {
            path: path.clone(),
            reason: e,
        };
        let meta = Meta {
            format: 1,
            config: self.config.clone(),
            epochs_done: self.epochs_done,
            history: self.history.clone(),
            extras: Default::default(),
            converted_from: None,
        };
        let parts = CheckpointParts {
            meta: serde_json::to_vec(&meta).map_err(|e| bad(e.to_string()))?,
            model: Recorder::<B>::record(&Rec::new(), self.model().clone().into_record(), ())
                .map_err(|e| bad(e.to_string()))?,
            optim_decay: Recorder::<B>::record(&Rec::new(), self.opt_decay.to_record(), ())
                .map_err(|e| bad(e.to_string()))?,
            optim_no_decay: Recorder::<B>::record(&Rec::new(), self.opt_no_decay.to_record(), ())
                .map_err(|e| bad(e.to_string()))?,
        };
        write_atomic(&path, &parts.encode())?;
        Ok(path)
    }

    fn append_log(&self, log: &EpochLog) -> Result<()> {
        use std::io::Write;
        let path = self.run.file(LOG_FILE);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let line = serde_json::to_string(log).unwrap_or_default();
        writeln!(file, "{line}").map_err(io(&path))
    }

    fn rewrite_log(&self) -> Result<()> {
        let mut text = String::new();
        for log in &self.history {
            text.push_str(&serde_json::to_string(log).unwrap_or_default());
            text.push('\n');
        }
        self.run.write_atomic(LOG_FILE, text.as_bytes())
    }
}

/// How [`Pretrainer::assemble`] opens the run folder.
enum Open<'a> {
    New(NewRun),
    Resume(&'a Path),
}

impl Open<'_> {
    fn path(&self) -> &Path {
        match self {
            Open::New(target) => target.path(),
            Open::Resume(path) => path,
        }
    }
}

/// FNV-1a over the bits of every trainable parameter.
struct Fingerprint<B: AutodiffBackend> {
    hash: u64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Fingerprint<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.is_require_grad() {
            return;
        }
        let values = param.val().into_data().convert::<f32>();
        for v in values.iter::<f32>() {
            for byte in v.to_bits().to_le_bytes() {
                self.hash ^= u64::from(byte);
                self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
}

/// Moves the gradients of `ids` from one set to another.
struct MoveGrads<'a, B: AutodiffBackend> {
    from: &'a mut GradientsParams,
    to: &'a mut GradientsParams,
    ids: &'a HashSet<ParamId>,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for MoveGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.ids.contains(&param.id)
            && let Some(g) = self.from.remove::<B::InnerBackend, D>(param.id)
        {
            self.to.register::<B::InnerBackend, D>(param.id, g);
        }
    }
}
