//! Reconstruction pictures, as MAE's visualisation demo draws them: for each image, the
//! original, the masked input, the reconstruction, and the reconstruction with the visible
//! patches pasted back.
//!
//! Checkpoints trained with the normalised-pixel loss (SupMAE, MAE `*_full.pth`) predict
//! each patch normalised by its own mean and variance; their predictions are de-normalised
//! with the original patch's statistics, as the demo does, before being drawn. Pixel-target
//! checkpoints (`mae_visualize_*.pth`) are drawn as predicted.

use std::path::Path;

use burn::prelude::*;
use image::{DynamicImage, Rgb, RgbImage};
use supmae_data::{SampleRng, Transform};
use supmae_model::checkpoint::StateDict;
use supmae_model::masking::host_masking;
use supmae_model::{SupMae, inspect, patchify, unpatchify};
use supmae_train::open::{Checkpoint, open};
use supmae_train::{PretrainConfig, load_pretrained};

use crate::embed::{EmbedError, to_image8};

/// The epsilon of the norm-pix target (`1e-6`, as the official loss).
const NORM_PIX_EPS: f64 = 1e-6;

/// One reconstructed image and how good it is.
#[derive(Debug, Clone)]
pub struct Reconstruction {
    /// The preprocessed input.
    pub original: RgbImage,
    /// The input with the removed patches set to the normalisation mean.
    pub masked: RgbImage,
    /// The model's prediction of every patch.
    pub reconstruction: RgbImage,
    /// The prediction on removed patches, the input on visible ones.
    pub pasted: RgbImage,
    /// Mean squared error on the removed patches, in normalised-image units.
    pub masked_mse: f64,
    /// The same error when every removed patch is predicted as its own mean colour
    /// (a flat patch): the bar a useful reconstruction beats.
    pub patch_mean_mse: f64,
    /// Patches removed.
    pub removed: usize,
    /// Patches in the image.
    pub patches: usize,
}

/// A pre-training model with its decoder, ready to reconstruct images.
pub struct Reconstructor<B: Backend> {
    model: SupMae<B>,
    transform: Transform,
    norm_pix: bool,
    description: String,
    device: B::Device,
}

