//! Throughput of a training step and of inference on any backend, for the benchmark
//! configurations of `docs/benchmarks.md` (used by `supmae bench`, `scripts/gpu-check.sh`
//! and `benches/train_step.rs`), and a check of a backend against the PyTorch fixtures
//! (`supmae check-backend`, the wgpu test).
//!
//! Program code, not library API: the benchmark and the wgpu test take this file in with
//! `#[path]`, so it names its crates (`supmae_model`, `burn`) and returns its errors as text.

use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use supmae_model::checkpoint::StateDict;
use supmae_model::{ClsHeadConfig, MaeConfig, SupMaeInput, VitConfig};

/// An error as its message.
fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A tensor's values on the host, or what went wrong reading them.
fn host_values<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    what: &str,
) -> Result<Vec<f32>, String> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| format!("reading {what}: {e:?}"))
}

/// The benchmark configurations: name, default batch, model.
pub fn configs() -> Vec<(&'static str, usize, Result<MaeConfig, VitConfig>)> {
    vec![
        (
            "tiny16",
            32,
            Ok(MaeConfig::supmae_vit_tiny_patch16_dec128d2b()),
        ),
        (
            "px32",
            128,
            Ok(MaeConfig::new()
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
                ))),
        ),
        (
            "tiny16_sup",
            32,
            Err(VitConfig::vit_tiny_patch16().with_drop_path_rate(0.0)),
        ),
        (
            "base16_d1b",
            8,
            Ok(MaeConfig::supmae_vit_base_patch16_dec512d1b()),
        ),
    ]
}

