//! timm's RandomErasing on the normalised tensor.

use crate::error::{DataError, Result};
use crate::rng::SampleRng;

/// What RandomErasing writes into the erased box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErasingMode {
    /// Zeros (the normalised mean).
    Const,
    /// One `N(0, 1)` value per channel.
    Rand,
    /// One `N(0, 1)` value per pixel and channel (the recipe's `pixel` mode).
    Pixel,
}

/// timm's `RandomErasing` on a normalised `[C, H, W]` image: with probability `prob`, one box
/// of area `U(min_area, max_area)` of the image and log-uniform aspect in
/// `[min_aspect, 1/min_aspect]` (10 tries) is overwritten.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomErasing {
    /// Probability of erasing (recipe: 0.25).
    pub prob: f64,
    /// Smallest box area as a share of the image (0.02).
    pub min_area: f64,
    /// Largest box area as a share of the image (1/3).
    pub max_area: f64,
    /// Smallest aspect ratio (0.3; the largest is its inverse).
    pub min_aspect: f64,
    /// What is written.
    pub mode: ErasingMode,
}

impl RandomErasing {
    /// The recipe's erasing with probability `prob`, mode `pixel`.
    pub fn new(prob: f64) -> Self {
        Self {
            prob,
            min_area: 0.02,
            max_area: 1.0 / 3.0,
            min_aspect: 0.3,
            mode: ErasingMode::Pixel,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let ok = (0.0..=1.0).contains(&self.prob)
            && 0.0 < self.min_area
            && self.min_area <= self.max_area
            && self.max_area <= 1.0
            && self.min_aspect > 0.0
            && self.min_aspect.is_finite();
        if ok {
            Ok(())
        } else {
            Err(DataError::InvalidConfig {
                field: "random_erasing",
                reason: format!("{self:?}: need prob in [0, 1], 0 < min_area <= max_area <= 1"),
            })
        }
    }

    /// Erases (maybe) one box of `image` (`[channels, size, size]`, row-major); returns it.
    ///
    /// # Shapes
    /// - image: `[C, S, S]` flattened
    pub fn apply(
        &self,
        image: &mut [f32],
        channels: usize,
        size: usize,
        rng: &mut SampleRng,
    ) -> Option<(usize, usize, usize, usize)> {
        if rng.uniform() > self.prob {
            return None;
        }
        let area = (size * size) as f64;
        let (lo, hi) = (self.min_aspect.ln(), (1.0 / self.min_aspect).ln());
        for _ in 0..10 {
            let target = rng.uniform_range(self.min_area, self.max_area) * area;
            let aspect = rng.uniform_range(lo, hi).exp();
            let h = (target * aspect).sqrt().round() as usize;
            let w = (target / aspect).sqrt().round() as usize;
            if w < size && h < size {
                let top = rng.int_range(0, (size - h + 1) as u64) as usize;
                let left = rng.int_range(0, (size - w + 1) as u64) as usize;
                let per_channel: Vec<f32> = (0..channels).map(|_| rng.normal() as f32).collect();
                for (ch, value) in per_channel.iter().enumerate() {
                    for y in top..top + h {
                        let row = &mut image[ch * size * size + y * size + left..][..w];
                        for v in row {
                            *v = match self.mode {
                                ErasingMode::Const => 0.0,
                                ErasingMode::Rand => *value,
                                ErasingMode::Pixel => rng.normal() as f32,
                            };
                        }
                    }
                }
                return Some((top, left, h, w));
            }
        }
        None
    }
}
