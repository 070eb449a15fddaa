//! The fine-tuning recipe's extra augmentations, as timm 0.3.2 (which MAE and SupMAE pin)
//! defines them: RandAugment (`rand-m9-mstd0.5-inc1`) on the 8-bit image after the crop and
//! flip, and RandomErasing (`p = 0.25`, mode `pixel`) on the normalised tensor.
//!
//! The operations follow PIL's semantics (the LUT rules of `ImageOps`, the blends of
//! `ImageEnhance`, affine warps sampled at pixel centres with a cubic `a = -0.5` kernel and
//! the fill colour outside the image). They are written here from those definitions, not
//! bit-exact with PIL's fixed-point resampler: warped pixels can differ by a level or two.

use crate::decode::{Image8, luma};
use crate::error::{DataError, Result};
use crate::rng::SampleRng;

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

fn map_lut(img: &Image8, f: impl Fn(u8) -> u8) -> Image8 {
    let lut: Vec<u8> = (0..=255u8).map(f).collect();
    Image8 {
        pixels: img.pixels.iter().map(|&v| lut[usize::from(v)]).collect(),
        ..img.clone()
    }
}

fn posterize(img: &Image8, bits: i32) -> Image8 {
    if bits >= 8 {
        return img.clone();
    }
    let mask = if bits <= 0 {
        0u8
    } else {
        !((1u16 << (8 - bits)) - 1) as u8
    };
    map_lut(img, |v| v & mask)
}

fn histograms(img: &Image8) -> Vec<[u64; 256]> {
    let c = usize::from(img.channels);
    let mut hist = vec![[0u64; 256]; c];
    for px in img.pixels.chunks_exact(c) {
        for (ch, &v) in px.iter().enumerate() {
            hist[ch][usize::from(v)] += 1;
        }
    }
    hist
}

fn map_channels(img: &Image8, luts: &[[u8; 256]]) -> Image8 {
    let c = usize::from(img.channels);
    let mut pixels = img.pixels.clone();
    for px in pixels.chunks_exact_mut(c) {
        for (ch, v) in px.iter_mut().enumerate() {
            *v = luts[ch][usize::from(*v)];
        }
    }
    Image8 {
        pixels,
        ..img.clone()
    }
}

/// `ImageOps.autocontrast(img)` with no cutoff.
fn auto_contrast(img: &Image8) -> Image8 {
    let luts: Vec<[u8; 256]> = histograms(img)
        .iter()
        .map(|h| {
            let mut lut = [0u8; 256];
            let lo = h.iter().position(|&n| n > 0).unwrap_or(0);
            let hi = h.iter().rposition(|&n| n > 0).unwrap_or(255);
            for (i, v) in lut.iter_mut().enumerate() {
                *v = if hi <= lo {
                    i as u8
                } else {
                    let scale = 255.0 / (hi - lo) as f64;
                    let offset = -(lo as f64) * scale;
                    (i as f64 * scale + offset).clamp(0.0, 255.0) as u8
                };
            }
            lut
        })
        .collect();
    map_channels(img, &luts)
}

/// `ImageOps.equalize(img)`.
fn equalize(img: &Image8) -> Image8 {
    let luts: Vec<[u8; 256]> = histograms(img)
        .iter()
        .map(|h| {
            let mut lut = [0u8; 256];
            for (i, v) in lut.iter_mut().enumerate() {
                *v = i as u8;
            }
            let nonzero: Vec<u64> = h.iter().copied().filter(|&n| n > 0).collect();
            if nonzero.len() <= 1 {
                return lut;
            }
            let step = (nonzero.iter().sum::<u64>() - nonzero[nonzero.len() - 1]) / 255;
            if step == 0 {
                return lut;
            }
            let mut n = step / 2;
            for (i, v) in lut.iter_mut().enumerate() {
                *v = (n / step).min(255) as u8;
                n += h[i];
            }
            lut
        })
        .collect();
    map_channels(img, &luts)
}

/// PIL's `convert("L")` luma of each pixel.
fn luma_of(img: &Image8) -> Vec<u8> {
    match img.channels {
        3 => img.pixels.chunks_exact(3).map(luma).collect(),
        _ => img.pixels.clone(),
    }
}

/// The greyscale image broadcast back to the image's channels.
fn greyscale_like(img: &Image8) -> Image8 {
    let c = usize::from(img.channels);
    let pixels = luma_of(img)
        .into_iter()
        .flat_map(|v| std::iter::repeat_n(v, c))
        .collect();
    Image8 {
        pixels,
        ..img.clone()
    }
}

/// `int(mean(convert("L")) + 0.5)`, the grey of `ImageEnhance.Contrast`.
fn mean_luma(img: &Image8) -> u8 {
    let l = luma_of(img);
    let sum: u64 = l.iter().map(|&v| u64::from(v)).sum();
    (sum as f64 / l.len().max(1) as f64 + 0.5) as u8
}

