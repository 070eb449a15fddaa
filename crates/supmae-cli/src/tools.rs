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
    #[command(flatten)]
    pub backend: BackendArg,
}

/// Runs `supmae bench`: one JSON line.
pub fn bench(args: BenchArgs) -> Result<()> {
    let kind = args.backend.resolve()?;
    let (config, steps) = (args.config.clone(), args.steps);
    let (batch, train, infer) = cli(run_on(kind, Bench(args)))??;
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
            None => supmae::bench::configs()
                .into_iter()
                .find(|(n, _, _)| *n == a.config)
                .map_or(8, |(_, b, _)| b),
        };
        let (train, infer) = cli(supmae::bench::throughput::<B>(
            &a.config,
            batch,
            a.steps.max(1),
            &device,
        ))?;
        Ok((batch, train, infer))
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
        cli(supmae::bench::backend_parity::<B>(&self.0, &device))
    }
}
