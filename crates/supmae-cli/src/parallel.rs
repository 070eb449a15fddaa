//! The data-parallel options and running one training thread per local device.

use std::sync::Arc;

use supmae::burn::tensor::backend::AutodiffBackend;
use supmae_train::ProgressMode;

use crate::common::{CliError, Result};

/// The peer a thread trains as, in a data-parallel run.
#[cfg(feature = "distributed")]
pub type PeerOf<B> = Option<supmae_train::Peer<<B as AutodiffBackend>::InnerBackend>>;
/// The peer a thread trains as (always `None` without the `distributed` feature).
#[cfg(not(feature = "distributed"))]
pub type PeerOf<B> = Option<std::marker::PhantomData<B>>;

/// This process's MPI world (with the `mpi` feature).
#[cfg(feature = "mpi")]
pub type World = supmae_train::MpiWorld;
/// This process's MPI world (never present without the `mpi` feature).
#[cfg(not(feature = "mpi"))]
#[derive(Debug)]
pub enum World {}

/// Every peer loads --batch-size images, so a step sees batch x accum x peers images and
/// lr = blr x that / 256; peers end every step with identical parameters. Across processes
/// and machines, launch the same command with MPI (supmae built with the `mpi` feature):
/// `mpirun -np 8 supmae pretrain ...` or `srun --mpi=pmix supmae pretrain ...`; rank 0
/// writes the run folder.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Data-parallel options")]
pub struct Parallel {
    /// Train on N devices of this process, one thread each, through burn-collective (GPUs
    /// L*N..L*N+N-1 for the L-th process of a machine under MPI)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub devices: usize,
    /// Removed: processes meet through MPI now (see the error it gives)
    #[arg(long, value_name = "K", hide = true)]
    pub nodes: Option<usize>,
    /// Removed, as --nodes
    #[arg(long, value_name = "R", hide = true)]
    pub node_rank: Option<usize>,
    /// Removed, as --nodes
    #[arg(long, value_name = "HOST:PORT", hide = true)]
    pub master: Option<String>,
    /// The MPI world this process belongs to, set by `main` under an MPI launcher.
    #[arg(skip)]
    pub mpi: Option<Arc<World>>,
}

/// What the removed TCP flags say instead.
const TCP_FLAGS_REMOVED: &str = "--nodes/--node-rank/--master are gone: processes now meet \
    through MPI, which starts them and gives each its rank. Build supmae with the `mpi` \
    feature and run the same command under the launcher, without these flags, e.g. \
    `mpirun -np 2 supmae pretrain ...`, `mpirun -np 32 --hostfile hosts supmae pretrain ...` \
    or `srun --mpi=pmix supmae pretrain ...` (docs/backends.md, \"Several processes and \
    machines\")";

/// Launcher variables that give the number of processes (Open MPI, PMI, MVAPICH).
const WORLD_SIZE_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"];

impl Parallel {
    /// Processes of the run (1 outside an MPI launch).
    pub fn processes(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.mpi {
            return w.size();
        }
        1
    }

    /// Whether this process is the run's first (it reports).
    pub fn is_first_process(&self) -> bool {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.mpi {
            return w.rank() == 0;
        }
        true
    }

    /// Peers of the whole run.
    pub fn peers(&self) -> usize {
        self.devices * self.processes()
    }

    #[cfg(feature = "distributed")]
    fn config(&self) -> supmae_train::DistributedConfig {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.mpi {
            return supmae_train::DistributedConfig::with_mpi(self.devices, w.clone());
        }
        supmae_train::DistributedConfig::local(self.devices)
    }

    /// The first device this process drives (`--devices` from there on).
    fn first_device(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(w) = &self.mpi {
            return supmae_train::distributed::first_device(w.local_rank(), self.devices);
        }
        0
    }

    /// Checks the options (before any backend starts).
    pub fn check(&self) -> Result<Self> {
        if self.nodes.is_some() || self.node_rank.is_some() || self.master.is_some() {
            return Err(CliError(TCP_FLAGS_REMOVED.into()));
        }
        if self.mpi.is_none() {
            let launched = WORLD_SIZE_VARS.iter().find_map(|v| {
                let size = std::env::var(v).ok()?.parse::<usize>().ok()?;
                (size > 1).then_some((v, size))
            });
            if let Some((var, size)) = launched {
                return Err(CliError(format!(
                    "started by an MPI launcher as one of {size} processes ({var}), but this \
                     supmae {}; every process would train alone",
                    if cfg!(feature = "mpi") {
                        "was told not to use MPI (SUPMAE_MPI=0)"
                    } else {
                        "is built without the `mpi` feature (cargo install supmae-cli \
                         --features mpi)"
                    }
                )));
            }
        }
        #[cfg(feature = "distributed")]
        self.config()
            .validate()
            .map_err(|e| CliError(format!("data-parallel options: {e}")))?;
        #[cfg(not(feature = "distributed"))]
        if self.peers() > 1 {
            return Err(CliError(
                "--devices needs supmae built with the `distributed` feature".into(),
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
            // One peer: it runs on the compute pool (see `compute`). Several peers in this
            // process stay on their own threads: a peer waiting in an all-reduce must not
            // hold a pool thread the others need.
            return Ok(vec![crate::compute::on_pool(|| {
                train(device, None, progress)
            })?]);
        }
        #[cfg(not(feature = "distributed"))]
        return Err(CliError(
            "--devices needs supmae built with the `distributed` feature".into(),
        ));
        #[cfg(feature = "distributed")]
        {
            use supmae::burn::tensor::backend::Device as _;
            let dist = self.config();
            let first = self.first_device();
            if self.is_first_process() {
                eprintln!(
                    "data-parallel: {} peer(s) in {} process(es) x {} device(s); waiting for \
                     all peers to join",
                    dist.peers(),
                    dist.processes(),
                    dist.devices,
                );
            }
            let lead = self.is_first_process();
            let train = &train;
            let dist = &dist;
            let results: Vec<Result<T>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..dist.devices)
                    .map(|i| {
                        // Local device i: the default device's kind, index first + i.
                        let mut id = device.to_id();
                        id.index_id = u16::try_from(first + i).unwrap_or(u16::MAX);
                        let on = B::Device::from_id(id);
                        let progress = if i == 0 && lead {
                            progress
                        } else {
                            ProgressMode::Quiet
                        };
                        s.spawn(move || {
                            let peer = supmae_train::Peer::join(dist, i, &on)
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
