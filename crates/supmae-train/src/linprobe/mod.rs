//! Linear probing (`main_linprobe.py`, spec §2.4): a frozen pre-trained encoder, its cls
//! token after the final `norm`, then `BatchNorm1d(D, affine=False, eps=1e-6)` and a
//! `Linear(D → classes)` (weight `N(0, 0.01²)`, bias 0) trained with LARS.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, Param};
use burn::prelude::*;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use supmae_data::{AnySource, DataLoader, Geometry, HostBatch, Transform};
use supmae_model::checkpoint::{LoadReport, StateDict};
use supmae_model::{VitClassifier, VitConfig};

use crate::checkpoint::{CheckpointParts, write_atomic};
use crate::classifier::{
    BEST_FILE, BatchReport, ClassifierKind, ClassifierLog, ClassifierMeta, EvalReport, Rec,
    RunSpec, evaluate, soft_target_cross_entropy, start_run,
};
use crate::config::DataSpec;
use crate::error::{Result, TrainError, json};
use crate::finetune::check_peer_count;
use crate::finetune::{Init, append_jsonl, init_classifier, one_hot_targets};
use crate::peers::{PeerArg, Peers};
use crate::pretrain::{CHECKPOINT_FILE, LOG_FILE};
use crate::progress::{Progress, ProgressMode};
use crate::schedule::{LrSchedule, scaled_lr};

mod resume;

use resume::momentum_bytes;

pub use crate::probe::{LarsConfig, LinearProbe, PROBE_BN_EPS, ProbeNorm, lars_update};

/// The linear-probing recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinprobeConfig {
    /// The encoder (cls-token mode; `head_init_std` 0.01, drop path 0).
    pub model: VitConfig,
    /// The pre-trained checkpoint (random weights only as a baseline).
    pub init: Init,
    /// The data.
    pub data: DataSpec,
    /// Epochs (recipe: 90).
    pub epochs: usize,
    /// Warmup epochs (10).
    pub warmup_epochs: f64,
    /// Images per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per step.
    pub accum_iter: usize,
    /// Base learning rate (0.1): `lr = blr · batch · accum / 256`.
    pub blr: f64,
    /// Absolute learning rate (overrides `blr`).
    pub lr: Option<f64>,
    /// Final learning rate (0).
    pub min_lr: f64,
    /// LARS settings.
    pub lars: LarsConfig,
    /// Seed of the head, the data order and the crops.
    pub seed: u64,
    /// Data-loading threads (0 = all cores).
    pub data_threads: usize,
    /// Evaluate after every epoch.
    pub eval: bool,
    /// Data-parallel peers of the run (1: none); the lr scales with
    /// `batch_size · accum_iter · peers`.
    #[serde(default = "one")]
    pub peers: usize,
}

fn one() -> usize {
    1
}

impl LinprobeConfig {
    /// The official recipe for an encoder shaped like `model` on `data`: 90 epochs, warmup
    /// 10, blr 0.1, LARS (0.9, η 0.001, no weight decay), batch 512.
    pub fn recipe(model: VitConfig, init: Init, data: DataSpec) -> Self {
        Self {
            model: model
                .with_global_pool(false)
                .with_drop_path_rate(0.0)
                .with_head_init_std(0.01),
            init,
            data,
            epochs: 90,
            warmup_epochs: 10.0,
            batch_size: 512,
            accum_iter: 1,
            blr: 0.1,
            lr: None,
            min_lr: 0.0,
            lars: LarsConfig {
                weight_decay: 0.0,
                momentum: 0.9,
                trust_coefficient: 0.001,
            },
            seed: 0,
            data_threads: 0,
            eval: true,
            peers: 1,
        }
    }

    /// The recipe shortened for the Fashion-MNIST CPU model: 10 epochs, warmup 1, batch
    /// 256, blr 4.0. That is 390 LARS steps instead of the recipe's ~14,000; LARS moves each
    /// weight matrix by about lr x 0.001 of its norm per step, so the short run needs a
    /// larger lr (docs/decisions.md).
    pub fn fashion_mnist_cpu(self) -> Self {
        Self {
            epochs: 10,
            warmup_epochs: 1.0,
            batch_size: 256,
            blr: 4.0,
            ..self
        }
    }

