//! The MAE / SupMAE pre-training model (spec §1.7–§1.11).
//!
//! Encoder on the visible patches, light decoder reconstructing every patch, normalised-pixel
//! MSE on the removed patches and, for SupMAE, a classification branch on the mean of the
//! visible tokens. Field names mirror the official state dict (`cls_token`, `pos_embed`,
//! `mask_token`, `decoder_pos_embed`, `patch_embed.proj`, `blocks.{i}`, `norm`,
//! `decoder_embed`, `decoder_blocks.{i}`, `decoder_norm`, `decoder_pred`, `cls_head`).

use burn::module::Param;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;

use crate::block::{Block, LN_EPS, LinearInit, layer_norm, linear, linear_tokens};
use crate::cls_head::ClsHead;
use crate::config::{MaeConfig, mlp_hidden};
use crate::error::{ModelError, Result};
use crate::kernels;
use crate::masking::{Masking, draw_masking};
use crate::patch::{PatchEmbed, PatchInit, normal_param, patchify};
use crate::pos_embed::sincos_2d;

/// Epsilon inside the square root of the norm-pix target, `(x − μ) / sqrt(σ² + 1e-6)`.
pub const NORM_PIX_EPS: f64 = 1e-6;

/// MAE, or SupMAE when built with a [`ClsHeadConfig`](crate::ClsHeadConfig).
#[derive(Module, Debug)]
pub struct SupMae<B: Backend> {
    /// Learnable cls token, `[1, 1, D]`.
    pub cls_token: Param<Tensor<B, 3>>,
    /// Fixed sin-cos position embedding with a zero cls row, `[1, L + 1, D]`. Stored (so it is
    /// in checkpoints) but never trained.
    pub pos_embed: Param<Tensor<B, 3>>,
    /// Learnable token standing in for removed patches in the decoder, `[1, 1, Dd]`.
    pub mask_token: Param<Tensor<B, 3>>,
    /// Fixed sin-cos decoder position embedding, `[1, L + 1, Dd]`, never trained.
    pub decoder_pos_embed: Param<Tensor<B, 3>>,
    /// Patch embedding.
    pub patch_embed: PatchEmbed<B>,
    /// Encoder blocks.
    pub blocks: Vec<Block<B>>,
    /// Final encoder LayerNorm.
    pub norm: LayerNorm<B>,
    /// `Linear(D → Dd)` into the decoder.
    pub decoder_embed: Linear<B>,
    /// Decoder blocks.
    pub decoder_blocks: Vec<Block<B>>,
    /// Final decoder LayerNorm.
    pub decoder_norm: LayerNorm<B>,
    /// `Linear(Dd → p²·C)`: the pixel prediction of each patch.
    pub decoder_pred: Linear<B>,
    /// The SupMAE classification branch (`None` for plain MAE).
    pub cls_head: Option<ClsHead<B>>,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: MaeConfig,
}

/// Everything the encoder produced.
#[derive(Debug, Clone)]
pub struct EncoderOutput<B: Backend> {
    /// Encoder output after the final `norm`: the cls token then the visible tokens in
    /// ascending-noise order. Shape `[N, 1 + K, D]`.
    pub latent: Tensor<B, 3>,
    /// The mask and the permutations.
    pub masking: Masking<B>,
}

/// Input of [`SupMae::forward`], built with setters.
#[derive(Debug, Clone)]
pub struct SupMaeInput<B: Backend> {
    /// Normalised images, `[N, C, H, W]`.
    pub images: Tensor<B, 4>,
    /// Class indices, `[N]` (SupMAE only; without them no classification loss is computed).
    pub labels: Option<Tensor<B, 1, Int>>,
    /// Share of patches removed (0.75 in both recipes).
    pub mask_ratio: f64,
    /// Explicit masking noise `[N, L]` (otherwise drawn from the backend RNG).
    pub noise: Option<Tensor<B, 2>>,
    /// A masking made beforehand, e.g. on the host by [`crate::masking::host_masking`]
    /// (`mask_ratio` and `noise` are then unused).
    pub masking: Option<Masking<B>>,
    /// Class indices given as host values, `N` of them: checked and uploaded without reading
    /// anything back from the device (the path for GPU backends in a browser, which cannot
    /// read synchronously). `labels`, when set, takes precedence.
    pub label_values: Option<Vec<i64>>,
    /// BatchNorm mode of the classification branch; defaults to training exactly when the
    /// backend records gradients (`B::ad_enabled`), like Burn's own modules.
    pub training: Option<bool>,
}

