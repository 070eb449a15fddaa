//! The fine-tuning recipe's extra augmentations, as timm 0.3.2 (which MAE and SupMAE pin)
//! defines them: RandAugment (`rand-m9-mstd0.5-inc1`) on the 8-bit image after the crop and
//! flip, and RandomErasing (`p = 0.25`, mode `pixel`) on the normalised tensor.
//!
//! The operations follow PIL's semantics (the LUT rules of `ImageOps`, the blends of
//! `ImageEnhance`, affine warps sampled at pixel centres with a cubic `a = -0.5` kernel and
//! the fill colour outside the image). They are written here from those definitions, not
//! bit-exact with PIL's fixed-point resampler: warped pixels can differ by a level or two.

use crate::decode::Image8;
use crate::error::{DataError, Result};
use crate::rng::SampleRng;

mod erasing;
mod pil;

pub use erasing::{ErasingMode, RandomErasing};
use pil::*;

/// timm's `_MAX_LEVEL`: magnitudes live in `[0, 10]`.
const MAX_LEVEL: f64 = 10.0;

/// One RandAugment operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AugmentOp {
    /// Stretch each channel's histogram to `[0, 255]`.
    AutoContrast,
    /// Equalise each channel's histogram.
    Equalize,
    /// `255 - v`.
    Invert,
    /// Rotate about the centre by up to ±30°.
    Rotate,
    /// Keep the top bits (fewer bits as the magnitude grows in the increasing set).
    Posterize,
    /// Invert values above a threshold (lower threshold as the magnitude grows, increasing set).
    Solarize,
    /// Add up to 110 to values below 128.
    SolarizeAdd,
    /// Saturation blend with the greyscale image.
    Color,
    /// Blend with the mean grey level.
    Contrast,
    /// Blend with black.
    Brightness,
    /// Blend with the 3x3 smoothed image.
    Sharpness,
    /// Horizontal shear by up to ±0.3.
    ShearX,
    /// Vertical shear by up to ±0.3.
    ShearY,
    /// Horizontal shift by up to ±45% of the width.
    TranslateX,
    /// Vertical shift by up to ±45% of the height.
    TranslateY,
}

/// The op list of timm's RandAugment (both sets hold the same 15 ops; `increasing` changes
/// how Posterize, Solarize and the four enhancements map their magnitude).
pub const RAND_OPS: [AugmentOp; 15] = [
    AugmentOp::AutoContrast,
    AugmentOp::Equalize,
    AugmentOp::Invert,
    AugmentOp::Rotate,
    AugmentOp::Posterize,
    AugmentOp::Solarize,
    AugmentOp::SolarizeAdd,
    AugmentOp::Color,
    AugmentOp::Contrast,
    AugmentOp::Brightness,
    AugmentOp::Sharpness,
    AugmentOp::ShearX,
    AugmentOp::ShearY,
    AugmentOp::TranslateX,
    AugmentOp::TranslateY,
];

/// timm's RandAugment: `num_ops` ops drawn with replacement per image, each applied with
/// probability `prob` at a magnitude drawn from `N(magnitude, magnitude_std²)` clipped to
/// `[0, 10]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RandAugment {
    /// Ops per image (`n`, default 2).
    pub num_ops: usize,
    /// Mean magnitude (`m`, 0..=10).
    pub magnitude: f64,
    /// Per-op magnitude noise (`mstd`).
    pub magnitude_std: f64,
    /// Probability of applying each drawn op (timm: 0.5).
    pub prob: f64,
    /// The "increasing" op set (`inc1`), where every op gets stronger with the magnitude.
    pub increasing: bool,
    /// Fill colour of pixels warped in from outside (timm: the dataset mean × 255).
    pub fill: [u8; 3],
}

impl RandAugment {
    /// Parses a timm config string such as `rand-m9-mstd0.5-inc1` (keys `m`, `n`, `mstd`,
    /// `inc`; `mmax` and `w` are not supported). `fill` is the warp fill colour.
    pub fn parse(spec: &str, fill: [u8; 3]) -> Result<Self> {
        let bad = |reason: String| DataError::InvalidConfig {
            field: "rand_augment",
            reason,
        };
        let mut parts = spec.split('-');
        if parts.next() != Some("rand") {
            return Err(bad(format!("`{spec}` must start with `rand-`")));
        }
        let mut ra = Self {
            num_ops: 2,
            magnitude: 10.0,
            magnitude_std: 0.0,
            prob: 0.5,
            increasing: false,
            fill,
        };
        for part in parts {
            let (key, value) = if let Some(v) = part.strip_prefix("mstd") {
                ("mstd", v)
            } else if let Some(v) = part.strip_prefix("inc") {
                ("inc", v)
            } else if let Some(v) = part.strip_prefix('m') {
                ("m", v)
            } else if let Some(v) = part.strip_prefix('n') {
                ("n", v)
            } else {
                return Err(bad(format!("unknown part `{part}` in `{spec}`")));
            };
            let num: f64 = value
                .parse()
                .map_err(|_| bad(format!("`{part}` in `{spec}` has no number")))?;
            match key {
                "mstd" => ra.magnitude_std = num,
                "inc" => ra.increasing = num != 0.0,
                "m" => ra.magnitude = num,
                _ => ra.num_ops = num as usize,
            }
        }
        ra.validate()?;
        Ok(ra)
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let ok = (0.0..=MAX_LEVEL).contains(&self.magnitude)
            && self.magnitude_std >= 0.0
            && self.magnitude_std.is_finite()
            && (0.0..=1.0).contains(&self.prob)
            && self.num_ops <= 16;
        if ok {
            Ok(())
        } else {
            Err(DataError::InvalidConfig {
                field: "rand_augment",
                reason: format!(
                    "magnitude {} must be in [0, 10], mstd {} >= 0, prob {} in [0, 1], \
                     at most 16 ops ({})",
                    self.magnitude, self.magnitude_std, self.prob, self.num_ops
                ),
            })
        }
    }

