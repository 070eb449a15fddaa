//! The fine-tuning task: one micro-batch's soft-target loss after Mixup/CutMix and drop
//! path, the AdamW step of every layer-decay group, evaluation and the checkpoint.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use supmae_data::{HostBatch, SampleRng};
use supmae_model::VitClassifier;

use super::Finetuning;
use super::mixup::{MixDraw, mix_batch_with};
use crate::checkpoint::{CheckpointParts, write_atomic};
use crate::classifier::{
    ClassifierKind, ClassifierLog, ClassifierMeta, EvalReport, Rec, evaluate,
    soft_target_cross_entropy,
};
use crate::engine::{At, Collective, EpochStats, Forward, Plan, Task};
use crate::error::{Result, TrainError, json};

/// Random draws of one fine-tuning micro-batch given by the caller instead of the run's
/// streams (see [`super::Finetuner::train_batch`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinetuneDraws {
    /// Mixup / CutMix parameters (`None`: drawn from the run's stream).
    pub mix: Option<MixDraw>,
    /// Stochastic-depth keep masks (`0.0`/`1.0` per sample, for every branch that draws, in
    /// forward order; see [`supmae_model::seeding::with_masks`]); `None`: drawn from the
    /// run's stream.
    pub drop_path: Option<Vec<f32>>,
}

impl<B: AutodiffBackend> Task<B> for Finetuning<B> {
    type Model = VitClassifier<B>;
    type Log = ClassifierLog;
    type Draws = FinetuneDraws;
    type Eval = EvalReport;

    fn model(&self) -> &VitClassifier<B> {
        self.model
            .as_ref()
            .unwrap_or_else(|| unreachable!("the model is only taken during a step"))
    }

    fn plan(&self) -> Plan {
        Plan {
            epochs: self.config.epochs,
            checkpoint_every: 1,
            lr: self.config.peak_lr(),
            min_lr: self.config.min_lr,
            warmup_epochs: self.config.warmup_epochs,
            accum_iter: self.config.accum_iter,
        }
    }

    fn start_epoch(&mut self) {
        self.accumulator = GradientsAccumulator::new();
    }

    fn forward(
        &self,
        at: At,
        mut batch: HostBatch,
        draws: FinetuneDraws,
        peers: &Collective<'_, B>,
    ) -> Result<Forward<B>> {
        let (epoch, it) = (at.epoch as u64, at.iteration as u64);
        let classes = self.config.model.num_classes;
        let c = self.config.model.in_chans;
        let s = self.config.model.img_size;
        let n = batch.len();
        crate::classifier::check_batch(&batch, c, s)?;
        let labels: Vec<usize> = batch.labels.iter().map(|&l| l as usize).collect();
        // Each peer mixes its own share with its own numbers (rank 0: the single-process
        // stream).
        let salt = (peers.rank() as u64) << 48;
        let mix = draws.mix.unwrap_or_else(|| {
            let mut rng = SampleRng::for_sample(self.config.seed ^ 0x6d69_7875 ^ salt, epoch, it);
            MixDraw::sample(&self.config.mixup, n, (s, s), &mut rng)
        });
        let (targets, _) = mix_batch_with(
            &mut batch.images,
            &labels,
            (c, s, s),
            classes,
            self.config.mixup.smoothing,
            mix,
        );
        let (x, _) = batch.into_tensors::<B>(&self.device);
        let targets =
            Tensor::<B, 2>::from_data(TensorData::new(targets, [n, classes]), &self.device);
        let model = self.model();
        let logits = match draws.drop_path {
            // Stochastic depth draws from a stream of the run's seed and this step, so a
            // resumed run draws the same masks.
            None => {
                let step_seed =
                    SampleRng::for_sample(self.config.seed ^ 0x6472_6f70 ^ salt, epoch, it)
                        .next_u64();
                supmae_model::seeding::with_stream(step_seed, || model.forward(x))
            }
            Some(masks) => {
                let given = masks.len();
                match supmae_model::seeding::with_masks(masks, || model.forward(x)) {
                    (out, Ok(0)) => out,
                    (_, left) => {
                        let reason = match left {
                            Ok(left) => format!("{left} of the {given} given masks were not used"),
                            Err(short) => format!("{short} more masks needed than {given} given"),
                        };
                        return Err(TrainError::InvalidConfig {
                            field: "draws.drop_path",
                            reason,
                        });
                    }
                }
            }
        }?;
        let loss = soft_target_cross_entropy(logits, targets);
        let value = loss.clone().into_scalar().elem::<f64>();
        Ok(Forward {
            loss,
            values: vec![value],
        })
    }