impl<B: Backend> Reconstructor<B> {
    /// Loads a checkpoint with a decoder: a `supmae pretrain` run folder or `.ckpt`, or an
    /// official SupMAE / MAE full `.pth` / `.safetensors`. `pixel_targets` overrides whether
    /// the model predicts raw pixels (default: from our config; for official files, true
    /// only for `mae_visualize_*` names).
    pub fn load(
        path: impl AsRef<Path>,
        device: &B::Device,
        pixel_targets: Option<bool>,
    ) -> Result<Self, EmbedError> {
        let path = path.as_ref();
        let (file, what) = open(path)?;
        if let Checkpoint::Classifier(_) = what {
            return Err(EmbedError::CannotReconstruct(format!(
                "{}: a fine-tuned or probed classifier checkpoint has no decoder to reconstruct \
                 with (use a pre-training checkpoint)",
                file.display()
            )));
        }
        if let Checkpoint::Pretrain { .. } = what {
            let (model, config) = load_pretrained::<B>(&file, device)?;
            return Ok(Self::from_pretrained(model, &config, pixel_targets, device));
        }
        let state = StateDict::from_file(&file)?;
        let info = inspect(&state)?;
        let Some(config) = info.mae_config() else {
            return Err(EmbedError::CannotReconstruct(format!(
                "{}: {}",
                path.display(),
                info.describe()
            )));
        };
        let visualize = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("visualize"));
        let norm_pix = !pixel_targets.unwrap_or(visualize);
        let config = config.with_norm_pix_loss(norm_pix);
        let (model, _) = config.init::<B>(device)?.load_state_dict(&state)?;
        let t = Transform::eval(info.img_size as u32);
        let transform = if info.in_chans == 1 { t.greyscale() } else { t };
        Ok(Self {
            model,
            transform,
            norm_pix,
            description: format!(
                "{}; {} targets",
                info.describe(),
                if norm_pix {
                    "normalised-pixel"
                } else {
                    "pixel"
                }
            ),
            device: device.clone(),
        })
    }

    /// A model trained here (or being trained) with its recipe: the recipe gives the
    /// evaluation transform and the kind of target; `pixel_targets` overrides the latter.
    pub fn from_pretrained(
        model: SupMae<B>,
        config: &PretrainConfig,
        pixel_targets: Option<bool>,
        device: &B::Device,
    ) -> Self {
        let (_, eval) = supmae_train::transforms(config);
        let norm_pix = pixel_targets.map_or(config.model.norm_pix_loss, |p| !p);
        let description = format!(
            "{} pre-training checkpoint ({}x{} encoder, {}-block decoder), {} targets",
            if config.model.cls_head.is_some() {
                "SupMAE"
            } else {
                "MAE"
            },
            config.model.embed_dim,
            config.model.depth,
            config.model.decoder_depth,
            if norm_pix {
                "normalised-pixel"
            } else {
                "pixel"
            }
        );
        Self {
            model,
            transform: eval,
            norm_pix,
            description,
            device: device.clone(),
        }
    }

    /// [`Reconstructor::load`] of a `supmae pretrain` `checkpoint.ckpt` held in memory (`name`
    /// stands for it in errors): a file a browser page was given, or weights compiled in.
    pub fn from_checkpoint_bytes(
        bytes: &[u8],
        name: &str,
        device: &B::Device,
    ) -> Result<Self, EmbedError> {
        let (model, config) = supmae_train::load_pretrained_bytes::<B>(bytes, name, device)?;
        Ok(Self::from_pretrained(model, &config, None, device))
    }

    /// The model.
    pub fn model(&self) -> &SupMae<B> {
        &self.model
    }

    /// The evaluation transform images go through.
    pub fn transform(&self) -> &Transform {
        &self.transform
    }

    /// What was loaded, and which kind of target it predicts.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Reconstructs images with `mask_ratio` of their patches removed, the masks drawn from
    /// `seed`.
    pub fn reconstruct(
        &self,
        images: &[DynamicImage],
        mask_ratio: f64,
        seed: u64,
    ) -> Result<Vec<Reconstruction>, EmbedError> {
        let (values, removed) = self.compute(images, mask_ratio, seed)?;
        let data = values.try_into_data().map_err(read_back)?;
        self.finish(data, images.len(), removed)
    }

    /// [`Reconstructor::reconstruct`] reading the results back asynchronously: the path for
    /// backends that cannot read synchronously (WebGPU in a browser).
    pub async fn reconstruct_async(
        &self,
        images: &[DynamicImage],
        mask_ratio: f64,
        seed: u64,
    ) -> Result<Vec<Reconstruction>, EmbedError> {
        let (values, removed) = self.compute(images, mask_ratio, seed)?;
        let data = values.into_data_async().await.map_err(read_back)?;
        self.finish(data, images.len(), removed)
    }

    /// Everything a reconstruction reads back, in one tensor: the original, masked,
    /// reconstructed and pasted pictures (`[4, N, C, S, S]`, normalised), then the errors on
    /// removed patches and those of flat patch-mean patches (`[2, N]`); and how many patches
    /// each image lost. The masks are made on the host ([`host_masking`]): no device argsort.
    ///
    /// # Shapes
    /// - output: `[4·N·C·S·S + 2·N]`
    fn compute(
        &self,
        images: &[DynamicImage],
        mask_ratio: f64,
        seed: u64,
    ) -> Result<(Tensor<B, 1>, usize), EmbedError> {
        let cfg = &self.model.config;
        supmae_model::masking::check_mask_ratio(cfg.num_patches(), mask_ratio)?;
        let t = &self.transform;
        let (c, s, p) = (usize::from(t.channels), t.size as usize, cfg.patch_size);
        let n = images.len();
        let l = cfg.num_patches();
        let mut data = vec![0f32; n * c * s * s];
        let mut rng = SampleRng::new(0);
        for (img, out) in images.iter().zip(data.chunks_mut(c * s * s)) {
            t.apply(&to_image8(img, t.channels), &mut rng, out)?;
        }
        let mut noise_rng = SampleRng::new(seed);
        let noise: Vec<f32> = (0..n * l).map(|_| noise_rng.uniform() as f32).collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(data, [n, c, s, s]), &self.device);
        let masking = host_masking::<B>(&noise, n, l, mask_ratio, &self.device)?;
        let enc = self.model.forward_encoder_masked(x.clone(), masking)?;
        let mask = enc.masking.mask.clone(); // [N, L], 1 = removed
        let pred = self
            .model
            .forward_decoder(enc.latent, enc.masking.ids_restore); // [N, L, p²C]
        let target = patchify(x.clone(), p); // [N, L, p²C]
        let (var, mean) = target.clone().var_mean(2);
        let pred = if self.norm_pix {
            pred * var.add_scalar(NORM_PIX_EPS).sqrt() + mean.clone()
        } else {
            pred
        };
        let [_, _, pd] = pred.dims();
        let mask3 = mask.clone().reshape([n, l, 1]);
        // Errors on removed patches, per image.
        let err = (pred.clone() - target.clone())
            .powi_scalar(2)
            .mean_dim(2)
            .reshape([n, l]);
        let flat = (mean.clone().expand([n, l, pd]) - target.clone())
            .powi_scalar(2)
            .mean_dim(2)
            .reshape([n, l]);
        let removed = mask.clone().sum_dim(1).reshape([n]);
        let per_image = |e: Tensor<B, 2>| {
            (e * mask.clone()).sum_dim(1).reshape([n]) / removed.clone().clamp_min(1.0)
        };
        let (rec_err, flat_err) = (per_image(err), per_image(flat));
        let masked_in = target.clone() * (mask3.clone().neg().add_scalar(1.0)); // removed = 0 (the mean)
        let pasted = target * (mask3.clone().neg().add_scalar(1.0)) + pred.clone() * mask3;
        let picture = |patches: Tensor<B, 3>| unpatchify(patches, p, c).reshape([n * c * s * s]);
        let values = Tensor::cat(
            vec![
                picture(patchify(x, p)),
                picture(masked_in),
                picture(pred),
                picture(pasted),
                rec_err,
                flat_err,
            ],
            0,
        );
        Ok((values, l - enc.masking.len_keep))
    }

    /// The pictures and errors out of the values [`Reconstructor::compute`] read back.
    fn finish(
        &self,
        data: TensorData,
        n: usize,
        removed: usize,
    ) -> Result<Vec<Reconstruction>, EmbedError> {
        let values = data.convert::<f32>().to_vec::<f32>().map_err(|e| {
            supmae_model::ModelError::InvalidArgument {
                name: "reconstruction",
                reason: format!("{e:?}"),
            }
        })?;
        let t = &self.transform;
        let (c, s) = (usize::from(t.channels), t.size as usize);
        let patches = self.model.config.num_patches();
        let size = c * s * s;
        if values.len() != 4 * n * size + 2 * n {
            return Err(EmbedError::Unsupported(format!(
                "a reconstruction read back {} values instead of {}",
                values.len(),
                4 * n * size + 2 * n
            )));
        }
        let (pictures, errors) = values.split_at(4 * n * size);
        let picture = |k: usize, i: usize| {
            let at = (k * n + i) * size;
            self.to_rgb(&pictures[at..at + size], c, s)
        };
        Ok((0..n)
            .map(|i| Reconstruction {
                original: picture(0, i),
                masked: picture(1, i),
                reconstruction: picture(2, i),
                pasted: picture(3, i),
                masked_mse: f64::from(errors[i]),
                patch_mean_mse: f64::from(errors[n + i]),
                removed,
                patches,
            })
            .collect())
    }

    /// A normalised `[C, S, S]` image back to 8-bit RGB.
    fn to_rgb(&self, chw: &[f32], c: usize, s: usize) -> RgbImage {
        let t = &self.transform;
        RgbImage::from_fn(s as u32, s as u32, |x, y| {
            let at = |ch: usize| {
                let v = chw[ch * s * s + y as usize * s + x as usize] * t.std[ch] + t.mean[ch];
                (v * 255.0).round().clamp(0.0, 255.0) as u8
            };
            if c == 1 {
                let g = at(0);
                Rgb([g, g, g])
            } else {
                Rgb([at(0), at(1), at(2)])
            }
        })
    }
}