    /// The peak learning rate.
    pub fn peak_lr(&self) -> f64 {
        self.lr
            .unwrap_or_else(|| scaled_lr(self.blr, self.batch_size * self.accum_iter * self.peers))
    }

    /// Checks the recipe.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(TrainError::InvalidConfig { field, reason });
        self.model.validate()?;
        crate::config::check_limits(&crate::config::RunLimits {
            epochs: self.epochs,
            batch_size: self.batch_size,
            accum_iter: self.accum_iter,
            data_threads: self.data_threads,
            weight_decay: self.lars.weight_decay,
            warmup_epochs: self.warmup_epochs,
            min_lr: self.min_lr,
        })?;
        if self.model.global_pool {
            return bad(
                "model.global_pool",
                "linear probing uses the cls token (global_pool = false)".into(),
            );
        }
        if self.epochs == 0 || self.batch_size < 2 || self.accum_iter == 0 {
            return bad(
                "epochs",
                "epochs >= 1, batch_size >= 2 (BatchNorm), accum_iter >= 1".into(),
            );
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs <= self.epochs as f64) {
            return bad("warmup_epochs", "must be in [0, epochs]".into());
        }
        let lr = self.peak_lr();
        if !(lr.is_finite() && lr > 0.0 && self.min_lr >= 0.0 && self.min_lr <= lr) {
            return bad("lr", format!("peak {lr}, min {}", self.min_lr));
        }
        let l = &self.lars;
        if !(l.weight_decay >= 0.0 && (0.0..1.0).contains(&l.momentum) && l.trust_coefficient > 0.0)
        {
            return bad("lars", format!("{l:?}"));
        }
        Ok(())
    }
}

/// Accumulated gradients of the probe's weight and bias.
type HeadGrads<B> = (
    Tensor<<B as AutodiffBackend>::InnerBackend, 2>,
    Tensor<<B as AutodiffBackend>::InnerBackend, 1>,
);

/// Trains a linear probe on a frozen encoder; writes `config.json`, `log.jsonl`,
/// `checkpoint.ckpt` (every epoch) and `best.ckpt` (best `test_acc1`).
pub struct LinearProber<B: AutodiffBackend> {
    config: LinprobeConfig,
    model: LinearProbe<B>,
    frozen: VitClassifier<B::InnerBackend>,
    mu_weight: Option<Tensor<B::InnerBackend, 2>>,
    mu_bias: Option<Tensor<B::InnerBackend, 1>>,
    pending: Option<HeadGrads<B>>,
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
}

impl<B: AutodiffBackend> LinearProber<B> {
    /// Starts a run on explicit datasets. The run folder is locked for the prober's
    /// lifetime and refused if it holds a previous run (see [`crate::run_dir::NewRun`]).
    pub fn new(
        config: LinprobeConfig,
        train: AnySource,
        val: Option<AnySource>,
        out_dir: impl Into<crate::run_dir::NewRun>,
        device: B::Device,
    ) -> Result<Self> {
        Self::start(config, train, val, out_dir.into(), device, None)
    }

    /// Starts a run as one peer of a data-parallel run: `config.peers` must equal the run's
    /// peers; every peer calls this with the same config and data; rank 0 writes the run
    /// folder. The BatchNorm statistics are the global batch's (synchronised).
    #[cfg(feature = "distributed")]
    pub fn new_on_peer(
        config: LinprobeConfig,
        train: AnySource,
        val: Option<AnySource>,
        out_dir: impl Into<crate::run_dir::NewRun>,
        device: B::Device,
        peer: crate::distributed::Peer<B::InnerBackend>,
    ) -> Result<Self> {
        Self::start(config, train, val, out_dir.into(), device, Some(peer))
    }