impl<B: Backend> SupMaeInput<B> {
    /// Images with the recipe's mask ratio 0.75 and no labels.
    pub fn new(images: Tensor<B, 4>) -> Self {
        Self {
            images,
            labels: None,
            mask_ratio: 0.75,
            noise: None,
            masking: None,
            label_values: None,
            training: None,
        }
    }

    /// Sets the labels.
    pub fn with_labels(mut self, labels: Tensor<B, 1, Int>) -> Self {
        self.labels = Some(labels);
        self
    }

    /// Sets the mask ratio.
    pub fn with_mask_ratio(mut self, mask_ratio: f64) -> Self {
        self.mask_ratio = mask_ratio;
        self
    }

    /// Sets explicit masking noise.
    pub fn with_noise(mut self, noise: Tensor<B, 2>) -> Self {
        self.noise = Some(noise);
        self
    }

    /// Sets a masking made beforehand (see [`SupMaeInput::masking`]).
    pub fn with_masking(mut self, masking: Masking<B>) -> Self {
        self.masking = Some(masking);
        self
    }

    /// Sets the labels as host values (see [`SupMaeInput::label_values`]).
    pub fn with_label_values(mut self, values: Vec<i64>) -> Self {
        self.label_values = Some(values);
        self
    }

    /// Forces BatchNorm training (`true`) or evaluation (`false`) mode.
    pub fn with_training(mut self, training: bool) -> Self {
        self.training = Some(training);
        self
    }
}

/// Everything a forward pass produced.
#[derive(Debug, Clone)]
pub struct SupMaeOutput<B: Backend> {
    /// `rec_loss + cls_loss` (just `rec_loss` without labels or head). Shape `[1]`.
    pub loss: Tensor<B, 1>,
    /// Reconstruction MSE averaged over removed patches. Shape `[1]`.
    pub rec_loss: Tensor<B, 1>,
    /// `λ · CE(logits / T, labels)`, λ included as in the official log. Shape `[1]`.
    pub cls_loss: Option<Tensor<B, 1>>,
    /// Classification logits (SupMAE). Shape `[N, classes]`.
    pub logits: Option<Tensor<B, 2>>,
    /// Predicted patches (normalised pixels under norm-pix loss). Shape `[N, L, p²·C]`.
    pub pred: Tensor<B, 3>,
    /// Encoder output. Shape `[N, 1 + K, D]`.
    pub latent: Tensor<B, 3>,
    /// Mask (`1` = removed) and permutations.
    pub masking: Masking<B>,
}

impl MaeConfig {
    /// Builds the model with the official initialisation (spec §1.11), drawing from the
    /// backend RNG as it stands. For reproducible weights use [`MaeConfig::init_seeded`].
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<SupMae<B>> {
        crate::seeding::exclusive(|| self.build(device).map(crate::seeding::materialize))
    }

    /// Builds the model with the official initialisation from the RNG stream of `seed`:
    /// the same seed gives the same weights, even while other threads initialise models
    /// (see [`crate::seeding`]).
    pub fn init_seeded<B: Backend>(&self, seed: u64, device: &B::Device) -> Result<SupMae<B>> {
        crate::seeding::with_seed::<B, _>(device, seed, || {
            self.build(device).map(crate::seeding::materialize)
        })
    }

    fn build<B: Backend>(&self, device: &B::Device) -> Result<SupMae<B>> {
        self.validate()?;
        let d = self.embed_dim;
        let dd = self.decoder_embed_dim;
        let grid = self.grid_size();
        let frozen = |t: Tensor<B, 3>| Param::from_tensor(t).set_require_grad(false);
        let model = SupMae {
            cls_token: normal_param([1, 1, d], 0.02, device),
            pos_embed: frozen(sincos_2d(d, grid, device)),
            mask_token: normal_param([1, 1, dd], 0.02, device),
            decoder_pos_embed: frozen(sincos_2d(dd, grid, device)),
            patch_embed: PatchEmbed::new(
                self.in_chans,
                d,
                self.patch_size,
                PatchInit::MaeXavier,
                device,
            ),
            blocks: (0..self.depth)
                .map(|_| {
                    let hidden = mlp_hidden(d, self.mlp_ratio);
                    Block::new(d, self.num_heads, hidden, 0.0, LinearInit::Xavier, device)
                })
                .collect(),
            norm: layer_norm(d, device),
            decoder_embed: linear(d, dd, LinearInit::Xavier, device),
            decoder_blocks: (0..self.decoder_depth)
                .map(|_| {
                    let hidden = mlp_hidden(dd, self.mlp_ratio);
                    let heads = self.decoder_num_heads;
                    Block::new(dd, heads, hidden, 0.0, LinearInit::Xavier, device)
                })
                .collect(),
            decoder_norm: layer_norm(dd, device),
            decoder_pred: linear(dd, self.patch_dim(), LinearInit::Xavier, device),
            cls_head: self.cls_head.as_ref().map(|h| ClsHead::new(d, h, device)),
            config: self.clone(),
        };
        // Parameters are initialised lazily; draw them now so clones share values.
        let _ = model.num_params();
        Ok(model)
    }
}

