//! supmae-train's learner tests, in one binary: the learners are instantiated over
//! `Autodiff<Flex>` once instead of once per file (six binaries took 311 s of CI's build).
//! Filter by module: `cargo test --workspace --test learners finetune::`.

mod common;

mod distributed;
mod distributed_classifiers;
mod engine;
mod finetune;
mod pretrain;
mod trajectory;
