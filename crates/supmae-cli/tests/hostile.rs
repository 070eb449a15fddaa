//! The hostile-input corpus: broken and malicious checkpoints, images, dataset trees and
//! flags, each run through the `supmae` program under a timeout and a peak-memory check.
//!
//! The files are generated at test time by `tests/hostile/make_corpus.py` (Python standard
//! library only) from the committed PyTorch fixtures and a tiny pre-training run made here.
//! Every case asserts its exact outcome: success, or a failure whose output names the
//! problem; never a panic, a signal, a hang (60 s, enforced by coreutils' `timeout`) or more
//! than 512 MB of resident memory (measured by GNU time's maximum RSS, which covers the
//! program under `timeout`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const TIMEOUT: Duration = Duration::from_secs(60);
const MAX_RSS_KB: u64 = 512 * 1024;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A finished 1-epoch run of a tiny 2-block SupMAE on 32 Fashion-MNIST images.
fn tiny_run(dir: &Path) -> PathBuf {
    common::fashion(dir, 32, 16);
    let model = common::tiny_model(dir, 2, true);
    let run = dir.join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_supmae"))
        .args(["pretrain", "--data"])
        .arg(format!("fashion-mnist:{}", dir.display()))
        .arg("--model")
        .arg(&model)
        .args([
            "--batch-size",
            "16",
            "--epochs",
            "1",
            "--warmup-epochs",
            "0",
            "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run
}

/// The program under test: this build's, or `SUPMAE_HOSTILE_BIN` (to show what an older
/// build did with the same corpus).
fn binary() -> OsString {
    std::env::var_os("SUPMAE_HOSTILE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_supmae").into())
}

struct Outcome {
    code: Option<i32>,
    output: String,
    rss_kb: u64,
    elapsed: Duration,
}

/// Runs `supmae args [--backend flex]` under GNU time (peak RSS) with a timeout.
fn run(args: &[OsString], with_backend: bool, scratch: &Path) -> Outcome {
    let rss_file = scratch.join("rss.txt");
    let _ = std::fs::remove_file(&rss_file);
    let start = Instant::now();
    let mut child = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg("timeout")
        .arg("--signal=KILL")
        .arg(TIMEOUT.as_secs().to_string())
        .arg(binary())
        .args(args)
        .args(if with_backend {
            &["--backend", "flex"][..]
        } else {
            &[]
        })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("GNU time (/usr/bin/time) runs supmae");
    // `timeout` (coreutils) kills the program itself at the limit, so the pipes close and
    // GNU time still reports; the extra margin here only guards the harness.
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > TIMEOUT + Duration::from_secs(30) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed();
    let out = child.wait_with_output().unwrap();
    let timing = std::fs::read_to_string(&rss_file).unwrap_or_default();
    // GNU time writes "Command exited with non-zero status N" or "Command terminated by
    // signal N" before the number.
    let rss_kb = timing
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(u64::MAX);
    // A kill by `timeout` shows as its exit status 137; a signal inside supmae (abort,
    // stack overflow) as 128 + the signal.
    let signalled =
        timing.contains("terminated by signal") || out.status.code().is_some_and(|c| c > 128);
    Outcome {
        code: if signalled { None } else { out.status.code() },
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        rss_kb,
        elapsed,
    }
}

/// Commands that do not take `--backend` (it is appended to every other one).
fn takes_backend(args: &[String]) -> bool {
    !matches!(
        args.first().map(String::as_str),
        Some("inspect") | Some("data")
    )
}

#[test]
fn every_hostile_input_gets_a_clear_error_within_time_and_memory() {
    let dir = std::env::temp_dir().join(format!("supmae-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run_dir = tiny_run(&dir);
    let corpus = dir.join("corpus");
    let status = Command::new("python3")
        .arg(root().join("crates/supmae-cli/tests/hostile/make_corpus.py"))
        .arg(&corpus)
        .arg(root().join("tools/parity/fixtures"))
        .arg(&run_dir)
        .arg(root().join("crates/supmae-data/tests/data/photos/chelsea.jpg"))
        .status()
        .expect("python3 runs the corpus generator");
    assert!(status.success());
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(corpus.join("cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut max_rss = 0;
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let needle = case["needle"].as_str().unwrap();
        let args: Vec<String> = case["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let os_args: Vec<OsString> = args
            .iter()
            .map(|a| match a.as_str() {
                "@NON-UTF-8@" => OsString::from_vec(vec![0xff, 0xfe]),
                a => a.into(),
            })
            .collect();
        let mut out = run(&os_args, takes_backend(&args), &dir);
        out.output = out.output.replace('\n', "\n    ");
        max_rss = max_rss.max(out.rss_kb);
        let mut problems = Vec::new();
        if out.elapsed >= TIMEOUT {
            problems.push("timed out".to_string());
        }
        match (expect, out.code) {
            (_, None) => problems.push("killed by a signal".into()),
            ("ok", Some(0)) | ("error", Some(1..=2)) => {}
            (_, Some(c)) => problems.push(format!("exit code {c}, expected {expect}")),
        }
        if out.output.contains("panicked") || out.output.contains("RUST_BACKTRACE") {
            problems.push("panicked".into());
        }
        if !out.output.contains(needle) {
            problems.push(format!("output lacks `{needle}`"));
        }
        if out.rss_kb > MAX_RSS_KB {
            problems.push(format!("peak RSS {} MB", out.rss_kb / 1024));
        }
        eprintln!(
            "{name}: exit {:?}, {} MB, {:.1} s",
            out.code,
            out.rss_kb / 1024,
            out.elapsed.as_secs_f64()
        );
        if !problems.is_empty() {
            failures.push(format!(
                "{name}: {}\n    {}",
                problems.join(", "),
                out.output
            ));
        }
    }
    eprintln!("{} cases, peak RSS {} MB", cases.len(), max_rss / 1024);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