    fn apply(
        &mut self,
        loss: Tensor<B, 1>,
        lr: Option<f64>,
        peers: &Collective<'_, B>,
    ) -> Result<()> {
        let model = self
            .model
            .as_ref()
            .unwrap_or_else(|| unreachable!("model present"));
        let grads = GradientsParams::from_grads(peers.backward(loss), model);
        let ready = if self.config.accum_iter > 1 {
            self.accumulator.accumulate(model, grads);
            lr.map(|_| std::mem::take(&mut self.accumulator).grads())
        } else {
            lr.map(|_| grads)
        };
        if let (Some(grads), Some(lr)) = (ready, lr) {
            let grads = peers.mean_grads(model, grads)?;
            let model = self
                .model
                .take()
                .unwrap_or_else(|| unreachable!("model present"));
            self.model = Some(self.adamw_step(model, grads, lr));
        }
        Ok(())
    }

    /// Loss and top-1/top-5 on the validation split.
    fn evaluate(&self) -> Result<Option<EvalReport>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let model = self.model().valid();
        let report = evaluate::<B::InnerBackend>(val, &self.device, |x| Ok(model.forward(x)?))?;
        Ok(Some(report))
    }

    fn log(&self, stats: EpochStats, eval: Option<EvalReport>) -> ClassifierLog {
        ClassifierLog {
            epoch: stats.epoch,
            lr: stats.lr,
            train_loss: stats.values.first().copied().unwrap_or(0.0),
            test_loss: eval.map(|r| r.loss),
            test_acc1: eval.map(|r| r.acc1),
            test_acc5: eval.map(|r| r.acc5),
            n_parameters: self.model().num_params(),
            images_per_sec: stats.images_per_sec,
            seconds: stats.seconds,
            images_seen: stats.images_seen,
        }
    }

    fn save(&self, path: &Path, history: &[ClassifierLog], best_acc1: Option<f64>) -> Result<()> {
        let meta = ClassifierMeta {
            format: crate::checkpoint::FORMAT,
            kind: ClassifierKind::Finetune,
            model: self.config.model.clone(),
            data: self.config.data.clone(),
            classes: self.classes.clone(),
            epochs_done: history.len(),
            history: history.to_vec(),
            best_acc1,
            recipe: serde_json::to_value(&self.config).map_err(json("the checkpoint's recipe"))?,
            extras: Default::default(),
        };
        let bad = |e: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: e,
        };
        let parts = CheckpointParts {
            meta: serde_json::to_vec(&meta).map_err(json("checkpoint metadata"))?,
            model: Recorder::<B>::record(&Rec::new(), self.model().clone().into_record(), ())
                .map_err(|e| bad(e.to_string()))?,
            optim_decay: crate::checkpoint::pack(
                &self
                    .groups
                    .iter()
                    .map(|g| Recorder::<B>::record(&Rec::new(), g.opt.to_record(), ()))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            optim_no_decay: Vec::new(),
        };
        write_atomic(path, &parts.encode())
    }
}

impl<B: AutodiffBackend> Finetuning<B> {
    /// One AdamW step per group with `lr · scale`.
    fn adamw_step(
        &mut self,
        model: VitClassifier<B>,
        mut grads: GradientsParams,
        lr: f64,
    ) -> VitClassifier<B> {
        let mut split: Vec<GradientsParams> = (0..self.groups.len())
            .map(|_| GradientsParams::new())
            .collect();
        model.visit(&mut SplitGrads::<B> {
            from: &mut grads,
            to: &mut split,
            group_of: &self.group_of,
            _b: std::marker::PhantomData,
        });
        let mut model = model;
        for (group, grads) in self.groups.iter_mut().zip(split) {
            if grads.is_empty() {
                continue;
            }
            model = group.opt.step(lr * group.scale, model, grads);
        }
        model
    }
}

/// Moves each gradient into its parameter's group.
struct SplitGrads<'a, B: AutodiffBackend> {
    from: &'a mut GradientsParams,
    to: &'a mut [GradientsParams],
    group_of: &'a HashMap<ParamId, usize>,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SplitGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(&g) = self.group_of.get(&param.id)
            && let Some(grad) = self.from.remove::<B::InnerBackend, D>(param.id)
        {
            self.to[g].register::<B::InnerBackend, D>(param.id, grad);
        }
    }
}
