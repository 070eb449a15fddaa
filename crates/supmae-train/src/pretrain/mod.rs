//! The pre-training learner (`main_pretrain_supmae.py` + `engine_pretrain.py`): the
//! [`Pretraining`] task and its [`Pretrainer`] (the [`Engine`] that drives it).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use burn::module::ParamId;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use supmae_data::{AnySource, DataLoader, HostBatch, ImageSource, LoaderConfig, Shard};
use supmae_model::SupMae;

use crate::config::PretrainConfig;
use crate::engine::{At, Engine, EpochRecord, Task};
use crate::error::{Result, TrainError, json};
use crate::peers::{PeerArg, Peers};
use crate::run_dir::{CONFIG_FILE, LOG_FILE, NewRun, RunDir};
use crate::schedule::ParamGroups;

mod data;
mod files;
mod init;
mod task;

pub use data::{load_data, transforms};
pub use files::{
    load_pretrained, load_pretrained_bytes, pretrained_extras, read_pretrain_config,
    write_pretrained,
};
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

impl EpochRecord for EpochLog {
    fn images_seen(&self) -> u64 {
        self.images_seen
    }
    fn val_acc1(&self) -> Option<f64> {
        self.val_acc1_full
    }
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

/// The pre-training task: a SupMAE / MAE with the official recipe (AdamW in two
/// weight-decay groups, per-iteration warmup + cosine, accumulation, mask ratio 0.75,
/// norm-pix loss plus `λ · CE`), and the classification branch's validation top-1 with all
/// patches visible and with the training mask ratio.
pub struct Pretraining<B: AutodiffBackend> {
    config: PretrainConfig,
    model: Option<SupMae<B>>,
    opt_decay: Opt<B>,
    opt_no_decay: Opt<B>,
    no_decay_ids: HashSet<ParamId>,
    val: Option<DataLoader<AnySource>>,
    device: B::Device,
    init_report: Option<supmae_model::LoadReport>,
    accumulator: GradientsAccumulator<SupMae<B>>,
}

/// Pre-trains a SupMAE / MAE with the official recipe, writing `config.json`, `log.jsonl`,
/// an atomically replaced `checkpoint.ckpt` and `best.ckpt` into its run folder.
pub type Pretrainer<B> = Engine<B, Pretraining<B>>;

impl<B: AutodiffBackend> Engine<B, Pretraining<B>> {
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
        let mut trainer = Self::assemble_pretrain(
            config,
            model,
            train,
            val,
            Open::New(target),
            device,
            peer,
            Vec::new(),
        )?;
        trainer.task.init_report = init_report;
        if !trainer.is_main() {
            return Ok(trainer);
        }
        let json = serde_json::to_vec_pretty(&trainer.task.config).map_err(json("config.json"))?;
        trainer.run.write_atomic(CONFIG_FILE, &json)?;
        trainer.run.write_atomic(LOG_FILE, b"")?;
        Ok(trainer)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble_pretrain(
        config: PretrainConfig,
        model: SupMae<B>,
        train: AnySource,
        val: Option<AnySource>,
        folder: Open<'_>,
        device: B::Device,
        peer: PeerArg<B>,
        history: Vec<EpochLog>,
    ) -> Result<Self> {
        let peer = Peers::<B>::new(peer);
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
        let task = Pretraining {
            opt_decay: adamw(config.weight_decay),
            opt_no_decay: adamw(0.0),
            no_decay_ids: groups.no_decay.iter().map(|(_, id)| *id).collect(),
            model: Some(model),
            config,
            val,
            device: device.clone(),
            init_report: None,
            accumulator: GradientsAccumulator::new(),
        };
        Engine::assemble(task, train, run, peer, device, history)
    }

    /// What loading `config.init` applied and left fresh (continued pre-training only).
    pub fn init_report(&self) -> Option<&supmae_model::LoadReport> {
        self.task.init_report.as_ref()
    }

    /// Changes the run's length to `epochs` (to extend a resumed run): the cosine schedule
    /// is recomputed for the new length from the next step on, and `config.json` is
    /// rewritten. Extending a run is not the same as having set the longer schedule from the
    /// start (the learning rates of the epochs already done stay as they were).
    pub fn set_epochs(&mut self, epochs: usize) -> Result<()> {
        let done = self.epochs_done();
        if epochs < done.max(1) {
            return Err(TrainError::InvalidConfig {
                field: "epochs",
                reason: format!("({epochs}) is fewer than the {done} epochs already done"),
            });
        }
        let mut config = self.task.config.clone();
        config.epochs = epochs;
        config.validate()?;
        self.task.config = config;
        if self.is_main() {
            let json = serde_json::to_vec_pretty(&self.task.config).map_err(json("config.json"))?;
            self.run.write_atomic(CONFIG_FILE, &json)?;
        }
        Ok(())
    }

    /// The recipe.
    pub fn config(&self) -> &PretrainConfig {
        &self.task.config
    }

    /// Replaces the model (keeps optimizer state keyed by parameter id).
    pub fn set_model(&mut self, model: SupMae<B>) {
        self.task.model = Some(model);
    }

    /// Replaces the weights by an official-format pre-training state dict (every key of the
    /// model, as [`SupMae::load_state_dict`] requires), keeping the parameter groups and the
    /// optimizer state.
    pub fn load_state_dict(
        &mut self,
        state: &supmae_model::checkpoint::StateDict,
    ) -> Result<supmae_model::LoadReport> {
        let (model, report) = self.task.model().clone().load_state_dict(state)?;
        self.task.model = Some(model);
        Ok(report)
    }

    /// Trains on one micro-batch as iteration `iteration` of `epoch` (see
    /// [`Engine::step`]): the schedule's lr, the SupMAE loss with this step's masks,
    /// accumulation, and an AdamW step of both weight-decay groups at the end of each
    /// accumulation window.
    ///
    /// `noise` (`[N, L]` row-major, uniform in `[0, 1)`, the masking noise of spec §1.5)
    /// replaces the run's masks (the PyTorch trajectory tests replay PyTorch's); `None`
    /// draws them from the run's seed, epoch and iteration.
    pub fn train_batch(
        &mut self,
        epoch: usize,
        iteration: usize,
        batch: HostBatch,
        noise: Option<Vec<f32>>,
    ) -> Result<PretrainBatch> {
        let report = self.step(At { epoch, iteration }, batch, noise)?;
        let value = |i: usize| report.values.get(i).copied().unwrap_or(f64::NAN);
        Ok(PretrainBatch {
            loss: value(0),
            rec_loss: value(1),
            cls_loss: value(2),
            lr: report.lr,
            stepped: report.stepped,
        })
    }
}

/// How a pre-training engine opens the run folder.
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
