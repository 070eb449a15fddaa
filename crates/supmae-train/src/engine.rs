//! The epoch driver every learner runs on.
//!
//! A learner is a [`Task`]: how one micro-batch gives a loss ([`Task::forward`]), how a
//! loss becomes an update ([`Task::apply`]), how the model is evaluated, logged and
//! saved. The [`Engine`] owns everything around that, once for all learners:
//! - the learning-rate schedule, gradient accumulation and the mean of the logged values
//!   over data-parallel peers;
//! - the NaN guard (a non-finite loss stops every peer before any update);
//! - `log.jsonl` and `curves.png`;
//! - the checkpoint cadence and `best.ckpt`;
//! - resuming (the log rewritten to the checkpoint), stopping after an epoch, progress.
//!
//! [`crate::Pretrainer`], [`crate::Finetuner`] and [`crate::LinearProber`] are engines of the
//! three tasks. Every run folder ends with the same files: `config.json`, `log.jsonl`,
//! `curves.png`, `checkpoint.ckpt` (the last epoch) and `best.ckpt` (the best validation
//! top-1, or the last epoch when the run does not evaluate).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;
use supmae_data::{AnySource, DataLoader, HostBatch};

use crate::error::{Result, TrainError, io, json};
use crate::peers::Peers;
use crate::progress::{Progress, ProgressMode};
use crate::run_dir::{BEST_FILE, CHECKPOINT_FILE, LOG_FILE, RunDir};
use crate::schedule::LrSchedule;

mod collective;

pub use collective::Collective;

/// One line of `log.jsonl`, as the engine needs to see it.
pub trait EpochRecord: Clone + Serialize {
    /// Images processed so far in the run, this epoch included.
    fn images_seen(&self) -> u64;
    /// The validation top-1 (%) that `best.ckpt` is chosen by (`None`: not evaluated).
    fn val_acc1(&self) -> Option<f64>;
}

/// The length and schedule of a run, as the task's recipe says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Epochs of the run.
    pub epochs: usize,
    /// Write `checkpoint.ckpt` every this many epochs (and after the last).
    pub checkpoint_every: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Linear warmup epochs.
    pub warmup_epochs: f64,
    /// Micro-batches per optimizer step.
    pub accum_iter: usize,
}

/// Where a micro-batch is in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    /// Epoch index (from 0).
    pub epoch: usize,
    /// Micro-batch index within the epoch.
    pub iteration: usize,
}

/// What [`Task::forward`] gives: the loss to differentiate and the values to log.
pub struct Forward<B: AutodiffBackend> {
    /// This peer's loss.
    ///
    /// # Shapes
    /// - `[1]`
    pub loss: Tensor<B, 1>,
    /// The values logged for this micro-batch, the loss first (this peer's; the engine
    /// takes their mean over the peers).
    pub values: Vec<f64>,
}

/// What one micro-batch did (see [`Engine::step`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The logged values of the global batch, the loss first.
    pub values: Vec<f64>,
    /// The learning rate of the iteration.
    pub lr: f64,
    /// Whether the optimizer stepped (the end of an accumulation window).
    pub stepped: bool,
}

/// An epoch's training, summed up by the engine for [`Task::log`].
#[derive(Debug, Clone, PartialEq)]
pub struct EpochStats {
    /// Epoch index (from 0).
    pub epoch: usize,
    /// Mean learning rate over the epoch's iterations.
    pub lr: f64,
    /// Mean of every logged value over the iterations, in [`Forward::values`]' order.
    pub values: Vec<f64>,
    /// Training images per second (all peers).
    pub images_per_sec: f64,
    /// Wall-clock seconds of the epoch's training.
    pub seconds: f64,
    /// Images processed so far in the run, this epoch included.
    pub images_seen: u64,
}

/// A learner, as the [`Engine`] drives it.
pub trait Task<B: AutodiffBackend> {
    /// The module being trained.
    type Model: AutodiffModule<B>;
    /// One line of `log.jsonl`.
    type Log: EpochRecord;
    /// Random draws a caller may give instead of the run's streams (tests replaying
    /// PyTorch's); `Default` draws from the run's streams.
    type Draws: Default;
    /// What an evaluation reports.
    type Eval;

