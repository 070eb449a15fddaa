//! `supmae plot`: training curves of one or several runs as a PNG.

use std::path::PathBuf;

use supmae_train::curves::{RunCurves, write_png};

use crate::common::{Result, cli, err, say};

/// `supmae plot` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run folders (each with its log.jsonl): pre-training, fine-tuning or probing; several
    /// are overlaid, labelled by folder name
    #[arg(value_name = "RUN_DIR", required = true)]
    pub runs: Vec<PathBuf>,
    /// The picture to write [default: curves.png in the run folder with one run, else
    /// ./curves.png]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs `supmae plot`.
pub fn run(args: Args) -> Result<()> {
    let mut runs = Vec::with_capacity(args.runs.len());
    for dir in &args.runs {
        if !dir.join(supmae_train::run_dir::LOG_FILE).is_file() {
            return err(format!(
                "{}: no {} (is it a run folder?)",
                dir.display(),
                supmae_train::run_dir::LOG_FILE
            ));
        }
        runs.push(cli(RunCurves::read(dir))?);
    }
    let out = match (&args.out, args.runs.as_slice()) {
        (Some(out), _) => out.clone(),
        (None, [one]) => one.join(supmae_train::curves::CURVES_FILE),
        (None, _) => PathBuf::from(supmae_train::curves::CURVES_FILE),
    };
    if out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        != Some("png".into())
    {
        return err(format!(
            "--out {}: the picture is a PNG (name it *.png)",
            out.display()
        ));
    }
    cli(write_png(&runs, &out))?;
    let points: usize = runs
        .iter()
        .flat_map(|r| r.points.iter().map(|(_, s)| s.len()))
        .sum();
    say!(
        "wrote {} ({} run(s), {points} points)",
        out.display(),
        runs.len()
    );
    Ok(())
}
