//! The training loop: epochs, steps with gradient accumulation and the NaN guard, and
//! evaluation of the classification branch.

#[allow(unused_imports)]
use super::*;

impl<B: AutodiffBackend> Pretrainer<B> {
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
                crate::curves::refresh(self.run.path());
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

    pub(super) fn train_epoch(&mut self, epoch: usize) -> Result<EpochLog> {
        let iters = self.train.num_batches();
        let mut progress = Progress::new(self.progress, epoch, self.config.epochs, iters);
        let start = Instant::now();
        let (mut sum_loss, mut sum_rec, mut sum_cls, mut sum_lr) = (0.0, 0.0, 0.0, 0.0);
        let mut images = 0usize;
        let mut done = 0usize;
        // Like the official loop, gradients of an incomplete final accumulation window are
        // dropped (the optimizer's gradients are zeroed at the next epoch's start).
        self.accumulator = GradientsAccumulator::new();
        for (it, batch) in self.train.epoch(epoch as u64).enumerate() {
            let batch = batch?;
            let n = batch.len();
            let out = self.train_batch(epoch, it, batch, None)?;
            sum_loss += out.loss;
            sum_rec += out.rec_loss;
            sum_cls += out.cls_loss;
            sum_lr += out.lr;
            images += n * self.peers();
            done += 1;
            progress.update(done, images, sum_loss / done as f64);
        }
        progress.finish();
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

    /// Trains on one micro-batch as iteration `iteration` of `epoch`: the schedule's lr, the
    /// SupMAE loss with this step's masks, accumulation, and an AdamW step of both weight-decay
    /// groups at the end of each accumulation window (`(iteration + 1) % accum_iter == 0`).
    /// The training loop calls it for every batch of the loader; calling it yourself feeds
    /// batches from elsewhere.
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
        let it = iteration;
        let accum = self.config.accum_iter;
        let l = self.config.model.num_patches();
        let (c, s) = (self.config.model.in_chans, self.config.model.img_size);
        let supmae = self.config.model.cls_head.is_some();
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
        let lr = self.schedule().lr_at(epoch, it);
        let (x, y) = batch.into_tensors::<B>(&self.device);
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
                let (peers, rank) = (self.peers(), self.rank());
                let noise = mask_noise(self.config.seed, epoch, it, n * peers, l);
                if peers > 1 {
                    noise[rank * n * l..(rank + 1) * n * l].to_vec()
                } else {
                    noise
                }
            }
        };
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
        let values: Vec<f64> = Tensor::cat(vec![out.loss.clone(), out.rec_loss.clone(), cls], 0)
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .unwrap_or_default();
        // Logged losses are the global batch's; every peer stops on a non-finite one.
        let values = match self.peers.mean_values(values, &self.device) {
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
            self.accumulator.accumulate(&model, grads);
            (it + 1)
                .is_multiple_of(accum)
                .then(|| std::mem::take(&mut self.accumulator).grads())
        } else {
            Some(grads)
        };
        let stepped = grads.is_some();
        let model = match grads {
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
        Ok(PretrainBatch {
            loss,
            rec_loss: rec,
            cls_loss: cls,
            lr,
            stepped,
        })
    }

    /// One AdamW step of both parameter groups with learning rate `lr`.
    pub(super) fn step(
        &mut self,
        model: SupMae<B>,
        mut grads: GradientsParams,
        lr: f64,
    ) -> SupMae<B> {
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