    /// The module being trained.
    fn model(&self) -> &Self::Model;
    /// The run's length and schedule.
    fn plan(&self) -> Plan;
    /// Called before an epoch's first micro-batch: an incomplete accumulation window of the
    /// previous epoch is dropped, as the official loops do.
    fn start_epoch(&mut self);
    /// This peer's loss on one micro-batch. Autodiff graphs are built only here (see
    /// [`Collective`]).
    fn forward(
        &self,
        at: At,
        batch: HostBatch,
        draws: Self::Draws,
        peers: &Collective<'_, B>,
    ) -> Result<Forward<B>>;
    /// Differentiates `loss` (already divided by `accum_iter`), accumulates, and at the
    /// end of a window (`lr` given) averages the gradients over the peers and steps.
    fn apply(
        &mut self,
        loss: Tensor<B, 1>,
        lr: Option<f64>,
        peers: &Collective<'_, B>,
    ) -> Result<()>;
    /// Evaluates on the validation split (`None` without one).
    fn evaluate(&self) -> Result<Option<Self::Eval>>;
    /// The epoch's log line.
    fn log(&self, stats: EpochStats, eval: Option<Self::Eval>) -> Self::Log;
    /// Writes a checkpoint of the run so far to `path`, atomically.
    fn save(&self, path: &Path, history: &[Self::Log], best_acc1: Option<f64>) -> Result<()>;
}

/// Drives a [`Task`] through its run folder's epochs.
pub struct Engine<B: AutodiffBackend, T: Task<B>> {
    pub(crate) task: T,
    pub(crate) train: DataLoader<AnySource>,
    pub(crate) run: RunDir,
    pub(crate) peers: Peers<B>,
    pub(crate) device: B::Device,
    pub(crate) history: Vec<T::Log>,
    best_acc1: Option<f64>,
    step_lrs: Vec<f64>,
    progress: ProgressMode,
}

impl<B: AutodiffBackend, T: Task<B>> Engine<B, T> {
    /// An engine at the start of a run (`history` empty) or at a checkpoint (`history` as
    /// saved): the best top-1 is the history's, and a resumed run's `log.jsonl` is
    /// rewritten to match the checkpoint (epochs logged after it are redone). Checks that
    /// every peer holds the same weights.
    pub(crate) fn assemble(
        task: T,
        train: DataLoader<AnySource>,
        run: RunDir,
        peers: Peers<B>,
        device: B::Device,
        history: Vec<T::Log>,
    ) -> Result<Self> {
        let best_acc1 = history
            .iter()
            .filter_map(EpochRecord::val_acc1)
            .fold(None, |best: Option<f64>, a| {
                Some(best.map_or(a, |b| b.max(a)))
            });
        let engine = Self {
            task,
            train,
            run,
            peers,
            device,
            history,
            best_acc1,
            step_lrs: Vec::new(),
            progress: ProgressMode::Quiet,
        };
        engine.peers.check_same(engine.task.model())?;
        if engine.is_main() && !engine.history.is_empty() {
            engine.rewrite_log()?;
        }
        Ok(engine)
    }

    /// Shows progress on stderr (`Bar`/`Lines`) or not (`Quiet`, the default).
    pub fn with_progress(mut self, mode: ProgressMode) -> Self {
        self.progress = mode;
        self
    }

    /// The run's length and schedule, as the task's recipe says.
    pub fn plan(&self) -> Plan {
        self.task.plan()
    }

    /// The model being trained.
    pub fn model(&self) -> &T::Model {
        self.task.model()
    }

    /// Epochs finished so far.
    pub fn epochs_done(&self) -> usize {
        self.history.len()
    }

    /// The per-epoch logs so far.
    pub fn history(&self) -> &[T::Log] {
        &self.history
    }

