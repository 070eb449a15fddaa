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
    AnySource, DataLoader, FashionMnist, FolderDataset, Geometry, HostBatch, ImageNet, ImageSource,
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

mod data;
mod files;
mod init;
mod train;

use data::mask_noise;
pub use data::{load_data, transforms};
pub use files::{load_pretrained, pretrained_extras, read_pretrain_config, write_pretrained};
pub use init::load_continued;

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

/// What one micro-batch of pre-training did (see [`Pretrainer::train_batch`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PretrainBatch {
    /// The global batch's total loss.
    pub loss: f64,
    /// Its reconstruction loss.
    pub rec_loss: f64,
    /// Its classification loss, `λ` included (0 for MAE).
    pub cls_loss: f64,
    /// The learning rate of the iteration.
    pub lr: f64,
    /// Whether the optimizer stepped (the end of an accumulation window).
    pub stepped: bool,
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
    peers: crate::peers::Peers<B>,
    init_report: Option<supmae_model::LoadReport>,
    accumulator: GradientsAccumulator<SupMae<B>>,
}

use crate::peers::PeerArg;

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
        let (model, init_report) = match &config.init {
            Some(path) => {
                let (model, report) = load_continued(model, path, &device)?;
                (model, Some(report))
            }
            None => (model, None),
        };
        let mut trainer =
            Self::assemble(config, model, train, val, Open::New(target), device, peer)?;
        trainer.init_report = init_report;
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
        let peer = crate::peers::Peers::<B>::new(peer);
        let (rank, peers) = (peer.rank(), peer.count());
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
            peers: peer,
            init_report: None,
            accumulator: GradientsAccumulator::new(),
        })
    }

    /// What loading `config.init` applied and left fresh (continued pre-training only).
    pub fn init_report(&self) -> Option<&supmae_model::LoadReport> {
        self.init_report.as_ref()
    }

    /// This process's rank in a data-parallel run (0 without one).
    pub fn rank(&self) -> usize {
        self.peers.rank()
    }

    /// Whether this process writes the run folder (rank 0).
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    fn peers(&self) -> usize {
        self.config.peers
    }

    fn check_peers_agree(&self) -> Result<()> {
        self.peers.check_same(self.model())
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

    /// Replaces the weights by an official-format pre-training state dict (every key of the
    /// model, as [`SupMae::load_state_dict`] requires), keeping the parameter groups and the
    /// optimizer state.
    pub fn load_state_dict(
        &mut self,
        state: &supmae_model::checkpoint::StateDict,
    ) -> Result<supmae_model::LoadReport> {
        let model = self
            .model
            .take()
            .unwrap_or_else(|| unreachable!("the model is only taken during a step"));
        let fallback = model.clone();
        match model.load_state_dict(state) {
            Ok((model, report)) => {
                self.model = Some(model);
                Ok(report)
            }
            Err(e) => {
                self.model = Some(fallback);
                Err(e.into())
            }
        }
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
