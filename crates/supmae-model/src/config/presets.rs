//! The official presets (and a few small ones for CPUs), by the names of the official
//! factory functions.

use super::{MaeConfig, VitConfig};
use crate::ClsHeadConfig;
use crate::error::{Result, invalid};

/// Names accepted by [`MaeConfig::preset`].
pub const MAE_PRESETS: &[&str] = &[
    "mae_vit_base_patch16_dec512d8b",
    "mae_vit_large_patch16_dec512d8b",
    "mae_vit_huge_patch14_dec512d8b",
    "supmae_vit_base_patch16_dec512d1b",
    "supmae_vit_base_patch16_dec512d8b",
    "mae_vit_tiny_patch16_dec128d2b",
    "supmae_vit_tiny_patch16_dec128d2b",
    "mae_vit_small_patch16_dec256d4b",
    "supmae_vit_small_patch16_dec256d4b",
    "supmae_vit_mini_patch8_dec128d1b",
];

/// Names accepted by [`VitConfig::preset`].
pub const VIT_PRESETS: &[&str] = &[
    "vit_tiny_patch16",
    "vit_small_patch16",
    "vit_base_patch16",
    "vit_large_patch16",
    "vit_huge_patch14",
];

/// Encoder shape shared by the presets: (patch, dim, depth, heads).
fn encoder(cfg: MaeConfig, patch: usize, dim: usize, depth: usize, heads: usize) -> MaeConfig {
    cfg.with_patch_size(patch)
        .with_embed_dim(dim)
        .with_depth(depth)
        .with_num_heads(heads)
}

fn decoder(cfg: MaeConfig, dim: usize, depth: usize, heads: usize) -> MaeConfig {
    cfg.with_decoder_embed_dim(dim)
        .with_decoder_depth(depth)
        .with_decoder_num_heads(heads)
}

impl MaeConfig {
    /// MAE ViT-B/16 with the 8-block, 512-wide decoder (`mae_vit_base_patch16_dec512d8b`).
    pub fn mae_vit_base_patch16_dec512d8b() -> Self {
        decoder(encoder(Self::new(), 16, 768, 12, 12), 512, 8, 16)
    }

    /// MAE ViT-L/16 (`mae_vit_large_patch16_dec512d8b`).
    pub fn mae_vit_large_patch16_dec512d8b() -> Self {
        decoder(encoder(Self::new(), 16, 1024, 24, 16), 512, 8, 16)
    }

    /// MAE ViT-H/14 (`mae_vit_huge_patch14_dec512d8b`).
    pub fn mae_vit_huge_patch14_dec512d8b() -> Self {
        decoder(encoder(Self::new(), 14, 1280, 32, 16), 512, 8, 16)
    }

    /// SupMAE ViT-B/16 with a one-block decoder: the configuration of the paper's recipe
    /// (`mae_vit_base_patch16_dec512d1b` in `models_supmae.py`).
    pub fn supmae_vit_base_patch16_dec512d1b() -> Self {
        decoder(encoder(Self::new(), 16, 768, 12, 12), 512, 1, 16)
            .with_cls_head(Some(ClsHeadConfig::new()))
    }

    /// SupMAE ViT-B/16 with the 8-block decoder (`mae_vit_base_patch16_dec512d8b` in
    /// `models_supmae.py`).
    pub fn supmae_vit_base_patch16_dec512d8b() -> Self {
        Self::mae_vit_base_patch16_dec512d8b().with_cls_head(Some(ClsHeadConfig::new()))
    }

    /// MAE ViT-Ti/16 (width 192, 12 blocks, 3 heads) with a 128-wide, 2-block decoder.
    /// Not an official preset: a small model for CPUs and tests.
    pub fn mae_vit_tiny_patch16_dec128d2b() -> Self {
        decoder(encoder(Self::new(), 16, 192, 12, 3), 128, 2, 4)
    }

    /// SupMAE version of [`MaeConfig::mae_vit_tiny_patch16_dec128d2b`] (hidden 768).
    pub fn supmae_vit_tiny_patch16_dec128d2b() -> Self {
        Self::mae_vit_tiny_patch16_dec128d2b()
            .with_cls_head(Some(ClsHeadConfig::new().with_hidden(768)))
    }

    /// MAE ViT-S/16 (width 384, 12 blocks, 6 heads) with a 256-wide, 4-block decoder.
    /// Not an official preset.
    pub fn mae_vit_small_patch16_dec256d4b() -> Self {
        decoder(encoder(Self::new(), 16, 384, 12, 6), 256, 4, 8)
    }