    /// The learning rate of every optimizer step taken by this engine.
    pub fn step_lrs(&self) -> &[f64] {
        &self.step_lrs
    }

    /// The run folder.
    pub fn out_dir(&self) -> &Path {
        self.run.path()
    }

    /// This process's rank in a data-parallel run (0 without one).
    pub fn rank(&self) -> usize {
        self.peers.rank()
    }

    /// Whether this process writes the run folder (rank 0).
    pub fn is_main(&self) -> bool {
        self.peers.is_main()
    }

    /// The run's learning-rate schedule.
    pub fn schedule(&self) -> LrSchedule {
        let plan = self.task.plan();
        LrSchedule {
            lr: plan.lr,
            min_lr: plan.min_lr,
            warmup_epochs: plan.warmup_epochs,
            epochs: plan.epochs as f64,
            iters_per_epoch: self.train.num_batches(),
            accum_iter: plan.accum_iter,
        }
    }

    /// Evaluates the model on the validation split (`None` without one, and on peers other
    /// than rank 0).
    pub fn evaluate(&self) -> Result<Option<T::Eval>> {
        self.task.evaluate()
    }

    /// A hash of every trainable parameter's bits (FNV-1a over the f32 values in the
    /// module's order): equal on all peers of a data-parallel run after every step.
    pub fn parameter_fingerprint(&self) -> u64 {
        let mut f = Fingerprint {
            hash: 0xcbf2_9ce4_8422_2325,
        };
        self.task.model().visit(&mut f);
        f.hash
    }

    /// Trains to the end of the run.
    pub fn run(&mut self) -> Result<()> {
        self.train_until(usize::MAX)
    }

    /// Trains until `epoch_end` epochs are done (at most the run's length).
    pub fn train_until(&mut self, epoch_end: usize) -> Result<()> {
        self.run_until(epoch_end, |_| {})
    }

    /// Trains until `epoch_end` epochs are done (at most the run's length), calling
    /// `on_epoch` with each epoch's log. Stopping before the run's end leaves a checkpoint
    /// of the last epoch done, so the run can resume from there to the result an
    /// uninterrupted run reaches.
    pub fn run_until(&mut self, epoch_end: usize, mut on_epoch: impl FnMut(&T::Log)) -> Result<()> {
        let plan = self.task.plan();
        let end = epoch_end.min(plan.epochs);
        let mut ran = false;
        while self.history.len() < end {
            let log = self.run_epoch()?;
            on_epoch(&log);
            ran = true;
        }
        if ran && end < plan.epochs && !end.is_multiple_of(plan.checkpoint_every) && self.is_main()
        {
            self.save_checkpoint()?;
        }
        Ok(())
    }

    /// Trains, evaluates, logs and (at the cadence) checkpoints the next epoch; returns
    /// its log.
    pub fn run_epoch(&mut self) -> Result<T::Log> {
        let plan = self.task.plan();
        let epoch = self.history.len();
        let iters = self.train.num_batches();
        let mut progress = Progress::new(self.progress, epoch, plan.epochs, iters);
        let start = Instant::now();
        let (mut sums, mut sum_lr, mut images, mut done) = (Vec::new(), 0.0, 0usize, 0usize);
        self.task.start_epoch();
        for (iteration, batch) in self.train.epoch(epoch as u64).enumerate() {
            let batch = batch?;
            let n = batch.len();
            let report = self.step(At { epoch, iteration }, batch, T::Draws::default())?;
            sums.resize(report.values.len().max(sums.len()), 0.0);
            for (s, v) in sums.iter_mut().zip(&report.values) {
                *s += v;
            }
            sum_lr += report.lr;
            images += n * self.peers.count();
            done += 1;
            progress.update(
                done,
                images,
                sums.first().copied().unwrap_or(0.0) / done as f64,
            );
        }
        progress.finish();
        let seconds = start.elapsed().as_secs_f64();
        let d = done.max(1) as f64;
        let stats = EpochStats {
            epoch,
            lr: sum_lr / d,
            values: sums.iter().map(|s| s / d).collect(),
            images_per_sec: images as f64 / seconds.max(1e-9),
            seconds,
            images_seen: self.history.last().map_or(0, |h| h.images_seen()) + images as u64,
        };
        let eval = self.task.evaluate()?;
        let log = self.task.log(stats, eval);
        self.history.push(log.clone());
        let acc1 = log.val_acc1();
        let is_best = acc1.is_some_and(|a| self.best_acc1.is_none_or(|b| a >= b));
        if is_best {
            self.best_acc1 = acc1;
        }
        if self.is_main() {
            self.append_log(&log)?;
            crate::curves::refresh(self.run.path());
            let done = self.history.len();
            let last = done == plan.epochs;
            if done.is_multiple_of(plan.checkpoint_every.max(1)) || last {
                self.save(CHECKPOINT_FILE)?;
            }
            if is_best || (acc1.is_none() && last) {
                self.save(BEST_FILE)?;
            }
        }
        Ok(log)
    }

