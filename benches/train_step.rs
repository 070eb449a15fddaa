//! Training-step and inference throughput of the benchmark configurations on the CPU
//! backend (Flex), one JSON line per configuration; `benches/vs_torch.py` runs this and
//! `benches/train_step_torch.py` side by side and prints the ratios.
//!
//! ```text
//! cargo bench -p supmae --bench train_step -- [CONFIG...] [--steps N]
//! ```
//!
//! CONFIG: `tiny16` (SupMAE ViT-Ti/16, 224 px, mask 0.75, decoder 128/2/4, batch 32),
//! `px32` (SupMAE, 32 px, patch 4, width 192, depth 6, decoder 128/2/4, batch 128),
//! `tiny16_sup` (supervised ViT-Ti/16, no masking, batch 32), `base16_d1b` (the paper's
//! SupMAE ViT-B/16 with the 1-block decoder, batch 8). Default: all four.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use supmae::burn::backend::{Autodiff, Flex};
use supmae::model::{ClsHeadConfig, MaeConfig, SupMaeInput, VitConfig};

type B = Autodiff<Flex>;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Case {
    name: &'static str,
    batch: usize,
    mae: Option<MaeConfig>,
    vit: Option<VitConfig>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "tiny16",
            batch: 32,
            mae: Some(MaeConfig::supmae_vit_tiny_patch16_dec128d2b()),
            vit: None,
        },
        Case {
            name: "px32",
            batch: 128,
            mae: Some(
                MaeConfig::new()
                    .with_img_size(32)
                    .with_patch_size(4)
                    .with_embed_dim(192)
                    .with_depth(6)
                    .with_num_heads(3)
                    .with_decoder_embed_dim(128)
                    .with_decoder_depth(2)
                    .with_decoder_num_heads(4)
                    .with_cls_head(Some(
                        ClsHeadConfig::new().with_num_classes(10).with_hidden(768),
                    )),
            ),
            vit: None,
        },
        Case {
            name: "tiny16_sup",
            batch: 32,
            mae: None,
            vit: Some(VitConfig::vit_tiny_patch16().with_drop_path_rate(0.0)),
        },
        Case {
            name: "base16_d1b",
            batch: 8,
            mae: Some(MaeConfig::supmae_vit_base_patch16_dec512d1b()),
            vit: None,
        },
    ]
}

fn images(n: usize, size: usize, device: &burn::tensor::Device<B>) -> Tensor<B, 4> {
    let data: Vec<f32> = (0..n * 3 * size * size)
        .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(data, [n, 3, size, size]), device)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let steps: usize = args
        .iter()
        .position(|a| a == "--steps")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let wanted: Vec<&str> = args
        .iter()
        .filter(|a| cases().iter().any(|c| c.name == a.as_str()))
        .map(String::as_str)
        .collect();
    let device = Default::default();
    for case in cases() {
        if !wanted.is_empty() && !wanted.contains(&case.name) {
            continue;
        }
        let n = case.batch;
        let steps = if case.name == "base16_d1b" {
            steps.min(3)
        } else {
            steps
        };
        B::seed(&device, 0);
        let (train_s, infer_s) = if let Some(cfg) = &case.mae {
            let mut model = cfg.init::<B>(&device).expect("config");
            let mut opt = AdamWConfig::new().with_weight_decay(0.05).init::<B, _>();
            let x = images(n, cfg.img_size, &device);
            let classes = cfg.cls_head.as_ref().map_or(2, |h| h.num_classes) as i64;
            let y = Tensor::<B, 1, Int>::from_data(
                TensorData::new((0..n as i64).map(|i| i % classes).collect(), [n]),
                &device,
            );
            let mut train = 0.0;
            for step in 0..steps + 2 {
                let start = Instant::now();
                let out = model
                    .forward(
                        SupMaeInput::new(x.clone())
                            .with_labels(y.clone())
                            .with_training(true),
                    )
                    .expect("forward");
                let grads = GradientsParams::from_grads(out.loss.backward(), &model);
                model = opt.step(1e-4, model, grads);
                let _ = model.cls_token.val().into_data(); // wait for the step
                if step >= 2 {
                    train += start.elapsed().as_secs_f64();
                }
            }
            let inner = model.valid();
            let xi = x.inner();
            let mut infer = 0.0;
            for step in 0..steps + 1 {
                let start = Instant::now();
                let enc = inner
                    .forward_encoder(xi.clone(), 0.0, None)
                    .expect("encoder");
                let _ = inner.pooled(enc.latent).into_data();
                if step >= 1 {
                    infer += start.elapsed().as_secs_f64();
                }
            }
            (train / steps as f64, infer / steps as f64)
        } else {
            let cfg = case.vit.as_ref().expect("a model");
            let mut model = cfg.init::<B>(&device).expect("config");
            let mut opt = AdamWConfig::new().with_weight_decay(0.05).init::<B, _>();
            let x = images(n, cfg.img_size, &device);
            let y = Tensor::<B, 1, Int>::from_data(
                TensorData::new((0..n as i64).map(|i| i % 1000).collect(), [n]),
                &device,
            );
            let mut train = 0.0;
            for step in 0..steps + 2 {
                let start = Instant::now();
                let logits = model.forward(x.clone()).expect("forward");
                let loss = burn::nn::loss::CrossEntropyLossConfig::new()
                    .init(&device)
                    .forward(logits, y.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = opt.step(1e-4, model, grads);
                let _ = model.cls_token.val().into_data();
                if step >= 2 {
                    train += start.elapsed().as_secs_f64();
                }
            }
            let inner = model.valid();
            let xi = x.inner();
            let mut infer = 0.0;
            for step in 0..steps + 1 {
                let start = Instant::now();
                let _ = inner.embed(xi.clone()).expect("embed").into_data();
                if step >= 1 {
                    infer += start.elapsed().as_secs_f64();
                }
            }
            (train / steps as f64, infer / steps as f64)
        };
        println!(
            "{{\"side\": \"burn\", \"config\": \"{}\", \"batch\": {n}, \"train_img_s\": {:.2}, \"infer_img_s\": {:.2}, \"steps\": {steps}}}",
            case.name,
            n as f64 / train_s,
            n as f64 / infer_s
        );
    }
}
