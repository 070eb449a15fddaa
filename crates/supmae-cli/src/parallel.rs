//! The data-parallel options and running one training thread per local device.

use supmae::burn::tensor::backend::AutodiffBackend;
use supmae::train::ProgressMode;

use crate::common::{CliError, Result};

/// The peer a thread trains as, in a data-parallel run.
#[cfg(feature = "distributed")]
pub type PeerOf<B> = Option<supmae::train::Peer<<B as AutodiffBackend>::InnerBackend>>;
/// The peer a thread trains as (always `None` without the `distributed` feature).
#[cfg(not(feature = "distributed"))]
pub type PeerOf<B> = Option<std::marker::PhantomData<B>>;

/// Every peer loads --batch-size images, so a step sees batch x accum x peers images and
/// lr = blr x that / 256; peers end every step with identical parameters. Every process
/// runs the same command (same options, seed and data) with its own --node-rank; with
/// several machines, give each process its GPU with CUDA_VISIBLE_DEVICES.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[command(next_help_heading = "Data-parallel options")]
pub struct Parallel {
    /// Train on N devices of this machine, one thread each (GPUs 0..N-1), through
    /// burn-collective
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub devices: usize,
    /// Run as one of K processes, one device each (one process per GPU, on one or several
    /// machines)
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub nodes: usize,
    /// This process's index, 0..K; process 0 writes the run folder
    #[arg(long, value_name = "R", default_value_t = 0)]
    pub node_rank: usize,
    /// Where process 0 listens and the others connect
    #[arg(long, value_name = "HOST:PORT")]
    pub master: Option<String>,
}

impl Parallel {
    /// Peers of the whole run.
    pub fn peers(&self) -> usize {
        self.devices * self.nodes
    }

    #[cfg(feature = "distributed")]
    fn config(&self) -> supmae::train::DistributedConfig {
        supmae::train::DistributedConfig {
            devices: self.devices,
            nodes: self.nodes,
            node_rank: self.node_rank,
            master: self.master.clone(),
        }
    }

    /// Checks the options (before any backend starts).
    pub fn check(&self) -> Result<Self> {
        #[cfg(feature = "distributed")]
        self.config()
            .validate()
            .map_err(|e| CliError(format!("data-parallel options: {e}")))?;
        #[cfg(not(feature = "distributed"))]
        if self.peers() > 1 {
            return Err(CliError(
                "--devices/--nodes need supmae built with the `distributed` feature".into(),
            ));
        }
        Ok(self.clone())
    }

    /// Runs `train` once per local device, each on its own thread as one peer of the run
    /// (just once, on `device`, without data parallelism). Only the first device shows
    /// progress. Any device's error fails the run.
    pub fn run_peers<B, T, F>(
        &self,
        device: B::Device,
        progress: ProgressMode,
        train: F,
    ) -> Result<Vec<T>>
    where
        B: AutodiffBackend,
        T: Send,
        F: Fn(B::Device, PeerOf<B>, ProgressMode) -> Result<T> + Sync,
    {
        if self.peers() == 1 {
            return Ok(vec![train(device, None, progress)?]);
        }
        #[cfg(not(feature = "distributed"))]
        return Err(CliError(
            "--devices/--nodes need supmae built with the `distributed` feature".into(),
        ));
        #[cfg(feature = "distributed")]
        {
            use supmae::burn::tensor::backend::Device as _;
            let dist = self.config();
            eprintln!(
                "data-parallel: {} peer(s) here (ranks {}..{}) of {} on {} node(s); waiting for \
                 all peers to join",
                dist.devices,
                dist.rank(0),
                dist.rank(dist.devices - 1),
                dist.peers(),
                dist.nodes
            );
            let train = &train;
            let dist = &dist;
            let results: Vec<Result<T>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..dist.devices)
                    .map(|i| {
                        // Local device i: the default device's kind, index i.
                        let mut id = device.to_id();
                        id.index_id = i as u16;
                        let on = B::Device::from_id(id);
                        let progress = if i == 0 {
                            progress
                        } else {
                            ProgressMode::Quiet
                        };
                        s.spawn(move || {
                            let peer = supmae::train::Peer::join(dist, i, &on)
                                .map_err(|e| CliError(e.to_string()))?;
                            train(on, Some(peer), progress)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(CliError("a training thread panicked".into())))
                    })
                    .collect()
            });
            results.into_iter().collect()
        }
    }
}
