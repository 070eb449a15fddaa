//! The `supmae` command-line program. See `supmae --help`; each command has its own
//! options (`supmae <COMMAND> --help`) and module.

#![warn(missing_docs)]

mod alloc;
mod bench;
mod classifier;
mod common;
mod compute;
mod convert;
mod data;
mod eval;
mod inspect;
mod parallel;
mod plot;
mod pretrain;
mod reconstruct;
mod tools;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Supervised masked autoencoders (SupMAE, MAE) in Rust: pre-train, fine-tune, probe,
/// evaluate, reconstruct and convert.
#[derive(Parser, Debug)]
#[command(
    name = "supmae",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Ceiling on a model's parameters and buffers, for configs from files and flags
    /// (protects against configs that would allocate tens of GB)
    #[arg(long, global = true, value_name = "N", default_value_t = supmae_model::config::DEFAULT_MAX_PARAMS)]
    max_params: u64,
    /// Ceiling on the memory one image may take to decode, in MB: its decoded samples plus
    /// the 8-bit copy (protects against small files that decode to gigabytes)
    #[arg(long, global = true, value_name = "MB", default_value_t = supmae_data::DEFAULT_MAX_DECODED_BYTES >> 20)]
    max_image_mb: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pre-train a SupMAE or MAE
    Pretrain(pretrain::Args),
    /// Fine-tune a ViT classifier from a pre-training checkpoint
    Finetune(classifier::FinetuneArgs),
    /// Train a linear probe on a frozen pre-trained encoder
    Linprobe(classifier::LinprobeArgs),
    /// Top-1 / top-5 of a fine-tuned or probed checkpoint
    Eval(eval::Args),
    /// Picture of masked images and their reconstructions
    Reconstruct(reconstruct::Args),
    /// Training curves (losses, learning rate, validation top-1) of runs as a PNG
    Plot(plot::Args),
    /// Which checkpoint flavour a file is and what it can do
    Inspect(inspect::Args),
    /// Convert a checkpoint to official key names (safetensors) or our format
    Convert(convert::Args),
    /// Training-step and inference throughput of a config (one JSON line)
    Bench(tools::BenchArgs),
    /// A backend's outputs and gradients vs the PyTorch fixtures
    CheckBackend(tools::CheckArgs),
    /// Dataset tools
    #[command(subcommand)]
    Data(data::Command),
    /// Print a shell completion script (e.g. `supmae completions bash > ~/.local/share/bash-completion/completions/supmae`)
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    alloc::keep_freed_memory();
    let cli = Cli::parse();
    supmae_model::config::set_max_params(cli.max_params);
    supmae_data::set_max_decoded_bytes(cli.max_image_mb.saturating_mul(1 << 20));
    // Under an MPI launcher: this process's place in the run. Held here, on the main thread,
    // until the command is over; dropping the last handle finalises MPI.
    #[cfg(feature = "mpi")]
    let mpi = match supmae_train::MpiWorld::from_launcher() {
        Ok(world) => world.map(std::sync::Arc::new),
        Err(e) => {
            eprintln!("error: starting MPI: {e}");
            return ExitCode::FAILURE;
        }
    };
    #[cfg(not(feature = "mpi"))]
    let mpi: Option<std::sync::Arc<parallel::World>> = None;
    let result = match cli.command {
        Command::Pretrain(mut a) => {
            a.parallel.mpi = mpi.clone();
            pretrain::run(a).map(|()| ExitCode::SUCCESS)
        }
        Command::Finetune(mut a) => {
            a.common.parallel.mpi = mpi.clone();
            classifier::finetune(a).map(|()| ExitCode::SUCCESS)
        }
        Command::Linprobe(mut a) => {
            a.common.parallel.mpi = mpi.clone();
            classifier::linprobe(a).map(|()| ExitCode::SUCCESS)
        }
        Command::Eval(a) => compute::on_pool(|| eval::run(a)).map(|()| ExitCode::SUCCESS),
        Command::Reconstruct(a) => {
            compute::on_pool(|| reconstruct::run(a)).map(|()| ExitCode::SUCCESS)
        }
        Command::Plot(a) => plot::run(a).map(|()| ExitCode::SUCCESS),
        Command::Inspect(a) => inspect::run(a).map(|()| ExitCode::SUCCESS),
        Command::Convert(a) => convert::run(a).map(|()| ExitCode::SUCCESS),
        Command::Bench(mut a) => {
            a.mpi = mpi.clone();
            tools::bench(a).map(|()| ExitCode::SUCCESS)
        }
        Command::CheckBackend(a) => tools::check_backend(a).map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Command::Data(c) => data::run(c).map(|bad| {
            if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "supmae", &mut out);
            common::say!("{}", String::from_utf8_lossy(&out).trim_end());
            Ok(ExitCode::SUCCESS)
        }
    };
    let code = result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    });
    #[cfg(feature = "mpi")]
    if let Some(world) = mpi {
        // A failed process ends the whole run: the others may be waiting for it in an
        // all-reduce. Otherwise every process finalises MPI here.
        if code != ExitCode::SUCCESS && world.size() > 1 {
            world.abort(1);
        }
        drop(world);
    }
    #[cfg(not(feature = "mpi"))]
    let _ = mpi;
    code
}
