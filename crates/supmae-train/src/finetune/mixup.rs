//! Mixup / CutMix with label smoothing folded into soft targets (timm's `Mixup`).

use serde::{Deserialize, Serialize};
use supmae_data::SampleRng;

/// Soft targets of a mixed batch, as timm's `mixup_target`: label smoothing folded in
/// (`off = smoothing / C`, `on = 1 − smoothing + off`), then `lam · y + (1 − lam) · y_flip`
/// where `y_flip` pairs sample `i` with sample `N − 1 − i` (the batch flipped).
///
/// # Shapes
/// - labels: `[N]`
/// - output: `[N, classes]` flattened, row-major
pub fn mixup_targets(labels: &[usize], classes: usize, lam: f64, smoothing: f64) -> Vec<f32> {
    let n = labels.len();
    let off = smoothing / classes as f64;
    let on = 1.0 - smoothing + off;
    // In f32 as timm computes it: f32 one-hots times the f32-rounded scalars.
    let (on, off, a, b) = (on as f32, off as f32, lam as f32, (1.0 - lam) as f32);
    let mut out = vec![0f32; n * classes];
    for (i, row) in out.chunks_mut(classes).enumerate() {
        let (la, lb) = (labels[i], labels[n - 1 - i]);
        for (c, v) in row.iter_mut().enumerate() {
            let ya = if c == la { on } else { off };
            let yb = if c == lb { on } else { off };
            *v = ya * a + yb * b;
        }
    }
    out
}

/// A CutMix box and the corrected `lam`, as timm's `rand_bbox` + `correct_lam`: a box of
/// side `int(side · sqrt(1 − lam))` centred at `(cy, cx)` (drawn uniformly in the image by the
/// caller), clipped to the image; `lam` becomes `1 − box area / image area`.
/// Returns `(top, bottom, left, right, lam)`.
pub fn cutmix_box(
    height: usize,
    width: usize,
    lam: f64,
    cy: usize,
    cx: usize,
) -> (usize, usize, usize, usize, f64) {
    let ratio = (1.0 - lam).sqrt();
    let (ch, cw) = (
        (height as f64 * ratio) as i64,
        (width as f64 * ratio) as i64,
    );
    let clip = |v: i64, max: usize| v.clamp(0, max as i64) as usize;
    let (cy, cx) = (cy as i64, cx as i64);
    let (top, bottom) = (clip(cy - ch / 2, height), clip(cy + ch / 2, height));
    let (left, right) = (clip(cx - cw / 2, width), clip(cx + cw / 2, width));
    let area = ((bottom - top) * (right - left)) as f64;
    (
        top,
        bottom,
        left,
        right,
        1.0 - area / (height * width) as f64,
    )
}

#[cfg(test)]
mod mix_tests {
    use super::*;

    #[test]
    fn mixup_soft_targets_fold_in_label_smoothing() {
        // Recipe values: smoothing 0.1 over 1000 classes gives off 1e-4, on 0.9001.
        let t = mixup_targets(&[3, 7], 1000, 1.0, 0.1);
        assert!((t[3] - 0.9001).abs() < 1e-7 && (t[4] - 1e-4).abs() < 1e-9);
        // lam 0.7: sample 0 is 0.7 of class 3 and 0.3 of class 7 (its flipped partner).
        let t = mixup_targets(&[3, 7], 10, 0.7, 0.0);
        assert!((t[3] - 0.7).abs() < 1e-7 && (t[7] - 0.3).abs() < 1e-7);
        assert!((t[10 + 7] - 0.7).abs() < 1e-7 && (t[10 + 3] - 0.3).abs() < 1e-7);
        for row in t.chunks(10) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn cutmix_lam_is_corrected_to_the_clipped_box() {
        // lam 0.75 on 224 px: side int(224 * 0.5) = 112; centred, the box is exact.
        let (t, b, l, r, lam) = cutmix_box(224, 224, 0.75, 112, 112);
        assert_eq!((t, b, l, r), (56, 168, 56, 168));
        assert!((lam - 0.75).abs() < 1e-12);
        // In a corner the box is clipped to a quarter and lam grows accordingly.
        let (t, b, l, r, lam) = cutmix_box(224, 224, 0.75, 0, 0);
        assert_eq!((t, b, l, r), (0, 56, 0, 56));
        assert!((lam - (1.0 - 56.0 * 56.0 / (224.0 * 224.0))).abs() < 1e-12);
    }
}

/// timm's `Mixup` (batch mode) settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MixupConfig {
    /// Mixup's Beta α (0.8; 0 = off).
    pub mixup_alpha: f64,
    /// CutMix's Beta α (1.0; 0 = off).
    pub cutmix_alpha: f64,
    /// Probability of mixing a batch at all (1.0).
    pub prob: f64,
    /// Probability of CutMix rather than Mixup when both are on (0.5).
    pub switch_prob: f64,
    /// Label smoothing folded into the targets (0.1).
    pub smoothing: f64,
}

