//! `supmae bench` and `supmae check-backend`: throughput and numerical parity of a backend.

use std::path::PathBuf;

use supmae::burn::tensor::backend::AutodiffBackend;
use supmae::{BackendJob, run_on};

use crate::common::{BackendArg, Result, cli, say};

/// `supmae bench` options.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The benchmark config: tiny16, px32, tiny16_sup or base16_d1b
    #[arg(long, value_name = "NAME", default_value = "tiny16")]
    pub config: String,
    /// Images per step [default: the config's]
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Timed steps
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub steps: usize,
    /// Instead of a training step, time averaging the config's gradients over the processes
    /// of an MPI launch, as a data-parallel step does (`mpirun -np 2 supmae bench --config
    /// base16_d1b --all-reduce`)
    #[arg(long)]
    pub all_reduce: bool,
    #[command(flatten)]
    pub backend: BackendArg,
    /// The MPI world this process belongs to, set by `main` under an MPI launcher.
    #[arg(skip)]
    pub mpi: Option<std::sync::Arc<crate::parallel::World>>,
}

/// Runs `supmae bench`: one JSON line.
pub fn bench(args: BenchArgs) -> Result<()> {
    if args.all_reduce {
        return all_reduce(args);
    }
    let kind = args.backend.resolve()?;
    let (config, steps) = (args.config.clone(), args.steps);
    let (batch, train, infer) = crate::compute::on_pool(|| cli(run_on(kind, Bench(args))))??;
    say!(
        "{{\"side\": \"burn-{kind}\", \"config\": \"{config}\", \"batch\": {batch}, \"train_img_s\": {train:.2}, \"infer_img_s\": {infer:.2}, \"steps\": {steps}}}"
    );
    Ok(())
}

struct Bench(BenchArgs);

impl BackendJob for Bench {
    type Output = Result<(usize, f64, f64)>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        let batch = match a.batch_size {
            Some(b) => b,
            None => crate::bench::configs()
                .into_iter()
                .find(|(n, _, _)| *n == a.config)
                .map_or(8, |(_, b, _)| b),
        };
        let (train, infer) = cli(crate::bench::throughput::<B>(
            &a.config,
            batch,
            a.steps.max(1),
            &device,
        ))?;
        Ok((batch, train, infer))
    }
}

/// `supmae bench --all-reduce`: the time to average a config's gradients over the processes
/// (host copies, the per-peer finiteness flags and `MPI_Allreduce` in 64 MiB buckets, as in
/// training), and `MPI_Allreduce` alone on the same bytes. One JSON line from rank 0.
fn all_reduce(args: BenchArgs) -> Result<()> {
    #[cfg(not(feature = "mpi"))]
    {
        let _ = args;
        Err(crate::common::CliError(
            "--all-reduce needs supmae built with the `mpi` feature, run under mpirun".into(),
        ))
    }
    #[cfg(feature = "mpi")]
    {
        use crate::common::CliError;
        let Some(world) = args.mpi.clone().filter(|w| w.size() > 1) else {
            return Err(CliError(
                "--all-reduce times the all-reduce between processes: run it under an MPI \
                 launcher with at least 2 processes (mpirun -np 2 supmae bench ...)"
                    .into(),
            ));
        };
        let params = match crate::bench::configs()
            .into_iter()
            .find(|(n, _, _)| *n == args.config)
        {
            Some((_, _, Ok(mae))) => mae.param_count().trainable,
            Some((_, _, Err(vit))) => vit.param_count().trainable,
            None => return Err(CliError(format!("unknown config {}", args.config))),
        };
        let kind = args.backend.resolve()?;
        let steps = args.steps.max(1);
        let job = AllReduce {
            world: world.clone(),
            params,
            steps,
        };
        let (through_peer, raw) = cli(run_on(kind, job))??;
        if world.rank() == 0 {
            let bytes = 4.0 * params as f64;
            say!(
                "{{\"side\": \"burn-{kind}\", \"config\": \"{}\", \"processes\": {}, \"params\": {params}, \"all_reduce_s\": {through_peer:.4}, \"all_reduce_gb_s\": {:.3}, \"mpi_allreduce_s\": {raw:.4}, \"mpi_allreduce_gb_s\": {:.3}, \"steps\": {steps}}}",
                args.config,
                world.size(),
                bytes / through_peer / 1e9,
                bytes / raw / 1e9,
            );
        }
        Ok(())
    }
}

#[cfg(feature = "mpi")]
struct AllReduce {
    world: std::sync::Arc<crate::parallel::World>,
    params: usize,
    steps: usize,
}

#[cfg(feature = "mpi")]
impl BackendJob for AllReduce {
    /// Median seconds per model-sized all-reduce: through a peer, and MPI alone.
    type Output = Result<(f64, f64)>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        use supmae::burn::prelude::*;
        use supmae_train::{DistributedConfig, Peer};

        type Inner<B> = <B as AutodiffBackend>::InnerBackend;
        let dist = DistributedConfig::with_mpi(1, self.world.clone());
        let peer = Peer::<Inner<B>>::join(&dist, 0, &device)
            .map_err(|e| crate::common::CliError(e.to_string()))?;
        const BUCKET: usize = 1 << 24;
        let sizes: Vec<usize> = (0..self.params)
            .step_by(BUCKET)
            .map(|start| BUCKET.min(self.params - start))
            .collect();
        let buckets: Vec<Tensor<Inner<B>, 1>> = sizes
            .iter()
            .map(|&n| {
                Tensor::random(
                    [n],
                    supmae::burn::tensor::Distribution::Normal(0.0, 1e-3),
                    &device,
                )
            })
            .collect();
        let host: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![1e-3f32; n]).collect();
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (mut through_peer, mut raw) = (Vec::new(), Vec::new());
        // One untimed round first: connections and buffers are set up lazily.
        for round in 0..=self.steps {
            let start = std::time::Instant::now();
            for b in &buckets {
                let (mean, _) = peer
                    .all_reduce_mean_checked(b.clone())
                    .map_err(|e| crate::common::CliError(e.to_string()))?;
                let _ = mean.into_data();
            }
            let t = start.elapsed().as_secs_f64();
            let start = std::time::Instant::now();
            for h in &host {
                let _ = self.world.all_reduce_sum(h);
            }
            if round > 0 {
                through_peer.push(t);
                raw.push(start.elapsed().as_secs_f64());
            }
        }
        Ok((median(through_peer), median(raw)))
    }
}

/// `supmae check-backend` options.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The PyTorch fixtures folder
    #[arg(long, value_name = "DIR", default_value = "tools/parity/fixtures/tiny")]
    pub fixtures: PathBuf,
    #[command(flatten)]
    pub backend: BackendArg,
}

/// Runs `supmae check-backend`: whether every difference is within tolerance.
pub fn check_backend(args: CheckArgs) -> Result<bool> {
    let kind = args.backend.resolve()?;
    let rows = cli(run_on(kind, Parity(args.fixtures)))??;
    let mut ok = true;
    say!("backend {kind} vs PyTorch float32 fixtures:");
    for (name, diff, tol) in rows {
        let pass = diff <= tol;
        ok &= pass;
        say!(
            "  {name:32} max |diff| {diff:.2e}  (tolerance {tol:.0e}) {}",
            if pass { "ok" } else { "FAIL" }
        );
    }
    Ok(ok)
}

struct Parity(PathBuf);

impl BackendJob for Parity {
    type Output = Result<Vec<(String, f64, f64)>>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        cli(crate::bench::backend_parity::<B>(&self.0, &device))
    }
}