    fn start(
        config: LinprobeConfig,
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
        let run = if peers.is_main() {
            start_run(spec, &config, train, val, target)?
        } else {
            let (train, val, classes) = crate::classifier::loaders(&spec, train, val)?;
            crate::classifier::Run {
                train,
                val,
                classes,
                run: crate::run_dir::RunDir::unlocked(target.path()),
            }
        };
        let (encoder, load_report) =
            init_classifier::<B>(&config.model, &config.init, config.seed, &device)?;
        let model = LinearProbe {
            bn: ProbeNorm::new(config.model.embed_dim, &device),
            encoder,
        };
        let frozen = model.encoder.valid();
        Ok(Self {
            config,
            model,
            frozen,
            mu_weight: None,
            mu_bias: None,
            pending: None,
            train: run.train,
            val: run.val,
            classes: run.classes,
            run: run.run,
            device,
            history: Vec::new(),
            best_acc1: None,
            load_report,
            progress: ProgressMode::Quiet,
            peers,
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

    /// The probe.
    pub fn model(&self) -> &LinearProbe<B> {
        &self.model
    }

    /// Per-epoch logs.
    pub fn history(&self) -> &[ClassifierLog] {
        &self.history
    }

    /// The run folder.
    pub fn out_dir(&self) -> &Path {
        self.run.path()
    }

    /// The recipe.
    pub fn config(&self) -> &LinprobeConfig {
        &self.config
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
        // An incomplete accumulation window of the previous epoch is dropped.
        self.pending = None;
        for (it, batch) in self.train.epoch(epoch as u64).enumerate() {
            let batch = batch?;
            let n = batch.len();
            let report = self.train_batch(epoch, it, batch)?;
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
            n_parameters: self.config.model.embed_dim * self.config.model.num_classes
                + self.config.model.num_classes,
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
            if is_best {
                self.save(BEST_FILE)?;
            }
        }
        Ok(log)
    }

    /// The head's gradients averaged over the peers (unchanged without any).
    fn mean_head_grads(
        &self,
        gw: Tensor<B::InnerBackend, 2>,
        gb: Tensor<B::InnerBackend, 1>,
    ) -> Result<HeadGrads<B>> {
        if self.peers.count() == 1 {
            return Ok((gw, gb));
        }
        let [d, c] = gw.dims();
        let flat = Tensor::cat(vec![gw.reshape([d * c]), gb], 0);
        let mean = self.peers.mean(flat)?;
        Ok((
            mean.clone().narrow(0, 0, d * c).reshape([d, c]),
            mean.narrow(0, d * c, c),
        ))
    }

    fn lars_step(
        &mut self,
        gw: Tensor<B::InnerBackend, 2>,
        gb: Tensor<B::InnerBackend, 1>,
        lr: f64,
    ) {
        let cfg = self.config.lars;
        let head = &mut self.model.encoder.head;
        let (w, mw) = lars_update(
            head.weight.val().inner(),
            gw,
            self.mu_weight.take(),
            lr,
            &cfg,
        );
        head.weight = Param::initialized(head.weight.id, Tensor::from_inner(w).require_grad());
        self.mu_weight = Some(mw);
        if let Some(bias) = head.bias.take() {
            let (b, mb) = lars_update(bias.val().inner(), gb, self.mu_bias.take(), lr, &cfg);
            head.bias = Some(Param::initialized(
                bias.id,
                Tensor::from_inner(b).require_grad(),
            ));
            self.mu_bias = Some(mb);
        }
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

    /// Trains the probe on one micro-batch as iteration `iteration` of `epoch`: frozen
    /// features, the BatchNorm in training mode (running statistics updated), cross-entropy,
    /// the head's gradients accumulated, and a LARS step at the end of each accumulation
    /// window. [`run_epoch`](Self::run_epoch) calls it for every batch of the loader.
    pub fn train_batch(
        &mut self,
        epoch: usize,
        iteration: usize,
        batch: HostBatch,
    ) -> Result<BatchReport> {
        let it = iteration;
        let accum = self.config.accum_iter;
        let classes = self.config.model.num_classes;
        let (c, s) = (self.config.model.in_chans, self.config.model.img_size);
        let n = batch.len();
        crate::classifier::check_batch(&batch, c, s)?;
        let lr = self.schedule().lr_at(epoch, it);
        let labels: Vec<usize> = batch.labels.iter().map(|&l| l as usize).collect();
        let (x, _) = batch.into_tensors::<B::InnerBackend>(&self.device);
        let features = Tensor::<B, 2>::from_inner(self.frozen.embed(x)?);
        let targets = Tensor::<B, 2>::from_data(
            TensorData::new(one_hot_targets(&labels, classes, 0.0), [n, classes]),
            &self.device,
        );
        let peers = &self.peers;
        let normed = self
            .model
            .bn
            .forward_with(features, true, peers.count(), |t| {
                if peers.count() == 1 {
                    return Ok(t);
                }
                Ok(Tensor::from_inner(peers.mean(t.inner())?))
            })?;
        let logits = self.model.encoder.head.forward(normed);
        let loss = soft_target_cross_entropy(logits, targets);
        let local = loss.clone().into_scalar().elem::<f64>();
        let value = self
            .peers
            .mean_values(vec![local], &self.device)?
            .first()
            .copied()
            .unwrap_or(f64::NAN);
        if !value.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                epoch,
                iteration: it,
                value,
                checkpoint: self.run.file(CHECKPOINT_FILE).display().to_string(),
            });
        }
        let grads = loss.div_scalar(accum as f64).backward();
        let head = &self.model.encoder.head;
        let gw = head.weight.val().grad(&grads);
        let gb = head.bias.as_ref().and_then(|b| b.val().grad(&grads));
        let (Some(gw), Some(gb)) = (gw, gb) else {
            return Err(TrainError::InvalidConfig {
                field: "model",
                reason: "the probe's head received no gradient".into(),
            });
        };
        self.pending = Some(match self.pending.take() {
            Some((w, b)) => (w + gw, b + gb),
            None => (gw, gb),
        });
        let mut stepped = false;
        if (it + 1).is_multiple_of(accum)
            && let Some((gw, gb)) = self.pending.take()
        {
            let (gw, gb) = self.mean_head_grads(gw, gb)?;
            self.lars_step(gw, gb, lr);
            stepped = true;
        }
        Ok(BatchReport {
            loss: value,
            lr,
            stepped,
        })
    }

    /// Replaces the encoder and head by an official-key state dict of the classifier (every
    /// key of a cls-token ViT: `patch_embed.*`, `blocks.*`, `norm.*`, `head.*`, ...) and
    /// clears the LARS momentum; the BatchNorm statistics are kept.
    pub fn load_state_dict(&mut self, state: &StateDict) -> Result<LoadReport> {
        let (encoder, report) = supmae_model::checkpoint::load_state_dict(
            self.model.encoder.clone(),
            state,
            &supmae_model::checkpoint::KeyPolicy::default(),
        )?;
        self.frozen = encoder.valid();
        self.model.encoder = encoder;
        self.mu_weight = None;
        self.mu_bias = None;
        self.pending = None;
        Ok(report)
    }

    /// Loss and top-1/top-5 on the validation split (BatchNorm with running statistics).
    pub fn evaluate(&self) -> Result<Option<EvalReport>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let bn = self.model.bn.valid();
        let head = self.model.encoder.head.valid();
        let report = evaluate::<B::InnerBackend>(val, &self.device, |x| {
            let features = self.frozen.embed(x)?;
            Ok(head.forward(bn.forward(features, false)))
        })?;
        Ok(Some(report))
    }

