//! Pre-train a small SupMAE on the embedded Fashion-MNIST subset from library code.
//!
//! ```text
//! cargo run --release --example pretrain
//! ```

use supmae::burn::backend::{Autodiff, Flex};
use supmae::train::{NewRun, Overwrite, PretrainConfig, Pretrainer, ProgressMode, TrainError};

fn main() -> Result<(), TrainError> {
    type B = Autodiff<Flex>;
    // The CPU recipe (28 px, 7 px patches, 10 classes), shortened to 3 epochs.
    let config = PretrainConfig {
        epochs: 3,
        ..PretrainConfig::fashion_mnist_cpu()
    };
    // A plain path refuses a folder that already holds a run; this example replaces its
    // own previous run.
    let out = NewRun::new("runs/example-pretrain").overwrite(Overwrite::Yes);
    let mut trainer =
        Pretrainer::<B>::new(config, out, Default::default())?.with_progress(ProgressMode::auto());
    trainer.run()?;
    for log in trainer.history() {
        println!(
            "epoch {}: rec_loss {:.4}, cls_loss {:.5}, val top-1 {:.1}%",
            log.epoch,
            log.rec_loss,
            log.cls_loss,
            log.val_acc1_full.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