    /// Applies the policy to one image.
    pub fn apply(&self, image: &Image8, rng: &mut SampleRng) -> Image8 {
        let mut img = image.clone();
        let ops: Vec<AugmentOp> = (0..self.num_ops)
            .map(|_| RAND_OPS[rng.int_range(0, RAND_OPS.len() as u64) as usize])
            .collect();
        for op in ops {
            if self.prob < 1.0 && rng.uniform() > self.prob {
                continue;
            }
            let mut level = self.magnitude;
            if self.magnitude_std > 0.0 {
                level += self.magnitude_std * rng.normal();
            }
            let level = level.clamp(0.0, MAX_LEVEL);
            img = apply_op(&img, op, level, self.increasing, self.fill, rng);
        }
        img
    }
}

/// `v` or `-v` with equal probability (timm's `_randomly_negate`).
fn negate(v: f64, rng: &mut SampleRng) -> f64 {
    if rng.uniform() > 0.5 { -v } else { v }
}

/// Applies one op at magnitude `level` (`0..=10`) with timm's level-to-argument rules.
pub fn apply_op(
    img: &Image8,
    op: AugmentOp,
    level: f64,
    increasing: bool,
    fill: [u8; 3],
    rng: &mut SampleRng,
) -> Image8 {
    let frac = level / MAX_LEVEL;
    let (w, h) = (f64::from(img.width), f64::from(img.height));
    match op {
        AugmentOp::AutoContrast => auto_contrast(img),
        AugmentOp::Equalize => equalize(img),
        AugmentOp::Invert => map_lut(img, |v| 255 - v),
        AugmentOp::Rotate => rotate(img, negate(frac * 30.0, rng), fill),
        AugmentOp::Posterize => {
            let bits = if increasing {
                4 - (frac * 4.0) as i32
            } else {
                (frac * 4.0) as i32
            };
            posterize(img, bits)
        }
        AugmentOp::Solarize => {
            let threshold = if increasing {
                256 - (frac * 256.0) as i32
            } else {
                (frac * 256.0) as i32
            };
            map_lut(img, |v| {
                if i32::from(v) >= threshold {
                    255 - v
                } else {
                    v
                }
            })
        }
        AugmentOp::SolarizeAdd => {
            let add = (frac * 110.0) as i32;
            map_lut(img, |v| {
                if v < 128 {
                    (i32::from(v) + add).min(255) as u8
                } else {
                    v
                }
            })
        }
        AugmentOp::Color | AugmentOp::Contrast | AugmentOp::Brightness | AugmentOp::Sharpness => {
            let factor = if increasing {
                1.0 + negate(frac * 0.9, rng)
            } else {
                frac * 1.8 + 0.1
            };
            let degenerate = match op {
                AugmentOp::Color => greyscale_like(img),
                AugmentOp::Contrast => {
                    let mean = mean_luma(img);
                    Image8 {
                        pixels: vec![mean; img.pixels.len()],
                        ..img.clone()
                    }
                }
                AugmentOp::Brightness => Image8 {
                    pixels: vec![0; img.pixels.len()],
                    ..img.clone()
                },
                _ => smooth(img),
            };
            blend(&degenerate, img, factor)
        }
        AugmentOp::ShearX => affine(
            img,
            [1.0, negate(frac * 0.3, rng), 0.0, 0.0, 1.0, 0.0],
            fill,
        ),
        AugmentOp::ShearY => affine(
            img,
            [1.0, 0.0, 0.0, negate(frac * 0.3, rng), 1.0, 0.0],
            fill,
        ),
        AugmentOp::TranslateX => {
            let px = negate(frac * 0.45, rng) * w;
            affine(img, [1.0, 0.0, px, 0.0, 1.0, 0.0], fill)
        }
        AugmentOp::TranslateY => {
            let px = negate(frac * 0.45, rng) * h;
            affine(img, [1.0, 0.0, 0.0, 0.0, 1.0, px], fill)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32, c: u8) -> Image8 {
        let mut pixels = Vec::new();
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    pixels.push(((x * 7 + y * 3 + u32::from(ch) * 40) % 200 + 20) as u8);
                }
            }
        }
        Image8 {
            width: w,
            height: h,
            channels: c,
            pixels,
        }
    }

    #[test]
    fn parses_the_recipe_string() {
        let ra = RandAugment::parse("rand-m9-mstd0.5-inc1", [124, 116, 104]).unwrap();
        assert_eq!(
            (ra.num_ops, ra.magnitude, ra.magnitude_std, ra.increasing),
            (2, 9.0, 0.5, true)
        );
        assert!(RandAugment::parse("auto-m9", [0; 3]).is_err());
        assert!(RandAugment::parse("rand-m11", [0; 3]).is_err());
        assert!(RandAugment::parse("rand-x3", [0; 3]).is_err());
    }

    #[test]
    fn lut_ops_follow_pil() {
        let img = gradient(8, 8, 3);
        let mut rng = SampleRng::new(0);
        let inv = apply_op(&img, AugmentOp::Invert, 5.0, true, [0; 3], &mut rng);
        assert!(
            inv.pixels
                .iter()
                .zip(&img.pixels)
                .all(|(a, b)| a + b == 255)
        );
        // Increasing posterize at level 9: 4 - int(3.6) = 1 bit kept.
        let p = apply_op(&img, AugmentOp::Posterize, 9.0, true, [0; 3], &mut rng);
        assert!(p.pixels.iter().all(|&v| v == 0 || v == 128));
        // Increasing solarize at level 0: threshold 256, nothing changes.
        let s = apply_op(&img, AugmentOp::Solarize, 0.0, true, [0; 3], &mut rng);
        assert_eq!(s, img);
        // Equalize and autocontrast of a full-range ramp are the identity.
        let ramp = Image8 {
            width: 256,
            height: 1,
            channels: 1,
            pixels: (0..=255).collect(),
        };
        assert_eq!(auto_contrast(&ramp), ramp);
        assert_eq!(equalize(&ramp), ramp);
        // Autocontrast stretches [20, 219] to [0, 255].
        let a = auto_contrast(&img);
        assert_eq!(a.pixels.iter().min(), Some(&0));
        assert_eq!(a.pixels.iter().max(), Some(&255));
    }

    #[test]
    fn warps_keep_size_and_zero_warps_are_the_identity() {
        let img = gradient(16, 12, 3);
        assert_eq!(affine(&img, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0; 3]), img);
        assert_eq!(rotate(&img, 0.0, [0; 3]), img);
        // A shift by 4 pixels moves the content and fills the edge.
        let t = affine(&img, [1.0, 0.0, 4.0, 0.0, 1.0, 0.0], [9, 9, 9]);
        assert_eq!(&t.pixels[..3], &img.pixels[4 * 3..5 * 3]);
        assert_eq!(&t.pixels[(15) * 3..16 * 3], &[9, 9, 9]);
        // Rotating a square by 90 degrees four times gives the image back.
        let sq = gradient(10, 10, 1);
        let mut r = sq.clone();
        for _ in 0..4 {
            r = rotate(&r, 90.0, [0; 3]);
        }
        assert_eq!(r, sq);
    }

    #[test]
    fn rand_augment_is_seeded_and_keeps_shape() {
        let ra = RandAugment::parse("rand-m9-mstd0.5-inc1", [124, 116, 104]).unwrap();
        for c in [1u8, 3] {
            let img = gradient(20, 20, c);
            let mut changed = 0;
            for i in 0..50 {
                let a = ra.apply(&img, &mut SampleRng::for_sample(1, 0, i));
                let b = ra.apply(&img, &mut SampleRng::for_sample(1, 0, i));
                assert_eq!(a, b);
                assert_eq!((a.width, a.height, a.channels), (20, 20, c));
                assert_eq!(a.pixels.len(), img.pixels.len());
                changed += usize::from(a != img);
            }
            // Each op fires with p = 0.5, two ops: ~75% of images change.
            assert!((25..50).contains(&changed), "{changed}");
        }
    }

    #[test]
    fn erasing_overwrites_one_box_within_bounds() {
        let er = RandomErasing::new(1.0);
        let (c, s) = (3, 32);
        let mut hits = 0;
        for i in 0..100 {
            let mut img = vec![7.0f32; c * s * s];
            let mut rng = SampleRng::for_sample(3, 0, i);
            let b = er.apply(&mut img, c, s, &mut rng);
            let mut again = vec![7.0f32; c * s * s];
            er.apply(&mut again, c, s, &mut SampleRng::for_sample(3, 0, i));
            assert_eq!(img, again);
            let Some((top, left, h, w)) = b else { continue };
            hits += 1;
            let area = (h * w) as f64 / (s * s) as f64;
            assert!(top + h <= s && left + w <= s && area < 0.4, "{b:?}");
            let changed = img.iter().filter(|&&v| v != 7.0).count();
            assert_eq!(changed, c * h * w);
        }
        assert!(hits > 90);
        let mut img = vec![7.0f32; 3 * 8 * 8];
        assert_eq!(
            RandomErasing::new(0.0).apply(&mut img, 3, 8, &mut SampleRng::new(1)),
            None
        );
    }
}