impl<B: Backend> SupMae<B> {
    /// Checks that `images` fit the configuration.
    pub fn check_images(&self, images: &Tensor<B, 4>) -> Result<()> {
        let c = &self.config;
        crate::patch::check_images(images.dims(), c.in_chans, c.img_size)
    }

    /// Patch tokens before position embeddings.
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - output: `[N, L, D]`
    pub fn patch_tokens(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        self.patch_embed.forward(images)
    }

    /// The input of the first encoder block: patch tokens plus position embeddings, masked,
    /// with `cls_token + pos_embed[0]` prepended.
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - noise: `[N, L]`
    /// - output: `[N, 1 + K, D]`, plus the [`Masking`]
    pub fn encoder_input(
        &self,
        images: Tensor<B, 4>,
        mask_ratio: f64,
        noise: Option<Tensor<B, 2>>,
    ) -> Result<(Tensor<B, 3>, Masking<B>)> {
        self.encoder_input_with(images, |n, l, device| {
            draw_masking(n, l, mask_ratio, noise, device)
        })
    }

    /// [`SupMae::encoder_input`] with a masking made beforehand (e.g. by
    /// [`crate::masking::host_masking`], which needs no device argsort).
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - masking: `ids_keep` `[N, K]`, `ids_restore` and `mask` `[N, L]`
    /// - output: `[N, 1 + K, D]`, plus the [`Masking`]
    pub fn encoder_input_masked(
        &self,
        images: Tensor<B, 4>,
        masking: Masking<B>,
    ) -> Result<(Tensor<B, 3>, Masking<B>)> {
        self.encoder_input_with(images, |n, l, _| {
            let keep = masking.len_keep;
            for (name, got, expected) in [
                ("masking.ids_keep", masking.ids_keep.dims(), [n, keep]),
                ("masking.ids_restore", masking.ids_restore.dims(), [n, l]),
                ("masking.mask", masking.mask.dims(), [n, l]),
            ] {
                if got != expected {
                    return Err(ModelError::Shape {
                        name,
                        expected: format!("{expected:?}"),
                        got: got.to_vec(),
                    });
                }
            }
            Ok(masking)
        })
    }

    fn encoder_input_with(
        &self,
        images: Tensor<B, 4>,
        masking: impl FnOnce(usize, usize, &B::Device) -> Result<Masking<B>>,
    ) -> Result<(Tensor<B, 3>, Masking<B>)> {
        self.check_images(&images)?;
        let x = kernels::patch_conv(&self.patch_embed.proj, images); // [N, D, g, g]
        let [n, d, gh, gw] = x.dims();
        let masking = masking(n, gh * gw, &x.device())?;
        let x = kernels::visible_tokens(
            x.reshape([n, d, gh * gw]), // [N, D, L]
            self.pos_embed.val(),
            self.cls_token.val(),
            masking.ids_keep.clone(),
        ); // [N, 1 + K, D]
        Ok((x, masking))
    }

    /// Encodes the visible patches.
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - noise: `[N, L]`
    /// - latent: `[N, 1 + K, D]`
    pub fn forward_encoder(
        &self,
        images: Tensor<B, 4>,
        mask_ratio: f64,
        noise: Option<Tensor<B, 2>>,
    ) -> Result<EncoderOutput<B>> {
        let (x, masking) = self.encoder_input(images, mask_ratio, noise)?;
        Ok(self.encode(x, masking))
    }

    /// [`SupMae::forward_encoder`] with a masking made beforehand.
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - masking: see [`SupMae::encoder_input_masked`]
    /// - latent: `[N, 1 + K, D]`
    pub fn forward_encoder_masked(
        &self,
        images: Tensor<B, 4>,
        masking: Masking<B>,
    ) -> Result<EncoderOutput<B>> {
        let (x, masking) = self.encoder_input_masked(images, masking)?;
        Ok(self.encode(x, masking))
    }

