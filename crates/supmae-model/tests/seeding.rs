//! Seeding reproduces masks. Flex's RNG is process-global, so this lives in its own test
//! binary: tests running in parallel threads would otherwise draw from it in between.

use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::Distribution;
use supmae_model::MaeConfig;

type B = Flex;

#[test]
fn same_seed_same_masks() {
    let device = Default::default();
    let cfg = MaeConfig::new()
        .with_img_size(16)
        .with_patch_size(4)
        .with_embed_dim(16)
        .with_depth(1)
        .with_num_heads(2)
        .with_decoder_embed_dim(8)
        .with_decoder_depth(1)
        .with_decoder_num_heads(2);
    let model = cfg.init::<B>(&device).unwrap();
    let x = Tensor::<B, 4>::random([2, 3, 16, 16], Distribution::Default, &device);
    let run = || {
        B::seed(&device, 11);
        model
            .forward_encoder(x.clone(), 0.75, None)
            .unwrap()
            .masking
            .ids_shuffle
            .into_data()
            .convert::<i64>()
    };
    assert_eq!(run(), run());
}