    /// Trains on one micro-batch at `at`: the schedule's learning rate, the task's loss,
    /// its mean over the peers and the NaN guard, then the task's update (a step at the end
    /// of each accumulation window, `(iteration + 1) % accum_iter == 0`). The epoch loop
    /// calls it for every batch of the loader; calling it yourself feeds batches from
    /// elsewhere. `draws` replaces the run's random draws.
    pub fn step(&mut self, at: At, batch: HostBatch, draws: T::Draws) -> Result<StepReport> {
        let accum = self.task.plan().accum_iter.max(1);
        let lr = self.schedule().lr_at(at.epoch, at.iteration);
        let (loss, values) = {
            let building = Collective::building(&self.peers, &self.device);
            let out = self.task.forward(at, batch, draws, &building)?;
            let loss = if accum > 1 {
                out.loss.div_scalar(accum as f64)
            } else {
                out.loss
            };
            (loss, out.values)
        };
        // The global batch's values: every peer sees the same loss and stops together.
        let values = self.peers.mean_values(values, &self.device)?;
        // An unreadable value counts as non-finite.
        let value = values.first().copied().unwrap_or(f64::NAN);
        if !value.is_finite() {
            let ckpt = self.run.file(CHECKPOINT_FILE);
            return Err(TrainError::NonFiniteLoss {
                epoch: at.epoch,
                iteration: at.iteration,
                value,
                checkpoint: if ckpt.exists() {
                    ckpt.display().to_string()
                } else {
                    "none written yet".into()
                },
            });
        }
        let stepped = (at.iteration + 1).is_multiple_of(accum);
        let updating = Collective::updating(&self.peers, &self.device);
        self.task.apply(loss, stepped.then_some(lr), &updating)?;
        if stepped {
            self.step_lrs.push(lr);
        }
        Ok(StepReport {
            values,
            lr,
            stepped,
        })
    }

    /// Writes `checkpoint.ckpt` atomically and returns its path.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        self.save(CHECKPOINT_FILE)
    }

    fn save(&self, file: &str) -> Result<PathBuf> {
        let path = self.run.file(file);
        self.task.save(&path, &self.history, self.best_acc1)?;
        Ok(path)
    }

    fn append_log(&self, log: &T::Log) -> Result<()> {
        use std::io::Write;
        let path = self.run.file(LOG_FILE);
        let line = serde_json::to_string(log).map_err(json("a log.jsonl line"))?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        writeln!(file, "{line}").map_err(io(&path))
    }

    /// Rewrites `log.jsonl` to exactly the history.
    fn rewrite_log(&self) -> Result<()> {
        let mut text = String::new();
        for log in &self.history {
            text.push_str(&serde_json::to_string(log).map_err(json("a log.jsonl line"))?);
            text.push('\n');
        }
        self.run.write_atomic(LOG_FILE, text.as_bytes())
    }
}

/// FNV-1a over the bits of every trainable parameter.
struct Fingerprint {
    hash: u64,
}

impl<B: Backend> ModuleVisitor<B> for Fingerprint {
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
