//! `supmae convert`: to official key names (safetensors) or to our checkpoint format.

use std::path::PathBuf;

use supmae::burn::tensor::backend::AutodiffBackend;
use supmae::{BackendJob, run_on};

use crate::common::{BackendArg, Result, cli, say};

/// `supmae convert` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The checkpoint to convert: ours (run folder or .ckpt) or an official .pth
    #[arg(long, value_name = "IN")]
    pub checkpoint: PathBuf,
    /// Where to write: OUT.safetensors (official key names) or OUT.ckpt (ours)
    #[arg(long, value_name = "OUT")]
    pub out: PathBuf,
    #[command(flatten)]
    pub backend: BackendArg,
}

/// Runs `supmae convert`.
pub fn run(args: Args) -> Result<()> {
    let kind = args.backend.resolve()?;
    let text = cli(run_on(kind, Job(args)))??;
    say!("{text}");
    Ok(())
}

struct Job(Args);

impl BackendJob for Job {
    type Output = Result<String>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        cli(supmae::convert::<B::InnerBackend>(
            &self.0.checkpoint,
            &self.0.out,
            &device,
        ))
    }
}
