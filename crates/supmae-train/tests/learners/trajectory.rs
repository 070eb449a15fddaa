//! The three learners against PyTorch, step by step, on the CPU backend (see
//! `common/trajectory.rs` and `tools/parity/fixtures/trajectory/README.md`).

use crate::common::trajectory::{self, CPU};
use burn::backend::{Autodiff, Flex};

type B = Autodiff<Flex>;

#[test]
fn pretraining_follows_pytorch_step_by_step() {
    let dir = crate::common::scratch("trajectory-pretrain");
    let d = trajectory::pretrain::<B>(&dir, Default::default(), CPU);
    eprintln!("pre-training, largest relative L2 per snapshot: {d:?}");
}

#[test]
fn finetuning_follows_pytorch_step_by_step() {
    let dir = crate::common::scratch("trajectory-finetune");
    let d = trajectory::finetune::<B>(&dir, Default::default(), CPU);
    eprintln!("fine-tuning, largest relative L2 per snapshot: {d:?}");
}

#[test]
fn linear_probing_follows_pytorch_step_by_step() {
    let dir = crate::common::scratch("trajectory-linprobe");
    let d = trajectory::linprobe::<B>(&dir, Default::default(), CPU);
    eprintln!("linear probing, largest relative L2 per snapshot: {d:?}");
}
