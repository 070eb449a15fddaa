//! Which official checkpoint flavour a state dict is, its model shape, and what it can do.
//!
//! The flavours (spec §4): SupMAE pre-training (classification branch named `cls_head` or, in
//! the released file, `projection_head`), MAE pre-training with the decoder (`*_full.pth`,
//! `mae_visualize_*`), MAE encoder only (`mae_pretrain_vit_*.pth`), fine-tuned classifiers
//! (`mae_finetuned_vit_*`, `supmae_vitb_ft_100e.pth`; global-pool or cls-token) and linear
//! probes (`head.0` BatchNorm + `head.1` Linear).
//!
//! Widths, depths, patch size, image size, MLP ratio and class counts are read from tensor
//! shapes. Head counts are not stored in the weights: they follow the official convention
//! (64-wide heads, ViT-H 16 heads of 80; decoders 32-wide heads), and
//! [`CheckpointInfo::describe`] says so.

use crate::checkpoint::StateDict;
use crate::config::{ClsHeadConfig, MaeConfig, VitConfig};
use crate::error::CheckpointError;

/// The kind of an official-format checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flavour {
    /// SupMAE pre-training: encoder, decoder, classification branch.
    SupMaePretrain {
        /// `cls_head` or `projection_head` (the released file's name).
        branch: String,
    },
    /// MAE pre-training with its decoder (`*_full.pth`, `mae_visualize_*`).
    MaeFull,
    /// MAE encoder only (`mae_pretrain_vit_*.pth`): no decoder, no mask token.
    MaeEncoder,
    /// A fine-tuned classifier.
    Finetuned {
        /// Global average pool + `fc_norm` (true) or cls token + `norm`.
        global_pool: bool,
    },
    /// A linear probe: encoder, `head.0` (BatchNorm, no affine), `head.1` (Linear).
    LinearProbe,
}

impl Flavour {
    /// A short name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SupMaePretrain { .. } => {
                "SupMAE pre-training (encoder + decoder + classification branch)"
            }
            Self::MaeFull => "MAE pre-training with decoder",
            Self::MaeEncoder => "MAE pre-training, encoder only",
            Self::Finetuned { global_pool: true } => "fine-tuned classifier (global pool)",
            Self::Finetuned { global_pool: false } => "fine-tuned classifier (cls token)",
            Self::LinearProbe => "linear probe (frozen encoder + BatchNorm + Linear)",
        }
    }
}

/// What a checkpoint is and the model shape it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    /// The flavour.
    pub flavour: Flavour,
    /// Encoder width.
    pub embed_dim: usize,
    /// Encoder blocks.
    pub depth: usize,
    /// Encoder heads (by convention, see the module docs).
    pub num_heads: usize,
    /// Patch side.
    pub patch_size: usize,
    /// Input channels.
    pub in_chans: usize,
    /// Image side implied by `pos_embed`.
    pub img_size: usize,
    /// MLP ratio.
    pub mlp_ratio: f64,
    /// Decoder width, blocks and heads, when there is a decoder.
    pub decoder: Option<(usize, usize, usize)>,
    /// Classes of the classification branch or head, when there is one.
    pub num_classes: Option<usize>,
    /// Hidden width of a SupMAE classification branch.
    pub cls_hidden: Option<usize>,
}

/// The shape of `key`, which must have `rank` dimensions, none of them zero.
fn shape(state: &StateDict, key: &str, rank: usize) -> Result<Vec<usize>, CheckpointError> {
    let shape = state
        .shape(key)
        .ok_or_else(|| CheckpointError::KeyMismatch {
            missing: vec![key.to_string()],
            unexpected: vec![],
        })?;
    if shape.len() != rank || shape.contains(&0) {
        return Err(CheckpointError::Format {
            path: state.path().to_path_buf(),
            message: format!(
                "tensor `{key}` has shape {shape:?}, expected {rank} non-zero dimensions"
            ),
        });
    }
    Ok(shape)
}

/// The conventional head count of an encoder width.
fn encoder_heads(dim: usize) -> usize {
    match dim {
        1280 => 16,
        d if d % 64 == 0 => d / 64,
        d if d % 32 == 0 => d / 32,
        _ => 1,
    }
}

