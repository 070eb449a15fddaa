//! The augmentations of the official recipes, matching torchvision on PIL images:
//! `RandomResizedCrop` (bicubic) + `RandomHorizontalFlip` for training, `Resize` (shorter
//! side, bicubic) + `CenterCrop` for evaluation, then `ToTensor` + `Normalize`.
//!
//! Evaluation resizes with [`crate::resample::pil_bicubic_resize`], Pillow's fixed-point
//! bicubic bit for bit, so the eval tensor is torchvision's. Training crops resize through
//! `fast_image_resize`'s SIMD convolution with the Catmull-Rom cubic (`a = -0.5`), the
//! kernel of PIL's `BICUBIC`, with the same support scaling when shrinking: within a grey
//! level or so of PIL, and faster; training draws its crops from our RNG anyway, so it is
//! equal to torchvision in distribution, not per sample (docs/decisions.md).

use std::cell::RefCell;

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::augment::{RandAugment, RandomErasing};
pub use crate::crop::CropBox;
use crate::decode::{Image8, luma};
use crate::error::{DataError, Result};
use crate::resample::pil_bicubic_resize;
use crate::rng::SampleRng;
use crate::source::ImageSource;
use crate::{IMAGENET_MEAN, IMAGENET_STD};

/// Python's `int(round(x))` for non-negative `x`: round half to even.
fn py_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// Samples a crop box exactly as torchvision's `RandomResizedCrop.get_params`: up to 10
/// tries of a target area `U(scale) · H · W` and a log-uniform aspect ratio in `ratio`, and
/// otherwise the central crop with the aspect ratio clamped to `ratio`.
pub fn random_resized_crop_box(
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut SampleRng,
) -> CropBox {
    let (w_img, h_img) = (i64::from(width), i64::from(height));
    let area = (width as f64) * (height as f64);
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * rng.uniform_range(scale.0, scale.1);
        let aspect = rng.uniform_range(log_lo, log_hi).exp();
        let w = py_round((target_area * aspect).sqrt());
        let h = py_round((target_area / aspect).sqrt());
        if 0 < w && w <= w_img && 0 < h && h <= h_img {
            let top = rng.int_range(0, (h_img - h + 1) as u64) as u32;
            let left = rng.int_range(0, (w_img - w + 1) as u64) as u32;
            return CropBox {
                top,
                left,
                height: h as u32,
                width: w as u32,
            };
        }
    }
    // Fallback to the central crop.
    let in_ratio = width as f64 / height as f64;
    let (lo, hi) = (ratio.0.min(ratio.1), ratio.0.max(ratio.1));
    let (w, h) = if in_ratio < lo {
        (w_img, py_round(w_img as f64 / lo))
    } else if in_ratio > hi {
        (py_round(h_img as f64 * hi), h_img)
    } else {
        (w_img, h_img)
    };
    CropBox {
        top: ((h_img - h) / 2) as u32,
        left: ((w_img - w) / 2) as u32,
        height: h as u32,
        width: w as u32,
    }
}

/// The crop of MAE's `util/crop.py` (linear probing): area `U(scale)` of the image, aspect
/// `exp(U(log ratio))`, sides rounded and clamped to the image, position uniform.
pub fn random_resized_crop_once(
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut SampleRng,
) -> CropBox {
    let area = f64::from(width) * f64::from(height);
    let target_area = area * rng.uniform_range(scale.0, scale.1);
    let aspect = rng.uniform_range(ratio.0.ln(), ratio.1.ln()).exp();
    let w = (py_round((target_area * aspect).sqrt()).max(1) as u32).min(width);
    let h = (py_round((target_area / aspect).sqrt()).max(1) as u32).min(height);
    let top = rng.int_range(0, u64::from(height - h) + 1) as u32;
    let left = rng.int_range(0, u64::from(width - w) + 1) as u32;
    CropBox {
        top,
        left,
        height: h,
        width: w,
    }
}

