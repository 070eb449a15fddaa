//! Layer-wise learning-rate decay (`param_groups_lrd` of the official code).

use std::collections::HashMap;

use burn::module::{Module, ParamId};
use burn::prelude::*;
use supmae_model::checkpoint::param_keys;

/// The layer id of a fine-tuning parameter, as `param_groups_lrd` assigns it: `cls_token`,
/// `pos_embed` and `patch_embed.*` are layer 0, `blocks.k.*` is layer `k + 1`, everything
/// else (`fc_norm`, `norm`, `head`) is layer `num_layers = depth + 1`.
pub fn layer_id(key: &str, num_layers: usize) -> usize {
    if key == "cls_token" || key == "pos_embed" || key.starts_with("patch_embed.") {
        return 0;
    }
    if let Some(rest) = key.strip_prefix("blocks.")
        && let Some(k) = rest.split('.').next().and_then(|k| k.parse::<usize>().ok())
    {
        return k + 1;
    }
    num_layers
}

/// The learning-rate scale of every layer id: `decay^(num_layers − id)` for
/// `id = 0..=num_layers`, with `num_layers = depth + 1`.
pub fn layer_scales(decay: f64, depth: usize) -> Vec<f64> {
    let num_layers = depth + 1;
    (0..=num_layers)
        .map(|id| decay.powi((num_layers - id) as i32))
        .collect()
}

/// Whether a fine-tuning parameter is exempt from weight decay: 1-D tensors and the names
/// in `no_weight_decay()` (`pos_embed`, `cls_token`).
pub fn finetune_no_weight_decay(key: &str, rank: usize) -> bool {
    rank == 1 || key == "pos_embed" || key == "cls_token"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_ids_and_scales_match_the_spec_table_for_vit_b_at_0_65() {
        let scales = layer_scales(0.65, 12);
        assert_eq!(scales.len(), 14);
        // Spec §3.3, rounded to 5 digits: id 0, blocks.0 .. blocks.11, head.
        let table = [
            0.00370, 0.00569, 0.00875, 0.01346, 0.02071, 0.03186, 0.04902, 0.07542, 0.11603,
            0.17851, 0.27463, 0.42250, 0.65, 1.0,
        ];
        for (id, (got, want)) in scales.iter().zip(table).enumerate() {
            assert!((got - want).abs() < 5e-6, "layer {id}: {got} vs {want}");
        }
        let cases = [
            ("cls_token", 0),
            ("pos_embed", 0),
            ("patch_embed.proj.weight", 0),
            ("blocks.0.norm1.weight", 1),
            ("blocks.11.mlp.fc2.bias", 12),
            ("fc_norm.weight", 13),
            ("norm.bias", 13),
            ("head.weight", 13),
        ];
        for (key, id) in cases {
            assert_eq!(layer_id(key, 13), id, "{key}");
        }
        // The 0.75 column starts 0.02376, 0.03168 and ends 0.5625, 0.75, 1.0.
        let s = layer_scales(0.75, 12);
        assert!((s[0] - 0.02376).abs() < 5e-6 && (s[1] - 0.03168).abs() < 5e-6);
        assert_eq!(&s[11..], &[0.5625, 0.75, 1.0]);
    }

    #[test]
    fn no_weight_decay_for_1d_params_pos_embed_and_cls_token() {
        assert!(finetune_no_weight_decay("pos_embed", 3));
        assert!(finetune_no_weight_decay("cls_token", 3));
        assert!(finetune_no_weight_decay("blocks.3.norm1.weight", 1));
        assert!(finetune_no_weight_decay("head.bias", 1));
        assert!(!finetune_no_weight_decay("head.weight", 2));
        assert!(!finetune_no_weight_decay("patch_embed.proj.weight", 4));
    }
}

/// One parameter group of `param_groups_lrd`.
#[derive(Debug, Clone, PartialEq)]
pub struct LrdGroup {
    /// `layer_{id}_{decay|no_decay}`, as the official code names it.
    pub name: String,
    /// The layer id.
    pub layer_id: usize,
    /// `decay^(num_layers − layer_id)`.
    pub lr_scale: f64,
    /// The group's weight decay (0 for the no-decay set).
    pub weight_decay: f64,
    /// Its parameters: official key and Burn id.
    pub params: Vec<(String, ParamId)>,
}

/// The parameter groups of `util/lr_decay.py` (`param_groups_lrd`) for a classifier of
/// `depth` blocks: one group per (layer id, decay flag), ordered by first appearance.
pub fn param_groups_lrd<B: Backend, M: Module<B>>(
    model: &M,
    weight_decay: f64,
    layer_decay: f64,
    depth: usize,
) -> Vec<LrdGroup> {
    let scales = layer_scales(layer_decay, depth);
    let num_layers = depth + 1;
    let mut index: HashMap<(usize, bool), usize> = HashMap::new();
    let mut groups: Vec<LrdGroup> = Vec::new();
    for p in param_keys(model) {
        if !p.trainable {
            continue;
        }
        let id = layer_id(&p.key, num_layers);
        let no_decay = finetune_no_weight_decay(&p.key, p.shape.len());
        let g = *index.entry((id, no_decay)).or_insert_with(|| {
            groups.push(LrdGroup {
                name: format!("layer_{id}_{}", if no_decay { "no_decay" } else { "decay" }),
                layer_id: id,
                lr_scale: scales[id.min(scales.len() - 1)],
                weight_decay: if no_decay { 0.0 } else { weight_decay },
                params: Vec::new(),
            });
            groups.len() - 1
        });
        groups[g].params.push((p.key, p.id));
    }
    groups
}