    fn save(&self, file: &str) -> Result<PathBuf> {
        let path = self.run.file(file);
        let meta = ClassifierMeta {
            format: crate::checkpoint::FORMAT,
            kind: ClassifierKind::Linprobe,
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
            model: Recorder::<B>::record(&Rec::new(), self.model.clone().into_record(), ())
                .map_err(|e| bad(e.to_string()))?,
            optim_decay: crate::checkpoint::pack(&[
                momentum_bytes(self.mu_weight.as_ref()),
                momentum_bytes(self.mu_bias.as_ref()),
            ]),
            optim_no_decay: Vec::new(),
        };
        write_atomic(&path, &parts.encode())?;
        Ok(path)
    }
}

/// The probe's weak augmentation: `RandomResizedCrop` + flip, no colour jitter.
fn probe_transform(config: &LinprobeConfig) -> Transform {
    Transform {
        geometry: Geometry::RandomResizedCropOnce {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        },
        ..Transform::pretrain(config.model.img_size as u32)
    }
}

/// What a probing run is built from, for this peer.
fn run_spec<'a, B: AutodiffBackend>(config: &'a LinprobeConfig, peers: &Peers<B>) -> RunSpec<'a> {
    RunSpec {
        model: &config.model,
        data: &config.data,
        batch_size: config.batch_size,
        seed: config.seed,
        threads: config.data_threads,
        eval: config.eval,
        train_transform: probe_transform(config),
        shard: peers.shard(),
    }
}