/// torchvision `Resize(size)` with an int: the shorter side becomes `size`, the longer
/// `int(size · long / short)`. Returns `(width, height)`.
pub fn resize_shorter_side(width: u32, height: u32, size: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (f64::from(size) * f64::from(long) / f64::from(short)) as u32;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// torchvision `CenterCrop(size)` offsets: `int(round((dim - size) / 2))`.
pub fn center_crop_box(width: u32, height: u32, size: u32) -> CropBox {
    let off = |dim: u32| py_round((f64::from(dim) - f64::from(size)) / 2.0).max(0) as u32;
    CropBox {
        top: off(height),
        left: off(width),
        height: size.min(height),
        width: size.min(width),
    }
}

/// The pixels of `image` inside `crop` (clipped to the image).
pub fn crop(image: &Image8, crop: CropBox) -> Image8 {
    let c = usize::from(image.channels);
    let right = (crop.left + crop.width).min(image.width);
    let bottom = (crop.top + crop.height).min(image.height);
    let (left, top) = (crop.left.min(right), crop.top.min(bottom));
    let row = image.width as usize * c;
    let mut pixels = Vec::with_capacity((right - left) as usize * (bottom - top) as usize * c);
    for y in top..bottom {
        let start = y as usize * row + left as usize * c;
        pixels.extend_from_slice(&image.pixels[start..start + (right - left) as usize * c]);
    }
    Image8 {
        width: right - left,
        height: bottom - top,
        channels: image.channels,
        pixels,
    }
}

thread_local! {
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// Crops `image` to `crop`, then resizes the crop to `width × height` with PIL's bicubic
/// (what torchvision's `resized_crop` does on PIL images: the crop has no context outside).
pub fn resized_crop(image: &Image8, crop: CropBox, width: u32, height: u32) -> Result<Image8> {
    let c = usize::from(image.channels);
    let full =
        crop.left == 0 && crop.top == 0 && crop.width == image.width && crop.height == image.height;
    let cropped: Vec<u8> = if full {
        image.pixels.clone()
    } else {
        let row = image.width as usize * c;
        let mut out = Vec::with_capacity(crop.width as usize * crop.height as usize * c);
        for y in crop.top..crop.top + crop.height {
            let start = y as usize * row + crop.left as usize * c;
            out.extend_from_slice(&image.pixels[start..start + crop.width as usize * c]);
        }
        out
    };
    if crop.width == width && crop.height == height {
        return Ok(Image8 {
            width,
            height,
            channels: image.channels,
            pixels: cropped,
        });
    }
    let pixel_type = if c == 1 {
        PixelType::U8
    } else {
        PixelType::U8x3
    };
    let resize_err = |e: &dyn std::fmt::Display| DataError::InvalidConfig {
        field: "resize",
        reason: e.to_string(),
    };
    let src = Image::from_vec_u8(crop.width, crop.height, cropped, pixel_type)
        .map_err(|e| resize_err(&e))?;
    let mut dst = Image::new(width, height, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    RESIZER
        .with(|r| r.borrow_mut().resize(&src, &mut dst, &options))
        .map_err(|e| resize_err(&e))?;
    Ok(Image8 {
        width,
        height,
        channels: image.channels,
        pixels: dst.into_vec(),
    })
}

/// How an image becomes a `size × size` training or evaluation input.
#[derive(Debug, Clone, PartialEq)]
pub enum Geometry {
    /// `RandomResizedCrop(size, scale, ratio, bicubic)`.
    RandomResizedCrop {
        /// Range of the crop's share of the image area.
        scale: (f64, f64),
        /// Range of the crop's aspect ratio (width / height).
        ratio: (f64, f64),
    },
    /// The linear probe's TF-style crop (`util/crop.py`): one draw of area and log-uniform
    /// aspect, the side lengths clamped to the image, no retries or fallback.
    RandomResizedCropOnce {
        /// Range of the crop's share of the image area.
        scale: (f64, f64),
        /// Range of the crop's aspect ratio (width / height).
        ratio: (f64, f64),
    },
    /// `Resize(int(size / crop_pct), bicubic)` then `CenterCrop(size)`.
    ResizeCenterCrop {
        /// Share of the resized shorter side kept by the crop (0.875 = 224 of 256).
        crop_pct: f64,
    },
    /// Resize straight to `size × size` (bicubic; a no-op when already that size).
    Resize,
}

/// A full per-image transform: geometry, horizontal flip, `ToTensor` and `Normalize`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    /// Output side in pixels.
    pub size: u32,
    /// How the image is cropped and resized.
    pub geometry: Geometry,
    /// Probability of a horizontal flip.
    pub hflip: f64,
    /// Output channels (1 or 3); greyscale sources are replicated to 3 channels.
    pub channels: u8,
    /// Per-channel mean subtracted after scaling pixels to `[0, 1]`.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by.
    pub std: Vec<f32>,
    /// RandAugment on the 8-bit image after the crop and flip (fine-tuning recipe).
    pub rand_augment: Option<RandAugment>,
    /// RandomErasing on the normalised image (fine-tuning recipe).
    pub erasing: Option<RandomErasing>,
}

impl Transform {
    /// The pre-training augmentation (spec §2.1): `RandomResizedCrop(size, scale=(0.2, 1))`,
    /// flip 0.5, ImageNet normalisation.
    pub fn pretrain(size: u32) -> Self {
        Self {
            size,
            geometry: Geometry::RandomResizedCrop {
                scale: (0.2, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
            },
            hflip: 0.5,
            channels: 3,
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
            rand_augment: None,
            erasing: None,
        }
    }

    /// The fine-tuning recipe's per-image augmentation (timm `create_transform`): crop with
    /// `scale=(0.08, 1)`, flip 0.5, RandAugment `rand-m9-mstd0.5-inc1` (fill: the ImageNet
    /// mean), ImageNet normalisation, RandomErasing `p = 0.25` (pixel mode). Mixup/CutMix act
    /// on whole batches in the fine-tuning learner.
    pub fn finetune(size: u32) -> Self {
        let fill = IMAGENET_MEAN.map(|m| (255.0 * m).round().min(255.0) as u8);
        Self {
            geometry: Geometry::RandomResizedCrop {
                scale: (0.08, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
            },
            rand_augment: RandAugment::parse("rand-m9-mstd0.5-inc1", fill).ok(),
            erasing: Some(RandomErasing::new(0.25)),
            ..Self::pretrain(size)
        }
    }

    /// Evaluation: resize the shorter side to `size / 0.875`, centre crop, normalise.
    pub fn eval(size: u32) -> Self {
        Self {
            geometry: Geometry::ResizeCenterCrop { crop_pct: 0.875 },
            hflip: 0.0,
            ..Self::pretrain(size)
        }
    }

    /// Sets the channel count and normalisation (e.g. a dataset's own mean/std).
    pub fn with_normalization(mut self, channels: u8, mean: Vec<f32>, std: Vec<f32>) -> Self {
        self.channels = channels;
        self.mean = mean;
        self.std = std;
        self
    }

    /// One channel, normalised with [`crate::IMAGENET_GREY_MEAN`] /
    /// [`crate::IMAGENET_GREY_STD`] (greyscale models of RGB-trained recipes).
    pub fn greyscale(self) -> Self {
        self.with_normalization(
            1,
            vec![crate::IMAGENET_GREY_MEAN],
            vec![crate::IMAGENET_GREY_STD],
        )
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(DataError::InvalidConfig { field, reason });
        if self.size == 0 {
            return bad("size", "must be at least 1".into());
        }
        if self.channels != 1 && self.channels != 3 {
            return bad("channels", format!("({}) must be 1 or 3", self.channels));
        }
        let c = usize::from(self.channels);
        if self.mean.len() != c || self.std.len() != c {
            return bad("mean/std", format!("need {c} values each"));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad("std", "values must be finite and > 0".into());
        }
        if !(0.0..=1.0).contains(&self.hflip) {
            return bad("hflip", format!("({}) must be a probability", self.hflip));
        }
        match self.geometry {
            Geometry::RandomResizedCrop { scale, ratio }
            | Geometry::RandomResizedCropOnce { scale, ratio } => {
                if !(scale.0 > 0.0 && scale.0 <= scale.1 && scale.1 <= 1.0) {
                    return bad("scale", format!("{scale:?} must satisfy 0 < lo <= hi <= 1"));
                }
                if !(ratio.0 > 0.0 && ratio.0 <= ratio.1 && ratio.1.is_finite()) {
                    return bad("ratio", format!("{ratio:?} must satisfy 0 < lo <= hi"));
                }
            }
            Geometry::ResizeCenterCrop { crop_pct } => {
                if !(crop_pct > 0.0 && crop_pct <= 1.0) {
                    return bad("crop_pct", format!("({crop_pct}) must be in (0, 1]"));
                }
            }
            Geometry::Resize => {}
        }
        if let Some(ra) = &self.rand_augment {
            ra.validate()?;
        }
        if let Some(er) = &self.erasing {
            er.validate()?;
        }
        Ok(())
    }

    /// Values written per image: `channels · size²`.
    pub fn output_len(&self) -> usize {
        usize::from(self.channels) * (self.size as usize).pow(2)
    }

    /// The geometric part: the `size × size` 8-bit image, and whether to flip it.
    pub fn geometry(&self, image: &Image8, rng: &mut SampleRng) -> Result<(Image8, bool)> {
        if image.width == 0 || image.height == 0 {
            return Err(DataError::InvalidConfig {
                field: "image",
                reason: "has zero width or height".into(),
            });
        }
        let size = self.size;
        let out = match self.geometry {
            Geometry::RandomResizedCrop { scale, ratio } => {
                let crop = random_resized_crop_box(image.width, image.height, scale, ratio, rng);
                resized_crop(image, crop, size, size)?
            }
            Geometry::RandomResizedCropOnce { scale, ratio } => {
                let crop = random_resized_crop_once(image.width, image.height, scale, ratio, rng);
                resized_crop(image, crop, size, size)?
            }
            Geometry::ResizeCenterCrop { crop_pct } => {
                let short = (f64::from(size) / crop_pct) as u32;
                let (w, h) = resize_shorter_side(image.width, image.height, short);
                let long = (f64::from(short) * f64::from(image.width.max(image.height))
                    / f64::from(image.width.min(image.height).max(1)))
                .ceil() as u64;
                if long.saturating_mul(u64::from(short)) > crate::DEFAULT_MAX_PIXELS {
                    let (to_width, to_height) = if image.width <= image.height {
                        (u64::from(short), long)
                    } else {
                        (long, u64::from(short))
                    };
                    return Err(DataError::ResizeTooLarge {
                        width: image.width,
                        height: image.height,
                        to_width,
                        to_height,
                        max_pixels: crate::DEFAULT_MAX_PIXELS,
                    });
                }
                // Pillow's resize, bit for bit, then torchvision's crop offsets.
                let resized = pil_bicubic_resize(image, w, h);
                crop(&resized, center_crop_box(w, h, size))
            }
            Geometry::Resize => pil_bicubic_resize(image, size, size),
        };
        // torchvision draws the flip after the crop: `torch.rand(1) < p`.
        let flip = self.hflip > 0.0 && rng.uniform() < self.hflip;
        Ok((out, flip))
    }

    /// Applies the whole transform, writing `[C, size, size]` normalised floats into `out`.
    pub fn apply(&self, image: &Image8, rng: &mut SampleRng, out: &mut [f32]) -> Result<()> {
        let (img, flip) = self.geometry(image, rng)?;
        self.finish(img, flip, rng, out)
    }

    /// Loads sample `index` of `source` and applies the transform, with the draws and output
    /// of [`apply`](Self::apply); a `RandomResizedCrop` box is drawn from the image's size
    /// first, so that the source may decode only that part ([`ImageSource::load_part`]).
    pub fn load_and_apply<S: ImageSource + ?Sized>(
        &self,
        source: &S,
        index: usize,
        rng: &mut SampleRng,
        out: &mut [f32],
    ) -> Result<()> {
        let (scale, ratio, once) = match self.geometry {
            Geometry::RandomResizedCrop { scale, ratio } => (scale, ratio, false),
            Geometry::RandomResizedCropOnce { scale, ratio } => (scale, ratio, true),
            _ => {
                let image = source.load(index, self.channels)?;
                return self.apply(&image, rng, out);
            }
        };
        let (image, picked) = source.load_part(index, self.channels, &mut |w, h| {
            Ok(Some(if once {
                random_resized_crop_once(w, h, scale, ratio, rng)
            } else {
                random_resized_crop_box(w, h, scale, ratio, rng)
            }))
        })?;
        let Some(crop) = picked else {
            return Err(DataError::InvalidConfig {
                field: "image",
                reason: "has zero width or height".into(),
            });
        };
        let size = self.size;
        let img = resized_crop(&image, crop, size, size)?;
        // torchvision draws the flip after the crop: `torch.rand(1) < p`.
        let flip = self.hflip > 0.0 && rng.uniform() < self.hflip;
        self.finish(img, flip, rng, out)
    }

    /// What follows the geometry: RandAugment, the flip, `ToTensor` + `Normalize` and
    /// RandomErasing.
    fn finish(
        &self,
        mut img: Image8,
        mut flip: bool,
        rng: &mut SampleRng,
        out: &mut [f32],
    ) -> Result<()> {
        if let Some(ra) = &self.rand_augment {
            // timm's order: crop, flip, RandAugment.
            if flip {
                img = hflip(&img);
                flip = false;
            }
            img = ra.apply(&img, rng);
        }
        self.write_normalized(&img, flip, out);
        if let Some(er) = &self.erasing {
            let s = self.size as usize;
            er.apply(
                &mut out[..self.output_len()],
                usize::from(self.channels),
                s,
                rng,
            );
        }
        Ok(())
    }

    /// `ToTensor` + `Normalize` (+ optional flip) of a `size × size` image into CHW floats.
    pub fn write_normalized(&self, img: &Image8, flip: bool, out: &mut [f32]) {
        let s = self.size as usize;
        let src_c = usize::from(img.channels);
        let plane = s * s;
        for c in 0..usize::from(self.channels) {
            let scale = 1.0 / (255.0 * self.std[c]);
            let bias = -self.mean[c] / self.std[c];
            // Every byte's normalised value, computed as `v · scale + bias` in f32 once.
            let table: [f32; 256] = std::array::from_fn(|v| f32::from(v as u8) * scale + bias);
            let dst = &mut out[c * plane..(c + 1) * plane];
            for (row, src) in dst
                .chunks_exact_mut(s)
                .zip(img.pixels.chunks_exact(s * src_c))
            {
                let pixels = src.chunks_exact(src_c);
                let value = |p: &[u8]| match (src_c, self.channels) {
                    (1, _) => table[usize::from(p[0])],
                    (3, 1) => table[usize::from(luma(p))],
                    _ => table[usize::from(p[c])],
                };
                if flip {
                    for (d, p) in row.iter_mut().rev().zip(pixels) {
                        *d = value(p);
                    }
                } else {
                    for (d, p) in row.iter_mut().zip(pixels) {
                        *d = value(p);
                    }
                }
            }
        }
    }
}

/// The image mirrored left to right.
fn hflip(img: &Image8) -> Image8 {
    let c = usize::from(img.channels);
    let row = img.width as usize * c;
    let mut pixels = Vec::with_capacity(img.pixels.len());
    for r in img.pixels.chunks_exact(row.max(1)) {
        for px in r.chunks_exact(c).rev() {
            pixels.extend_from_slice(px);
        }
    }
    Image8 {
        pixels,
        ..img.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_shot_crop_is_clamped_to_the_image() {
        for i in 0..500 {
            let mut rng = SampleRng::for_sample(5, 0, i);
            let b = random_resized_crop_once(40, 30, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(b.width >= 1 && b.height >= 1);
            assert!(b.left + b.width <= 40 && b.top + b.height <= 30, "{b:?}");
        }
        // Scale 1 with a wide aspect asks for more than the height: clamped, not retried.
        let mut rng = SampleRng::new(0);
        let b = random_resized_crop_once(10, 10, (1.0, 1.0), (0.5, 0.5), &mut rng);
        assert_eq!((b.width, b.height), (7, 10));
    }

    #[test]
    fn python_rounding_is_half_to_even() {
        assert_eq!(py_round(2.5), 2);
        assert_eq!(py_round(3.5), 4);
        assert_eq!(py_round(2.4999), 2);
    }

    #[test]
    fn shorter_side_resize_matches_torchvision() {
        // 500x375 -> Resize(256): (341, 256) since int(256 * 500 / 375) = 341.
        assert_eq!(resize_shorter_side(500, 375, 256), (341, 256));
        assert_eq!(resize_shorter_side(375, 500, 256), (256, 341));
        assert_eq!(resize_shorter_side(256, 256, 256), (256, 256));
        // CenterCrop(224) of 341x256: left = round(58.5) = 58 (half to even), top = 16.
        assert_eq!(
            center_crop_box(341, 256, 224),
            CropBox {
                top: 16,
                left: 58,
                height: 224,
                width: 224
            }
        );
    }
}

#[cfg(test)]
mod resize_bound_tests {
    use super::*;

    #[test]
    fn an_extreme_aspect_ratio_is_an_error_not_a_huge_resize() {
        let image = Image8 {
            width: 1,
            height: 2_000_000,
            channels: 3,
            pixels: vec![128; 6_000_000],
        };
        let t = Transform::eval(28);
        let mut out = vec![0.0; t.output_len()];
        let err = t
            .apply(&image, &mut SampleRng::new(0), &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("extreme aspect ratio"), "{err}");
    }
}