impl MixupConfig {
    /// Whether batches are mixed.
    pub fn active(&self) -> bool {
        self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0
    }
}

/// The random draws of one batch's Mixup / CutMix: timm's `_params_per_batch` (`lam`, and
/// whether CutMix is used) and `rand_bbox`'s box centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixDraw {
    /// The Beta draw before CutMix's box correction (1.0: the batch is not mixed).
    pub lam: f64,
    /// CutMix's box centre `(cy, cx)`; `None` for Mixup.
    pub cutmix_center: Option<(usize, usize)>,
}

impl MixDraw {
    /// No mixing.
    pub const NONE: Self = Self {
        lam: 1.0,
        cutmix_center: None,
    };

    /// Draws a batch's parameters from `rng`, in timm's order: whether to mix (`prob`),
    /// CutMix or Mixup (`switch_prob`), `lam ~ Beta(α, α)`, then the box centre uniformly in
    /// the `height × width` image (only for a mixed batch of `n > 0` images).
    pub fn sample(
        cfg: &MixupConfig,
        n: usize,
        (height, width): (usize, usize),
        rng: &mut SampleRng,
    ) -> Self {
        let mut lam = 1.0;
        let mut use_cutmix = false;
        if cfg.active() && rng.uniform() < cfg.prob {
            if cfg.mixup_alpha > 0.0 && cfg.cutmix_alpha > 0.0 {
                use_cutmix = rng.uniform() < cfg.switch_prob;
                let alpha = if use_cutmix {
                    cfg.cutmix_alpha
                } else {
                    cfg.mixup_alpha
                };
                lam = rng.beta(alpha, alpha);
            } else if cfg.mixup_alpha > 0.0 {
                lam = rng.beta(cfg.mixup_alpha, cfg.mixup_alpha);
            } else {
                use_cutmix = true;
                lam = rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha);
            }
        }
        let cutmix_center = (use_cutmix && lam != 1.0 && n > 0).then(|| {
            let cy = rng.int_range(0, height as u64) as usize;
            let cx = rng.int_range(0, width as u64) as usize;
            (cy, cx)
        });
        Self { lam, cutmix_center }
    }
}

/// Mixes a batch in place as timm's `Mixup._mix_batch` (pairs `i` with `N − 1 − i`) and
/// returns the soft targets and the (corrected) `lam`.
///
/// # Shapes
/// - images: `[N, C, H, W]` flattened; labels: `[N]`; output targets `[N, classes]`
pub fn mix_batch(
    images: &mut [f32],
    labels: &[usize],
    (c, h, w): (usize, usize, usize),
    classes: usize,
    cfg: &MixupConfig,
    rng: &mut SampleRng,
) -> (Vec<f32>, f64) {
    let draw = MixDraw::sample(cfg, labels.len(), (h, w), rng);
    mix_batch_with(images, labels, (c, h, w), classes, cfg.smoothing, draw)
}

