//! Fine-tuning (`main_finetune.py` + `engine_finetune.py`, spec §2.3 and §3): the ViT
//! classifier built from a pre-training checkpoint, layer-wise lr decay, AdamW, warmup +
//! cosine, drop path, Mixup/CutMix with label smoothing folded into soft targets,
//! RandAugment and random erasing, gradient accumulation, top-1/top-5 evaluation and the
//! best checkpoint kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use supmae_data::{
    AnySource, DataLoader, HostBatch, RandAugment, RandomErasing, SampleRng, Transform,
};
use supmae_model::checkpoint::{LoadReport, StateDict, export_state_dict, param_keys};
use supmae_model::{VitClassifier, VitConfig};

use crate::checkpoint::{CheckpointParts, write_atomic};
use crate::classifier::{
    BEST_FILE, BatchReport, ClassifierKind, ClassifierLog, ClassifierMeta, EvalReport, Rec,
    RunSpec, evaluate, soft_target_cross_entropy, start_run,
};
use crate::config::DataSpec;
use crate::error::{Result, TrainError, io, json};
use crate::peers::{PeerArg, Peers};
use crate::pretrain::{CHECKPOINT_FILE, LOG_FILE, load_pretrained};
use crate::progress::{Progress, ProgressMode};
use crate::schedule::{LrSchedule, scaled_lr};

mod config;
mod init;
mod lrd;
mod mixup;
mod resume;

pub use config::FinetuneConfig;
pub(crate) use init::append_jsonl;
pub use init::{Init, init_classifier, is_native_checkpoint, pretrained_state};

pub use lrd::{LrdGroup, finetune_no_weight_decay, layer_id, layer_scales, param_groups_lrd};
pub use mixup::{
    MixDraw, MixupConfig, cutmix_box, mix_batch, mix_batch_with, mixup_targets, one_hot_targets,
};

type Opt<B> = OptimizerAdaptor<AdamW, VitClassifier<B>, B>;

/// One optimizer group: a layer id and a decay flag.
struct Group<B: AutodiffBackend> {
    scale: f64,
    opt: Opt<B>,
}

/// Fine-tunes a [`VitClassifier`]; writes `config.json`, `log.jsonl`, `checkpoint.ckpt`
/// (every epoch, atomically) and `best.ckpt` (highest `test_acc1`).
pub struct Finetuner<B: AutodiffBackend> {
    config: FinetuneConfig,
    model: Option<VitClassifier<B>>,
    groups: Vec<Group<B>>,
    group_of: HashMap<ParamId, usize>,
    train: DataLoader<AnySource>,
    val: Option<DataLoader<AnySource>>,
    classes: Vec<String>,
    run: crate::run_dir::RunDir,
    device: B::Device,
    history: Vec<ClassifierLog>,
    best_acc1: Option<f64>,
    load_report: Option<LoadReport>,
    progress: ProgressMode,
    peers: Peers<B>,
    accumulator: GradientsAccumulator<VitClassifier<B>>,
}

/// Random draws of one fine-tuning micro-batch given by the caller instead of the run's
/// streams (see [`Finetuner::train_batch`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinetuneDraws {
    /// Mixup / CutMix parameters (`None`: drawn from the run's stream).
    pub mix: Option<MixDraw>,
    /// Stochastic-depth keep masks (`0.0`/`1.0` per sample, for every branch that draws, in
    /// forward order; see [`supmae_model::seeding::with_masks`]); `None`: drawn from the
    /// run's stream.
    pub drop_path: Option<Vec<f32>>,
}

impl<B: AutodiffBackend> Finetuner<B> {
    /// Starts a run on explicit datasets. The run folder is locked for the fine-tuner's
    /// lifetime and refused if it holds a previous run (see [`crate::run_dir::NewRun`]).
    pub fn new(
        config: FinetuneConfig,
        train: AnySource,
        val: Option<AnySource>,
        out_dir: impl Into<crate::run_dir::NewRun>,
        device: B::Device,
    ) -> Result<Self> {
        Self::start(config, train, val, out_dir.into(), device, None)
    }

