//! What a task may do with the other peers, and the lock that keeps Burn 0.21's autodiff
//! sound when several threads train in one process.
//!
//! Burn 0.21 ends every `backward()` with a sweep over every autodiff graph of the
//! process, and frees the steps of graphs it judges unused by their reference counts
//! (tracel-ai/burn#5573, fixed after 0.21). While another thread is recording an op, its
//! inputs' counts can drop for a moment, so the sweep can free a step that the op is about
//! to point to, and a gradient is lost without an error. In-process data parallelism (one
//! thread per device) and two learners in one program's threads both meet it.
//!
//! So graphs are built under a shared lock and `backward()` runs under the exclusive one:
//! any number of threads build graphs at once, and a backward pass waits until none is
//! half-way through an op. A collective (a mean over the peers) inside a forward releases
//! the shared lock while it waits for the other peers, so a peer waiting to run its
//! backward pass cannot deadlock the group; between ops every node is held by a live
//! tensor, so releasing there is safe.

use std::cell::RefCell;
use std::sync::{RwLock, RwLockReadGuard};

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::error::Result;
use crate::peers::Peers;

/// Held shared while a graph is built, exclusively while one is differentiated.
static AUTODIFF: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    AUTODIFF
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The peers of a run, as a [`super::Task`] sees them in [`super::Task::forward`] and
/// [`super::Task::apply`].
pub struct Collective<'a, B: AutodiffBackend> {
    peers: &'a Peers<B>,
    device: &'a B::Device,
    /// The shared lock, held while a forward builds its graph.
    building: RefCell<Option<RwLockReadGuard<'static, ()>>>,
}

impl<'a, B: AutodiffBackend> Collective<'a, B> {
    /// For a forward: holds the shared lock until dropped.
    pub(crate) fn building(peers: &'a Peers<B>, device: &'a B::Device) -> Self {
        Self {
            peers,
            device,
            building: RefCell::new(Some(shared())),
        }
    }

    /// For an update: no lock held ([`Self::backward`] takes the exclusive one).
    pub(crate) fn updating(peers: &'a Peers<B>, device: &'a B::Device) -> Self {
        Self {
            peers,
            device,
            building: RefCell::new(None),
        }
    }

    /// This peer's rank (0 without data parallelism).
    pub fn rank(&self) -> usize {
        self.peers.rank()
    }

    /// Peers of the run (1 without data parallelism).
    pub fn count(&self) -> usize {
        self.peers.count()
    }

    /// The device the task trains on.
    pub fn device(&self) -> &B::Device {
        self.device
    }

    /// The mean of `values` over the peers (unchanged without any). Every peer must call
    /// it at the same point.
    ///
    /// # Shapes
    /// - values: `[N]`, the same `N` on every peer.
    pub fn mean(&self, values: Tensor<B::InnerBackend, 1>) -> Result<Tensor<B::InnerBackend, 1>> {
        if self.peers.count() == 1 {
            return Ok(values);
        }
        let held = self.building.borrow_mut().take();
        let mean = self.peers.mean(values);
        if held.is_some() {
            *self.building.borrow_mut() = Some(shared());
        }
        mean
    }

    /// Every gradient of `model`'s parameters replaced by its mean over the peers.
    pub fn mean_grads<M: AutodiffModule<B>>(
        &self,
        model: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams> {
        self.peers.mean_grads(model, grads)
    }

    /// `loss.backward()`, with no other thread of the process half-way through building a
    /// graph.
    ///
    /// # Shapes
    /// - loss: `[1]`
    pub fn backward(&self, loss: Tensor<B, 1>) -> <B as AutodiffBackend>::Gradients {
        // This thread's own shared lock, if held, would wait on itself.
        drop(self.building.borrow_mut().take());
        let _exclusive = AUTODIFF
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loss.backward()
    }
}
