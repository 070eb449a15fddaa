//! Data-pipeline throughput: decode JPEG + RandomResizedCrop(224, scale (0.2, 1), bicubic) +
//! horizontal flip + normalise, batched, on all cores; and, in the same run, the same
//! pipeline in PIL + torchvision (`benches/data_pipeline_torch.py`), alternating.
//!
//! ```text
//! cargo bench -p supmae-data --bench data_pipeline
//! SUPMAE_BENCH_IMAGES=/path/to/jpegs cargo bench -p supmae-data --bench data_pipeline
//! ```
//!
//! Without `SUPMAE_BENCH_IMAGES` it writes 64 JPEGs at ImageNet-like sizes (500x375 and
//! friends, quality 90) made from the committed test photos into a temporary folder.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use image::imageops::FilterType;
use supmae_data::{DataLoader, FolderDataset, LoaderConfig, Transform};

const BATCH: usize = 64;
const SIZE: u32 = 224;
const WARMUP: usize = 2;
const TIMED: usize = 20;

fn make_images(dir: &Path) -> Vec<PathBuf> {
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos");
    let sizes = [
        (500, 375),
        (375, 500),
        (500, 333),
        (500, 400),
        (640, 480),
        (500, 500),
    ];
    std::fs::create_dir_all(dir).expect("create image folder");
    let mut files = Vec::new();
    for i in 0..64 {
        let name = ["astronaut", "chelsea", "coffee", "rocket"][i % 4];
        let src = image::open(photos.join(format!("{name}.jpg"))).expect("test photo");
        let (w, h) = sizes[i % sizes.len()];
        // Vary the content a little: crop a different corner each time, then upscale.
        let (cw, ch) = (src.width() * 3 / 4, src.height() * 3 / 4);
        let (x, y) = (
            (i as u32 * 7) % (src.width() - cw),
            (i as u32 * 5) % (src.height() - ch),
        );
        let img = src
            .crop_imm(x, y, cw, ch)
            .resize_exact(w, h, FilterType::Triangle)
            .to_rgb8();
        let mut bytes = Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&img)
            .expect("encode");
        let path = dir.join(format!("img_{i:03}.jpg"));
        std::fs::write(&path, bytes.into_inner()).expect("write");
        files.push(path);
    }
    files
}

fn ours(files: &[PathBuf], threads: usize) -> f64 {
    let samples = files.iter().map(|f| (f.clone(), 0)).collect();
    let ds = Arc::new(FolderDataset::from_samples(
        samples,
        vec!["x".into()],
        100_000_000,
    ));
    let cfg = LoaderConfig {
        threads,
        drop_last: true,
        ..LoaderConfig::new(BATCH)
    };
    let loader = DataLoader::new(ds, Transform::pretrain(SIZE), cfg).expect("loader");
    let mut seen = 0;
    let mut start = Instant::now();
    let mut epoch = 0;
    while seen < WARMUP + TIMED {
        for batch in loader.epoch(epoch) {
            let batch = batch.expect("batch");
            std::hint::black_box(&batch.images);
            seen += 1;
            if seen == WARMUP {
                start = Instant::now();
            }
            if seen == WARMUP + TIMED {
                break;
            }
        }
        epoch += 1;
    }
    (TIMED * BATCH) as f64 / start.elapsed().as_secs_f64()
}

fn torchvision(dir: &Path, threads: usize) -> Result<f64, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/data_pipeline_torch.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--images", &dir.display().to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--batch", &BATCH.to_string(), "--size", &SIZE.to_string()])
        .args([
            "--batches",
            &TIMED.to_string(),
            "--warmup",
            &WARMUP.to_string(),
        ])
        .output()
        .map_err(|e| format!("skipped: cannot run python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if text.starts_with("skipped") || !out.status.success() {
        return Err(if text.is_empty() {
            String::from_utf8_lossy(&out.stderr).into_owned()
        } else {
            text
        });
    }
    let key = "\"images_per_sec\":";
    let rest = text
        .split(key)
        .nth(1)
        .ok_or(format!("unexpected output: {text}"))?;
    rest.trim()
        .split([',', '}'])
        .next()
        .and_then(|v| v.trim().parse().ok())
        .ok_or(format!("unexpected output: {text}"))
}

fn main() {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (dir, files) = match std::env::var_os("SUPMAE_BENCH_IMAGES") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .expect("read SUPMAE_BENCH_IMAGES")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|e| {
                        e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")
                    })
                })
                .collect();
            files.sort();
            (dir, files)
        }
        None => {
            let dir = std::env::temp_dir().join("supmae-bench-jpegs");
            let files = make_images(&dir);
            (dir, files)
        }
    };
    println!(
        "data pipeline: {} JPEGs in {}, batch {BATCH}, {SIZE}px RandomResizedCrop + flip + normalise, {threads} threads",
        files.len(),
        dir.display()
    );
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "CPU: {cpu}, {threads} threads; JPEG decoder: {}",
        supmae_data::decode::JPEG_DECODER
    );
    // Alternating rounds, ours first; the ratio reported is the median of the per-round
    // ratios (PyTorch's first round pays for worker start-up too, so more rounds tell more).
    let rounds: usize = std::env::var("SUPMAE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let mut rust = Vec::new();
    let mut torch = Vec::new();
    for round in 0..rounds {
        let r = ours(&files, threads);
        println!("round {round}: supmae-data {r:8.1} img/s");
        rust.push(r);
        match torchvision(&dir, threads) {
            Ok(t) => {
                println!(
                    "round {round}: torchvision {t:8.1} img/s  ratio {:.2}x",
                    r / t
                );
                torch.push(t);
            }
            Err(reason) => {
                println!("torchvision baseline {reason}");
                break;
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    if torch.is_empty() {
        println!(
            "supmae-data median {:.1} img/s over {} rounds (no PyTorch baseline)",
            median(&rust),
            rust.len()
        );
    } else {
        let ratios: Vec<f64> = rust.iter().zip(&torch).map(|(r, t)| r / t).collect();
        println!(
            "supmae-data median {:.1} img/s, torchvision median {:.1} img/s over {} rounds: median ratio {:.2}x",
            median(&rust),
            median(&torch),
            ratios.len(),
            median(&ratios)
        );
    }
}