/// [`mix_batch`] with given draws: Mixup `x·lam + x_flip·(1 − lam)` (in `f32`, in that
/// order), or CutMix's box from the drawn centre with `lam` corrected to the clipped box;
/// `smoothing` folded into the targets.
///
/// # Shapes
/// - images: `[N, C, H, W]` flattened; labels: `[N]`; output targets `[N, classes]`
pub fn mix_batch_with(
    images: &mut [f32],
    labels: &[usize],
    (c, h, w): (usize, usize, usize),
    classes: usize,
    smoothing: f64,
    draw: MixDraw,
) -> (Vec<f32>, f64) {
    let n = labels.len();
    let mut lam = draw.lam;
    let per = c * h * w;
    if lam != 1.0 && n > 0 && images.len() >= n * per {
        let original = images[..n * per].to_vec();
        if let Some((cy, cx)) = draw.cutmix_center {
            let (top, bottom, left, right, corrected) = cutmix_box(h, w, lam, cy, cx);
            lam = corrected;
            for i in 0..n {
                let j = n - 1 - i;
                for ch in 0..c {
                    for y in top..bottom {
                        let row = |k: usize| k * per + ch * h * w + y * w;
                        images[row(i) + left..row(i) + right]
                            .copy_from_slice(&original[row(j) + left..row(j) + right]);
                    }
                }
            }
        } else {
            let (a, b) = (lam as f32, (1.0 - lam) as f32);
            for i in 0..n {
                let j = n - 1 - i;
                for k in 0..per {
                    images[i * per + k] = original[i * per + k] * a + original[j * per + k] * b;
                }
            }
        }
    }
    (mixup_targets(labels, classes, lam, smoothing), lam)
}

#[cfg(test)]
mod batch_mix_tests {
    use super::*;
    use crate::classifier::one_hot_targets;

    #[test]
    fn mixed_batches_follow_timm() {
        let (c, h, w) = (1, 8, 8);
        let images: Vec<f32> = (0..4 * 64).map(|i| (i / 64) as f32).collect();
        let labels = [0usize, 1, 2, 3];
        let mut saw = (false, false);
        for seed in 0..40 {
            let mut x = images.clone();
            let cfg = MixupConfig {
                mixup_alpha: 0.8,
                cutmix_alpha: 1.0,
                prob: 1.0,
                switch_prob: 0.5,
                smoothing: 0.1,
            };
            let (t, lam) = mix_batch(
                &mut x,
                &labels,
                (c, h, w),
                4,
                &cfg,
                &mut SampleRng::new(seed),
            );
            // Image 0 mixes with image 3: every pixel is lam·0 + (1 − lam)·3 (Mixup) or
            // exactly 0 / 3 (CutMix, with lam the share of 0-pixels).
            let img0 = &x[..64];
            let threes = img0.iter().filter(|&&v| v == 3.0).count();
            if img0.iter().all(|&v| v == 0.0 || v == 3.0) {
                saw.0 = true;
                assert!((lam - (1.0 - threes as f64 / 64.0)).abs() < 1e-12, "{lam}");
            } else {
                saw.1 = true;
                assert!(
                    img0.iter()
                        .all(|&v| (v - 3.0 * (1.0 - lam as f32)).abs() < 1e-5)
                );
            }
            let off = 0.1 / 4.0;
            let want0 = lam * (1.0 - 0.1 + off) + (1.0 - lam) * off;
            assert!((t[0] as f64 - want0).abs() < 1e-6);
            assert!((t.iter().take(4).sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!(saw.0 && saw.1, "both CutMix and Mixup are drawn");
        // Off: the batch is untouched and targets are smoothed one-hots.
        let off = MixupConfig {
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            prob: 1.0,
            switch_prob: 0.5,
            smoothing: 0.1,
        };
        let mut x = images.clone();
        let (t, lam) = mix_batch(&mut x, &labels, (c, h, w), 4, &off, &mut SampleRng::new(0));
        assert_eq!((x, lam), (images, 1.0));
        assert_eq!(t, one_hot_targets(&labels, 4, 0.1));
    }
}
