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
                Some("finetune") => println!("{}", cli::FINETUNE_HELP),
                Some("linprobe") => println!("{}", cli::LINPROBE_HELP),
                Some("eval") => println!("{}", cli::EVAL_HELP),
                Some("reconstruct") => println!("{}", cli::RECONSTRUCT_HELP),
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
                        "done in {:.1}s: reconstruction loss {:.4} (first epoch {:.4})",
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
        Some("finetune") if wants_help => {
            println!("{}", cli::FINETUNE_HELP);
            ExitCode::SUCCESS
        }
        Some("linprobe") if wants_help => {
            println!("{}", cli::LINPROBE_HELP);
            ExitCode::SUCCESS
        }
        Some("bench") => match cli::bench(&args[1..]) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some("check-backend") => match cli::check_backend(&args[1..]) {
            Ok((text, ok)) => {
                print!("{text}");
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some("inspect") => match cli::inspect_command(&args[1..]) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some("convert") => match cli::convert(&args[1..]) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some("reconstruct") if wants_help => {
            println!("{}", cli::RECONSTRUCT_HELP);
            ExitCode::SUCCESS
        }
        Some("reconstruct") => match cli::reconstruct(&args[1..]) {
            Ok(summary) => {
                println!("{}", summary.description);
                for (file, rec, flat) in &summary.rows {
                    let change = 100.0 * (1.0 - rec / flat.max(1e-12));
                    let verdict = if change >= 0.0 {
                        format!("{change:.0}% lower")
                    } else {
                        format!("{:.0}% higher: unlike the training images?", -change)
                    };
                    println!(
                        "{file}: error on removed patches {rec:.4} vs {flat:.4} for flat patch-mean patches ({verdict})"
                    );
                }
                println!("wrote {}", summary.out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some("eval") if wants_help => {
            println!("{}", cli::EVAL_HELP);
            ExitCode::SUCCESS
        }
        Some(cmd @ ("finetune" | "linprobe")) => {
            let result = if cmd == "finetune" {
                cli::finetune(&args[1..])
            } else {
                cli::linprobe(&args[1..])
            };
            match result {
                Ok(summary) => {
                    let best = summary
                        .history
                        .iter()
                        .filter_map(|h| h.test_acc1.map(|a| (a, h.test_acc5, h.epoch)))
                        .fold(
                            None,
                            |best: Option<(f64, Option<f64>, usize)>, x| match best {
                                Some(b) if b.0 > x.0 => Some(b),
                                _ => Some(x),
                            },
                        );
                    println!("done in {:.0}s", summary.seconds);
                    if let Some((a1, a5, epoch)) = best {
                        println!(
                            "best validation top-1: {a1:.2}% (top-5 {:.2}%) at epoch {}",
                            a5.unwrap_or(f64::NAN),
                            epoch + 1
                        );
                    }
                    println!("run folder: {}", summary.out_dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("eval") => match cli::eval(&args[1..]) {
            Ok((report, what)) => {
                println!("{what}");
                println!(
                    "top-1 {:.2}%  top-5 {:.2}%  loss {:.4}  on {} images",
                    report.acc1, report.acc5, report.loss, report.images
                );
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
