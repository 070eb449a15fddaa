//! The `supmae` command-line program. See `supmae help`.

use std::process::ExitCode;

use supmae::cli;

// Tensor buffers of a training step are freed and re-allocated every step; mimalloc reuses
// them where glibc's malloc returns large blocks to the kernel (page faults + zeroing).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wants_help = args.iter().any(|a| a == "--help" || a == "-h");
    match args.first().map(String::as_str) {
        None | Some("help") | Some("--help") | Some("-h") => {
            match args.get(1).map(String::as_str) {
                Some("pretrain") => println!("{}", cli::pretrain_help()),
                _ => println!("{}", cli::HELP),
            }
            ExitCode::SUCCESS
        }
        Some("pretrain") if wants_help => {
            println!("{}", cli::pretrain_help());
            ExitCode::SUCCESS
        }
        Some("pretrain") => match cli::pretrain(&args[1..]) {
            Ok(summary) => {
                if let Some(last) = &summary.last {
                    let first = summary.first.as_ref().map_or(last.rec_loss, |f| f.rec_loss);
                    println!(
                        "done in {:.0}s: reconstruction loss {:.4} (first epoch {:.4})",
                        summary.seconds, last.rec_loss, first
                    );
                    if let (Some(full), Some(masked)) = (last.val_acc1_full, last.val_acc1_masked) {
                        println!(
                            "classification branch, validation top-1: {full:.2}% (all patches visible), {masked:.2}% (mask ratio as in training)"
                        );
                    }
                }
                println!("run folder: {}", summary.out_dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some("data") => match args.get(1).map(String::as_str) {
            Some("check") => match cli::data_check(&args[2..]) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            },
            _ => {
                eprintln!("error: usage: supmae data check <ROOT>");
                ExitCode::from(2)
            }
        },
        Some(other) => {
            eprintln!("error: unknown command `{other}`; run `supmae help`");
            ExitCode::from(2)
        }
    }
}