fn images<B: Backend>(n: usize, size: usize, device: &B::Device) -> Tensor<B, 4> {
    let data: Vec<f32> = (0..n * 3 * size * size)
        .map(|i| ((i.wrapping_mul(2_654_435_761)) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(data, [n, 3, size, size]), device)
}

/// Images per second of `steps` training steps (forward + backward + AdamW, after 2
/// warm-up steps) and of `steps` inference passes (encoder without masking + pooling, after
/// 1 warm-up), for configuration `name` at `batch` images.
pub fn throughput<B: AutodiffBackend>(
    name: &str,
    batch: usize,
    steps: usize,
    device: &B::Device,
) -> Result<(f64, f64), String> {
    let Some((_, _, model)) = configs().into_iter().find(|(n, _, _)| *n == name) else {
        return Err(format!(
            "unknown benchmark config `{name}` (tiny16, px32, tiny16_sup, base16_d1b)"
        ));
    };
    let n = batch;
    let steps = steps.max(1);
    B::seed(device, 0);
    let sync = |t: Tensor<B::InnerBackend, 3>| {
        let _ = t.slice([0..1, 0..1, 0..1]).into_data();
    };
    match model {
        Ok(cfg) => {
            let mut model = cfg.init::<B>(device).map_err(text)?;
            let mut opt = AdamWConfig::new().with_weight_decay(0.05).init::<B, _>();
            let x = images::<B>(n, cfg.img_size, device);
            let classes = cfg.cls_head.as_ref().map_or(2, |h| h.num_classes) as i64;
            let y = Tensor::<B, 1, Int>::from_data(
                TensorData::new((0..n as i64).map(|i| i % classes).collect(), [n]),
                device,
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
                    .map_err(text)?;
                let grads = GradientsParams::from_grads(out.loss.backward(), &model);
                model = opt.step(1e-4, model, grads);
                sync(model.cls_token.val().inner());
                if step >= 2 {
                    train += start.elapsed().as_secs_f64();
                }
            }
            let inner = model.valid();
            let xi = x.inner();
            let mut infer = 0.0;
            for step in 0..steps + 1 {
                let start = Instant::now();
                let enc = inner.forward_encoder(xi.clone(), 0.0, None).map_err(text)?;
                let _ = inner.pooled(enc.latent).slice([0..1, 0..1]).into_data();
                if step >= 1 {
                    infer += start.elapsed().as_secs_f64();
                }
            }
            Ok((
                n as f64 * steps as f64 / train,
                n as f64 * steps as f64 / infer,
            ))
        }
        Err(cfg) => {
            let mut model = cfg.init::<B>(device).map_err(text)?;
            let mut opt = AdamWConfig::new().with_weight_decay(0.05).init::<B, _>();
            let x = images::<B>(n, cfg.img_size, device);
            let y = Tensor::<B, 1, Int>::from_data(
                TensorData::new((0..n as i64).map(|i| i % 1000).collect(), [n]),
                device,
            );
            let ce = burn::nn::loss::CrossEntropyLossConfig::new().init(device);
            let mut train = 0.0;
            for step in 0..steps + 2 {
                let start = Instant::now();
                let loss = ce.forward(model.forward(x.clone()).map_err(text)?, y.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = opt.step(1e-4, model, grads);
                sync(model.cls_token.val().inner());
                if step >= 2 {
                    train += start.elapsed().as_secs_f64();
                }
            }
            let inner = model.valid();
            let xi = x.inner();
            let mut infer = 0.0;
            for step in 0..steps + 1 {
                let start = Instant::now();
                let _ = inner
                    .embed(xi.clone())
                    .map_err(text)?
                    .slice([0..1, 0..1])
                    .into_data();
                if step >= 1 {
                    infer += start.elapsed().as_secs_f64();
                }
            }
            Ok((
                n as f64 * steps as f64 / train,
                n as f64 * steps as f64 / infer,
            ))
        }
    }
}

/// Largest absolute difference between a backend's outputs and the PyTorch fixtures
/// (`tools/parity/fixtures/tiny`): `(quantity, max |ours − torch|, tolerance)`.
pub fn backend_parity<B: AutodiffBackend>(
    fixtures: &Path,
    device: &B::Device,
) -> Result<Vec<(String, f64, f64)>, String> {
    let expected =
        StateDict::from_safetensors(fixtures.join("expected.safetensors")).map_err(text)?;
    let read = |key: &str| expected.read_f32(key).map_err(text);
    let cfg = MaeConfig::new()
        .with_img_size(32)
        .with_patch_size(8)
        .with_embed_dim(64)
        .with_depth(2)
        .with_num_heads(4)
        .with_decoder_embed_dim(32)
        .with_decoder_depth(1)
        .with_decoder_num_heads(4)
        .with_cls_head(Some(
            ClsHeadConfig::new().with_num_classes(10).with_hidden(128),
        ));
    let (model, _) = cfg
        .init::<B>(device)
        .map_err(text)?
        .load_pytorch(fixtures.join("supmae_tiny.pth"))
        .map_err(text)?;
    let tensor = |key: &str| -> Result<Tensor<B, 4>, String> {
        let (v, s) = read(key)?;
        Ok(Tensor::from_data(
            TensorData::new(v, [s[0], s[1], s[2], s[3]]),
            device,
        ))
    };
    let (noise, ns) = read("noise")?;
    let (labels, _) = read("labels")?;
    let images = tensor("images")?;
    let noise = Tensor::<B, 2>::from_data(TensorData::new(noise, [ns[0], ns[1]]), device);
    let labels = Tensor::<B, 1, Int>::from_data(
        TensorData::new(labels.iter().map(|&l| l as i64).collect(), [ns[0]]),
        device,
    );
    let out = model
        .forward(
            SupMaeInput::new(images.clone())
                .with_labels(labels)
                .with_noise(noise)
                .with_training(true),
        )
        .map_err(text)?;
    let grads = out.loss.backward();
    let mut rows = Vec::new();
    let mut diff = |name: &str, got: Vec<f32>, tol: f64| -> Result<(), String> {
        let (want, _) = read(name)?;
        if got.len() != want.len() {
            return Err(format!(
                "{name}: {} values, the fixture has {}",
                got.len(),
                want.len()
            ));
        }
        let d = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
        rows.push((name.to_string(), d, tol));
        Ok(())
    };
    diff(
        "pred",
        host_values(out.pred.clone().flatten::<1>(0, 2), "pred")?,
        1e-4,
    )?;
    diff(
        "rec_loss",
        host_values(out.rec_loss.clone(), "rec_loss")?,
        1e-5,
    )?;
    if let Some(logits) = out.logits.clone() {
        diff(
            "logits_train",
            host_values(logits.flatten::<1>(0, 1), "logits")?,
            1e-4,
        )?;
    }
    diff("loss", host_values(out.loss.clone(), "loss")?, 1e-5)?;
    let grad = model
        .blocks
        .first()
        .and_then(|b| b.attn.qkv.weight.val().grad(&grads))
        .ok_or("no gradient of blocks.0.attn.qkv.weight")?;
    let grad = host_values(grad.transpose().flatten::<1>(0, 1), "the qkv gradient")?;
    diff("grad.blocks.0.attn.qkv.weight", grad, 1e-4)?;
    Ok(rows)
}
