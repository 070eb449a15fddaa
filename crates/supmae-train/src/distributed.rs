//! Data-parallel training: several devices of one process, and several processes.
//!
//! A run has `peers = devices · processes` peers, each one device driven by one thread:
//! - the devices of one process meet through burn-collective's in-process engine (its local
//!   all-reduce);
//! - processes, on one or many machines, meet through MPI (feature `mpi`, `MpiWorld`):
//!   `mpirun` / `srun` start them, and MPI tells each its rank, the number of processes and
//!   its rank on its machine. With several devices per process the reduction is
//!   hierarchical, as Horovod's: the devices of a process sum onto its first device, the
//!   first devices sum across processes with `MPI_Allreduce`, and the result is broadcast
//!   back to the other devices.
//!
//! Every peer starts from the same weights (same seed or checkpoint: [`Peer::check_same`]
//! verifies it), loads its own part of every global batch
//! ([`supmae_data::Shard`]), and before each optimizer step the gradients are averaged over
//! all peers ([`Peer::all_reduce_grads`]). Every peer then applies the same update to the
//! same weights, so all peers hold identical parameters after every step, equal (to
//! floating-point reduction order) to one process training on the combined batch. This is
//! what PyTorch's DistributedDataParallel does in the official code.
//!
//! The gradients travel as one flat buffer (a few buckets for large models) rather than one
//! message per parameter, and in the module's visiting order, which is the same on every
//! peer whatever the parameters' random ids are. Each peer also says, in the same message,
//! whether its gradients hold a NaN or an infinity, so that all peers stop at the same step
//! with an error naming the ranks that saw one.

use std::collections::HashMap;
use std::marker::PhantomData;
#[cfg(feature = "mpi")]
use std::sync::Arc;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};

use crate::error::{Result, TrainError};

#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "mpi")]
pub use mpi::{MpiWorld, first_device};

/// Elements per all-reduce message (64 MiB of f32).
const BUCKET: usize = 1 << 24;

/// Where this process sits in a data-parallel run: `devices` peers (one thread each) in
/// this process, and, with the `mpi` feature, the other processes of an MPI launch.
///
/// Ranks are `process_rank · devices + device`; rank 0 writes the run folder.
#[derive(Debug, Clone)]
pub struct DistributedConfig {
    /// Devices (peers) of this process.
    pub devices: usize,
    /// The processes of the run, when an MPI launcher started this one (`None`: this
    /// process alone).
    #[cfg(feature = "mpi")]
    pub mpi: Option<Arc<MpiWorld>>,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self::local(1)
    }
}