    /// Starts a run as one peer of a data-parallel run (see [`crate::distributed`]):
    /// `config.peers` must equal the run's peers, and every peer calls this with the same
    /// config and data; rank 0 writes the run folder.
    #[cfg(feature = "distributed")]
    pub fn new_on_peer(
        config: FinetuneConfig,
        train: AnySource,
        val: Option<AnySource>,
        out_dir: impl Into<crate::run_dir::NewRun>,
        device: B::Device,
        peer: crate::distributed::Peer<B::InnerBackend>,
    ) -> Result<Self> {
        Self::start(config, train, val, out_dir.into(), device, Some(peer))
    }

    fn start(
        config: FinetuneConfig,
        train: AnySource,
        val: Option<AnySource>,
        target: crate::run_dir::NewRun,
        device: B::Device,
        peer: PeerArg<B>,
    ) -> Result<Self> {
        config.validate()?;
        let peers = Peers::new(peer);
        check_peer_count(config.peers, &peers)?;
        let spec = run_spec(&config, &peers);
        let (train, val, classes, run) = if peers.is_main() {
            let r = start_run(spec, &config, train, val, target)?;
            (r.train, r.val, r.classes, r.run)
        } else {
            let (t, v, c) = crate::classifier::loaders(&spec, train, val)?;
            (t, v, c, crate::run_dir::RunDir::unlocked(target.path()))
        };
        let (model, load_report) =
            init_classifier::<B>(&config.model, &config.init, config.seed, &device)?;
        peers.check_same(&model)?;
        let (groups, group_of) = optimizer_groups(&model, &config);
        Ok(Self {
            config,
            model: Some(model),
            groups,
            group_of,
            train,
            val,
            classes,
            run,
            device,
            history: Vec::new(),
            best_acc1: None,
            load_report,
            progress: ProgressMode::Quiet,
            peers,
            accumulator: GradientsAccumulator::new(),
        })
    }

    /// This peer's rank in a data-parallel run (0 without one).
    pub fn rank(&self) -> usize {
        self.peers.rank()
    }

    /// Shows progress on stderr.
    pub fn with_progress(mut self, mode: ProgressMode) -> Self {
        self.progress = mode;
        self
    }

    /// What loading the pre-trained checkpoint applied, left missing and ignored.
    pub fn load_report(&self) -> Option<&LoadReport> {
        self.load_report.as_ref()
    }

    /// The recipe.
    pub fn config(&self) -> &FinetuneConfig {
        &self.config
    }

    /// The classifier.
    pub fn model(&self) -> &VitClassifier<B> {
        self.model
            .as_ref()
            .unwrap_or_else(|| unreachable!("the model is only taken during a step"))
    }

    /// Per-epoch logs.
    pub fn history(&self) -> &[ClassifierLog] {
        &self.history
    }

    /// The run folder.
    pub fn out_dir(&self) -> &Path {
        self.run.path()
    }

