//! The fine-tuning / inference ViT classifier (`models_vit.py`, spec §3).

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;

use crate::block::{Block, LN_EPS, LinearInit, layer_norm, linear};
use crate::config::{VitConfig, mlp_hidden};
use crate::error::Result;
use crate::kernels;
use crate::patch::{PatchEmbed, PatchInit, normal_param};

/// A ViT classifier: no masking, learned position embedding, per-block drop path, then
/// `head(fc_norm(mean of patch tokens))` (global pool) or `head(norm(x)[:, 0])` (cls token).
///
/// Field names mirror `models_vit.py`: in global-pool mode there is no `norm` (the official
/// class deletes it) and `fc_norm` is present; in cls-token mode it is the other way round.
#[derive(Module, Debug)]
pub struct VitClassifier<B: Backend> {
    /// Learnable cls token, `[1, 1, D]`.
    pub cls_token: Param<Tensor<B, 3>>,
    /// Learned position embedding, `[1, L + 1, D]`.
    pub pos_embed: Param<Tensor<B, 3>>,
    /// Patch embedding.
    pub patch_embed: PatchEmbed<B>,
    /// Transformer blocks.
    pub blocks: Vec<Block<B>>,
    /// Final LayerNorm (cls-token mode only).
    pub norm: Option<LayerNorm<B>>,
    /// LayerNorm on the pooled feature (global-pool mode only).
    pub fc_norm: Option<LayerNorm<B>>,
    /// Classification layer.
    pub head: Linear<B>,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: VitConfig,
}

impl VitConfig {
    /// Builds the classifier with timm's initialisation (truncated normal 0.02 for tokens,
    /// position embedding and Linear layers, PyTorch's default for the patch convolution) and
    /// `head.weight ~ N(0, head_init_std²)` as MAE's fine-tuning does. Draws from the backend
    /// RNG as it stands; for reproducible weights use [`VitConfig::init_seeded`].
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<VitClassifier<B>> {
        crate::seeding::exclusive(|| self.build(device).map(crate::seeding::materialize))
    }

    /// [`VitConfig::init`] from the RNG stream of `seed`: the same seed gives the same
    /// weights, even while other threads initialise models (see [`crate::seeding`]).
    pub fn init_seeded<B: Backend>(
        &self,
        seed: u64,
        device: &B::Device,
    ) -> Result<VitClassifier<B>> {
        crate::seeding::with_seed::<B, _>(device, seed, || {
            self.build(device).map(crate::seeding::materialize)
        })
    }

    fn build<B: Backend>(&self, device: &B::Device) -> Result<VitClassifier<B>> {
        self.validate()?;
        let d = self.embed_dim;
        let rates = self.drop_path_rates();
        let mut head = linear(d, self.num_classes, LinearInit::Normal002, device);
        head.weight = normal_param([d, self.num_classes], self.head_init_std, device);
        let model = VitClassifier {
            cls_token: normal_param([1, 1, d], 0.02, device),
            pos_embed: normal_param([1, self.num_patches() + 1, d], 0.02, device),
            patch_embed: PatchEmbed::new(
                self.in_chans,
                d,
                self.patch_size,
                PatchInit::TorchDefault,
                device,
            ),
            blocks: rates
                .iter()
                .map(|&rate| {
                    let hidden = mlp_hidden(d, self.mlp_ratio);
                    Block::new(
                        d,
                        self.num_heads,
                        hidden,
                        rate,
                        LinearInit::Normal002,
                        device,
                    )
                })
                .collect(),
            norm: (!self.global_pool).then(|| layer_norm(d, device)),
            fc_norm: self.global_pool.then(|| layer_norm(d, device)),
            head,
            config: self.clone(),
        };
        let _ = model.num_params();
        Ok(model)
    }
}

impl<B: Backend> VitClassifier<B> {
    /// Checks that `images` fit the configuration.
    pub fn check_images(&self, images: &Tensor<B, 4>) -> Result<()> {
        let c = &self.config;
        crate::patch::check_images(images.dims(), c.in_chans, c.img_size)
    }

    /// Every token after the blocks (and after `norm` in cls-token mode).
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - output: `[N, L + 1, D]` (cls token first)
    pub fn forward_features(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        self.check_images(&images)?;
        let x = self.patch_embed.forward(images); // [N, L, D]
        let [n, _, d] = x.dims();
        let cls = self.cls_token.val().expand([n, 1, d]); // [N, 1, D]
        let mut x = Tensor::cat(vec![cls, x], 1) + self.pos_embed.val(); // [N, L + 1, D]
        for block in &self.blocks {
            x = block.forward(x);
        }
        Ok(match &self.norm {
            Some(norm) => kernels::layer_norm(norm, x, LN_EPS),
            None => x,
        })
    }

    /// The pooled embedding that feeds the head.
    ///
    /// # Shapes
    /// - features: `[N, L + 1, D]` from [`forward_features`](Self::forward_features)
    /// - output: `[N, D]`
    pub fn pool(&self, features: Tensor<B, 3>) -> Tensor<B, 2> {
        let [n, t, d] = features.dims();
        match &self.fc_norm {
            Some(fc_norm) => {
                let pooled = features.narrow(1, 1, t - 1).mean_dim(1).reshape([n, d]);
                kernels::layer_norm(fc_norm, pooled, LN_EPS)
            }
            None => features.narrow(1, 0, 1).reshape([n, d]),
        }
    }

    /// Pooled embeddings of images (no masking).
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - output: `[N, D]`
    pub fn embed(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        Ok(self.pool(self.forward_features(images)?))
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - images: `[N, C, H, W]`
    /// - output: `[N, classes]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        Ok(kernels::linear(&self.head, self.embed(images)?))
    }
}