/// Reads a state dict's flavour and shape.
pub fn inspect(state: &StateDict) -> Result<CheckpointInfo, CheckpointError> {
    let foreign = || CheckpointError::Format {
        path: state.path().to_path_buf(),
        message: "not a MAE/SupMAE/ViT checkpoint: no `patch_embed.proj.weight` and \
                  `blocks.0.*` (is it another model's state dict?)"
            .into(),
    };
    if !state.contains("patch_embed.proj.weight") || !state.contains("blocks.0.attn.qkv.weight") {
        return Err(foreign());
    }
    let patch = shape(state, "patch_embed.proj.weight", 4)?;
    let [embed_dim, in_chans, patch_size, _] = patch[..] else {
        return Err(foreign());
    };
    let depth = (0..)
        .take_while(|i| state.contains(&format!("blocks.{i}.attn.qkv.weight")))
        .count();
    let tokens = shape(state, "pos_embed", 3)?[1];
    let grid = ((tokens.saturating_sub(1)) as f64).sqrt().round() as usize;
    let hidden = shape(state, "blocks.0.mlp.fc1.weight", 2)?[0];
    let decoder = if state.contains("decoder_embed.weight") {
        let dim = shape(state, "decoder_embed.weight", 2)?[0];
        let blocks = (0..)
            .take_while(|i| state.contains(&format!("decoder_blocks.{i}.attn.qkv.weight")))
            .count();
        Some((dim, blocks, (dim / 32).max(1)))
    } else {
        None
    };
    let branch = ["cls_head", "projection_head"]
        .into_iter()
        .find(|p| state.contains(&format!("{p}.3.weight")));
    let (flavour, num_classes, cls_hidden) = if let Some(branch) = branch {
        let fc2 = shape(state, &format!("{branch}.3.weight"), 2)?;
        (
            Flavour::SupMaePretrain {
                branch: branch.to_string(),
            },
            Some(fc2[0]),
            Some(fc2[1]),
        )
    } else if state.contains("head.1.weight") && state.contains("head.0.running_mean") {
        (
            Flavour::LinearProbe,
            Some(shape(state, "head.1.weight", 2)?[0]),
            None,
        )
    } else if state.contains("head.weight") {
        (
            Flavour::Finetuned {
                global_pool: state.contains("fc_norm.weight"),
            },
            Some(shape(state, "head.weight", 2)?[0]),
            None,
        )
    } else if decoder.is_some() {
        (Flavour::MaeFull, None, None)
    } else {
        (Flavour::MaeEncoder, None, None)
    };
    Ok(CheckpointInfo {
        flavour,
        embed_dim,
        depth,
        num_heads: encoder_heads(embed_dim),
        patch_size,
        in_chans,
        img_size: grid * patch_size,
        mlp_ratio: hidden as f64 / embed_dim as f64,
        decoder,
        num_classes,
        cls_hidden,
    })
}

impl CheckpointInfo {
    /// Whether the file holds a decoder (reconstruction pictures need one).
    pub fn can_reconstruct(&self) -> bool {
        self.decoder.is_some()
    }

    /// Whether the file classifies as it is (a head or a SupMAE classification branch).
    pub fn can_classify(&self) -> bool {
        self.num_classes.is_some()
    }

    /// One paragraph for users: flavour, shape, and what it can and cannot do.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{}: ViT {}x{} (patch {}, {} px, {} channels, {} heads assumed by convention)",
            self.flavour.name(),
            self.embed_dim,
            self.depth,
            self.patch_size,
            self.img_size,
            self.in_chans,
            self.num_heads
        );
        if let Some((d, b, h)) = self.decoder {
            s.push_str(&format!(", decoder {d}x{b} ({h} heads)"));
        }
        if let Some(c) = self.num_classes {
            s.push_str(&format!(", {c} classes"));
        }
        s.push_str(". Can ");
        let mut can = vec!["embed images", "be fine-tuned", "be linearly probed"];
        if self.can_reconstruct() {
            can.push("reconstruct masked images");
        }
        if self.can_classify() {
            can.push("classify");
        }
        s.push_str(&can.join(", "));
        if !self.can_reconstruct() {
            s.push_str("; cannot reconstruct (no decoder)");
        }
        s.push('.');
        s
    }

    /// The pre-training model config (flavours with a decoder).
    pub fn mae_config(&self) -> Option<MaeConfig> {
        let (dd, db, dh) = self.decoder?;
        let cls_head = match (&self.flavour, self.num_classes, self.cls_hidden) {
            (Flavour::SupMaePretrain { .. }, Some(c), Some(h)) => {
                Some(ClsHeadConfig::new().with_num_classes(c).with_hidden(h))
            }
            _ => None,
        };
        Some(
            MaeConfig::new()
                .with_img_size(self.img_size)
                .with_patch_size(self.patch_size)
                .with_in_chans(self.in_chans)
                .with_embed_dim(self.embed_dim)
                .with_depth(self.depth)
                .with_num_heads(self.num_heads)
                .with_mlp_ratio(self.mlp_ratio)
                .with_decoder_embed_dim(dd)
                .with_decoder_depth(db)
                .with_decoder_num_heads(dh)
                .with_cls_head(cls_head),
        )
    }

    /// The classifier config of the encoder: the file's head for fine-tuned and probe
    /// checkpoints, else `num_classes` outputs with the given pooling.
    pub fn vit_config(&self, num_classes: usize, global_pool: bool) -> VitConfig {
        let (classes, pool) = match self.flavour {
            Flavour::Finetuned { global_pool } => {
                (self.num_classes.unwrap_or(num_classes), global_pool)
            }
            Flavour::LinearProbe => (self.num_classes.unwrap_or(num_classes), false),
            _ => (num_classes, global_pool),
        };
        VitConfig::new()
            .with_img_size(self.img_size)
            .with_patch_size(self.patch_size)
            .with_in_chans(self.in_chans)
            .with_embed_dim(self.embed_dim)
            .with_depth(self.depth)
            .with_num_heads(self.num_heads)
            .with_mlp_ratio(self.mlp_ratio)
            .with_num_classes(classes)
            .with_global_pool(pool)
    }
}
