//! Invariants every preset must satisfy, checked at tiny size on the CPU backend.

use std::collections::BTreeSet;

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::Distribution;
use supmae_model::checkpoint::param_keys;
use supmae_model::{
    ClsHeadConfig, MAE_PRESETS, MaeConfig, ModelError, SupMaeInput, VIT_PRESETS, VitConfig,
    patchify, unpatchify,
};

type B = Flex;
type AB = Autodiff<Flex>;

/// A preset shrunk to test size, keeping its patch size, decoder/encoder depth ratio and mode.
fn shrink(cfg: MaeConfig) -> MaeConfig {
    let patch = cfg.patch_size;
    let dec_depth = cfg.decoder_depth.min(2);
    let head = cfg
        .cls_head
        .clone()
        .map(|h| h.with_num_classes(5).with_hidden(24));
    cfg.with_img_size(2 * patch)
        .with_embed_dim(32)
        .with_num_heads(4)
        .with_depth(2)
        .with_decoder_embed_dim(16)
        .with_decoder_num_heads(2)
        .with_decoder_depth(dec_depth)
        .with_cls_head(head)
}

fn images<Bk: Backend>(cfg: &MaeConfig, n: usize, device: &Bk::Device) -> Tensor<Bk, 4> {
    Tensor::random(
        [n, cfg.in_chans, cfg.img_size, cfg.img_size],
        Distribution::Normal(0.0, 1.0),
        device,
    )
}

fn all_finite<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> bool {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite())
}

#[test]
fn every_pretraining_preset_trains_at_tiny_size() {
    let device = Default::default();
    AB::seed(&device, 0);
    for name in MAE_PRESETS {
        let cfg = shrink(MaeConfig::preset(name).unwrap());
        let model = cfg.init::<AB>(&device).unwrap();

        // Burn's count (parameters + running statistics) equals the shape formula.
        assert_eq!(
            model.num_params(),
            cfg.param_count().total(),
            "{name}: param count"
        );

        let n = 3;
        let mut input = SupMaeInput::new(images::<AB>(&cfg, n, &device));
        if cfg.is_supmae() {
            input = input.with_labels(Tensor::from_ints([0, 4, 2], &device));
        }
        let out = model.forward(input).unwrap();
        let l = cfg.num_patches();
        let k = supmae_model::masking::len_keep(l, 0.75);
        assert_eq!(out.pred.dims(), [n, l, cfg.patch_dim()], "{name}");
        assert_eq!(out.latent.dims(), [n, 1 + k, cfg.embed_dim], "{name}");
        assert_eq!(out.masking.mask.dims(), [n, l], "{name}");
        let removed: f32 = out.masking.mask.clone().sum().into_scalar();
        assert_eq!(removed as usize, n * (l - k), "{name}: removed patches");
        assert_eq!(out.logits.is_some(), cfg.is_supmae(), "{name}");
        assert_eq!(out.cls_loss.is_some(), cfg.is_supmae(), "{name}");
        assert!(all_finite(out.pred.clone()), "{name}: pred has NaN/Inf");
        assert!(all_finite(out.loss.clone()), "{name}: loss has NaN/Inf");

        let grads = out.loss.backward();
        let mut missing = Vec::new();
        let mut frozen = BTreeSet::new();
        struct Check<'a> {
            grads: &'a <AB as burn::tensor::backend::AutodiffBackend>::Gradients,
            trainable_without: &'a mut Vec<burn::module::ParamId>,
            frozen_with: &'a mut BTreeSet<burn::module::ParamId>,
        }
        impl burn::module::ModuleVisitor<AB> for Check<'_> {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<AB, D>>) {
                let has = p.val().grad(self.grads).is_some();
                if p.is_require_grad() && !has {
                    self.trainable_without.push(p.id);
                }
                if !p.is_require_grad() && has {
                    self.frozen_with.insert(p.id);
                }
            }
        }
        model.visit(&mut Check {
            grads: &grads,
            trainable_without: &mut missing,
            frozen_with: &mut frozen,
        });
        let keys = param_keys(&model);
        let name_of = |id| keys.iter().find(|k| k.id == id).map(|k| k.key.clone());
        assert!(frozen.is_empty(), "{name}: frozen params with grads");
        assert!(
            missing.is_empty(),
            "{name}: trainable params without a gradient: {:?}",
            missing.iter().map(|&id| name_of(id)).collect::<Vec<_>>()
        );
        // The only stored but untrained tensors are the two sin-cos tables and BN stats.
        let untrained: BTreeSet<String> = keys
            .iter()
            .filter(|k| !k.trainable)
            .map(|k| k.key.clone())
            .collect();
        let mut expected: BTreeSet<String> =
            ["pos_embed", "decoder_pos_embed"].map(String::from).into();
        if cfg.is_supmae() {
            expected.insert("cls_head.1.running_mean".into());
            expected.insert("cls_head.1.running_var".into());
        }
        assert_eq!(untrained, expected, "{name}");
    }
}

