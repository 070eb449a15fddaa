//! A learner's place in a data-parallel run, or none: rank, peer count and the collective
//! operations a step needs, compiled to no-ops without the `distributed` feature.

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::error::Result;

/// The peer a learner trains as: `Some` in a data-parallel run.
#[cfg(feature = "distributed")]
pub type PeerArg<B> = Option<crate::distributed::Peer<<B as AutodiffBackend>::InnerBackend>>;
/// The peer a learner trains as (always `None` without the `distributed` feature).
#[cfg(not(feature = "distributed"))]
pub type PeerArg<B> = Option<std::marker::PhantomData<B>>;

/// This learner's peer, if any, and what it averages.
pub(crate) struct Peers<B: AutodiffBackend> {
    #[cfg(feature = "distributed")]
    peer: PeerArg<B>,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> Peers<B> {
    pub fn new(peer: PeerArg<B>) -> Self {
        #[cfg(not(feature = "distributed"))]
        let _ = peer;
        Self {
            #[cfg(feature = "distributed")]
            peer,
            _b: std::marker::PhantomData,
        }
    }

    /// This peer's rank (0 without a run).
    pub fn rank(&self) -> usize {
        #[cfg(feature = "distributed")]
        if let Some(p) = &self.peer {
            return p.rank();
        }
        0
    }

    /// Peers of the run (1 without one).
    pub fn count(&self) -> usize {
        #[cfg(feature = "distributed")]
        if let Some(p) = &self.peer {
            return p.peers();
        }
        1
    }

    /// Whether this peer writes the run folder.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// A run (and its resume) needs the number of peers its recipe was made for.
    pub fn check_count(&self, want: usize) -> Result<()> {
        if want != self.count() {
            return Err(crate::error::TrainError::InvalidConfig {
                field: "peers",
                reason: format!(
                    "the run is set up for {want} data-parallel peer(s) but {} take part; a \
                     run (and its resume) needs the same number of peers throughout",
                    self.count()
                ),
            });
        }
        Ok(())
    }

    /// This peer's share of every global batch, in a run.
    pub fn shard(&self) -> Option<supmae_data::Shard> {
        (self.count() > 1).then(|| supmae_data::Shard {
            rank: self.rank(),
            peers: self.count(),
        })
    }

    /// The mean of `values` over the peers (unchanged without any).
    ///
    /// # Shapes
    /// - values: `[N]`, the same `N` on every peer.
    pub fn mean(&self, values: Tensor<B::InnerBackend, 1>) -> Result<Tensor<B::InnerBackend, 1>> {
        #[cfg(feature = "distributed")]
        if let Some(p) = &self.peer {
            return p.all_reduce_mean(values);
        }
        Ok(values)
    }

    /// The mean of scalars (the losses of a step) over the peers. A peer whose own values
    /// are NaN or infinite stops every peer with [`crate::TrainError::NonFiniteOnPeers`],
    /// naming it.
    pub fn mean_values(&self, values: Vec<f64>, device: &B::Device) -> Result<Vec<f64>> {
        #[cfg(feature = "distributed")]
        if let Some(p) = &self.peer {
            let n = values.len();
            let t = Tensor::<B::InnerBackend, 1>::from_data(
                TensorData::new(values.iter().map(|&v| v as f32).collect(), [n]),
                device,
            );
            let (mean, ranks) = p.all_reduce_mean_checked(t)?;
            if !ranks.is_empty() {
                return Err(crate::error::TrainError::NonFiniteOnPeers {
                    what: "the loss",
                    ranks,
                    peers: p.peers(),
                });
            }
            return Ok(mean
                .into_data()
                .convert::<f64>()
                .to_vec::<f64>()
                .unwrap_or_else(|_| vec![f64::NAN; n]));
        }
        let _ = device;
        Ok(values)
    }

    /// Replaces every gradient of `model`'s parameters by its mean over the peers.
    pub fn mean_grads<M: AutodiffModule<B>>(
        &self,
        model: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams> {
        #[cfg(feature = "distributed")]
        if let Some(p) = &self.peer {
            return p.all_reduce_grads(model, grads);
        }
        let _ = model;
        Ok(grads)
    }

    /// Checks every peer holds `model`'s parameters (peers start from the same seed or
    /// checkpoint).
    pub fn check_same<M: AutodiffModule<B>>(&self, model: &M) -> Result<()> {
        #[cfg(feature = "distributed")]
        if let Some(p) = &self.peer {
            return p.check_same(model);
        }
        let _ = model;
        Ok(())
    }
}