    fn encode(&self, mut x: Tensor<B, 3>, masking: Masking<B>) -> EncoderOutput<B> {
        for block in &self.blocks {
            x = block.forward(x);
        }
        EncoderOutput {
            latent: kernels::layer_norm(&self.norm, x, LN_EPS),
            masking,
        }
    }

    /// The input of the first decoder block: embedded visible tokens and mask tokens put back
    /// in raster order, the decoded cls token in front, plus `decoder_pos_embed`.
    ///
    /// # Shapes
    /// - latent: `[N, 1 + K, D]`
    /// - ids_restore: `[N, L]`
    /// - output: `[N, L + 1, Dd]`
    pub fn decoder_input(
        &self,
        latent: Tensor<B, 3>,
        ids_restore: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let y = linear_tokens(&self.decoder_embed, latent); // [N, 1 + K, Dd]
        kernels::decoder_tokens(
            y,
            self.mask_token.val(),
            self.decoder_pos_embed.val(),
            ids_restore,
        ) // [N, L + 1, Dd]
    }

    /// Predicts every patch.
    ///
    /// # Shapes
    /// - latent: `[N, 1 + K, D]`
    /// - ids_restore: `[N, L]`
    /// - pred: `[N, L, p²·C]`
    pub fn forward_decoder(
        &self,
        latent: Tensor<B, 3>,
        ids_restore: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let mut x = self.decoder_input(latent, ids_restore);
        for block in &self.decoder_blocks {
            x = block.forward(x);
        }
        let x = linear_tokens(
            &self.decoder_pred,
            kernels::layer_norm(&self.decoder_norm, x, LN_EPS),
        ); // [N, L + 1, p²·C]
        let [_, t, _] = x.dims();
        x.narrow(1, 1, t - 1) // drop the cls position: [N, L, p²·C]
    }

    /// The reconstruction target: patchified images, per-patch normalised when
    /// `norm_pix_loss` is on (unbiased variance, `eps` inside the square root).
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - output: `[N, L, p²·C]`
    pub fn target(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let target = patchify(images, self.config.patch_size);
        if !self.config.norm_pix_loss {
            return target;
        }
        let (var, mean) = target.clone().var_mean(2); // [N, L, 1] each, var unbiased
        (target - mean) / var.add_scalar(NORM_PIX_EPS).sqrt()
    }

    /// Mean squared error of every patch.
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - pred: `[N, L, p²·C]`
    /// - output: `[N, L]`
    pub fn per_patch_loss(&self, images: Tensor<B, 4>, pred: Tensor<B, 3>) -> Tensor<B, 2> {
        let diff = pred - self.target(images);
        let [n, l, _] = diff.dims();
        diff.powi_scalar(2).mean_dim(2).reshape([n, l])
    }

    /// Reconstruction loss: per-patch MSE averaged over the removed patches only.
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - pred: `[N, L, p²·C]`
    /// - mask: `[N, L]`
    /// - output: `[1]`
    pub fn forward_loss(
        &self,
        images: Tensor<B, 4>,
        pred: Tensor<B, 3>,
        mask: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        let loss = self.per_patch_loss(images, pred);
        (loss * mask.clone()).sum() / mask.sum()
    }

    /// The classification feature: mean of the visible patch tokens (`global_pool`) or the
    /// cls token, taken from the encoder output after `norm`.
    ///
    /// # Shapes
    /// - latent: `[N, 1 + K, D]`
    /// - output: `[N, D]`
    pub fn pooled(&self, latent: Tensor<B, 3>) -> Tensor<B, 2> {
        let [n, t, d] = latent.dims();
        if self.config.global_pool {
            latent.narrow(1, 1, t - 1).mean_dim(1).reshape([n, d])
        } else {
            latent.narrow(1, 0, 1).reshape([n, d])
        }
    }

