//! Fine-tuning building blocks (`util/lr_decay.py`, spec §3.3). The fine-tuning learner
//! itself is issue #5's; these pure rules come first so they are tested on their own.

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

/// Soft targets of a mixed batch, as timm's `mixup_target`: label smoothing folded in
/// (`off = smoothing / C`, `on = 1 − smoothing + off`), then `lam · y + (1 − lam) · y_flip`
/// where `y_flip` pairs sample `i` with sample `N − 1 − i` (the batch flipped).
///
/// # Shapes
/// - labels: `[N]`
/// - output: `[N, classes]` flattened, row-major
pub fn mixup_targets(labels: &[usize], classes: usize, lam: f64, smoothing: f64) -> Vec<f32> {
    let n = labels.len();
    let off = smoothing / classes as f64;
    let on = 1.0 - smoothing + off;
    let mut out = vec![0f32; n * classes];
    for (i, row) in out.chunks_mut(classes).enumerate() {
        let (a, b) = (labels[i], labels[n - 1 - i]);
        for (c, v) in row.iter_mut().enumerate() {
            let ya = if c == a { on } else { off };
            let yb = if c == b { on } else { off };
            *v = (lam * ya + (1.0 - lam) * yb) as f32;
        }
    }
    out
}

/// A CutMix box and the corrected `lam`, as timm's `rand_bbox` + `correct_lam`: a box of
/// side `int(side · sqrt(1 − lam))` centred at `(cy, cx)` (drawn uniformly in the image by the
/// caller), clipped to the image; `lam` becomes `1 − box area / image area`.
/// Returns `(top, bottom, left, right, lam)`.
pub fn cutmix_box(
    height: usize,
    width: usize,
    lam: f64,
    cy: usize,
    cx: usize,
) -> (usize, usize, usize, usize, f64) {
    let ratio = (1.0 - lam).sqrt();
    let (ch, cw) = (
        (height as f64 * ratio) as i64,
        (width as f64 * ratio) as i64,
    );
    let clip = |v: i64, max: usize| v.clamp(0, max as i64) as usize;
    let (cy, cx) = (cy as i64, cx as i64);
    let (top, bottom) = (clip(cy - ch / 2, height), clip(cy + ch / 2, height));
    let (left, right) = (clip(cx - cw / 2, width), clip(cx + cw / 2, width));
    let area = ((bottom - top) * (right - left)) as f64;
    (
        top,
        bottom,
        left,
        right,
        1.0 - area / (height * width) as f64,
    )
}

#[cfg(test)]
mod mix_tests {
    use super::*;

    #[test]
    fn mixup_soft_targets_fold_in_label_smoothing() {
        // Recipe values: smoothing 0.1 over 1000 classes gives off 1e-4, on 0.9001.
        let t = mixup_targets(&[3, 7], 1000, 1.0, 0.1);
        assert!((t[3] - 0.9001).abs() < 1e-7 && (t[4] - 1e-4).abs() < 1e-9);
        // lam 0.7: sample 0 is 0.7 of class 3 and 0.3 of class 7 (its flipped partner).
        let t = mixup_targets(&[3, 7], 10, 0.7, 0.0);
        assert!((t[3] - 0.7).abs() < 1e-7 && (t[7] - 0.3).abs() < 1e-7);
        assert!((t[10 + 7] - 0.7).abs() < 1e-7 && (t[10 + 3] - 0.3).abs() < 1e-7);
        for row in t.chunks(10) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn cutmix_lam_is_corrected_to_the_clipped_box() {
        // lam 0.75 on 224 px: side int(224 * 0.5) = 112; centred, the box is exact.
        let (t, b, l, r, lam) = cutmix_box(224, 224, 0.75, 112, 112);
        assert_eq!((t, b, l, r), (56, 168, 56, 168));
        assert!((lam - 0.75).abs() < 1e-12);
        // In a corner the box is clipped to a quarter and lam grows accordingly.
        let (t, b, l, r, lam) = cutmix_box(224, 224, 0.75, 0, 0);
        assert_eq!((t, b, l, r), (0, 56, 0, 56));
        assert!((lam - (1.0 - 56.0 * 56.0 / (224.0 * 224.0))).abs() < 1e-12);
    }
}
