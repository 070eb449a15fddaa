//! Data-parallel training on Burn's collective engine (`burn-collective`).
//!
//! A run has `peers = devices · nodes` peers. Each peer is one device driven by one thread:
//! several devices of one process (one node) meet through the collective's local server,
//! several processes (nodes) meet through its global orchestrator (`supmae orchestrator`,
//! or [`burn_collective::start_global_orchestrator`]) and exchange tensors peer to peer over
//! WebSockets.
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

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Elements per all-reduce message (64 MiB of f32).
const BUCKET: usize = 1 << 24;

/// Where this process sits in a data-parallel run.
///
/// `devices` peers run in this process (one thread each); with `nodes > 1`, the run spans
/// `nodes` processes (usually one per machine), which all need the orchestrator's address,
/// their own address as the others can reach it, and the port of their tensor service.
///
/// Peer ranks are `node_rank · devices + device`, so every node must use the same
/// `devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributedConfig {
    /// Devices (peers) of this process.
    pub devices: usize,
    /// Processes in the run.
    pub nodes: usize,
    /// This process's index, `0..nodes`.
    pub node_rank: usize,
    /// The orchestrator, e.g. `ws://10.0.0.1:3000` (needed with several nodes).
    pub orchestrator: Option<String>,
    /// This node's address as other nodes reach it, e.g. `ws://10.0.0.2:3001`; its port is
    /// the tensor service's (needed with several nodes).
    pub node_address: Option<String>,
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
            orchestrator: None,
            node_address: None,
        }
    }

    /// Node `node_rank` of `nodes`, each with `devices` peers.
    pub fn multi_node(
        devices: usize,
        nodes: usize,
        node_rank: usize,
        orchestrator: impl Into<String>,
        node_address: impl Into<String>,
    ) -> Self {
        Self {
            devices,
            nodes,
            node_rank,
            orchestrator: Some(orchestrator.into()),
            node_address: Some(node_address.into()),
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
            let Some(orchestrator) = &self.orchestrator else {
                return bad(
                    "orchestrator",
                    "is needed with several nodes (e.g. ws://10.0.0.1:3000, where \
                     `supmae orchestrator --port 3000` runs)"
                        .into(),
                );
            };
            check_ws("orchestrator", orchestrator)?;
            let Some(address) = &self.node_address else {
                return bad(
                    "node_address",
                    "is needed with several nodes: this node's address as the others reach \
                     it (e.g. ws://10.0.0.2:3001)"
                        .into(),
                );
            };
            check_ws("node_address", address)?;
        }
        Ok(())
    }

    fn collective(&self) -> Result<CollectiveConfig> {
        self.validate()?;
        let config = CollectiveConfig::default().with_num_devices(self.devices);
        if self.nodes == 1 {
            return Ok(config);
        }
        let (Some(orchestrator), Some(address)) = (&self.orchestrator, &self.node_address) else {
            return Err(TrainError::InvalidConfig {
                field: "orchestrator",
                reason: "and node_address are needed with several nodes".into(),
            });
        };
        let port = check_ws("node_address", address)?;
        let parse = |field: &'static str, s: &str| {
            s.parse().map_err(|e: String| TrainError::InvalidConfig {
                field,
                reason: format!("`{s}`: {e}"),
            })
        };
        Ok(config
            .with_num_nodes(self.nodes as u32)
            .with_global_address(parse("orchestrator", orchestrator)?)
            .with_node_address(parse("node_address", address)?)
            .with_data_service_port(port))
    }
}

/// Checks a `ws://host:port` address and returns its port.
fn check_ws(field: &'static str, address: &str) -> Result<u16> {
    let bad = || TrainError::InvalidConfig {
        field,
        reason: format!("`{address}` is not a ws://HOST:PORT address"),
    };
    let rest = address.strip_prefix("ws://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() {
        return Err(bad());
    }
    port.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(bad)
}

fn collective_error(what: &str, e: impl std::fmt::Debug) -> TrainError {
    TrainError::Collective(format!("{what}: {e:?}"))
}

/// One registered peer of a data-parallel run, on backend `B` (the inner backend of the
/// autodiff backend being trained).
///
/// Dropping it leaves the collective.
#[derive(Debug)]
pub struct Peer<B: Backend> {
    id: PeerId,
    rank: usize,
    peers: usize,
    finished: bool,
    _b: PhantomData<B>,
}

impl<B: Backend> Peer<B> {
    /// Registers this process's `device`-th peer on `on` and waits until every peer of the
    /// run has registered (with several nodes, until the orchestrator has seen them all).
    ///
    /// Blocks; a peer that never comes keeps the others waiting, as in PyTorch.
    pub fn join(config: &DistributedConfig, device: usize, on: &B::Device) -> Result<Self> {
        let collective = config.collective()?;
        if device >= config.devices {
            return Err(TrainError::InvalidConfig {
                field: "devices",
                reason: format!("device {device} of {} is out of range", config.devices),
            });
        }
        let rank = config.rank(device);
        let id = PeerId(rank as u32);
        burn_collective::register::<B>(id, on.clone(), collective)
            .map_err(|e| collective_error("joining the run", e))?;
        Ok(Self {
            id,
            rank,
            peers: config.peers(),
            finished: false,
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
        let reduced = burn_collective::all_reduce::<B>(
            self.id,
            values.into_primitive().tensor(),
            ReduceOperation::Mean,
        )
        .map_err(|e| collective_error("all-reduce", e))?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(reduced)))
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
                    reduced.push(sum.clone().slice([start..start + len]));
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
            if !(diff <= 1e-6 * scale.max(1e-6)) {
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
        self.finished = true;
        burn_collective::finish_collective::<B>(self.id)
            .map_err(|e| collective_error("leaving the run", e))
    }
}

impl<B: Backend> Drop for Peer<B> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = burn_collective::finish_collective::<B>(self.id);
        }
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
