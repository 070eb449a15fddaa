//! Model configurations, the official presets, validation and parameter counts.
//!
//! Preset names follow the factory functions of the official code
//! (`models_mae.py`, `models_supmae.py`, `models_vit.py`): `dec512d8b` means a decoder of
//! width 512 and depth 8.

use burn::config::Config;

use crate::error::{Result, invalid};

mod presets;

pub use presets::{MAE_PRESETS, VIT_PRESETS};

/// The SupMAE classification branch on top of the encoder (spec §1.10).
///
/// `Linear(D, hidden) -> BatchNorm1d(hidden) -> ReLU -> Linear(hidden, num_classes)`, trained
/// with `loss_ratio * CE(logits / temperature, labels)`.
#[derive(Config, Debug, PartialEq)]
pub struct ClsHeadConfig {
    /// Number of classes (the official code always builds a 1000-way head).
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Width of the hidden layer (`cls_hidden_mlp`, 3072 for ViT-B).
    #[config(default = 3072)]
    pub hidden: usize,
    /// Temperature `T` dividing the logits inside the cross-entropy (`--temperature`).
    #[config(default = 10.0)]
    pub temperature: f64,
    /// Weight `lambda` of the classification loss (`--cls_loss_ratio`).
    #[config(default = 0.01)]
    pub loss_ratio: f64,
    /// BatchNorm epsilon (PyTorch default).
    #[config(default = 1e-5)]
    pub bn_eps: f64,
    /// BatchNorm running-statistics momentum (PyTorch default).
    #[config(default = 0.1)]
    pub bn_momentum: f64,
}

/// Configuration of the pre-training model: MAE, or SupMAE when `cls_head` is set.
///
/// Build with a preset (e.g. [`MaeConfig::supmae_vit_base_patch16_dec512d1b`]) or from
/// scratch with [`MaeConfig::new`] and the `with_*` setters; [`MaeConfig::validate`] is
/// called by `init` so a bad combination is a [`ModelError`](crate::ModelError), not a panic.
#[derive(Config, Debug, PartialEq)]
pub struct MaeConfig {
    /// Input resolution (square), in pixels.
    #[config(default = 224)]
    pub img_size: usize,
    /// Patch side, in pixels; must divide `img_size`.
    #[config(default = 16)]
    pub patch_size: usize,
    /// Input channels (3 for RGB, 1 for greyscale datasets).
    #[config(default = 3)]
    pub in_chans: usize,
    /// Encoder width `D`.
    #[config(default = 1024)]
    pub embed_dim: usize,
    /// Number of encoder blocks.
    #[config(default = 24)]
    pub depth: usize,
    /// Encoder attention heads; must divide `embed_dim`.
    #[config(default = 16)]
    pub num_heads: usize,
    /// Decoder width.
    #[config(default = 512)]
    pub decoder_embed_dim: usize,
    /// Number of decoder blocks.
    #[config(default = 8)]
    pub decoder_depth: usize,
    /// Decoder attention heads.
    #[config(default = 16)]
    pub decoder_num_heads: usize,
    /// MLP hidden width as a multiple of the block width (`int(d * mlp_ratio)`).
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Reconstruct per-patch normalised pixels (`--norm_pix_loss`, used by both recipes).
    #[config(default = true)]
    pub norm_pix_loss: bool,
    /// Classification feature: mean of the visible patch tokens (`true`) or the cls token.
    #[config(default = true)]
    pub global_pool: bool,
    /// The SupMAE classification branch; `None` gives plain MAE.
    #[config(default = "None")]
    pub cls_head: Option<ClsHeadConfig>,
}