/// PIL's `ImageFilter.SMOOTH` (3x3 kernel `[1 1 1; 1 5 1; 1 1 1] / 13`), border pixels
/// copied from the input.
fn smooth(img: &Image8) -> Image8 {
    let (w, h, c) = (
        img.width as usize,
        img.height as usize,
        usize::from(img.channels),
    );
    let mut out = img.pixels.clone();
    if w < 3 || h < 3 {
        return img.clone();
    }
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for ch in 0..c {
                let mut sum = 0u32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        let v = u32::from(img.pixels[((y + dy - 1) * w + x + dx - 1) * c + ch]);
                        sum += if dy == 1 && dx == 1 { 5 * v } else { v };
                    }
                }
                out[(y * w + x) * c + ch] = ((f64::from(sum) / 13.0) + 0.5).min(255.0) as u8;
            }
        }
    }
    Image8 {
        pixels: out,
        ..img.clone()
    }
}

/// `Image.blend(a, b, factor)`: `a + factor · (b − a)`, clipped and truncated.
fn blend(a: &Image8, b: &Image8, factor: f64) -> Image8 {
    let pixels = a
        .pixels
        .iter()
        .zip(&b.pixels)
        .map(|(&x, &y)| {
            let v = f64::from(x) + factor * (f64::from(y) - f64::from(x));
            v.clamp(0.0, 255.0) as u8
        })
        .collect();
    Image8 {
        pixels,
        ..b.clone()
    }
}

/// `img.rotate(degrees, fillcolor=fill)`: counter-clockwise about the centre, same size.
fn rotate(img: &Image8, degrees: f64, fill: [u8; 3]) -> Image8 {
    let (cx, cy) = (f64::from(img.width) / 2.0, f64::from(img.height) / 2.0);
    let angle = -degrees.to_radians();
    let (cos, sin) = (angle.cos(), angle.sin());
    // Output point (x, y) samples the input at R · (x − c) + c.
    let m = [
        cos,
        sin,
        cos * -cx + sin * -cy + cx,
        -sin,
        cos,
        -sin * -cx + cos * -cy + cy,
    ];
    affine(img, m, fill)
}

/// Cubic convolution weight (`a = -0.5`, PIL's bicubic).
fn cubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// `img.transform(size, AFFINE, m, BICUBIC, fillcolor=fill)`: the output pixel centre
/// `(x + ½, y + ½)` samples the input at `(m0 x + m1 y + m2, m3 x + m4 y + m5)`; points
/// outside the image take the fill colour.
fn affine(img: &Image8, m: [f64; 6], fill: [u8; 3]) -> Image8 {
    let (w, h, c) = (
        img.width as usize,
        img.height as usize,
        usize::from(img.channels),
    );
    let fill: Vec<u8> = if c == 1 {
        vec![luma(&fill)]
    } else {
        fill.to_vec()
    };
    let mut out = vec![0u8; img.pixels.len()];
    let at = |x: i64, y: i64, ch: usize| -> f64 {
        let x = x.clamp(0, w as i64 - 1) as usize;
        let y = y.clamp(0, h as i64 - 1) as usize;
        f64::from(img.pixels[(y * w + x) * c + ch])
    };
    for y in 0..h {
        for x in 0..w {
            let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
            let xin = m[0] * xo + m[1] * yo + m[2];
            let yin = m[3] * xo + m[4] * yo + m[5];
            let dst = &mut out[(y * w + x) * c..(y * w + x + 1) * c];
            if xin < 0.0 || yin < 0.0 || xin >= w as f64 || yin >= h as f64 {
                dst.copy_from_slice(&fill);
                continue;
            }
            let (xs, ys) = (xin - 0.5, yin - 0.5);
            let (x0, y0) = (xs.floor(), ys.floor());
            let (fx, fy) = (xs - x0, ys - y0);
            let wx = [cubic(fx + 1.0), cubic(fx), cubic(1.0 - fx), cubic(2.0 - fx)];
            let wy = [cubic(fy + 1.0), cubic(fy), cubic(1.0 - fy), cubic(2.0 - fy)];
            let (x0, y0) = (x0 as i64, y0 as i64);
            for (ch, d) in dst.iter_mut().enumerate() {
                let mut v = 0.0;
                for (j, wyj) in wy.iter().enumerate() {
                    let mut row = 0.0;
                    for (i, wxi) in wx.iter().enumerate() {
                        row += wxi * at(x0 + i as i64 - 1, y0 + j as i64 - 1, ch);
                    }
                    v += wyj * row;
                }
                *d = (v + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    Image8 {
        pixels: out,
        ..img.clone()
    }
}

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
