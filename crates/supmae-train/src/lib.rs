//! Learners for SupMAE: pre-training, fine-tuning, linear probing and evaluation.
//!
//! This crate is at its start: it holds the learning-rate rules of the official recipes
//! (spec §2.1), which every learner shares. The learners land with the training issues.

#![warn(missing_docs)]

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
        let progress = (epoch - warmup_epochs) / (epochs - warmup_epochs);
        min_lr + (lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
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
        assert!(warmup_cosine_lr(1.0, 1e-6, 400.0, 20.0, 400.0) - 1e-6 < 1e-15);
    }
}