impl DistributedConfig {
    /// `devices` peers in this one process.
    pub fn local(devices: usize) -> Self {
        Self {
            devices,
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// `devices` peers in each process of an MPI world.
    #[cfg(feature = "mpi")]
    pub fn with_mpi(devices: usize, world: Arc<MpiWorld>) -> Self {
        Self {
            devices,
            mpi: Some(world),
        }
    }

    /// The MPI world, when it has more than one process.
    #[cfg(feature = "mpi")]
    fn world(&self) -> Option<&Arc<MpiWorld>> {
        self.mpi.as_ref().filter(|w| w.size() > 1)
    }

    /// Processes in the run.
    pub fn processes(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(w) = self.world() {
            return w.size();
        }
        1
    }

    /// This process's index, `0..processes`.
    pub fn process_rank(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(w) = self.world() {
            return w.rank();
        }
        0
    }

    /// Peers in the whole run.
    pub fn peers(&self) -> usize {
        self.devices * self.processes()
    }

    /// The rank of this process's `device`-th peer.
    pub fn rank(&self, device: usize) -> usize {
        self.process_rank() * self.devices + device
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.devices == 0 {
            return Err(TrainError::InvalidConfig {
                field: "devices",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

fn collective_error(what: &str, e: impl std::fmt::Debug) -> TrainError {
    TrainError::Collective(format!("{what}: {e:?}"))
}

/// One peer of a data-parallel run, on backend `B` (the inner backend of the autodiff
/// backend being trained).
///
/// Dropping it leaves the run.
#[derive(Debug)]
pub struct Peer<B: Backend> {
    /// burn-collective, with several devices in this process.
    local: Option<Local>,
    /// The other processes, in an MPI run of more than one process.
    #[cfg(feature = "mpi")]
    mpi: Option<Arc<MpiWorld>>,
    rank: usize,
    peers: usize,
    _b: PhantomData<B>,
}

#[derive(Debug)]
struct Local {
    id: PeerId,
    /// The process's first device, which talks to the other processes.
    #[cfg(feature = "mpi")]
    root: PeerId,
    finished: bool,
}

impl<B: Backend> Peer<B> {
    /// Joins the run as this process's `device`-th peer on `on`, and waits until every
    /// device of this process has joined.
    ///
    /// Every peer of the run must join (and then call the same collective operations in the
    /// same order); one that never comes keeps the others waiting, as in PyTorch.
    pub fn join(config: &DistributedConfig, device: usize, on: &B::Device) -> Result<Self> {
        config.validate()?;
        if device >= config.devices {
            return Err(TrainError::InvalidConfig {
                field: "devices",
                reason: format!("device {device} of {} is out of range", config.devices),
            });
        }
        let local = if config.devices > 1 {
            let id = PeerId(device as u32);
            let collective = CollectiveConfig::default().with_num_devices(config.devices);
            burn_collective::register::<B>(id, on.clone(), collective)
                .map_err(|e| collective_error("joining the run", e))?;
            Some(Local {
                id,
                #[cfg(feature = "mpi")]
                root: PeerId(0),
                finished: false,
            })
        } else {
            None
        };
        Ok(Self {
            local,
            #[cfg(feature = "mpi")]
            mpi: config.world().cloned(),
            rank: config.rank(device),
            peers: config.peers(),
            _b: PhantomData,
        })
    }

    /// This peer's rank, `0..peers`; rank 0 writes logs and checkpoints.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Peers in the run.
    pub fn peers(&self) -> usize {
        self.peers
    }

    /// The mean of `values` over all peers, element by element: the same bits on every
    /// peer.
    ///
    /// # Shapes
    /// - `values`: `[N]`, the same `N` on every peer. Returns `[N]`.
    pub fn all_reduce_mean(&self, values: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        #[cfg(feature = "mpi")]
        if let Some(world) = &self.mpi {
            return self.hierarchical_mean(world, values);
        }
        match &self.local {
            Some(local) => {
                let reduced = burn_collective::all_reduce::<B>(
                    local.id,
                    values.into_primitive().tensor(),
                    ReduceOperation::Mean,
                )
                .map_err(|e| collective_error("all-reduce", e))?;
                Ok(Tensor::from_primitive(TensorPrimitive::Float(reduced)))
            }
            None => Ok(values),
        }
    }

    /// The mean over every device of every process: sum onto this process's first device,
    /// sum across processes (MPI), divide, broadcast to this process's other devices.
    #[cfg(feature = "mpi")]
    fn hierarchical_mean(&self, world: &MpiWorld, values: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        let device = values.device();
        let float =
            |t: B::FloatTensorPrimitive| Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(t));
        let process_sum = match &self.local {
            None => Some(values),
            Some(local) => burn_collective::reduce::<B>(
                local.id,
                values.into_primitive().tensor(),
                ReduceOperation::Sum,
                local.root,
            )
            .map_err(|e| collective_error("reducing this process's devices", e))?
            .map(float),
        };
        let mean = match process_sum {
            Some(sum) => {
                let own = sum
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| TrainError::Collective(format!("all-reduce: {e:?}")))?;
                let mut total = world.all_reduce_sum(&own);
                let k = self.peers as f32;
                for v in &mut total {
                    *v /= k;
                }
                let n = total.len();
                Some(Tensor::<B, 1>::from_data(
                    TensorData::new(total, [n]),
                    &device,
                ))
            }
            None => None,
        };
        match &self.local {
            None => mean.ok_or_else(|| TrainError::Collective("all-reduce: no result".into())),
            Some(local) => {
                burn_collective::broadcast::<B>(local.id, mean.map(|t| t.into_primitive().tensor()))
                    .map(float)
                    .map_err(|e| collective_error("broadcasting to this process's devices", e))
            }
        }
    }

    /// The mean of `values` over all peers, and the ranks whose own `values` held a NaN or
    /// an infinity (the same list on every peer).
    ///
    /// # Shapes
    /// - `values`: `[N]`, the same `N` on every peer. Returns `[N]`.
    pub fn all_reduce_mean_checked(
        &self,
        values: Tensor<B, 1>,
    ) -> Result<(Tensor<B, 1>, Vec<usize>)> {
        let n = values.dims()[0];
        let mut flags = vec![0f32; self.peers];
        if !all_finite(&values) {
            flags[self.rank] = 1.0;
        }
        let flags = Tensor::from_data(TensorData::new(flags, [self.peers]), &values.device());
        let mean = self.all_reduce_mean(Tensor::cat(vec![values, flags], 0))?;
        let seen: Vec<f32> = mean
            .clone()
            .narrow(0, n, self.peers)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| TrainError::Collective(format!("all-reduce: {e:?}")))?;
        let ranks = (0..self.peers).filter(|&r| seen[r] > 0.0).collect();
        Ok((mean.narrow(0, 0, n), ranks))
    }

    /// Replaces every gradient of `grads` by its mean over all peers.
    ///
    /// The gradients of `module`'s parameters are flattened, in the module's visiting order,
    /// into buckets of at most 2^24 values, averaged, and put back in their shapes.
    /// Gradients of parameters outside `module` are left alone.
    pub fn all_reduce_grads<AB, M>(
        &self,
        module: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams>
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        let mut take = TakeGrads::<AB> {
            grads,
            flat: Vec::new(),
            _b: PhantomData,
        };
        module.visit(&mut take);
        let TakeGrads { grads, flat, .. } = take;
        if flat.is_empty() {
            return Ok(grads);
        }
        // Bucket the flat gradients, reduce each bucket, then cut the results back up.
        let ids: Vec<ParamId> = flat.iter().map(|(id, _)| *id).collect();
        let mut reduced: Vec<Tensor<B, 1>> = Vec::with_capacity(flat.len());
        let mut bucket: Vec<Tensor<B, 1>> = Vec::new();
        let mut bucket_len = 0;
        let mut non_finite: Vec<usize> = Vec::new();
        let mut pieces = flat.into_iter().map(|(_, t)| t).peekable();
        while let Some(t) = pieces.next() {
            bucket_len += t.dims()[0];
            bucket.push(t);
            let full = pieces
                .peek()
                .is_none_or(|next| bucket_len + next.dims()[0] > BUCKET);
            if full {
                let lens: Vec<usize> = bucket.iter().map(|t| t.dims()[0]).collect();
                let (sum, ranks) =
                    self.all_reduce_mean_checked(Tensor::cat(std::mem::take(&mut bucket), 0))?;
                non_finite.extend(ranks);
                let mut start = 0;
                for len in lens {
                    reduced.push(sum.clone().narrow(0, start, len));
                    start += len;
                }
                bucket_len = 0;
            }
        }
        if !non_finite.is_empty() {
            non_finite.sort_unstable();
            non_finite.dedup();
            return Err(TrainError::NonFiniteOnPeers {
                what: "a gradient",
                ranks: non_finite,
                peers: self.peers,
            });
        }
        let mut put = PutGrads::<AB> {
            grads,
            reduced: ids.into_iter().zip(reduced).collect(),
            _b: PhantomData,
        };
        module.visit(&mut put);
        Ok(put.grads)
    }

    /// Checks that every peer holds the same parameters as this one (to 1e-6 relative):
    /// peers must start from the same seed or checkpoint.
    pub fn check_same<AB, M>(&self, module: &M) -> Result<()>
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        let mut flat = Flatten::<AB> {
            out: Vec::new(),
            _b: PhantomData,
        };
        module.visit(&mut flat);
        for (i, chunk) in flat.out.chunks(64).enumerate() {
            let own = Tensor::cat(chunk.to_vec(), 0);
            let mean = self.all_reduce_mean(own.clone())?;
            let diff: f32 = (mean - own.clone()).abs().max().into_scalar().elem();
            let scale: f32 = own.abs().max().into_scalar().elem();
            let same = diff <= 1e-6 * scale.max(1e-6);
            if !same {
                return Err(TrainError::Collective(format!(
                    "peer {} holds different weights from the run's mean (max difference \
                     {diff:e} in parameter chunk {i}): start every peer from the same seed \
                     or checkpoint",
                    self.rank
                )));
            }
        }
        Ok(())
    }

    /// Leaves the run (also done on drop).
    pub fn finish(mut self) -> Result<()> {
        self.leave()
    }

    fn leave(&mut self) -> Result<()> {
        match &mut self.local {
            Some(local) if !local.finished => {
                local.finished = true;
                burn_collective::finish_collective::<B>(local.id)
                    .map_err(|e| collective_error("leaving the run", e))
            }
            _ => Ok(()),
        }
    }
}

/// Whether every value is finite.
fn all_finite<B: Backend>(values: &Tensor<B, 1>) -> bool {
    values
        .clone()
        .is_finite()
        .all()
        .int()
        .into_scalar()
        .elem::<i64>()
        == 1
}

impl<B: Backend> Drop for Peer<B> {
    fn drop(&mut self) {
        let _ = self.leave();
    }
}

/// Takes the gradients of a module's parameters out of a [`GradientsParams`], flattened,
/// in visiting order.
struct TakeGrads<AB: AutodiffBackend> {
    grads: GradientsParams,
    flat: Vec<(ParamId, Tensor<AB::InnerBackend, 1>)>,
    _b: PhantomData<AB>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for TakeGrads<AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        if let Some(g) = self.grads.remove::<AB::InnerBackend, D>(param.id) {
            let n = g.shape().num_elements();
            self.flat.push((param.id, g.reshape([n])));
        }
    }
}

/// Puts reduced flat gradients back in their parameters' shapes.
struct PutGrads<AB: AutodiffBackend> {
    grads: GradientsParams,
    reduced: HashMap<ParamId, Tensor<AB::InnerBackend, 1>>,
    _b: PhantomData<AB>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for PutGrads<AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        if let Some(flat) = self.reduced.remove(&param.id) {
            let dims = param.val().dims();
            self.grads
                .register::<AB::InnerBackend, D>(param.id, flat.reshape(dims));
        }
    }
}

/// A module's parameters, flattened, in visiting order.
struct Flatten<AB: AutodiffBackend> {
    out: Vec<Tensor<AB::InnerBackend, 1>>,
    _b: PhantomData<AB>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for Flatten<AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let t = param.val().inner();
        let n = t.shape().num_elements();
        self.out.push(t.reshape([n]));
    }
}