    /// SupMAE version of [`MaeConfig::mae_vit_small_patch16_dec256d4b`] (hidden 1536).
    pub fn supmae_vit_small_patch16_dec256d4b() -> Self {
        Self::mae_vit_small_patch16_dec256d4b()
            .with_cls_head(Some(ClsHeadConfig::new().with_hidden(1536)))
    }

    /// The small SupMAE that trains on a CPU in minutes, for RGB images of your own: 64 px
    /// (change with `with_img_size`), 8 px patches, a 96-wide, 4-block encoder (3 heads), a
    /// 128-wide, 1-block decoder (4 heads) and a 256-wide classification branch. The
    /// Fashion-MNIST model of the README is the same network on 28 px greyscale with 7 px
    /// patches. Not an official preset.
    pub fn supmae_vit_mini_patch8_dec128d1b() -> Self {
        decoder(encoder(Self::new(), 8, 96, 4, 3), 128, 1, 4)
            .with_img_size(64)
            .with_cls_head(Some(ClsHeadConfig::new().with_hidden(256)))
    }

    /// Looks a preset up by its name (see [`MAE_PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "mae_vit_base_patch16_dec512d8b" => Self::mae_vit_base_patch16_dec512d8b(),
            "mae_vit_large_patch16_dec512d8b" => Self::mae_vit_large_patch16_dec512d8b(),
            "mae_vit_huge_patch14_dec512d8b" => Self::mae_vit_huge_patch14_dec512d8b(),
            "supmae_vit_base_patch16_dec512d1b" => Self::supmae_vit_base_patch16_dec512d1b(),
            "supmae_vit_base_patch16_dec512d8b" => Self::supmae_vit_base_patch16_dec512d8b(),
            "mae_vit_tiny_patch16_dec128d2b" => Self::mae_vit_tiny_patch16_dec128d2b(),
            "supmae_vit_tiny_patch16_dec128d2b" => Self::supmae_vit_tiny_patch16_dec128d2b(),
            "mae_vit_small_patch16_dec256d4b" => Self::mae_vit_small_patch16_dec256d4b(),
            "supmae_vit_small_patch16_dec256d4b" => Self::supmae_vit_small_patch16_dec256d4b(),
            "supmae_vit_mini_patch8_dec128d1b" => Self::supmae_vit_mini_patch8_dec128d1b(),
            other => {
                return Err(invalid(
                    "preset",
                    format!(
                        "`{other}` is not a known preset; known: {}",
                        MAE_PRESETS.join(", ")
                    ),
                ));
            }
        })
    }
}

impl VitConfig {
    fn shaped(patch: usize, dim: usize, depth: usize, heads: usize) -> Self {
        Self::new()
            .with_patch_size(patch)
            .with_embed_dim(dim)
            .with_depth(depth)
            .with_num_heads(heads)
    }

    /// ViT-Ti/16 classifier (width 192, 12 blocks, 3 heads).
    pub fn vit_tiny_patch16() -> Self {
        Self::shaped(16, 192, 12, 3)
    }

    /// ViT-S/16 classifier (width 384, 12 blocks, 6 heads).
    pub fn vit_small_patch16() -> Self {
        Self::shaped(16, 384, 12, 6)
    }

    /// ViT-B/16 classifier (`vit_base_patch16`): 86,567,656 parameters with 1000 classes.
    pub fn vit_base_patch16() -> Self {
        Self::shaped(16, 768, 12, 12)
    }

    /// ViT-L/16 classifier (`vit_large_patch16`; the official recipe uses drop path 0.2).
    pub fn vit_large_patch16() -> Self {
        Self::shaped(16, 1024, 24, 16).with_drop_path_rate(0.2)
    }

    /// ViT-H/14 classifier (`vit_huge_patch14`; the official recipe uses drop path 0.3).
    pub fn vit_huge_patch14() -> Self {
        Self::shaped(14, 1280, 32, 16).with_drop_path_rate(0.3)
    }

    /// Looks a preset up by its name (see [`VIT_PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "vit_tiny_patch16" => Self::vit_tiny_patch16(),
            "vit_small_patch16" => Self::vit_small_patch16(),
            "vit_base_patch16" => Self::vit_base_patch16(),
            "vit_large_patch16" => Self::vit_large_patch16(),
            "vit_huge_patch14" => Self::vit_huge_patch14(),
            other => {
                return Err(invalid(
                    "preset",
                    format!(
                        "`{other}` is not a known preset; known: {}",
                        VIT_PRESETS.join(", ")
                    ),
                ));
            }
        })
    }
}
