//! The processes of a run, through MPI (feature `mpi`).
//!
//! `mpirun -np N supmae pretrain ...` (or `srun --mpi=pmix`, or any MPI launcher) starts N
//! copies of the same command; each learns from MPI its rank, the number of processes and
//! its rank among the processes of its own machine (MPI's shared-memory split), which picks
//! its GPU. Gradients are summed with `MPI_Allreduce` on `MPI_COMM_WORLD`.
//!
//! MPI brings what a cluster expects from a launcher: placement, process management, and
//! fault handling. Communication errors are fatal (MPI's default error handler), and
//! `mpirun` tears the whole job down when one process dies, so a lost peer ends the run
//! instead of hanging it. MPI trusts its network, as NCCL and Gloo do: run it on the
//! cluster's private network (docs/decisions.md).

use mpi::collective::SystemOperation;
use mpi::environment::{Threading, Universe};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::error::{Result, TrainError};

/// Environment variables that MPI launchers set in the processes they start: Open MPI's
/// `mpirun`, PMIx (`srun --mpi=pmix`, Open MPI 5, PRRTE), PMI-1/2 (MPICH and Intel MPI's
/// `mpiexec`, `srun --mpi=pmi2`) and MVAPICH.
const LAUNCHER_VARS: [&str; 5] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "MV2_COMM_WORLD_SIZE",
];

/// `SUPMAE_MPI=1` starts MPI without a launcher (a one-process world); `SUPMAE_MPI=0`
/// ignores a launcher.
const OVERRIDE_VAR: &str = "SUPMAE_MPI";

/// This process's place among the processes of a run, and MPI itself: dropping the last
/// handle finalises MPI, so keep it alive (on the main thread) until training is over.
///
/// There can be one per process ([`MpiWorld::init`] fails the second time).
pub struct MpiWorld {
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    // Last: MPI_Finalize runs when the fields above are gone.
    _universe: Universe,
}

impl std::fmt::Debug for MpiWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiWorld")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_rank", &self.local_rank)
            .field("local_size", &self.local_size)
            .finish_non_exhaustive()
    }
}

impl MpiWorld {
    /// Whether an MPI launcher started this process (or `SUPMAE_MPI=1` asks for MPI).
    pub fn launched() -> bool {
        match std::env::var(OVERRIDE_VAR).as_deref() {
            Ok("1") => true,
            Ok("0") => false,
            _ => LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some()),
        }
    }

    /// Starts MPI (`MPI_Init_thread`, asking for `MPI_THREAD_SERIALIZED`: one training
    /// thread of the process at a time talks to MPI) and finds this process's place.
    pub fn init() -> Result<Self> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| TrainError::Collective("MPI is already initialised".into()))?;
        if !matches!(threading, Threading::Serialized | Threading::Multiple) {
            return Err(TrainError::Collective(format!(
                "this MPI library offers thread support {threading:?}; supmae needs \
                 MPI_THREAD_SERIALIZED (training threads call MPI)"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank(), world.size());
        let node = world.split_shared(rank);
        let (local_rank, local_size) = (node.rank(), node.size());
        let count = |v: i32| usize::try_from(v).unwrap_or(0);
        Ok(Self {
            rank: count(rank),
            size: count(size),
            local_rank: count(local_rank),
            local_size: count(local_size),
            _universe: universe,
        })
    }

    /// [`MpiWorld::init`] when an MPI launcher started this process, `None` otherwise.
    pub fn from_launcher() -> Result<Option<Self>> {
        if Self::launched() {
            Self::init().map(Some)
        } else {
            Ok(None)
        }
    }

    /// This process's rank, `0..size`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Processes in the run.
    pub fn size(&self) -> usize {
        self.size
    }

    /// This process's rank among the processes of its machine; process `local_rank` of a
    /// machine drives its GPUs `local_rank · devices ..` (see [`first_device`]).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Processes of the run on this machine.
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// The element-wise sum of every process's `own`, the same bits on every process.
    ///
    /// # Shapes
    /// - `own`: `[N]`, the same `N` on every process. Returns `[N]`.
    pub fn all_reduce_sum(&self, own: &[f32]) -> Vec<f32> {
        let world = SimpleCommunicator::world();
        let mut out = vec![0f32; own.len()];
        world.all_reduce_into(own, &mut out[..], SystemOperation::sum());
        out
    }

    /// Ends every process of the run with `code` (`MPI_Abort`): what a process that failed
    /// does, so that the others do not wait for it in their next all-reduce.
    pub fn abort(&self, code: i32) -> ! {
        SimpleCommunicator::world().abort(code)
    }
}

/// The first device index a process drives when each process has `devices` devices: its
/// node-local rank times `devices`, unless `CUDA_VISIBLE_DEVICES` already gives it no more
/// than `devices` GPUs (a scheduler that binds GPUs to tasks, as Slurm's `--gpus-per-task`
/// does), in which case 0.
pub fn first_device(local_rank: usize, devices: usize) -> usize {
    first_device_given(
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
        local_rank,
        devices,
    )
}

fn first_device_given(visible: Option<&str>, local_rank: usize, devices: usize) -> usize {
    let narrowed =
        visible.is_some_and(|v| v.split(',').filter(|d| !d.trim().is_empty()).count() <= devices);
    if narrowed { 0 } else { local_rank * devices }
}

#[cfg(test)]
mod tests {
    use super::first_device_given as first;

    #[test]
    fn each_process_of_a_machine_takes_its_own_gpus_unless_the_scheduler_narrowed_them() {
        // mpirun -np 8 on an 8-GPU machine: process 5 takes GPU 5.
        assert_eq!(first(None, 5, 1), 5);
        // Two processes of 4 devices each: the second takes GPUs 4..8.
        assert_eq!(first(None, 1, 4), 4);
        // Slurm bound one GPU to the task: it is device 0 of this process.
        assert_eq!(first(Some("3"), 5, 1), 0);
        assert_eq!(first(Some("4,5,6,7"), 1, 4), 0);
        // A wider list (every GPU visible): the local rank picks.
        assert_eq!(first(Some("0,1,2,3,4,5,6,7"), 5, 1), 5);
        assert_eq!(first(Some(""), 2, 1), 0);
    }
}