/// Configuration of the fine-tuning / inference ViT classifier (`vit_*` in `models_vit.py`).
#[derive(Config, Debug, PartialEq)]
pub struct VitConfig {
    /// Input resolution (square), in pixels.
    #[config(default = 224)]
    pub img_size: usize,
    /// Patch side, in pixels.
    #[config(default = 16)]
    pub patch_size: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_chans: usize,
    /// Width `D`.
    #[config(default = 768)]
    pub embed_dim: usize,
    /// Number of blocks.
    #[config(default = 12)]
    pub depth: usize,
    /// Attention heads.
    #[config(default = 12)]
    pub num_heads: usize,
    /// MLP hidden width as a multiple of `embed_dim`.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Number of classes of the `head`.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Pool the patch tokens and apply `fc_norm` (`true`), or take the cls token after `norm`.
    #[config(default = true)]
    pub global_pool: bool,
    /// Largest stochastic-depth rate; block `i` uses `drop_path_rate * i / (depth - 1)`.
    #[config(default = 0.1)]
    pub drop_path_rate: f64,
    /// Standard deviation of the freshly initialised `head.weight` (MAE uses 2e-5).
    #[config(default = 2e-5)]
    pub head_init_std: f64,
}

/// Parameter counts computed from shapes alone (nothing is allocated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCount {
    /// Parameters that receive gradients.
    pub trainable: usize,
    /// Stored parameters that are never trained (the fixed sin-cos position embeddings).
    pub frozen: usize,
    /// Non-parameter state (BatchNorm running mean and variance).
    pub buffers: usize,
}

impl ParamCount {
    /// Everything Burn's `Module::num_params` counts (parameters plus running statistics).
    pub fn total(&self) -> usize {
        self.trainable + self.frozen + self.buffers
    }
}

impl MaeConfig {
    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.img_size / self.patch_size.max(1)
    }

    /// Number of patches `L`.
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Values per reconstructed patch: `patch_size² · in_chans`.
    pub fn patch_dim(&self) -> usize {
        self.patch_size * self.patch_size * self.in_chans
    }

    /// Whether the SupMAE classification branch is present.
    pub fn is_supmae(&self) -> bool {
        self.cls_head.is_some()
    }

    /// Checks every constraint the model relies on.
    pub fn validate(&self) -> Result<()> {
        check_bounds(&[
            ("img_size", self.img_size, MAX_IMG_SIZE),
            ("in_chans", self.in_chans, MAX_IN_CHANS),
            ("embed_dim", self.embed_dim, MAX_WIDTH),
            ("decoder_embed_dim", self.decoder_embed_dim, MAX_WIDTH),
            ("depth", self.depth, MAX_DEPTH),
            ("decoder_depth", self.decoder_depth, MAX_DEPTH),
            (
                "cls_head.num_classes",
                self.cls_head.as_ref().map_or(0, |h| h.num_classes),
                MAX_CLASSES,
            ),
            (
                "cls_head.hidden",
                self.cls_head.as_ref().map_or(0, |h| h.hidden),
                MAX_WIDTH * 16,
            ),
        ])?;
        check_patching(self.img_size, self.patch_size, self.in_chans)?;
        check_width(
            "embed_dim",
            self.embed_dim,
            "num_heads",
            self.num_heads,
            true,
        )?;
        check_width(
            "decoder_embed_dim",
            self.decoder_embed_dim,
            "decoder_num_heads",
            self.decoder_num_heads,
            true,
        )?;
        if self.depth == 0 {
            return Err(invalid("depth", "must be at least 1"));
        }
        check_mlp_ratio(self.mlp_ratio, self.embed_dim.min(self.decoder_embed_dim))?;
        if let Some(head) = &self.cls_head {
            if head.num_classes < 2 {
                return Err(invalid("cls_head.num_classes", "must be at least 2"));
            }
            if head.hidden == 0 {
                return Err(invalid("cls_head.hidden", "must be at least 1"));
            }
            if !(head.temperature.is_finite() && head.temperature > 0.0) {
                return Err(invalid(
                    "cls_head.temperature",
                    format!("({}) must be finite and > 0", head.temperature),
                ));
            }
            if !(head.loss_ratio.is_finite() && head.loss_ratio >= 0.0) {
                return Err(invalid(
                    "cls_head.loss_ratio",
                    format!("({}) must be finite and >= 0", head.loss_ratio),
                ));
            }
            if !(head.bn_eps.is_finite() && head.bn_eps > 0.0) {
                return Err(invalid("cls_head.bn_eps", "must be finite and > 0"));
            }
            if !(0.0..=1.0).contains(&head.bn_momentum) {
                return Err(invalid("cls_head.bn_momentum", "must be in [0, 1]"));
            }
        }
        check_total(self.param_count())
    }

    /// Parameter counts, computed from the configuration without building the model.
    ///
    /// The official SupMAE ViT-B/16 d1b model has 95,030,504 trainable parameters.
    pub fn param_count(&self) -> ParamCount {
        let d = self.embed_dim;
        let dd = self.decoder_embed_dim;
        let l = self.num_patches();
        let patch_embed = d * self.in_chans * self.patch_size * self.patch_size + d;
        let mut trainable = patch_embed
            + d // cls_token
            + self.depth * block_params(d, mlp_hidden(d, self.mlp_ratio))
            + 2 * d // norm
            + d * dd + dd // decoder_embed
            + dd // mask_token
            + self.decoder_depth * block_params(dd, mlp_hidden(dd, self.mlp_ratio))
            + 2 * dd // decoder_norm
            + dd * self.patch_dim() + self.patch_dim(); // decoder_pred
        let frozen = (l + 1) * d + (l + 1) * dd;
        let mut buffers = 0;
        if let Some(head) = &self.cls_head {
            let h = head.hidden;
            trainable += d * h + h + 2 * h + h * head.num_classes + head.num_classes;
            buffers += 2 * h;
        }
        ParamCount {
            trainable,
            frozen,
            buffers,
        }
    }
}

