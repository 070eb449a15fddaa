//! Scan a dataset (an ImageNet-style root with `train/` and `val/`, or any folder of class
//! sub-folders), decode every image on all cores, and report classes, counts and every bad
//! file.
//!
//! ```text
//! cargo run --release --example data_check -- /path/to/imagenet
//! ```

use std::process::ExitCode;

use supmae::data::{DEFAULT_MAX_PIXELS, check_dataset};

fn main() -> ExitCode {
    let Some(root) = std::env::args().nth(1) else {
        eprintln!("usage: data_check <dataset root>");
        return ExitCode::from(2);
    };
    match check_dataset(&root, DEFAULT_MAX_PIXELS) {
        Ok(report) => {
            println!("{report}");
            if report.bad_count() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
