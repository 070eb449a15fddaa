//! Build a SupMAE, run one pre-training forward and backward pass on random images, and
//! print what came out.
//!
//! ```text
//! cargo run --release --example forward
//! cargo run --release --example forward --features wgpu -- wgpu
//! ```

use std::process::ExitCode;

use supmae::burn::prelude::*;
use supmae::burn::tensor::Distribution;
use supmae::burn::tensor::backend::AutodiffBackend;
use supmae::model::{MaeConfig, ModelError, SupMaeInput};
use supmae::{BackendJob, BackendKind};

struct Forward {
    config: MaeConfig,
    batch: usize,
}

impl BackendJob for Forward {
    type Output = Result<(), ModelError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let cfg = &self.config;
        let model = cfg.init_seeded::<B>(0, &device)?;
        let count = cfg.param_count();
        println!(
            "model: {} trainable + {} frozen parameters ({} patches of {} px, {} kept)",
            count.trainable,
            count.frozen,
            cfg.num_patches(),
            cfg.patch_size,
            supmae::model::len_keep(cfg.num_patches(), 0.75)
        );
        let n = self.batch;
        let images = Tensor::<B, 4>::random(
            [n, cfg.in_chans, cfg.img_size, cfg.img_size],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let classes = cfg.cls_head.as_ref().map_or(1, |h| h.num_classes) as i64;
        let labels = Tensor::<B, 1, Int>::from_data(
            TensorData::new((0..n as i64).map(|i| i % classes).collect::<Vec<_>>(), [n]),
            &device,
        );
        let start = std::time::Instant::now();
        let out = model.forward(SupMaeInput::new(images).with_labels(labels))?;
        let scalar = |t: Tensor<B, 1>| t.into_scalar().elem::<f64>();
        println!("pred:     {:?}", out.pred.dims());
        println!("latent:   {:?}", out.latent.dims());
        println!("logits:   {:?}", out.logits.as_ref().map(|l| l.dims()));
        println!("rec_loss: {:.4}", scalar(out.rec_loss.clone()));
        if let Some(cls) = out.cls_loss.clone() {
            println!("cls_loss: {:.4} (lambda * CE(logits / T))", scalar(cls));
        }
        let _grads = out.loss.backward();
        println!("forward + backward: {:.2?}", start.elapsed());
        Ok(())
    }
}

fn main() -> ExitCode {
    let kind = match std::env::args().nth(1) {
        Some(name) => match name.parse::<BackendKind>() {
            Ok(kind) => kind,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        },
        None => BackendKind::best_compiled().unwrap_or(BackendKind::Flex),
    };
    println!("backend: {kind}");
    let job = Forward {
        config: MaeConfig::supmae_vit_tiny_patch16_dec128d2b(),
        batch: 8,
    };
    match supmae::run_on(kind, job) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