    /// Logits of the classification branch, or `None` for MAE. `training` picks BatchNorm
    /// batch statistics (needs at least 2 samples) or running statistics.
    ///
    /// # Shapes
    /// - latent: `[N, 1 + K, D]`
    /// - output: `[N, classes]`
    pub fn forward_classification(
        &self,
        latent: Tensor<B, 3>,
        training: bool,
    ) -> Result<Option<Tensor<B, 2>>> {
        let Some(head) = &self.cls_head else {
            return Ok(None);
        };
        let [n, _, _] = latent.dims();
        if training && n < 2 {
            return Err(ModelError::InvalidArgument {
                name: "images",
                reason: "the classification branch's BatchNorm needs at least 2 samples per \
                         batch in training mode"
                    .into(),
            });
        }
        Ok(Some(head.forward(self.pooled(latent), training)))
    }

    /// `λ · CE(logits / T, labels)`.
    ///
    /// # Shapes
    /// - logits: `[N, classes]`
    /// - labels: `[N]`
    /// - output: `[1]`
    pub fn classification_loss(
        &self,
        logits: Tensor<B, 2>,
        labels: Tensor<B, 1, Int>,
    ) -> Result<Tensor<B, 1>> {
        let Some(head) = &self.config.cls_head else {
            return Err(ModelError::InvalidArgument {
                name: "labels",
                reason: "this is an MAE model without a classification branch".into(),
            });
        };
        let [n, classes] = logits.dims();
        if labels.dims() != [n] {
            return Err(ModelError::Shape {
                name: "labels",
                expected: format!("[{n}]"),
                got: labels.dims().to_vec(),
            });
        }
        // `iter` converts every element (no error path to swallow).
        let values: Vec<i64> = labels.to_data().iter::<i64>().collect();
        check_labels(&values, classes)?;
        Ok(cross_entropy(logits, labels, head))
    }

    /// The whole pre-training forward pass: encoder, decoder, reconstruction loss and (for
    /// SupMAE) the classification branch and its loss.
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`, labels: `[N]`, noise: `[N, L]`
    /// - see [`SupMaeOutput`] for the outputs.
    pub fn forward(&self, input: SupMaeInput<B>) -> Result<SupMaeOutput<B>> {
        let images = input.images;
        let training = input
            .training
            .unwrap_or_else(|| B::ad_enabled(&images.device()));
        let EncoderOutput { latent, masking } = match input.masking {
            Some(masking) => self.forward_encoder_masked(images.clone(), masking)?,
            None => self.forward_encoder(images.clone(), input.mask_ratio, input.noise)?,
        };
        let pred = self.forward_decoder(latent.clone(), masking.ids_restore.clone());
        let rec_loss = self.forward_loss(images, pred.clone(), masking.mask.clone());
        let logits = self.forward_classification(latent.clone(), training)?;
        let labels = match (input.labels, input.label_values) {
            (Some(labels), _) => Some(Ok(labels)),
            (None, Some(values)) => Some(Err(values)),
            (None, None) => None,
        };
        let cls_loss = match (&logits, labels, &self.config.cls_head) {
            (Some(logits), Some(Ok(labels)), _) => {
                Some(self.classification_loss(logits.clone(), labels)?)
            }
            (Some(logits), Some(Err(values)), Some(head)) => {
                let [n, classes] = logits.dims();
                if values.len() != n {
                    return Err(ModelError::Shape {
                        name: "labels",
                        expected: format!("[{n}]"),
                        got: vec![values.len()],
                    });
                }
                check_labels(&values, classes)?;
                let labels = Tensor::from_data(TensorData::new(values, [n]), &logits.device());
                Some(cross_entropy(logits.clone(), labels, head))
            }
            (_, Some(_), _) => {
                return Err(ModelError::InvalidArgument {
                    name: "labels",
                    reason: "this is an MAE model without a classification branch".into(),
                });
            }
            (_, None, _) => None,
        };
        let loss = match &cls_loss {
            Some(cls) => rec_loss.clone() + cls.clone(),
            None => rec_loss.clone(),
        };
        Ok(SupMaeOutput {
            loss,
            rec_loss,
            cls_loss,
            logits,
            pred,
            latent,
            masking,
        })
    }
}

/// Checks class indices against the number of classes.
fn check_labels(values: &[i64], classes: usize) -> Result<()> {
    if let Some(bad) = values.iter().find(|&&v| v < 0 || v as usize >= classes) {
        return Err(ModelError::InvalidArgument {
            name: "labels",
            reason: format!("label {bad} is outside 0..{classes}"),
        });
    }
    Ok(())
}

/// `λ · CE(logits / T, labels)` for checked labels.
fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    head: &crate::ClsHeadConfig,
) -> Tensor<B, 1> {
    let ce = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.div_scalar(head.temperature), labels);
    ce.mul_scalar(head.loss_ratio)
}
