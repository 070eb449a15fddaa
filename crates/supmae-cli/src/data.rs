//! `supmae data check`: scan a dataset and report classes, counts and bad files.

use std::path::PathBuf;

use supmae_data::{DEFAULT_MAX_PIXELS, check_dataset};

use crate::common::{Result, cli, say};

/// `supmae data` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Scan a dataset (ImageNet root or class sub-folders) and report classes, counts and
    /// unreadable files; exits 1 when any file is bad
    Check {
        /// The dataset root
        #[arg(value_name = "ROOT")]
        root: PathBuf,
    },
}

/// Runs `supmae data ...`: the number of bad files.
pub fn run(command: Command) -> Result<usize> {
    match command {
        Command::Check { root } => {
            let report = cli(check_dataset(&root, DEFAULT_MAX_PIXELS))?;
            say!("{report}");
            Ok(report.bad_count())
        }
    }
}
