//! The linear-probing task: frozen features, the BatchNorm (statistics synchronised over
//! the peers) and the head's loss, the head-only LARS step, evaluation and the checkpoint.

use std::path::Path;

use burn::module::{AutodiffModule, Module, Param};
use burn::prelude::*;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use supmae_data::HostBatch;

use super::resume::momentum_bytes;
use super::{HeadGrads, Linprobing};
use crate::checkpoint::{CheckpointParts, write_atomic};
use crate::classifier::{
    ClassifierKind, ClassifierLog, ClassifierMeta, EvalReport, Rec, evaluate, one_hot_targets,
    soft_target_cross_entropy,
};
use crate::engine::{At, Collective, EpochStats, Forward, Plan, Task};
use crate::error::{Result, TrainError, json};
use crate::probe::{LinearProbe, lars_update};

impl<B: AutodiffBackend> Task<B> for Linprobing<B> {
    type Model = LinearProbe<B>;
    type Log = ClassifierLog;
    type Draws = ();
    type Eval = EvalReport;

    fn model(&self) -> &LinearProbe<B> {
        &self.model
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
        self.pending = None;
    }

    fn forward(
        &self,
        _at: At,
        batch: HostBatch,
        _draws: (),
        peers: &Collective<'_, B>,
    ) -> Result<Forward<B>> {
        let classes = self.config.model.num_classes;
        let (c, s) = (self.config.model.in_chans, self.config.model.img_size);
        let n = batch.len();
        crate::classifier::check_batch(&batch, c, s)?;
        let labels: Vec<usize> = batch.labels.iter().map(|&l| l as usize).collect();
        let (x, _) = batch.into_tensors::<B::InnerBackend>(&self.device);
        let features = Tensor::<B, 2>::from_inner(self.frozen.embed(x)?);
        let targets = Tensor::<B, 2>::from_data(
            TensorData::new(one_hot_targets(&labels, classes, 0.0), [n, classes]),
            &self.device,
        );
        let normed = self
            .model
            .bn
            .forward_with(features, true, peers.count(), |t| {
                if peers.count() == 1 {
                    return Ok(t);
                }
                Ok(Tensor::from_inner(peers.mean(t.inner())?))
            })?;
        let logits = self.model.encoder.head.forward(normed);
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
        let grads = peers.backward(loss);
        let head = &self.model.encoder.head;
        let gw = head.weight.val().grad(&grads);
        let gb = head.bias.as_ref().and_then(|b| b.val().grad(&grads));
        let (Some(gw), Some(gb)) = (gw, gb) else {
            return Err(TrainError::InvalidConfig {
                field: "model",
                reason: "the probe's head received no gradient".into(),
            });
        };
        self.pending = Some(match self.pending.take() {
            Some((w, b)) => (w + gw, b + gb),
            None => (gw, gb),
        });
        if let Some(lr) = lr
            && let Some((gw, gb)) = self.pending.take()
        {
            let (gw, gb) = mean_head_grads::<B>(peers, gw, gb)?;
            self.lars_step(gw, gb, lr);
        }
        Ok(())
    }

    /// Loss and top-1/top-5 on the validation split (BatchNorm with running statistics).
    fn evaluate(&self) -> Result<Option<EvalReport>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let bn = self.model.bn.valid();
        let head = self.model.encoder.head.valid();
        let report = evaluate::<B::InnerBackend>(val, &self.device, |x| {
            let features = self.frozen.embed(x)?;
            Ok(head.forward(bn.forward(features, false)))
        })?;
        Ok(Some(report))
    }

    fn log(&self, stats: EpochStats, eval: Option<EvalReport>) -> ClassifierLog {
        let (d, c) = (self.config.model.embed_dim, self.config.model.num_classes);
        ClassifierLog {
            epoch: stats.epoch,
            lr: stats.lr,
            train_loss: stats.values.first().copied().unwrap_or(0.0),
            test_loss: eval.map(|r| r.loss),
            test_acc1: eval.map(|r| r.acc1),
            test_acc5: eval.map(|r| r.acc5),
            n_parameters: d * c + c,
            images_per_sec: stats.images_per_sec,
            seconds: stats.seconds,
            images_seen: stats.images_seen,
        }
    }

    fn save(&self, path: &Path, history: &[ClassifierLog], best_acc1: Option<f64>) -> Result<()> {
        let meta = ClassifierMeta {
            format: crate::checkpoint::FORMAT,
            kind: ClassifierKind::Linprobe,
            model: self.config.model.clone(),
            data: self.config.data.clone(),
            classes: self.classes.clone(),
            epochs_done: history.len(),
            history: history.to_vec(),
            best_acc1,
            recipe: serde_json::to_value(&self.config).map_err(json("the checkpoint's recipe"))?,
            extras: Default::default(),
        };
        let parts = CheckpointParts {
            meta: serde_json::to_vec(&meta).map_err(json("checkpoint metadata"))?,
            model: Recorder::<B>::record(&Rec::new(), self.model.clone().into_record(), ())
                .map_err(|e| TrainError::Checkpoint {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?,
            optim_decay: crate::checkpoint::pack(&[
                momentum_bytes(self.mu_weight.as_ref())?,
                momentum_bytes(self.mu_bias.as_ref())?,
            ]),
            optim_no_decay: Vec::new(),
        };
        write_atomic(path, &parts.encode())
    }
}

impl<B: AutodiffBackend> Linprobing<B> {
    fn lars_step(
        &mut self,
        gw: Tensor<B::InnerBackend, 2>,
        gb: Tensor<B::InnerBackend, 1>,
        lr: f64,
    ) {
        let cfg = self.config.lars;
        let head = &mut self.model.encoder.head;
        let (w, mw) = lars_update(
            head.weight.val().inner(),
            gw,
            self.mu_weight.take(),
            lr,
            &cfg,
        );
        head.weight = Param::initialized(head.weight.id, Tensor::from_inner(w).require_grad());
        self.mu_weight = Some(mw);
        if let Some(bias) = head.bias.take() {
            let (b, mb) = lars_update(bias.val().inner(), gb, self.mu_bias.take(), lr, &cfg);
            head.bias = Some(Param::initialized(
                bias.id,
                Tensor::from_inner(b).require_grad(),
            ));
            self.mu_bias = Some(mb);
        }
    }
}

/// The head's gradients averaged over the peers (unchanged without any).
fn mean_head_grads<B: AutodiffBackend>(
    peers: &Collective<'_, B>,
    gw: Tensor<B::InnerBackend, 2>,
    gb: Tensor<B::InnerBackend, 1>,
) -> Result<HeadGrads<B>> {
    if peers.count() == 1 {
        return Ok((gw, gb));
    }
    let [d, c] = gw.dims();
    let flat = Tensor::cat(vec![gw.reshape([d * c]), gb], 0);
    let mean = peers.mean(flat)?;
    Ok((
        mean.clone().narrow(0, 0, d * c).reshape([d, c]),
        mean.narrow(0, d * c, c),
    ))
}