#[test]
fn every_classifier_preset_runs_at_tiny_size() {
    let device = Default::default();
    AB::seed(&device, 1);
    for name in VIT_PRESETS {
        let full = VitConfig::preset(name).unwrap();
        let cfg = full
            .clone()
            .with_img_size(2 * full.patch_size)
            .with_embed_dim(32)
            .with_num_heads(4)
            .with_depth(3)
            .with_num_classes(7);
        for global_pool in [true, false] {
            let cfg = cfg.clone().with_global_pool(global_pool);
            let model = cfg.init::<AB>(&device).unwrap();
            assert_eq!(model.num_params(), cfg.param_count().total(), "{name}");
            let x = Tensor::<AB, 4>::random(
                [2, 3, cfg.img_size, cfg.img_size],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let features = model.forward_features(x.clone()).unwrap();
            assert_eq!(features.dims(), [2, cfg.num_patches() + 1, 32]);
            assert_eq!(model.embed(x.clone()).unwrap().dims(), [2, 32]);
            let logits = model.forward(x).unwrap();
            assert_eq!(logits.dims(), [2, 7]);
            assert!(all_finite(logits.clone()), "{name}");
            let grads = logits.sum().backward();
            for k in param_keys(&model) {
                assert!(k.trainable, "{name}: {} should be trainable", k.key);
            }
            assert!(model.head.weight.val().grad(&grads).is_some());
            assert!(model.pos_embed.val().grad(&grads).is_some());
        }
    }
}

#[test]
fn unpatchify_inverts_patchify() {
    let device = Default::default();
    for (chans, patch, side) in [(3, 8, 32), (1, 4, 28), (3, 16, 48)] {
        let x = Tensor::<B, 4>::random([2, chans, side, side], Distribution::Default, &device);
        let p = patchify(x.clone(), patch);
        assert_eq!(p.dims(), [2, (side / patch).pow(2), patch * patch * chans]);
        let back = unpatchify(p, patch, chans);
        assert_eq!(back.into_data(), x.into_data());
    }
}

#[test]
fn patchify_puts_the_channel_fastest() {
    // One 2x2 patch of a 2-channel image: values encode (c, row, col) as 100c + 10r + col.
    let device = Default::default();
    let values: Vec<f32> = (0..2)
        .flat_map(|c| (0..2).flat_map(move |r| (0..2).map(move |q| (100 * c + 10 * r + q) as f32)))
        .collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(values, [1, 2, 2, 2]), &device);
    let p = patchify(x, 2).into_data().to_vec::<f32>().unwrap();
    assert_eq!(p, vec![0., 100., 1., 101., 10., 110., 11., 111.]);
}

fn tiny() -> MaeConfig {
    MaeConfig::new()
        .with_img_size(16)
        .with_patch_size(4)
        .with_embed_dim(16)
        .with_depth(1)
        .with_num_heads(2)
        .with_decoder_embed_dim(8)
        .with_decoder_depth(1)
        .with_decoder_num_heads(2)
        .with_cls_head(Some(
            ClsHeadConfig::new().with_num_classes(3).with_hidden(8),
        ))
}

#[test]
fn mask_ratio_zero_keeps_every_patch_and_matches_a_shuffled_pass() {
    let device = Default::default();
    B::seed(&device, 3);
    let cfg = tiny();
    let model = cfg.init::<B>(&device).unwrap();
    let x = images::<B>(&cfg, 2, &device);
    let plain = model
        .forward(
            SupMaeInput::new(x.clone())
                .with_mask_ratio(0.0)
                .with_training(false),
        )
        .unwrap();
    assert_eq!(plain.masking.len_keep, 16);
    let mask_sum: f32 = plain.masking.mask.clone().sum().into_scalar();
    assert_eq!(mask_sum, 0.0);
    let noise = Tensor::<B, 2>::random([2, 16], Distribution::Default, &device);
    let shuffled = model
        .forward(
            SupMaeInput::new(x)
                .with_mask_ratio(0.0)
                .with_noise(noise)
                .with_training(false),
        )
        .unwrap();
    // Same reconstruction and classification whatever the token order.
    let diff: f32 = (plain.pred - shuffled.pred).abs().max().into_scalar();
    assert!(diff < 1e-5, "pred differs by {diff}");
    let diff: f32 = (plain.logits.unwrap() - shuffled.logits.unwrap())
        .abs()
        .max()
        .into_scalar();
    assert!(diff < 1e-5, "logits differ by {diff}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let device = Default::default();
    let cfg = tiny();
    let model = cfg.init::<B>(&device).unwrap();

    let wrong_size = Tensor::<B, 4>::zeros([2, 3, 20, 20], &device);
    let err = model.forward(SupMaeInput::new(wrong_size)).unwrap_err();
    assert!(
        matches!(err, ModelError::Shape { name: "images", .. }),
        "{err}"
    );

    let x = images::<B>(&cfg, 2, &device);
    let err = model
        .forward(SupMaeInput::new(x.clone()).with_mask_ratio(1.0))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::InvalidArgument {
                name: "mask_ratio",
                ..
            }
        ),
        "{err}"
    );

    let bad_noise = Tensor::<B, 2>::zeros([2, 5], &device);
    let err = model
        .forward(SupMaeInput::new(x.clone()).with_noise(bad_noise))
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Shape { name: "noise", .. }),
        "{err}"
    );

    let err = model
        .forward(SupMaeInput::new(x.clone()).with_labels(Tensor::from_ints([0, 3], &device)))
        .unwrap_err();
    assert!(err.to_string().contains("label 3 is outside 0..3"), "{err}");

    let err = model
        .forward(SupMaeInput::new(x.clone()).with_labels(Tensor::from_ints([0], &device)))
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Shape { name: "labels", .. }),
        "{err}"
    );

    let one = images::<B>(&cfg, 1, &device);
    let err = model
        .forward(SupMaeInput::new(one).with_training(true))
        .unwrap_err();
    assert!(err.to_string().contains("at least 2 samples"), "{err}");

    let mae = tiny().with_cls_head(None).init::<B>(&device).unwrap();
    let err = mae
        .forward(SupMaeInput::new(x).with_labels(Tensor::from_ints([0, 1], &device)))
        .unwrap_err();
    assert!(
        err.to_string().contains("without a classification branch"),
        "{err}"
    );

    let bad = MaeConfig::new().with_img_size(32).with_patch_size(7);
    assert!(matches!(
        bad.init::<B>(&device),
        Err(ModelError::InvalidConfig {
            field: "patch_size",
            ..
        })
    ));
}