impl MaeConfig {
    /// The classifier of this model's encoder (same image size, patch, width, depth, heads
    /// and MLP ratio), with `num_classes` outputs, pooled by mean (`global_pool`) or by the
    /// cls token, and the other [`VitConfig`] defaults (drop path 0.1, head std 2e-5).
    pub fn classifier(&self, num_classes: usize, global_pool: bool) -> VitConfig {
        VitConfig::new()
            .with_img_size(self.img_size)
            .with_patch_size(self.patch_size)
            .with_in_chans(self.in_chans)
            .with_embed_dim(self.embed_dim)
            .with_depth(self.depth)
            .with_num_heads(self.num_heads)
            .with_mlp_ratio(self.mlp_ratio)
            .with_num_classes(num_classes)
            .with_global_pool(global_pool)
    }
}

impl VitConfig {
    /// The classifier matching a pre-training configuration's encoder.
    pub fn from_pretrain(cfg: &MaeConfig, num_classes: usize) -> Self {
        Self::new()
            .with_img_size(cfg.img_size)
            .with_patch_size(cfg.patch_size)
            .with_in_chans(cfg.in_chans)
            .with_embed_dim(cfg.embed_dim)
            .with_depth(cfg.depth)
            .with_num_heads(cfg.num_heads)
            .with_mlp_ratio(cfg.mlp_ratio)
            .with_num_classes(num_classes)
    }

    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.img_size / self.patch_size.max(1)
    }

    /// Number of patches `L`.
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Checks every constraint the model relies on.
    pub fn validate(&self) -> Result<()> {
        check_bounds(&[
            ("img_size", self.img_size, MAX_IMG_SIZE),
            ("in_chans", self.in_chans, MAX_IN_CHANS),
            ("embed_dim", self.embed_dim, MAX_WIDTH),
            ("depth", self.depth, MAX_DEPTH),
            ("num_classes", self.num_classes, MAX_CLASSES),
        ])?;
        check_patching(self.img_size, self.patch_size, self.in_chans)?;
        // The classifier's position embedding is learned, so any width works.
        check_width(
            "embed_dim",
            self.embed_dim,
            "num_heads",
            self.num_heads,
            false,
        )?;
        if self.depth == 0 {
            return Err(invalid("depth", "must be at least 1"));
        }
        check_mlp_ratio(self.mlp_ratio, self.embed_dim)?;
        if self.num_classes == 0 {
            return Err(invalid("num_classes", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return Err(invalid(
                "drop_path_rate",
                format!("({}) must be in [0, 1)", self.drop_path_rate),
            ));
        }
        if !(self.head_init_std.is_finite() && self.head_init_std >= 0.0) {
            return Err(invalid("head_init_std", "must be finite and >= 0"));
        }
        check_total(self.param_count())
    }

    /// Parameter counts, computed from the configuration without building the model.
    ///
    /// `vit_base_patch16` with 1000 classes has 86,567,656 parameters, all trainable.
    pub fn param_count(&self) -> ParamCount {
        let d = self.embed_dim;
        let trainable = d * self.in_chans * self.patch_size * self.patch_size
            + d
            + d // cls_token
            + (self.num_patches() + 1) * d // learned pos_embed
            + self.depth * block_params(d, mlp_hidden(d, self.mlp_ratio))
            + 2 * d // fc_norm or norm
            + d * self.num_classes
            + self.num_classes;
        ParamCount {
            trainable,
            frozen: 0,
            buffers: 0,
        }
    }

    /// Stochastic-depth rate of each block: `linspace(0, drop_path_rate, depth)`.
    pub fn drop_path_rates(&self) -> Vec<f64> {
        if self.depth <= 1 {
            return vec![0.0; self.depth];
        }
        (0..self.depth)
            .map(|i| self.drop_path_rate * i as f64 / (self.depth - 1) as f64)
            .collect()
    }
}

/// MLP hidden width, `int(d * ratio)` as in timm.
pub(crate) fn mlp_hidden(d: usize, ratio: f64) -> usize {
    (d as f64 * ratio) as usize
}

/// Parameters of one transformer block of width `d` and MLP width `h`.
fn block_params(d: usize, h: usize) -> usize {
    2 * d // norm1
        + d * 3 * d + 3 * d // qkv
        + d * d + d // proj
        + 2 * d // norm2
        + d * h + h // fc1
        + h * d + d // fc2
}

fn check_patching(img: usize, patch: usize, chans: usize) -> Result<()> {
    if patch == 0 {
        return Err(invalid("patch_size", "must be at least 1"));
    }
    if img == 0 || !img.is_multiple_of(patch) {
        return Err(invalid(
            "patch_size",
            format!("({patch}) does not divide img_size ({img})"),
        ));
    }
    if chans == 0 {
        return Err(invalid("in_chans", "must be at least 1"));
    }
    Ok(())
}

fn check_width(
    field: &'static str,
    dim: usize,
    heads_field: &'static str,
    heads: usize,
    sincos: bool,
) -> Result<()> {
    if dim == 0 {
        return Err(invalid(field, "must be at least 1"));
    }
    if heads == 0 || !dim.is_multiple_of(heads) {
        return Err(invalid(
            heads_field,
            format!("({heads}) does not divide {field} ({dim})"),
        ));
    }
    if sincos && !dim.is_multiple_of(4) {
        return Err(invalid(
            field,
            format!("({dim}) must be divisible by 4 for the 2-D sin-cos position embedding"),
        ));
    }
    Ok(())
}

/// Largest image side a config may ask for.
pub const MAX_IMG_SIZE: usize = 1 << 14;
/// Most input channels.
pub const MAX_IN_CHANS: usize = 1 << 10;
/// Widest encoder or decoder.
pub const MAX_WIDTH: usize = 1 << 15;
/// Deepest encoder or decoder.
pub const MAX_DEPTH: usize = 1 << 10;
/// Most classes.
pub const MAX_CLASSES: usize = 1 << 24;
/// Largest MLP ratio.
pub const MAX_MLP_RATIO: f64 = 64.0;
/// Default ceiling on a model's parameters and buffers (8 GB of `f32`; ViT-H has 632 M).
pub const DEFAULT_MAX_PARAMS: u64 = 2_000_000_000;

static MAX_PARAMS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_PARAMS);

