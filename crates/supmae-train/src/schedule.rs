//! The official learning-rate rules and weight-decay groups (spec §2.1).

use burn::module::{Module, ParamId};
use burn::tensor::backend::Backend;
use supmae_model::checkpoint::param_keys;

/// `lr = blr · effective_batch / 256`, the official scaling rule.
pub fn scaled_lr(blr: f64, effective_batch: usize) -> f64 {
    blr * effective_batch as f64 / 256.0
}

/// The official per-iteration schedule: linear warmup from 0, then a half-cycle cosine to
/// `min_lr`. `epoch` is fractional (`epoch + iteration / iterations_per_epoch`).
pub fn warmup_cosine_lr(lr: f64, min_lr: f64, epoch: f64, warmup_epochs: f64, epochs: f64) -> f64 {
    if epoch < warmup_epochs {
        lr * epoch / warmup_epochs
    } else {
        // Same operation order as `util/lr_sched.py`, so the values are bit-identical.
        let span = (epochs - warmup_epochs).max(f64::MIN_POSITIVE);
        let progress = std::f64::consts::PI * (epoch - warmup_epochs).min(span) / span;
        min_lr + (lr - min_lr) * 0.5 * (1.0 + progress.cos())
    }
}

/// The learning rate of every iteration of a run, as `engine_pretrain.py` sets it: updated at
/// the first micro-batch of each accumulation window with `e = epoch + it / iters_per_epoch`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate (after the `blr` rule).
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Warmup length in epochs.
    pub warmup_epochs: f64,
    /// Run length in epochs.
    pub epochs: f64,
    /// Micro-batches per epoch.
    pub iters_per_epoch: usize,
    /// Micro-batches per optimizer step.
    pub accum_iter: usize,
}

impl LrSchedule {
    /// The learning rate used for micro-batch `iteration` of `epoch`.
    pub fn lr_at(&self, epoch: usize, iteration: usize) -> f64 {
        let start = iteration - iteration % self.accum_iter.max(1);
        let e = epoch as f64 + start as f64 / self.iters_per_epoch.max(1) as f64;
        warmup_cosine_lr(self.lr, self.min_lr, e, self.warmup_epochs, self.epochs)
    }
}

/// Parameters split as timm 0.3.2's `add_weight_decay`: no decay for 1-D tensors and
/// anything named `*.bias`; decay for the rest (including `cls_token` and `mask_token`);
/// parameters that are not trained (the sin-cos tables, BatchNorm statistics) in neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamGroups {
    /// Decayed parameters: `(key, id)`.
    pub decay: Vec<(String, ParamId)>,
    /// Parameters without weight decay.
    pub no_decay: Vec<(String, ParamId)>,
}

impl ParamGroups {
    /// The groups of `module`, keyed by official parameter names.
    pub fn of<B: Backend, M: Module<B>>(module: &M) -> Self {
        let mut groups = Self::default();
        for p in param_keys(module) {
            if !p.trainable {
                continue;
            }
            if p.shape.len() <= 1 || p.key.ends_with(".bias") {
                groups.no_decay.push((p.key, p.id));
            } else {
                groups.decay.push((p.key, p.id));
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_values() {
        // SupMAE's released run: blr 1.5e-4 at effective batch 4096 gives lr 2.4e-3.
        assert!((scaled_lr(1.5e-4, 4096) - 2.4e-3).abs() < 1e-15);
        assert_eq!(warmup_cosine_lr(1.0, 0.0, 0.0, 20.0, 400.0), 0.0);
        assert!((warmup_cosine_lr(1.0, 0.0, 10.0, 20.0, 400.0) - 0.5).abs() < 1e-15);
        assert!((warmup_cosine_lr(1.0, 0.0, 20.0, 20.0, 400.0) - 1.0).abs() < 1e-15);
        assert!((warmup_cosine_lr(1.0, 0.0, 210.0, 20.0, 400.0) - 0.5).abs() < 1e-12);
        assert!((warmup_cosine_lr(1.0, 1e-6, 400.0, 20.0, 400.0) - 1e-6).abs() < 1e-15);
    }

    #[test]
    fn the_official_epoch_0_mean_lr_is_reproduced() {
        // Spec §2.1: 312 iterations per epoch, lr 2.4e-3, warmup 20 epochs: the logged
        // epoch-0 mean lr is 5.98077e-5.
        let s = LrSchedule {
            lr: 2.4e-3,
            min_lr: 0.0,
            warmup_epochs: 20.0,
            epochs: 400.0,
            iters_per_epoch: 312,
            accum_iter: 1,
        };
        let mean = (0..312).map(|i| s.lr_at(0, i)).sum::<f64>() / 312.0;
        assert!((mean - 5.98077e-5).abs() < 5e-10, "{mean}");
    }

    #[test]
    fn every_iteration_follows_the_formula_with_accumulation() {
        let s = LrSchedule {
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_epochs: 2.0,
            epochs: 7.0,
            iters_per_epoch: 10,
            accum_iter: 4,
        };
        for epoch in 0..7 {
            for it in 0..10 {
                // The lr is set at the start of each window of 4 micro-batches.
                let start = (it / 4) * 4;
                let e = epoch as f64 + start as f64 / 10.0;
                let want = if e < 2.0 {
                    1e-3 * e / 2.0
                } else {
                    1e-5 + (1e-3 - 1e-5)
                        * 0.5
                        * (1.0 + (std::f64::consts::PI * (e - 2.0) / 5.0).cos())
                };
                assert_eq!(s.lr_at(epoch, it), want, "epoch {epoch} it {it}");
            }
        }
    }
}
