//! The `supmae` program end to end: help, one-line errors, a tiny pre-training run and its
//! resume, and `data check`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use supmae::image;
use supmae_data::FashionMnist;
use supmae_data::fashion_mnist::Split;

mod common;
use common::{fashion, run_args, scratch, supmae, text};

/// The tiny 1-block SupMAE most runs here train.
fn tiny_model(dir: &Path) -> PathBuf {
    common::tiny_model(dir, 1, true)
}

/// Asserts a failed run printed exactly one `error:` line and mentions `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn help_explains_every_option() {
    let out = supmae(&["--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("pretrain"));
    let out = supmae(&["pretrain", "--help"]);
    let help = text(&out.stdout);
    for flag in [
        "--data",
        "--model",
        "--mode",
        "--epochs",
        "--batch-size",
        "--accum-iter",
        "--blr",
        "--mask-ratio",
        "--warmup-epochs",
        "--backend",
        "--out",
        "--resume",
        "--seed",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("supmae_vit_base_patch16_dec512d1b"));
}

#[test]
fn user_mistakes_are_one_clear_line() {
    let out_dir = scratch("mistakes");
    let out = out_dir.to_str().unwrap();
    assert_one_line_error(
        &supmae(&["pretrain", "--model", "vit_gigantic", "--out", out]),
        "not a known preset",
    );
    assert_one_line_error(
        &supmae(&["pretrain", "--epochs", "many", "--out", out]),
        "--epochs",
    );
    assert_one_line_error(
        &supmae(&["pretrain", "--frobnicate"]),
        "unexpected argument '--frobnicate'",
    );
    assert_one_line_error(&supmae(&["pretrain", "--mode", "dino"]), "--mode");
    assert_one_line_error(
        &supmae(&["pretrain", "--data", "/nonexistent/imagenet", "--out", out]),
        "/nonexistent/imagenet",
    );
    assert_one_line_error(
        &supmae(&["pretrain", "--resume", "--out", out]),
        "no checkpoint",
    );
    assert_one_line_error(
        &supmae(&["pretrain", "--backend", "tpu"]),
        "unknown backend `tpu`",
    );
    if !cfg!(feature = "cuda") {
        assert_one_line_error(
            &supmae(&["pretrain", "--backend", "cuda"]),
            "--features cuda",
        );
    }
    assert_one_line_error(
        &supmae(&["pretrain", "--mask-ratio", "1.0", "--out", out]),
        "mask_ratio",
    );
}

#[test]
fn a_tiny_pretraining_run_learns_logs_and_resumes() {
    let dir = scratch("run");
    fashion(&dir, 64, 32);
    let data = format!("fashion-mnist:{}", dir.display());
    let model = tiny_model(&dir);
    let out_dir = dir.join("run");
    let base = [
        "pretrain",
        "--data",
        &data,
        "--model",
        model.to_str().unwrap(),
        "--batch-size",
        "16",
        "--blr",
        "0.01",
        "--warmup-epochs",
        "1",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let mut args = base.to_vec();
    args.extend(["--epochs", "3"]);
    let out = supmae(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("reconstruction loss"), "{stdout}");
    assert!(stdout.contains("validation top-1"), "{stdout}");
    let log = std::fs::read_to_string(out_dir.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
    assert!(out_dir.join("config.json").is_file() && out_dir.join("checkpoint.ckpt").is_file());
    assert!(out_dir.join("curves.png").is_file(), "no curves.png");
    // Reconstruction improves over the run.
    let rec: Vec<f64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["rec_loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(rec[2] < rec[0], "{rec:?}");

    // Resuming a finished run trains nothing more and keeps the log.
    let out = supmae(&["pretrain", "--resume", "--out", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("resuming"));
    assert_eq!(
        std::fs::read_to_string(out_dir.join("log.jsonl")).unwrap(),
        log
    );
}

#[test]
fn data_check_lists_bad_files() {
    let root = scratch("check");
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::create_dir_all(root.join("b")).unwrap();
    std::fs::write(root.join("a/ok.png"), png_1x1()).unwrap();
    std::fs::write(root.join("b/broken.jpg"), b"\xff\xd8\xff\xe0 not really").unwrap();
    let out = supmae(&["data", "check", root.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "bad files make the exit status 1"
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("2 classes, 2 images"), "{stdout}");
    assert!(stdout.contains("broken.jpg"), "{stdout}");
    let out = supmae(&["data", "check", "/nonexistent"]);
    assert_one_line_error(&out, "/nonexistent");
}

fn png_1x1() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::new_rgb8(1, 1)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

#[test]
fn pretrain_runs_on_an_imagenet_layout_tree() {
    let root = scratch("imagenet");
    let photos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../supmae-data/tests/data/photos");
    let copy = |name: &str, to: &str| {
        let to = root.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(photos.join(name), to).unwrap();
    };
    copy("astronaut.jpg", "train/n01440764/a.JPEG");
    copy("coffee.jpg", "train/n01440764/b.JPEG");
    copy("chelsea.jpg", "train/n02123045/c.JPEG");
    copy("cmyk.jpg", "train/n02123045/d.JPEG");
    copy("rocket.jpg", "val/n01440764/e.JPEG");
    copy("chelsea.jpg", "val/n02123045/f.JPEG");
    let model = root.join("model.json");
    std::fs::write(
        &model,
        r#"{"img_size": 32, "patch_size": 8, "in_chans": 3, "embed_dim": 16, "depth": 1,
            "num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2,
            "mlp_ratio": 4.0, "norm_pix_loss": true, "global_pool": true,
            "cls_head": {"num_classes": 1000, "hidden": 16, "temperature": 10.0,
                         "loss_ratio": 0.01, "bn_eps": 1e-5, "bn_momentum": 0.1}}"#,
    )
    .unwrap();
    let out_dir = root.join("run");
    let out = supmae(&[
        "pretrain",
        "--data",
        root.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--warmup-epochs",
        "1",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("4 training images (2 classes)"), "{stderr}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("validation top-1"), "{stdout}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["model"]["cls_head"]["num_classes"], 2,
        "the head follows the dataset"
    );

    // Fine-tune with the full ImageNet recipe (RandAugment, Mixup/CutMix, erasing), probe,
    // and evaluate, all on the same tree.
    let ft = root.join("ft");
    let stdout = ok(&[
        "finetune",
        "--checkpoint",
        out_dir.to_str().unwrap(),
        "--data",
        root.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--accum-iter",
        "1",
        "--warmup-epochs",
        "1",
        "--out",
        ft.to_str().unwrap(),
    ]);
    assert!(stdout.contains("best validation top-1"), "{stdout}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ft.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["rand_augment"], "rand-m9-mstd0.5-inc1");
    assert_eq!(config["mixup"]["mixup_alpha"], 0.8);
    assert_eq!(config["model"]["num_classes"], 2);
    let lp = root.join("lp");
    ok(&[
        "linprobe",
        "--checkpoint",
        out_dir.to_str().unwrap(),
        "--data",
        root.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--out",
        lp.to_str().unwrap(),
    ]);
    for run in [&ft, &lp] {
        let stdout = ok(&[
            "eval",
            "--checkpoint",
            run.to_str().unwrap(),
            "--data",
            root.to_str().unwrap(),
        ]);
        assert!(stdout.contains("on 2 images"), "{stdout}");
    }

    // Official-format .pth files (the tiny parity fixtures, written by our PyTorch reference
    // with the official key names): fine-tune from a SupMAE pre-training file, evaluate
    // fine-tuned ViTs in both pooling modes, and refuse a pre-training file in `eval`.
    let fixtures =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/parity/fixtures/tiny");
    let vit = root.join("vit.json");
    std::fs::write(
        &vit,
        r#"{"img_size": 32, "patch_size": 8, "in_chans": 3, "embed_dim": 64, "depth": 2,
            "num_heads": 4, "mlp_ratio": 4.0, "num_classes": 10, "global_pool": true,
            "drop_path_rate": 0.0, "head_init_std": 2e-5}"#,
    )
    .unwrap();
    let ft_pth = root.join("ft-pth");
    let stderr = text(
        &supmae(&[
            "finetune",
            "--checkpoint",
            fixtures.join("supmae_tiny.pth").to_str().unwrap(),
            "--model",
            vit.to_str().unwrap(),
            "--data",
            root.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--out",
            ft_pth.to_str().unwrap(),
        ])
        .stderr,
    );
    assert!(
        stderr.contains("fresh: fc_norm.bias, fc_norm.weight, head.bias, head.weight"),
        "{stderr}"
    );
    assert!(ft_pth.join("best.ckpt").is_file(), "{stderr}");
    for (file, pool) in [
        ("vit_tiny_gp.pth", "global pool"),
        ("vit_tiny_cls.pth", "cls-token pool"),
    ] {
        let stdout = ok(&[
            "eval",
            "--checkpoint",
            fixtures.join(file).to_str().unwrap(),
            "--model",
            vit.to_str().unwrap(),
            "--data",
            root.to_str().unwrap(),
        ]);
        assert!(
            stdout.contains(pool) && stdout.contains("10 classes"),
            "{stdout}"
        );
        assert!(stdout.contains("on 2 images"), "{stdout}");
    }
    assert_one_line_error(
        &supmae(&[
            "eval",
            "--checkpoint",
            fixtures.join("supmae_tiny.pth").to_str().unwrap(),
            "--data",
            root.to_str().unwrap(),
        ]),
        "not a fine-tuned classifier",
    );
}

/// Runs `supmae args`, asserting success; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = supmae(args);
    assert!(
        out.status.success(),
        "supmae {args:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn percent_after(stdout: &str, label: &str) -> f64 {
    let rest = &stdout[stdout
        .find(label)
        .unwrap_or_else(|| panic!("{label} in {stdout}"))
        + label.len()..];
    rest.trim_start()
        .split('%')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn finetune_linprobe_and_eval_run_on_the_embedded_default() {
    let dir = scratch("embedded-ft");
    let model = tiny_model(&dir);
    let pre = dir.join("pre");
    ok(&[
        "pretrain",
        "--model",
        model.to_str().unwrap(),
        "--epochs",
        "1",
        "--no-eval",
        "--out",
        pre.to_str().unwrap(),
    ]);
    let ft = dir.join("ft");
    let stdout = ok(&[
        "finetune",
        "--checkpoint",
        pre.to_str().unwrap(),
        "--epochs",
        "3",
        "--out",
        ft.to_str().unwrap(),
    ]);
    let best = percent_after(&stdout, "best validation top-1:");
    // Ten classes: three epochs on 10,000 images are far above chance (10%).
    assert!(best > 40.0, "{stdout}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ft.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["embed_dim"], 16, "the checkpoint's encoder");
    assert_eq!(config["layer_decay"], 0.75);
    let lp = dir.join("lp");
    let stdout = ok(&[
        "linprobe",
        "--checkpoint",
        pre.to_str().unwrap(),
        "--epochs",
        "1",
        "--out",
        lp.to_str().unwrap(),
    ]);
    assert!(stdout.contains("best validation top-1"), "{stdout}");
    // eval reproduces the fine-tuning run's best accuracy from its folder.
    let stdout = ok(&["eval", "--checkpoint", ft.to_str().unwrap()]);
    assert!(stdout.contains("fine-tuned checkpoint"), "{stdout}");
    assert!(stdout.contains("on 2000 images"), "{stdout}");
    assert!(
        (percent_after(&stdout, "top-1") - best).abs() < 0.01,
        "{stdout}"
    );
    let stdout = ok(&[
        "eval",
        "--checkpoint",
        lp.join("best.ckpt").to_str().unwrap(),
    ]);
    assert!(stdout.contains("linear-probe checkpoint"), "{stdout}");
    // Reconstructions of three test images beat flat patch-mean patches on removed patches.
    let test = FashionMnist::embedded(Split::Test).unwrap();
    let mut args = vec![
        "reconstruct".to_string(),
        "--checkpoint".into(),
        pre.to_str().unwrap().into(),
        "--out".into(),
        dir.join("grid.png").to_str().unwrap().into(),
    ];
    for i in 0..3 {
        use supmae_data::ImageSource;
        let img = test.load(i, 1).unwrap();
        let file = dir.join(format!("test{i}.png"));
        image::GrayImage::from_raw(img.width, img.height, img.pixels)
            .unwrap()
            .save(&file)
            .unwrap();
        args.extend(["--image".to_string(), file.to_str().unwrap().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdout = ok(&args);
    assert!(stdout.contains("normalised-pixel targets"), "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("error on removed"))
        .collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    for row in rows {
        let nums: Vec<f64> = row
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert!(nums[0] < nums[1], "{row}");
    }
    let grid = image::open(dir.join("grid.png")).unwrap();
    assert_eq!(
        (grid.width(), grid.height()),
        (4 * 112 + 5 * 4, 3 * 112 + 4 * 4)
    );
    assert_one_line_error(
        &supmae(&[
            "reconstruct",
            "--checkpoint",
            ft.to_str().unwrap(),
            "--image",
            "x.png",
        ]),
        "checkpoint",
    );

    // Mistakes are one line.
    assert_one_line_error(
        &supmae(&[
            "eval",
            "--checkpoint",
            pre.join("checkpoint.ckpt").to_str().unwrap(),
        ]),
        "a pre-training checkpoint, not a classifier",
    );
    assert_one_line_error(
        &supmae(&["linprobe", "--epochs", "1"]),
        "--checkpoint is required",
    );
    assert_one_line_error(
        &supmae(&["finetune", "--checkpoint", ft.to_str().unwrap()]),
        "not a pre-training checkpoint",
    );
    assert_one_line_error(
        &supmae(&[
            "finetune",
            "--layer-decay",
            "1.5",
            "--out",
            dir.to_str().unwrap(),
        ]),
        "layer_decay",
    );
    assert_one_line_error(
        &supmae(&[
            "finetune",
            "--aa",
            "rand-m99",
            "--out",
            dir.to_str().unwrap(),
        ]),
        "rand_augment",
    );
    assert_one_line_error(&supmae(&["eval"]), "--checkpoint <PATH>");
}

#[test]
fn check_backend_matches_the_pytorch_fixtures_on_the_cpu() {
    let fixtures =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/parity/fixtures/tiny");
    let stdout = ok(&["check-backend", "--fixtures", fixtures.to_str().unwrap()]);
    assert!(stdout.contains("backend flex"), "{stdout}");
    assert_eq!(stdout.matches(" ok").count(), 5, "{stdout}");
    assert_one_line_error(
        &supmae(&["check-backend", "--fixtures", "/nonexistent"]),
        "/nonexistent",
    );
}

/// A tiny Fashion-MNIST dataset and model for fast runs in `dir`; returns the common
/// pre-training arguments with `--out out`.
fn tiny_pretrain_args(dir: &Path, out: &Path, epochs: &str) -> Vec<String> {
    if !dir.join("train-images-idx3-ubyte.gz").exists() && !dir.join("model.json").exists() {
        fashion(dir, 32, 16);
    }
    let model = tiny_model(dir);
    [
        "pretrain",
        "--data",
        &format!("fashion-mnist:{}", dir.display()),
        "--model",
        model.to_str().unwrap(),
        "--batch-size",
        "16",
        "--warmup-epochs",
        "1",
        "--epochs",
        epochs,
        "--out",
        out.to_str().unwrap(),
    ]
    .map(str::to_string)
    .to_vec()
}

/// The run's files (not the lock) and a hash of each.
fn snapshot(dir: &Path) -> Vec<(String, u64)> {
    use std::hash::{Hash, Hasher};
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file() && e.file_name() != ".lock")
        .map(|e| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(e.path()).unwrap().hash(&mut h);
            (e.file_name().to_string_lossy().into_owned(), h.finish())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn flags_of_another_command_or_conflicting_with_resume_are_refused_and_touch_nothing() {
    let dir = scratch("flags");
    let out = dir.join("run");
    let first = run_args(&tiny_pretrain_args(&dir, &out, "1"));
    assert!(first.status.success(), "{}", text(&first.stderr));
    let before = snapshot(&out);
    let o = out.to_str().unwrap();

    // `finetune --resume` used to start a fresh run over the folder; now it resumes a
    // fine-tuning run, and this folder holds none.
    assert_one_line_error(
        &supmae(&["finetune", "--resume", "--out", o]),
        "not a fine-tuning or linear-probing checkpoint",
    );
    assert_one_line_error(
        &supmae(&["finetune", "--resume", "--epochs", "5", "--out", o]),
        "'--resume' cannot be used with '--epochs <N>'",
    );
    // A flag of another command.
    assert_one_line_error(
        &supmae(&["pretrain", "--layer-decay", "0.7", "--out", o]),
        "unexpected argument '--layer-decay'",
    );
    // --resume takes its settings from the folder: recipe flags are refused by name.
    assert_one_line_error(
        &supmae(&["pretrain", "--resume", "--model", "nonsense", "--out", o]),
        "'--resume' cannot be used with '--model <MODEL>'",
    );
    assert_one_line_error(
        &supmae(&[
            "pretrain", "--resume", "--epochs", "5", "--lr", "NaN", "--out", o,
        ]),
        "NaN",
    );
    assert_one_line_error(&supmae(&["pretrain", "--lr", "inf"]), "not a finite number");
    assert_eq!(snapshot(&out), before, "no refused command touched the run");
}

#[test]
fn a_finished_run_is_not_clobbered_busy_folders_are_refused_and_stale_temps_go() {
    let dir = scratch("clobber");
    let out = dir.join("run");
    let args = tiny_pretrain_args(&dir, &out, "1");
    let first = run_args(&args);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let before = snapshot(&out);

    // Starting a new run in the finished run's folder is refused.
    assert_one_line_error(&run_args(&args), "--overwrite");
    assert_eq!(snapshot(&out), before);

    // While a run holds the folder, a second run is refused with the holder's pid.
    let mut long = args.clone();
    let n = long.len();
    long[n - 3] = "200".into(); // --epochs
    long.push("--overwrite".into());
    let mut holder = Command::new(env!("CARGO_BIN_EXE_supmae"))
        .args(&long)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = out.join(".lock");
    let pid = holder.id().to_string();
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default() != pid {
        assert!(
            started.elapsed().as_secs() < 60,
            "the run never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_one_line_error(&run_args(&args), &format!("in use by process {pid}"));
    let mut again = args.clone();
    again.push("--overwrite".into());
    assert_one_line_error(&run_args(&again), &format!("in use by process {pid}"));
    holder.kill().unwrap();
    holder.wait().unwrap();

    // The killed run may have left a temporary file; the next run cleans it up, and the
    // checkpoint it left (if it got that far) is whole.
    std::fs::write(out.join(".checkpoint.ckpt.1.0.tmp"), b"torn").unwrap();
    if out.join("checkpoint.ckpt").is_file() {
        let o = out.to_str().unwrap();
        let ok = supmae(&["pretrain", "--resume", "--epochs", "1", "--out", o]);
        assert!(ok.status.success(), "{}", text(&ok.stderr));
    } else {
        let ok = run_args(&again);
        assert!(ok.status.success(), "{}", text(&ok.stderr));
    }
    let temps: Vec<_> = snapshot(&out)
        .into_iter()
        .filter(|(n, _)| n.ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "stale temporary files removed");
}

#[test]
fn resume_extends_a_run_with_epochs() {
    let dir = scratch("extend");
    let out = dir.join("run");
    let first = run_args(&tiny_pretrain_args(&dir, &out, "1"));
    assert!(first.status.success(), "{}", text(&first.stderr));
    let o = out.to_str().unwrap();
    let more = supmae(&["pretrain", "--resume", "--epochs", "2", "--out", o]);
    assert!(more.status.success(), "{}", text(&more.stderr));
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["epochs"], 2);
}

#[test]
fn help_needs_no_backend_and_a_closed_pipe_ends_quietly() {
    for cmd in [
        "pretrain",
        "finetune",
        "linprobe",
        "eval",
        "reconstruct",
        "inspect",
        "convert",
        "bench",
        "check-backend",
        "completions",
    ] {
        let out = supmae(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("Usage: supmae"), "{cmd}");
    }
    let bash = supmae(&["completions", "bash"]);
    assert!(bash.status.success());
    assert!(
        text(&bash.stdout).contains("supmae__subcmd__pretrain"),
        "a bash completion script"
    );

    // The reader goes away before the program writes: no panic, quiet exit.
    for args in [&["reconstruct", "--help"][..], &["completions", "zsh"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_supmae"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {stderr}");
    }
}

#[test]
fn a_folder_of_images_gets_the_small_model_and_says_so() {
    let root = scratch("folder-default");
    let photos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../supmae-data/tests/data/photos");
    for (name, to) in [
        ("astronaut.jpg", "a/1.jpg"),
        ("coffee.jpg", "a/2.jpg"),
        ("chelsea.jpg", "b/3.jpg"),
        ("rocket.jpg", "b/4.jpg"),
    ] {
        let to = root.join("data").join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(photos.join(name), to).unwrap();
    }
    let out = supmae(&[
        "pretrain",
        "--data",
        root.join("data").to_str().unwrap(),
        "--input-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--out",
        root.join("run").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("model: supmae_vit_mini_patch8_dec128d1b") && stderr.contains("32 px"),
        "{stderr}"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("run/config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["img_size"], 32);
    assert_eq!(config["model"]["embed_dim"], 96);
}

#[test]
fn finetune_and_linprobe_resume_from_their_folders() {
    let dir = scratch("cls-resume");
    let pre = dir.join("pre");
    let first = run_args(&tiny_pretrain_args(&dir, &pre, "1"));
    assert!(first.status.success(), "{}", text(&first.stderr));
    let data = format!("fashion-mnist:{}", dir.display());
    for (cmd, extra) in [("finetune", &["--aa", "none"][..]), ("linprobe", &[][..])] {
        let out = dir.join(cmd);
        let o = out.to_str().unwrap();
        let mut args = vec![
            cmd,
            "--checkpoint",
            pre.to_str().unwrap(),
            "--data",
            &data,
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--out",
            o,
        ];
        args.extend(extra);
        let run = supmae(&args);
        assert!(run.status.success(), "{cmd}: {}", text(&run.stderr));
        let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
        // Starting it again is refused; resuming the finished run trains nothing more.
        assert_one_line_error(&supmae(&args), "--overwrite");
        let resumed = supmae(&[cmd, "--resume", "--out", o]);
        assert!(resumed.status.success(), "{cmd}: {}", text(&resumed.stderr));
        assert!(
            text(&resumed.stderr).contains("resuming after epoch 2 of 2"),
            "{}",
            text(&resumed.stderr)
        );
        assert_eq!(std::fs::read_to_string(out.join("log.jsonl")).unwrap(), log);

        // Data-parallel on two devices of this machine: one log, the recipe says 2 peers,
        // and a one-device resume is refused by name.
        if cfg!(feature = "distributed") {
            let out2 = dir.join(format!("{cmd}-dp"));
            let o2 = out2.to_str().unwrap();
            let mut dp = vec![
                cmd,
                "--checkpoint",
                pre.to_str().unwrap(),
                "--data",
                &data,
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--devices",
                "2",
                "--out",
                o2,
            ];
            dp.extend(extra);
            let run = supmae(&dp);
            assert!(
                run.status.success(),
                "{cmd} --devices 2: {}",
                text(&run.stderr)
            );
            let log = std::fs::read_to_string(out2.join("log.jsonl")).unwrap();
            assert_eq!(log.lines().count(), 1, "{log}");
            let config: serde_json::Value =
                serde_json::from_slice(&std::fs::read(out2.join("config.json")).unwrap()).unwrap();
            assert_eq!(config["peers"], 2);
            assert_one_line_error(
                &supmae(&[cmd, "--resume", "--out", o2]),
                "2 data-parallel peer(s) but 1",
            );
        }
    }
}

#[test]
fn pretrain_init_continues_from_a_checkpoint_with_a_fresh_schedule() {
    let dir = scratch("init");
    let pre = dir.join("pre");
    let first = run_args(&tiny_pretrain_args(&dir, &pre, "1"));
    assert!(first.status.success(), "{}", text(&first.stderr));
    let mut args = tiny_pretrain_args(&dir, &dir.join("continued"), "1");
    args.extend(["--init".into(), pre.to_str().unwrap().into()]);
    let out = run_args(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("continuing from") && stderr.contains("fresh: none"),
        "{stderr}"
    );
    let o = dir.join("continued");
    assert_one_line_error(
        &supmae(&[
            "pretrain",
            "--resume",
            "--init",
            "x.pth",
            "--out",
            o.to_str().unwrap(),
        ]),
        "'--resume' cannot be used with '--init <FILE>'",
    );
    let mut missing = tiny_pretrain_args(&dir, &dir.join("missing"), "1");
    missing.extend(["--init".into(), "/nonexistent/mae.pth".into()]);
    assert_one_line_error(&run_args(&missing), "/nonexistent/mae.pth");
}

/// A small RGB image whose colour depends on `seed`.
fn colour_png(path: &Path, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(36, 36, |x, y| {
        let v = (seed * 53 + x * 7 + y * 3) % 256;
        image::Rgb([v as u8, (255 - v) as u8, ((seed * 91) % 256) as u8])
    });
    img.save(path).unwrap();
}

fn decode_png(path: &Path) -> image::RgbImage {
    image::ImageReader::open(path)
        .unwrap()
        .with_guessed_format()
        .unwrap()
        .decode()
        .unwrap()
        .to_rgb8()
}

/// Pixels that are not the white background.
fn inked(img: &image::RgbImage) -> usize {
    img.pixels().filter(|p| p.0 != [255, 255, 255]).count()
}

#[test]
fn robustness_eval_prints_the_table_and_score_and_runs_plot_their_curves() {
    let dir = scratch("robust");
    // Four ImageNet classes: the first two of ImageNet-A's subset, the first two of R's.
    let wnids = ["n01498041", "n01531178", "n01443537", "n01484850"];
    let data = dir.join("imagenet");
    for (c, w) in wnids.iter().enumerate() {
        for i in 0..4u32 {
            colour_png(&data.join(format!("train/{w}/{i}.png")), c as u32 * 10 + i);
        }
        colour_png(&data.join(format!("val/{w}/0.png")), c as u32 * 10 + 7);
    }
    let model = dir.join("vit.json");
    std::fs::write(
        &model,
        r#"{"img_size": 32, "patch_size": 8, "in_chans": 3, "embed_dim": 16, "depth": 1,
            "num_heads": 2, "mlp_ratio": 4.0, "num_classes": 4, "global_pool": true,
            "drop_path_rate": 0.0, "head_init_std": 2e-5}"#,
    )
    .unwrap();
    let ft = dir.join("ft");
    ok(&[
        "finetune",
        "--data",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--accum-iter",
        "1",
        "--threads",
        "1",
        "--out",
        ft.to_str().unwrap(),
    ]);
    // The run drew its curves as it went.
    let curves = decode_png(&ft.join("curves.png"));
    assert_eq!(curves.dimensions(), (1500, 900));
    assert!(inked(&curves) > 20_000, "curves.png is nearly blank");

    // The four datasets in their standard layouts.
    let root = dir.join("robust");
    for (i, w) in wnids.iter().enumerate() {
        let i = i as u32;
        if i < 2 {
            colour_png(&root.join(format!("imagenet-a/{w}/0.png")), 100 + i);
        } else {
            colour_png(&root.join(format!("imagenet-r/{w}/0.png")), 110 + i);
        }
        colour_png(&root.join(format!("imagenet-sketch/{w}/0.png")), 120 + i);
        for severity in [1, 2] {
            colour_png(
                &root.join(format!("imagenet-c/gaussian_noise/{severity}/{w}/0.png")),
                130 + i * 3 + severity,
            );
        }
    }
    std::fs::write(root.join("imagenet-a/README.txt"), "not a class").unwrap();
    let out = supmae(&[
        "eval",
        "--checkpoint",
        ft.to_str().unwrap(),
        "--robustness",
        root.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for row in [
        "IN-Corruption, mCE",
        "IN-Adversarial (A), top-1",
        "IN-Rendition (R), top-1",
        "IN-Sketch, top-1",
        "score = mean(100 - mCE, A, R, Sketch)",
        "gaussian_noise",
    ] {
        assert!(stdout.contains(row), "{row} missing:\n{stdout}");
    }
    assert!(
        text(&out.stderr).contains("imagenet-c/gaussian_noise/2: top-1"),
        "{}",
        text(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let (mce, a, r, s) = (
        json["imagenet_c"]["mce"].as_f64().unwrap(),
        json["imagenet_a"]["top1"].as_f64().unwrap(),
        json["imagenet_r"]["top1"].as_f64().unwrap(),
        json["imagenet_sketch"]["top1"].as_f64().unwrap(),
    );
    assert_eq!(
        json["imagenet_a"]["classes"], 2,
        "A's logits: its two classes"
    );
    assert_eq!(json["imagenet_sketch"]["images"], 4);
    let score = json["score"].as_f64().unwrap();
    assert!((score - ((100.0 - mce) + a + r + s) / 4.0).abs() < 1e-9);

    // A root without any of the four datasets: a clear error.
    let out = supmae(&[
        "eval",
        "--checkpoint",
        ft.to_str().unwrap(),
        "--robustness",
        dir.join("nothing-here").to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "none of imagenet-c/");

    // `supmae plot` overlays two runs into one picture.
    let ft2 = dir.join("ft-again");
    std::fs::create_dir_all(&ft2).unwrap();
    let log = std::fs::read_to_string(ft.join("log.jsonl")).unwrap();
    std::fs::write(
        ft2.join("log.jsonl"),
        log.replace("\"epoch\":1", "\"epoch\":2"),
    )
    .unwrap();
    let png = dir.join("both.png");
    let stdout = ok(&[
        "plot",
        ft.to_str().unwrap(),
        ft2.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(stdout.contains("2 run(s)"), "{stdout}");
    let both = decode_png(&png);
    assert_eq!(both.dimensions(), (1500, 900));
    // The second run's colour (plotters' palette's orange here) is drawn only when overlaid.
    let orange = |img: &image::RgbImage| img.pixels().filter(|p| p.0 == [255, 127, 14]).count();
    assert_eq!(orange(&curves), 0);
    assert!(orange(&both) > 100, "the second run is not drawn");
    assert_one_line_error(&supmae(&["plot", dir.to_str().unwrap()]), "no log.jsonl");
    let _ = std::fs::remove_dir_all(&dir);
}
