//! Fine-tune the classifier of a pre-training run on the embedded Fashion-MNIST subset from
//! library code, then evaluate its best checkpoint.
//!
//! ```text
//! cargo run --release -p supmae-cli -- pretrain          # writes runs/pretrain
//! cargo run --release --example finetune -- runs/pretrain
//! ```

use std::path::PathBuf;

use supmae::burn::backend::{Autodiff, Flex};
use supmae::train::{
    DataSpec, FinetuneConfig, Finetuner, Init, NewRun, Overwrite, ProgressMode, TrainError,
    load_data, load_pretrained,
};

fn main() -> Result<(), TrainError> {
    type B = Autodiff<Flex>;
    let run = PathBuf::from(std::env::args().nth(1).unwrap_or("runs/pretrain".into()));
    // The classifier of the pre-trained encoder's shape: 10 classes, global average pool.
    let (_, pretrain) = load_pretrained::<Flex>(&run, &Default::default())?;
    let model = pretrain.model.classifier(10, true);
    let config = FinetuneConfig {
        epochs: 3,
        ..FinetuneConfig::fashion_mnist_cpu(
            model,
            Init::Pretrained { path: run },
            DataSpec::EmbeddedFashionMnist,
        )
    };
    let (train, val) = load_data(&config.data)?;
    let mut finetuner = Finetuner::<B>::new(
        config,
        train,
        val,
        // Replaces this example's previous run (a plain path would refuse it).
        NewRun::new("runs/example-finetune").overwrite(Overwrite::Yes),
        Default::default(),
    )?
    .with_progress(ProgressMode::auto());
    if let Some(report) = finetuner.load_report() {
        println!("fresh parameters: {:?}", report.missing);
    }
    finetuner.run()?;
    for log in finetuner.history() {
        println!(
            "epoch {}: train_loss {:.4}, val top-1 {:.2}%, top-5 {:.2}%",
            log.epoch,
            log.train_loss,
            log.test_acc1.unwrap_or(f64::NAN),
            log.test_acc5.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
