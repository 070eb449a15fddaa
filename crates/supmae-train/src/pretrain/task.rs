//! The pre-training task: one micro-batch's loss with its masks, the AdamW step of both
//! weight-decay groups, the classification branch's evaluation, and the checkpoint.

use std::collections::HashSet;
use std::path::Path;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use supmae_data::HostBatch;
use supmae_model::{SupMae, SupMaeInput};

use super::data::mask_noise;
use super::files::Meta;
use super::{EpochLog, Pretraining, Rec};
use crate::checkpoint::{CheckpointParts, write_atomic};
use crate::engine::{At, Collective, EpochStats, Forward, Plan, Task};
use crate::error::{Result, TrainError};

impl<B: AutodiffBackend> Task<B> for Pretraining<B> {
    type Model = SupMae<B>;
    type Log = EpochLog;
    /// The masking noise (`[N, L]` row-major, uniform in `[0, 1)`); `None`: the run's.
    type Draws = Option<Vec<f32>>;
    /// Top-1 (%) with every patch visible and with the training mask ratio.
    type Eval = (f64, f64);

    fn model(&self) -> &SupMae<B> {
        self.model
            .as_ref()
            .unwrap_or_else(|| unreachable!("the model is only taken during a step"))
    }

    fn plan(&self) -> Plan {
        Plan {
            epochs: self.config.epochs,
            checkpoint_every: self.config.checkpoint_every,
            lr: self.config.peak_lr(),
            min_lr: self.config.min_lr,
            warmup_epochs: self.config.warmup_epochs,
            accum_iter: self.config.accum_iter,
        }
    }

    fn start_epoch(&mut self) {
        self.accumulator = GradientsAccumulator::new();
    }

    fn forward(
        &self,
        at: At,
        batch: HostBatch,
        noise: Option<Vec<f32>>,
        peers: &Collective<'_, B>,
    ) -> Result<Forward<B>> {
        let l = self.config.model.num_patches();
        let (c, s) = (self.config.model.in_chans, self.config.model.img_size);
        let n = batch.len();
        let bad = |reason: String| TrainError::InvalidConfig {
            field: "batch",
            reason,
        };
        if batch.images.len() != n * c * s * s {
            return Err(bad(format!(
                "{} values for {n} images of {c} x {s} x {s}",
                batch.images.len()
            )));
        }
        let noise = match noise {
            Some(noise) if noise.len() == n * l => noise,
            Some(noise) => {
                return Err(bad(format!(
                    "{} noise values for {n} images of {l} patches",
                    noise.len()
                )));
            }
            None => {
                // The masks of the global batch; this peer takes its rows.
                let (count, rank) = (peers.count(), peers.rank());
                let noise = mask_noise(self.config.seed, at.epoch, at.iteration, n * count, l);
                if count > 1 {
                    noise[rank * n * l..(rank + 1) * n * l].to_vec()
                } else {
                    noise
                }
            }
        };
        let (x, y) = batch.into_tensors::<B>(&self.device);
        let noise = Tensor::<B, 2>::from_data(TensorData::new(noise, [n, l]), &self.device);
        let mut input = SupMaeInput::new(x)
            .with_mask_ratio(self.config.mask_ratio)
            .with_noise(noise)
            .with_training(true);
        if self.config.model.cls_head.is_some() {
            input = input.with_labels(y);
        }
        let out = self.model().forward(input)?;
        let cls = out
            .cls_loss
            .clone()
            .unwrap_or_else(|| Tensor::zeros([1], &self.device));
        // An unreadable value is NaN, which the engine's guard stops on.
        let values = Tensor::cat(vec![out.loss.clone(), out.rec_loss.clone(), cls], 0)
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .unwrap_or_else(|_| vec![f64::NAN; 3]);
        Ok(Forward {
            loss: out.loss,
            values,
        })
    }

    fn apply(
        &mut self,
        loss: Tensor<B, 1>,
        lr: Option<f64>,
        peers: &Collective<'_, B>,
    ) -> Result<()> {
        let grads = GradientsParams::from_grads(peers.backward(loss), self.model());
        let grads = if self.config.accum_iter > 1 {
            let model = self
                .model
                .as_ref()
                .unwrap_or_else(|| unreachable!("model present"));
            self.accumulator.accumulate(model, grads);
            lr.map(|_| std::mem::take(&mut self.accumulator).grads())
        } else {
            lr.map(|_| grads)
        };
        if let (Some(grads), Some(lr)) = (grads, lr) {
            let grads = peers.mean_grads(self.model(), grads)?;
            let model = self
                .model
                .take()
                .unwrap_or_else(|| unreachable!("model present"));
            self.model = Some(self.adamw_step(model, grads, lr));
        }
        Ok(())
    }

    /// Top-1 accuracy (%) of the classification branch on the validation split, with every
    /// patch visible and with the training mask ratio; `None` without a branch or a split.
    fn evaluate(&self) -> Result<Option<(f64, f64)>> {
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

    fn log(&self, stats: EpochStats, eval: Option<(f64, f64)>) -> EpochLog {
        let value = |i: usize| stats.values.get(i).copied().unwrap_or(0.0);
        EpochLog {
            epoch: stats.epoch,
            lr: stats.lr,
            loss: value(0),
            rec_loss: value(1),
            cls_loss: value(2),
            images_per_sec: stats.images_per_sec,
            seconds: stats.seconds,
            images_seen: stats.images_seen,
            val_acc1_full: eval.map(|e| e.0),
            val_acc1_masked: eval.map(|e| e.1),
        }
    }

    fn save(&self, path: &Path, history: &[EpochLog], _best_acc1: Option<f64>) -> Result<()> {
        let bad = |e: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: e,
        };
        let meta = Meta {
            format: crate::checkpoint::FORMAT,
            config: self.config.clone(),
            epochs_done: history.len(),
            history: history.to_vec(),
            extras: Default::default(),
            converted_from: None,
        };
        let parts = CheckpointParts {
            meta: serde_json::to_vec(&meta).map_err(crate::error::json("checkpoint metadata"))?,
            model: Recorder::<B>::record(&Rec::new(), self.model().clone().into_record(), ())
                .map_err(|e| bad(e.to_string()))?,
            optim_decay: Recorder::<B>::record(&Rec::new(), self.opt_decay.to_record(), ())
                .map_err(|e| bad(e.to_string()))?,
            optim_no_decay: Recorder::<B>::record(&Rec::new(), self.opt_no_decay.to_record(), ())
                .map_err(|e| bad(e.to_string()))?,
        };
        write_atomic(path, &parts.encode())
    }
}

impl<B: AutodiffBackend> Pretraining<B> {
    /// One AdamW step of both parameter groups with learning rate `lr`.
    fn adamw_step(&mut self, model: SupMae<B>, mut grads: GradientsParams, lr: f64) -> SupMae<B> {
        let mut no_decay = GradientsParams::new();
        model.visit(&mut MoveGrads::<B> {
            from: &mut grads,
            to: &mut no_decay,
            ids: &self.no_decay_ids,
            _b: std::marker::PhantomData,
        });
        // What is left in `grads` is the decayed group (frozen tables have no gradient).
        let model = self.opt_decay.step(lr, model, grads);
        self.opt_no_decay.step(lr, model, no_decay)
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