    /// Number of optimizer groups (layer id × decay flag).
    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }

    /// The schedule of the run.
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

    /// Trains every epoch, evaluating and checkpointing after each.
    pub fn run(&mut self) -> Result<()> {
        while self.history.len() < self.config.epochs {
            self.run_epoch()?;
        }
        Ok(())
    }

    /// Trains, evaluates and checkpoints one epoch; returns its log.
    pub fn run_epoch(&mut self) -> Result<ClassifierLog> {
        let epoch = self.history.len();
        let mut progress = Progress::new(
            self.progress,
            epoch,
            self.config.epochs,
            self.train.num_batches(),
        );
        let start = Instant::now();
        let (mut sum_loss, mut sum_lr, mut images, mut done) = (0.0, 0.0, 0usize, 0usize);
        // Like the official loop, an incomplete accumulation window of the previous epoch is
        // dropped.
        self.accumulator = GradientsAccumulator::new();
        for (it, batch) in self.train.epoch(epoch as u64).enumerate() {
            let batch: HostBatch = batch?;
            let n = batch.len();
            let report = self.train_batch(epoch, it, batch, FinetuneDraws::default())?;
            sum_loss += report.loss;
            sum_lr += report.lr;
            images += n * self.peers.count();
            done += 1;
            progress.update(done, images, sum_loss / done as f64);
        }
        progress.finish();
        let seconds = start.elapsed().as_secs_f64();
        let report = self.evaluate()?;
        let d = done.max(1) as f64;
        let log = ClassifierLog {
            epoch,
            lr: sum_lr / d,
            train_loss: sum_loss / d,
            test_loss: report.map(|r| r.loss),
            test_acc1: report.map(|r| r.acc1),
            test_acc5: report.map(|r| r.acc5),
            n_parameters: self.model().num_params(),
            images_per_sec: images as f64 / seconds.max(1e-9),
            seconds,
            images_seen: self.history.last().map_or(0, |h| h.images_seen) + images as u64,
        };
        self.history.push(log.clone());
        let is_best = log
            .test_acc1
            .is_some_and(|a| self.best_acc1.is_none_or(|b| a >= b));
        if is_best {
            self.best_acc1 = log.test_acc1;
        }
        if self.peers.is_main() {
            append_jsonl(&self.run.file(LOG_FILE), &log)?;
            crate::curves::refresh(self.run.path());
            self.save(CHECKPOINT_FILE)?;
            if is_best || (log.test_acc1.is_none() && self.history.len() == self.config.epochs) {
                self.save(BEST_FILE)?;
            }
        }
        Ok(log)
    }

    /// Trains on one micro-batch as iteration `iteration` of `epoch`: the schedule's lr,
    /// Mixup/CutMix, drop path, the soft-target loss, accumulation, and an AdamW step of every
    /// layer-decay group at the end of each accumulation window (`(iteration + 1) %
    /// accum_iter == 0`). [`run_epoch`](Self::run_epoch) calls it for every batch of the
    /// loader; calling it yourself feeds batches from elsewhere. `draws` replaces the run's
    /// random draws (the PyTorch trajectory tests replay PyTorch's).
    pub fn train_batch(
        &mut self,
        epoch: usize,
        iteration: usize,
        mut batch: HostBatch,
        draws: FinetuneDraws,
    ) -> Result<BatchReport> {
        let it = iteration;
        let accum = self.config.accum_iter;
        let classes = self.config.model.num_classes;
        let c = self.config.model.in_chans;
        let s = self.config.model.img_size;
        let n = batch.len();
        crate::classifier::check_batch(&batch, c, s)?;
        let lr = self.schedule().lr_at(epoch, it);
        let labels: Vec<usize> = batch.labels.iter().map(|&l| l as usize).collect();
        // Each peer mixes its own share with its own numbers (rank 0: the single-process
        // stream).
        let salt = (self.peers.rank() as u64) << 48;
        let mix = draws.mix.unwrap_or_else(|| {
            let mut rng = SampleRng::for_sample(
                self.config.seed ^ 0x6d69_7875 ^ salt,
                epoch as u64,
                it as u64,
            );
            MixDraw::sample(&self.config.mixup, n, (s, s), &mut rng)
        });
        let (targets, _) = mix_batch_with(
            &mut batch.images,
            &labels,
            (c, s, s),
            classes,
            self.config.mixup.smoothing,
            mix,
        );
        let (x, _) = batch.into_tensors::<B>(&self.device);
        let targets =
            Tensor::<B, 2>::from_data(TensorData::new(targets, [n, classes]), &self.device);
        let model = self
            .model
            .take()
            .unwrap_or_else(|| unreachable!("model present"));
        let logits = match draws.drop_path {
            // Stochastic depth draws from a stream of the run's seed and this step, so a
            // resumed run draws the same masks.
            None => {
                let step_seed = SampleRng::for_sample(
                    self.config.seed ^ 0x6472_6f70 ^ salt,
                    epoch as u64,
                    it as u64,
                )
                .next_u64();
                supmae_model::seeding::with_stream(step_seed, || model.forward(x))
            }
            Some(masks) => {
                let given = masks.len();
                match supmae_model::seeding::with_masks(masks, || model.forward(x)) {
                    (out, Ok(0)) => out,
                    (_, left) => {
                        self.model = Some(model);
                        let reason = match left {
                            Ok(left) => format!("{left} of the {given} given masks were not used"),
                            Err(short) => format!("{short} more masks needed than {given} given"),
                        };
                        return Err(TrainError::InvalidConfig {
                            field: "draws.drop_path",
                            reason,
                        });
                    }
                }
            }
        };
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                self.model = Some(model);
                return Err(e.into());
            }
        };
        let loss = soft_target_cross_entropy(logits, targets);
        // The global batch's loss: every peer sees the same value and stops together.
        let local = loss.clone().into_scalar().elem::<f64>();
        let value = match self.peers.mean_values(vec![local], &self.device) {
            Ok(v) => v.first().copied().unwrap_or(f64::NAN),
            Err(e) => {
                self.model = Some(model);
                return Err(e);
            }
        };
        if !value.is_finite() {
            self.model = Some(model);
            return Err(TrainError::NonFiniteLoss {
                epoch,
                iteration: it,
                value,
                checkpoint: self.run.file(CHECKPOINT_FILE).display().to_string(),
            });
        }
        let scaled = if accum > 1 {
            loss.div_scalar(accum as f64)
        } else {
            loss
        };
        let grads = GradientsParams::from_grads(scaled.backward(), &model);
        let ready = if accum > 1 {
            self.accumulator.accumulate(&model, grads);
            (it + 1)
                .is_multiple_of(accum)
                .then(|| std::mem::take(&mut self.accumulator).grads())
        } else {
            Some(grads)
        };
        let stepped = ready.is_some();
        let model = match ready {
            Some(grads) => match self.peers.mean_grads(&model, grads) {
                Ok(grads) => self.step(model, grads, lr),
                Err(e) => {
                    self.model = Some(model);
                    return Err(e);
                }
            },
            None => model,
        };
        self.model = Some(model);
        Ok(BatchReport {
            loss: value,
            lr,
            stepped,
        })
    }

    /// Replaces the classifier's weights by an official-key state dict holding every key
    /// of the model (a fine-tuned `.pth`, or one prepared elsewhere), keeping the optimizer
    /// groups and state.
    pub fn load_state_dict(&mut self, state: &StateDict) -> Result<LoadReport> {
        let model = self
            .model
            .take()
            .unwrap_or_else(|| unreachable!("model present"));
        let fallback = model.clone();
        match supmae_model::checkpoint::load_state_dict(
            model,
            state,
            &supmae_model::checkpoint::KeyPolicy::default(),
        ) {
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

    /// One AdamW step per group with `lr · scale`.
    fn step(
        &mut self,
        model: VitClassifier<B>,
        mut grads: GradientsParams,
        lr: f64,
    ) -> VitClassifier<B> {
        let mut split: Vec<GradientsParams> = (0..self.groups.len())
            .map(|_| GradientsParams::new())
            .collect();
        model.visit(&mut SplitGrads::<B> {
            from: &mut grads,
            to: &mut split,
            group_of: &self.group_of,
            _b: std::marker::PhantomData,
        });
        let mut model = model;
        for (group, grads) in self.groups.iter_mut().zip(split) {
            if grads.is_empty() {
                continue;
            }
            model = group.opt.step(lr * group.scale, model, grads);
        }
        model
    }

    /// Loss and top-1/top-5 on the validation split.
    pub fn evaluate(&self) -> Result<Option<EvalReport>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let model = self.model().valid();
        let report = evaluate::<B::InnerBackend>(val, &self.device, |x| Ok(model.forward(x)?))?;
        Ok(Some(report))
    }

    fn save(&self, file: &str) -> Result<PathBuf> {
        let path = self.run.file(file);
        let meta = ClassifierMeta {
            format: crate::checkpoint::FORMAT,
            kind: ClassifierKind::Finetune,
            model: self.config.model.clone(),
            data: self.config.data.clone(),
            classes: self.classes.clone(),
            epochs_done: self.history.len(),
            history: self.history.clone(),
            best_acc1: self.best_acc1,
            recipe: serde_json::to_value(&self.config).map_err(json("the checkpoint's recipe"))?,
            extras: Default::default(),
        };
        let bad = |e: String| TrainError::Checkpoint {
            path: path.clone(),
            reason: e,
        };
        let parts = CheckpointParts {
            meta: serde_json::to_vec(&meta).map_err(|e| bad(e.to_string()))?,
            model: Recorder::<B>::record(&Rec::new(), self.model().clone().into_record(), ())
                .map_err(|e| bad(e.to_string()))?,
            optim_decay: crate::checkpoint::pack(
                &self
                    .groups
                    .iter()
                    .map(|g| Recorder::<B>::record(&Rec::new(), g.opt.to_record(), ()))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            optim_no_decay: Vec::new(),
        };
        write_atomic(&path, &parts.encode())?;
        Ok(path)
    }
}

/// The optimizer groups of `param_groups_lrd` and the group of every parameter.
fn optimizer_groups<B: AutodiffBackend>(
    model: &VitClassifier<B>,
    config: &FinetuneConfig,
) -> (Vec<Group<B>>, HashMap<ParamId, usize>) {
    let lrd = param_groups_lrd(
        model,
        config.weight_decay,
        config.layer_decay,
        config.model.depth,
    );
    let mut groups = Vec::new();
    let mut group_of = HashMap::new();
    for (g, group) in lrd.iter().enumerate() {
        groups.push(Group {
            scale: group.lr_scale,
            opt: AdamWConfig::new()
                .with_beta_1(config.betas.0 as f32)
                .with_beta_2(config.betas.1 as f32)
                .with_epsilon(config.eps as f32)
                .with_weight_decay(group.weight_decay as f32)
                .init::<B, VitClassifier<B>>(),
        });
        for (_, id) in &group.params {
            group_of.insert(*id, g);
        }
    }
    (groups, group_of)
}

/// What a fine-tuning run is built from, for this peer.
fn run_spec<'a, B: AutodiffBackend>(config: &'a FinetuneConfig, peers: &Peers<B>) -> RunSpec<'a> {
    RunSpec {
        model: &config.model,
        data: &config.data,
        batch_size: config.batch_size,
        seed: config.seed,
        threads: config.data_threads,
        eval: config.eval,
        train_transform: config.train_transform(),
        shard: peers.shard(),
    }
}

/// A run (and its resume) needs the number of peers its recipe was made for.
pub(crate) fn check_peer_count<B: AutodiffBackend>(want: usize, peers: &Peers<B>) -> Result<()> {
    if want != peers.count() {
        return Err(TrainError::InvalidConfig {
            field: "peers",
            reason: format!(
                "the run is set up for {want} data-parallel peer(s) but {} take part; a run \
                 (and its resume) needs the same number of peers throughout",
                peers.count()
            ),
        });
    }
    Ok(())
}

/// Moves each gradient into its parameter's group.
struct SplitGrads<'a, B: AutodiffBackend> {
    from: &'a mut GradientsParams,
    to: &'a mut [GradientsParams],
    group_of: &'a HashMap<ParamId, usize>,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SplitGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(&g) = self.group_of.get(&param.id)
            && let Some(grad) = self.from.remove::<B::InnerBackend, D>(param.id)
        {
            self.to[g].register::<B::InnerBackend, D>(param.id, grad);
        }
    }
}
