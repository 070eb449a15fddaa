//! Initialisation follows the official code (spec §1.11 and §3.2).

use burn::backend::Flex;
use burn::prelude::*;
use supmae_model::pos_embed::sincos_2d_table;
use supmae_model::{MaeConfig, VitConfig};

type B = Flex;

fn stats<const D: usize>(t: Tensor<B, D>) -> (f64, f64, f64) {
    let v = t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let max = v.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
    (mean, var.sqrt(), max)
}

fn assert_uniform<const D: usize>(name: &str, t: Tensor<B, D>, bound: f64) {
    let (mean, std, max) = stats(t);
    assert!(
        max <= bound * (1.0 + 1e-6),
        "{name}: max {max} > bound {bound}"
    );
    assert!(
        max > 0.97 * bound,
        "{name}: max {max} far below bound {bound}"
    );
    let want = bound / 3f64.sqrt();
    assert!(
        (std - want).abs() < 0.05 * want,
        "{name}: std {std} vs {want}"
    );
    assert!(mean.abs() < 0.05 * want, "{name}: mean {mean}");
}

fn assert_const<const D: usize>(name: &str, t: Tensor<B, D>, value: f32) {
    let v = t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    assert!(
        v.iter().all(|&x| x == value),
        "{name} should be all {value}"
    );
}

#[test]
fn pretraining_model_initialisation() {
    let device = Default::default();
    B::seed(&device, 5);
    let cfg = MaeConfig::supmae_vit_tiny_patch16_dec128d2b();
    let m = cfg.init::<B>(&device).unwrap();
    let (d, dd, patch_in): (f64, f64, f64) = (192.0, 128.0, 3.0 * 16.0 * 16.0);

    // Fixed sin-cos tables, bit for bit.
    let pos = m.pos_embed.val().into_data().to_vec::<f32>().unwrap();
    assert_eq!(pos, sincos_2d_table(192, 14));
    let dpos = m
        .decoder_pos_embed
        .val()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(dpos, sincos_2d_table(128, 14));

    // Patch embedding: xavier on the (D, C·p²) view; bias keeps the Conv2d default.
    assert_uniform(
        "patch_embed.proj.weight",
        m.patch_embed.proj.weight.val(),
        (6.0 / (patch_in + d)).sqrt(),
    );
    let bias = m.patch_embed.proj.bias.as_ref().unwrap().val();
    let (_, _, max) = stats(bias);
    assert!(max <= 1.0 / patch_in.sqrt() && max > 0.0);

    // Tokens ~ N(0, 0.02²).
    let (_, std, _) = stats(m.cls_token.val());
    assert!((std - 0.02).abs() < 0.006, "cls_token std {std}");
    let (_, std, _) = stats(m.mask_token.val());
    assert!((std - 0.02).abs() < 0.006, "mask_token std {std}");

    // Every Linear: xavier-uniform over the whole weight (fused qkv too), zero bias.
    let blk = &m.blocks[0];
    assert_uniform(
        "qkv",
        blk.attn.qkv.weight.val(),
        (6.0 / (d + 3.0 * d)).sqrt(),
    );
    assert_const("qkv.bias", blk.attn.qkv.bias.as_ref().unwrap().val(), 0.0);
    assert_uniform(
        "fc1",
        blk.mlp.fc1.weight.val(),
        (6.0 / (d + 4.0 * d)).sqrt(),
    );
    assert_uniform(
        "decoder_embed",
        m.decoder_embed.weight.val(),
        (6.0 / (d + dd)).sqrt(),
    );
    assert_uniform(
        "decoder_pred",
        m.decoder_pred.weight.val(),
        (6.0 / (dd + patch_in)).sqrt(),
    );
    let head = m.cls_head.as_ref().unwrap();
    assert_uniform(
        "cls_head.0",
        head.fc1.weight.val(),
        (6.0 / (d + 768.0)).sqrt(),
    );
    assert_const(
        "cls_head.0.bias",
        head.fc1.bias.as_ref().unwrap().val(),
        0.0,
    );

    // LayerNorm 1/0; BatchNorm 1/0 with running stats 0/1.
    assert_const("norm.weight", m.norm.gamma.val(), 1.0);
    assert_const("norm.bias", m.norm.beta.as_ref().unwrap().val(), 0.0);
    assert_const("bn.weight", head.bn.weight.val(), 1.0);
    assert_const("bn.bias", head.bn.bias.val(), 0.0);
    assert_const("bn.running_mean", head.bn.running_mean(), 0.0);
    assert_const("bn.running_var", head.bn.running_var(), 1.0);
}

#[test]
fn classifier_initialisation() {
    let device = Default::default();
    B::seed(&device, 6);
    let m = VitConfig::vit_tiny_patch16().init::<B>(&device).unwrap();
    let (_, std, _) = stats(m.head.weight.val());
    assert!((std - 2e-5).abs() < 2e-6, "head std {std}");
    assert_const("head.bias", m.head.bias.as_ref().unwrap().val(), 0.0);
    let (_, std, _) = stats(m.blocks[0].attn.qkv.weight.val());
    assert!((std - 0.02).abs() < 0.001, "qkv std {std}");
    let (_, std, _) = stats(m.pos_embed.val());
    assert!((std - 0.02).abs() < 0.001, "pos_embed std {std}");
    assert!(
        m.norm.is_none() && m.fc_norm.is_some(),
        "global pool uses fc_norm only"
    );
    // Drop path grows linearly from 0 to 0.1 over the blocks.
    assert_eq!(m.blocks[0].drop_path, 0.0);
    assert!((m.blocks[11].drop_path - 0.1).abs() < 1e-12);
}