/// Raises (or lowers) the ceiling that every config's `validate` (and so every `init`)
/// enforces on the number of parameters and buffers, for this process. The ceiling exists
/// so that a config read from a file cannot make us allocate more than a stated amount;
/// raising it is the explicit override for genuinely larger models.
pub fn set_max_params(max: u64) {
    MAX_PARAMS.store(max, std::sync::atomic::Ordering::Relaxed);
}

/// The ceiling [`set_max_params`] sets ([`DEFAULT_MAX_PARAMS`] unless changed).
pub fn max_params() -> u64 {
    MAX_PARAMS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Each dimension against its ceiling, before any arithmetic on them (with every field
/// under its ceiling, parameter counts fit in 64 bits).
fn check_bounds(fields: &[(&'static str, usize, usize)]) -> Result<()> {
    for &(field, value, max) in fields {
        if value > max {
            return Err(invalid(
                field,
                format!("({value}) is over the limit of {max}"),
            ));
        }
    }
    Ok(())
}

fn check_total(count: ParamCount) -> Result<()> {
    let total = count.total() as u64;
    if total > max_params() {
        return Err(invalid(
            "model size",
            format!(
                "{total} parameters and buffers ({:.1} GB as f32) is over the limit of {} \
                 (raise it with `set_max_params` if you mean it)",
                total as f64 * 4e-9,
                max_params()
            ),
        ));
    }
    Ok(())
}

fn check_mlp_ratio(ratio: f64, smallest_dim: usize) -> Result<()> {
    if !(ratio.is_finite() && ratio > 0.0 && ratio <= MAX_MLP_RATIO)
        || mlp_hidden(smallest_dim, ratio) == 0
    {
        return Err(invalid(
            "mlp_ratio",
            format!("({ratio}) must be finite and give an MLP width of at least 1"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_parameter_counts_of_the_real_presets() {
        let supmae = MaeConfig::supmae_vit_base_patch16_dec512d1b().param_count();
        assert_eq!(supmae.trainable, 95_030_504);
        assert_eq!(supmae.frozen, 151_296 + 100_864);
        assert_eq!(supmae.buffers, 2 * 3072);
        let supmae8 = MaeConfig::supmae_vit_base_patch16_dec512d8b().param_count();
        assert_eq!(supmae8.trainable, 117_097_192);
        let mae = MaeConfig::mae_vit_base_patch16_dec512d8b().param_count();
        assert_eq!(mae.trainable, 111_655_680);
        let vit = VitConfig::vit_base_patch16().param_count();
        assert_eq!(vit.trainable, 86_567_656);
    }

    #[test]
    fn every_preset_name_resolves_and_validates() {
        for name in MAE_PRESETS {
            let cfg = MaeConfig::preset(name).unwrap();
            cfg.validate().unwrap();
            assert_eq!(cfg.is_supmae(), name.starts_with("supmae"), "{name}");
        }
        for name in VIT_PRESETS {
            VitConfig::preset(name).unwrap().validate().unwrap();
        }
        assert!(MaeConfig::preset("mae_vit_gigantic").is_err());
    }

    #[test]
    fn bad_configs_are_typed_errors() {
        let bad = MaeConfig::new().with_img_size(32).with_patch_size(7);
        let err = bad.validate().unwrap_err();
        assert!(
            matches!(
                err,
                crate::ModelError::InvalidConfig {
                    field: "patch_size",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("(7) does not divide img_size (32)")
        );

        let heads = MaeConfig::new().with_embed_dim(64).with_num_heads(5);
        assert!(matches!(
            heads.validate(),
            Err(crate::ModelError::InvalidConfig {
                field: "num_heads",
                ..
            })
        ));
        let sincos = MaeConfig::new().with_embed_dim(66).with_num_heads(6);
        assert!(matches!(
            sincos.validate(),
            Err(crate::ModelError::InvalidConfig {
                field: "embed_dim",
                ..
            })
        ));
        let temp = MaeConfig::supmae_vit_base_patch16_dec512d1b()
            .with_cls_head(Some(ClsHeadConfig::new().with_temperature(0.0)));
        assert!(temp.validate().is_err());
        let dp = VitConfig::vit_base_patch16().with_drop_path_rate(1.5);
        assert!(dp.validate().is_err());
    }

    #[test]
    fn drop_path_schedule_is_linear() {
        let rates = VitConfig::vit_base_patch16().drop_path_rates();
        assert_eq!(rates.len(), 12);
        assert_eq!(rates[0], 0.0);
        assert!((rates[11] - 0.1).abs() < 1e-15);
        assert!((rates[1] - 0.1 / 11.0).abs() < 1e-15);
    }

    #[test]
    fn config_round_trips_through_json() {
        let cfg = MaeConfig::supmae_vit_base_patch16_dec512d1b();
        let json = serde_json::to_string(&cfg).unwrap();
        let back: MaeConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(cfg, back);
    }
}
