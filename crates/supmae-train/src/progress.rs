//! Progress output: a bar with images/s and ETA on a terminal, plain lines otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A single updating line (stderr is a terminal).
    Bar,
    /// A plain line at most every 30 seconds (logs, pipes).
    Lines,
    /// Nothing (library use, tests).
    Quiet,
}

impl ProgressMode {
    /// `Bar` when stderr is a terminal, else `Lines`.
    pub fn auto() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Bar
        } else {
            Self::Lines
        }
    }
}

pub(crate) struct Progress {
    mode: ProgressMode,
    epoch: usize,
    epochs: usize,
    total: usize,
    start: Instant,
    last_draw: Instant,
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Progress {
    pub(crate) fn new(mode: ProgressMode, epoch: usize, epochs: usize, total: usize) -> Self {
        let now = Instant::now();
        Self {
            mode,
            epoch,
            epochs,
            total,
            start: now,
            last_draw: now,
        }
    }

    /// After `done` iterations of `images` images in total, with the running mean loss.
    pub(crate) fn update(&mut self, done: usize, images: usize, loss: f64) {
        let elapsed = self.start.elapsed();
        let rate = images as f64 / elapsed.as_secs_f64().max(1e-9);
        let eta = if done > 0 {
            elapsed.mul_f64((self.total.saturating_sub(done)) as f64 / done as f64)
        } else {
            Duration::ZERO
        };
        match self.mode {
            ProgressMode::Quiet => {}
            ProgressMode::Bar => {
                if done < self.total && self.last_draw.elapsed() < Duration::from_millis(200) {
                    return;
                }
                self.last_draw = Instant::now();
                let width = 24;
                let filled = (width * done).checked_div(self.total).unwrap_or(width);
                eprint!(
                    "\repoch {}/{} [{}{}] {}/{} {:.0} img/s ETA {} loss {:.4}   ",
                    self.epoch + 1,
                    self.epochs,
                    "#".repeat(filled),
                    "-".repeat(width - filled),
                    done,
                    self.total,
                    rate,
                    fmt_duration(eta),
                    loss
                );
                let _ = std::io::stderr().flush();
            }
            ProgressMode::Lines => {
                if done < self.total && self.last_draw.elapsed() >= Duration::from_secs(30) {
                    self.last_draw = Instant::now();
                    eprintln!(
                        "epoch {}/{} {}/{} {:.0} img/s ETA {} loss {:.4}",
                        self.epoch + 1,
                        self.epochs,
                        done,
                        self.total,
                        rate,
                        fmt_duration(eta),
                        loss
                    );
                }
            }
        }
    }

    pub(crate) fn finish(&self) {
        if self.mode == ProgressMode::Bar {
            eprint!("\r{}\r", " ".repeat(100));
        }
    }
}
