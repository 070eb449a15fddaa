//! Running a fine-tuning or probing job on a backend: one peer per device, each epoch
//! printed by rank 0, and the final report.

use std::path::PathBuf;

use supmae::BackendJob;
use supmae::burn::tensor::backend::AutodiffBackend;
use supmae_data::AnySource;
use supmae_model::checkpoint::LoadReport;
use supmae_train::engine::{Engine, Task};
use supmae_train::run_dir::NewRun;
use supmae_train::{ClassifierLog, Finetuner, LinearProber, ProgressMode, load_data};

use super::Recipe;
use crate::common::{CliError, Result, cli, err, say};
use crate::parallel::{Parallel, PeerOf};

pub(super) fn report(
    history: &[ClassifierLog],
    start: std::time::Instant,
    out_dir: &std::path::Path,
) {
    let best = history
        .iter()
        .filter_map(|h| h.test_acc1.map(|a| (a, h.test_acc5, h.epoch)))
        .fold(
            None,
            |best: Option<(f64, Option<f64>, usize)>, x| match best {
                Some(b) if b.0 > x.0 => Some(b),
                _ => Some(x),
            },
        );
    say!("done in {:.0}s", start.elapsed().as_secs_f64());
    if let Some((a1, a5, epoch)) = best {
        say!(
            "best validation top-1: {a1:.2}% (top-5 {:.2}%) at epoch {}",
            a5.unwrap_or(f64::NAN),
            epoch + 1
        );
    }
    say!("run folder: {}", out_dir.display());
}

fn print_epoch(log: &ClassifierLog, total: usize) {
    let val = match (log.test_acc1, log.test_acc5, log.test_loss) {
        (Some(a1), Some(a5), Some(l)) => format!(", val top-1 {a1:.2}% top-5 {a5:.2}% loss {l:.4}"),
        _ => String::new(),
    };
    eprintln!(
        "epoch {}/{}: train_loss {:.4} lr {:.2e}, {:.0} img/s{val}",
        log.epoch + 1,
        total,
        log.train_loss,
        log.lr,
        log.images_per_sec
    );
}

pub(super) fn print_load_report(report: Option<&LoadReport>) {
    if let Some(r) = report {
        let join = |s: &std::collections::BTreeSet<String>| {
            s.iter().cloned().collect::<Vec<_>>().join(", ")
        };
        eprintln!(
            "loaded {} tensors; fresh: {}; ignored: {} keys",
            r.applied.len(),
            join(&r.missing),
            r.unused.len()
        );
    }
}

/// How a run starts: afresh, or from the checkpoint in its folder. (Built once per run, so
/// the size of the larger variant does not matter.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Start {
    New {
        recipe: Recipe,
        train: AnySource,
        val: Option<AnySource>,
        target: NewRun,
    },
    Resume {
        out_dir: PathBuf,
        linprobe: bool,
    },
}

pub(super) struct Job {
    pub(super) start: Start,
    /// `--stop-after`.
    pub(super) stop_after: Option<usize>,
    pub(super) parallel: Parallel,
}

impl BackendJob for Job {
    type Output = Result<Vec<ClassifierLog>, CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let parallel = self.parallel.clone();
        let logs =
            parallel.run_peers::<B, _, _>(device, ProgressMode::auto(), |on, peer, progress| {
                self.train_peer::<B>(on, peer, progress)
            })?;
        logs.into_iter()
            .next()
            .ok_or_else(|| CliError("no device trained".into()))
    }
}

impl Job {
    /// Trains as one peer (or alone); rank 0 reports.
    fn train_peer<B: AutodiffBackend>(
        &self,
        device: B::Device,
        peer: PeerOf<B>,
        progress: ProgressMode,
    ) -> Result<Vec<ClassifierLog>> {
        #[cfg(feature = "distributed")]
        let talk = peer.as_ref().is_none_or(|p| p.rank() == 0);
        #[cfg(not(feature = "distributed"))]
        let talk = true;
        match &self.start {
            Start::New {
                recipe: Recipe::Finetune(config),
                train,
                val,
                target,
            } => {
                let (c, t, v, o) = (config.clone(), train.clone(), val.clone(), target.clone());
                let learner = match peer {
                    #[cfg(feature = "distributed")]
                    Some(peer) => Finetuner::<B>::new_on_peer(c, t, v, o, device, peer),
                    _ => Finetuner::<B>::new(c, t, v, o, device),
                };
                let learner = cli(learner)?.with_progress(progress);
                if talk {
                    print_load_report(learner.load_report());
                }
                drive(learner, talk, self.stop_after)
            }
            Start::New {
                recipe: Recipe::Linprobe(config),
                train,
                val,
                target,
            } => {
                let (c, t, v, o) = (config.clone(), train.clone(), val.clone(), target.clone());
                let learner = match peer {
                    #[cfg(feature = "distributed")]
                    Some(peer) => LinearProber::<B>::new_on_peer(c, t, v, o, device, peer),
                    _ => LinearProber::<B>::new(c, t, v, o, device),
                };
                let learner = cli(learner)?.with_progress(progress);
                if talk {
                    print_load_report(learner.load_report());
                }
                drive(learner, talk, self.stop_after)
            }
            Start::Resume {
                out_dir,
                linprobe: true,
            } => {
                let learner = match peer {
                    #[cfg(feature = "distributed")]
                    Some(peer) => {
                        let (train, val) = resume_data(out_dir)?;
                        LinearProber::<B>::resume_on_peer(out_dir, train, val, device, peer)
                    }
                    _ => LinearProber::<B>::resume(out_dir, device),
                };
                drive(cli(learner)?.with_progress(progress), talk, self.stop_after)
            }
            Start::Resume {
                out_dir,
                linprobe: false,
            } => {
                let learner = match peer {
                    #[cfg(feature = "distributed")]
                    Some(peer) => {
                        let (train, val) = resume_data(out_dir)?;
                        Finetuner::<B>::resume_on_peer(out_dir, train, val, device, peer)
                    }
                    _ => Finetuner::<B>::resume(out_dir, device),
                };
                drive(cli(learner)?.with_progress(progress), talk, self.stop_after)
            }
        }
    }
}

/// The data of the run saved in `out_dir` (for peers that resume on explicit datasets).
#[cfg(feature = "distributed")]
fn resume_data(out_dir: &std::path::Path) -> Result<(AnySource, Option<AnySource>)> {
    use supmae_train::open::{Checkpoint, open};
    let (_, what) = cli(open(out_dir))?;
    let Checkpoint::Classifier(meta) = what else {
        return err(format!(
            "{}: not a fine-tuning or linear-probing run",
            out_dir.display()
        ));
    };
    cli(load_data(&meta.data))
}

/// Runs the remaining epochs on the engine (up to `--stop-after`), printing each (rank 0).
fn drive<B: AutodiffBackend, T: Task<B, Log = ClassifierLog>>(
    mut learner: Engine<B, T>,
    talk: bool,
    stop_after: Option<usize>,
) -> Result<Vec<ClassifierLog>> {
    let total = learner.plan().epochs;
    if talk && learner.epochs_done() > 0 {
        eprintln!("resuming after epoch {} of {total}", learner.epochs_done());
    }
    let stop = stop_after.map_or(total, |n| n.min(total));
    cli(learner.run_until(stop, |log| {
        if talk {
            print_epoch(log, total);
        }
    }))?;
    if talk && stop < total {
        crate::common::note!("stopped after epoch {stop} of {total}; continue with --resume");
    }
    Ok(learner.history().to_vec())
}
