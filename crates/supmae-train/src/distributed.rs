//! Data-parallel training: several devices of one process, or several processes.
//!
//! A run has `peers = devices · nodes` peers, each one device driven by one thread:
//! - devices of one process meet through burn-collective's in-process engine (its local
//!   all-reduce);
//! - processes (one device each, on one or several machines) meet over TCP at the `master`
//!   address, where process 0 sums every peer's buffer in rank order and sends the mean
//!   back. burn-collective 0.21's multi-node path cannot be used: its end-of-operation sync
//!   never clears its list of synced nodes, so a process's second global all-reduce waits
//!   forever (`docs/decisions.md`).
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
//! peer whatever the parameters' random ids are.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::TcpStream;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

mod hub;

/// Elements per all-reduce message (64 MiB of f32).
const BUCKET: usize = 1 << 24;

/// Where this process sits in a data-parallel run.
///
/// Two shapes, like PyTorch's launchers:
/// - one process driving `devices` devices, one thread (peer) each, meeting through
///   burn-collective's in-process engine;
/// - `nodes` processes, one device each (one process per GPU, as `torchrun` starts them),
///   on one or several machines, meeting at `master` (`HOST:PORT`), where process 0
///   listens.
///
/// Ranks are `node_rank · devices + device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributedConfig {
    /// Devices (peers) of this process.
    pub devices: usize,
    /// Processes in the run.
    pub nodes: usize,
    /// This process's index, `0..nodes`.
    pub node_rank: usize,
    /// `HOST:PORT` where process 0 listens and the others connect (needed with several
    /// processes).
    pub master: Option<String>,
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
            nodes: 1,
            node_rank: 0,
            master: None,
        }
    }

    /// Process `node_rank` of `nodes` (one device each), meeting at `master`.
    pub fn processes(nodes: usize, node_rank: usize, master: impl Into<String>) -> Self {
        Self {
            devices: 1,
            nodes,
            node_rank,
            master: Some(master.into()),
        }
    }

    /// Peers in the whole run.
    pub fn peers(&self) -> usize {
        self.devices * self.nodes
    }

    /// The rank of this process's `device`-th peer.
    pub fn rank(&self, device: usize) -> usize {
        self.node_rank * self.devices + device
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(TrainError::InvalidConfig { field, reason });
        if self.devices == 0 {
            return bad("devices", "must be at least 1".into());
        }
        if self.nodes == 0 {
            return bad("nodes", "must be at least 1".into());
        }
        if self.node_rank >= self.nodes {
            return bad(
                "node_rank",
                format!("({}) must be below nodes ({})", self.node_rank, self.nodes),
            );
        }
        if self.nodes > 1 {
            if self.devices > 1 {
                return bad(
                    "devices",
                    format!(
                        "({}) must be 1 with several processes: start one process per device \
                         (as torchrun does), with nodes = the number of processes",
                        self.devices
                    ),
                );
            }
            let Some(master) = &self.master else {
                return bad(
                    "master",
                    "is needed with several processes: HOST:PORT where process 0 listens \
                     (e.g. 10.0.0.1:29500)"
                        .into(),
                );
            };
            check_host_port(master)?;
        }
        Ok(())
    }
}

/// Checks a `HOST:PORT` address and returns its port.
fn check_host_port(address: &str) -> Result<u16> {
    let bad = || TrainError::InvalidConfig {
        field: "master",
        reason: format!("`{address}` is not a HOST:PORT address"),
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') {
        return Err(bad());
    }
    port.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(bad)
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
    link: Link,
    rank: usize,
    peers: usize,
    _b: PhantomData<B>,
}

#[derive(Debug)]
enum Link {
    /// Threads of one process: burn-collective's local engine.
    Local { id: PeerId, finished: bool },
    /// Processes: rank 0 holds one stream per other rank, the others one to rank 0.
    Hub(Vec<(usize, TcpStream)>),
}

impl<B: Backend> Peer<B> {
    /// Joins the run as this process's `device`-th peer on `on`, and waits until every
    /// peer has joined (process 0 waits for the others to connect; the others retry
    /// connecting to `master` for up to 10 minutes).
    ///
    /// Blocks; a peer that never comes keeps the others waiting, as in PyTorch.
    pub fn join(config: &DistributedConfig, device: usize, on: &B::Device) -> Result<Self> {
        config.validate()?;
        if device >= config.devices {
            return Err(TrainError::InvalidConfig {
                field: "devices",
                reason: format!("device {device} of {} is out of range", config.devices),
            });
        }
        let rank = config.rank(device);
        let peers = config.peers();
        let link = match &config.master {
            Some(master) if config.nodes > 1 => Link::Hub(hub::connect(master, rank, peers)?),
            _ => {
                let id = PeerId(rank as u32);
                let collective = CollectiveConfig::default().with_num_devices(config.devices);
                burn_collective::register::<B>(id, on.clone(), collective)
                    .map_err(|e| collective_error("joining the run", e))?;
                Link::Local {
                    id,
                    finished: false,
                }
            }
        };
        Ok(Self {
            link,
            rank,
            peers,
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

    /// The mean of `values` over all peers, element by element.
    ///
    /// # Shapes
    /// - `values`: `[N]`, the same `N` on every peer. Returns `[N]`.
    pub fn all_reduce_mean(&self, values: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        match &self.link {
            Link::Local { id, .. } => {
                let reduced = burn_collective::all_reduce::<B>(
                    *id,
                    values.into_primitive().tensor(),
                    ReduceOperation::Mean,
                )
                .map_err(|e| collective_error("all-reduce", e))?;
                Ok(Tensor::from_primitive(TensorPrimitive::Float(reduced)))
            }
            Link::Hub(streams) => {
                let device = values.device();
                let own = values
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| TrainError::Collective(format!("all-reduce: {e:?}")))?;
                let mean = hub::all_reduce_mean(streams, self.rank, self.peers, own)?;
                let n = mean.len();
                Ok(Tensor::from_data(TensorData::new(mean, [n]), &device))
            }
        }
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
        let mut pieces = flat.into_iter().map(|(_, t)| t).peekable();
        while let Some(t) = pieces.next() {
            bucket_len += t.dims()[0];
            bucket.push(t);
            let full = pieces
                .peek()
                .is_none_or(|next| bucket_len + next.dims()[0] > BUCKET);
            if full {
                let lens: Vec<usize> = bucket.iter().map(|t| t.dims()[0]).collect();
                let sum = self.all_reduce_mean(Tensor::cat(std::mem::take(&mut bucket), 0))?;
                let mut start = 0;
                for len in lens {
                    reduced.push(sum.clone().narrow(0, start, len));
                    start += len;
                }
                bucket_len = 0;
            }
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
        match &mut self.link {
            Link::Local { id, finished } if !*finished => {
                *finished = true;
                burn_collective::finish_collective::<B>(*id)
                    .map_err(|e| collective_error("leaving the run", e))
            }
            Link::Local { .. } => Ok(()),
            Link::Hub(streams) => {
                for (_, s) in streams.drain(..) {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
                Ok(())
            }
        }
    }
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