/// A failed read of the results from the device, as an error.
fn read_back(e: impl std::fmt::Debug) -> supmae_model::ModelError {
    supmae_model::ModelError::InvalidArgument {
        name: "reconstruction",
        reason: format!("reading the result back failed: {e:?}"),
    }
}

/// Largest picture [`grid`] draws (pixels).
pub(crate) const MAX_GRID_PIXELS: u64 = 100_000_000;

/// The picture: one row per image, columns original | masked | reconstruction |
/// reconstruction + visible, each cell scaled up `scale` times (nearest) with a 4 px gap.
/// A picture over 100 million pixels (a huge `scale`) is an error, checked before
/// anything is allocated.
pub fn grid(rows: &[Reconstruction], scale: u32) -> Result<RgbImage, EmbedError> {
    let Some(first) = rows.first() else {
        return Ok(RgbImage::new(1, 1));
    };
    let side = |n: u32| u64::from(n) * u64::from(scale.max(1));
    let width = 4 * side(first.original.width()) + 20;
    let height = rows.len() as u64 * (side(first.original.height()) + 4) + 4;
    if width.saturating_mul(height) > MAX_GRID_PIXELS {
        return Err(EmbedError::Unsupported(format!(
            "a {width}x{height} picture (scale {scale}) is over the {MAX_GRID_PIXELS}-pixel \
             limit: lower the scale or pass fewer images"
        )));
    }
    let scale = scale.max(1);
    let (w, h) = (
        first.original.width() * scale,
        first.original.height() * scale,
    );
    let gap = 4;
    let mut out = RgbImage::from_pixel(
        4 * w + 5 * gap,
        rows.len() as u32 * h + (rows.len() as u32 + 1) * gap,
        Rgb([255, 255, 255]),
    );
    for (r, row) in rows.iter().enumerate() {
        let cells = [&row.original, &row.masked, &row.reconstruction, &row.pasted];
        for (col, cell) in cells.iter().enumerate() {
            let (ox, oy) = (gap + col as u32 * (w + gap), gap + r as u32 * (h + gap));
            for y in 0..h {
                for x in 0..w {
                    out.put_pixel(ox + x, oy + y, *cell.get_pixel(x / scale, y / scale));
                }
            }
        }
    }
    Ok(out)
}
