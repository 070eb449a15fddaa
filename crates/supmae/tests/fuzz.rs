//! Seeded mutation fuzzing of every parser of untrusted files: the `torch.save` reader (zip
//! and pickle), safetensors, our `.ckpt` (raw bytes, and metadata / records re-checksummed
//! so the checksum does not hide them) and image headers. Each target mutates a valid file
//! for `SUPMAE_FUZZ_SECS` seconds (default 3; CI runs 30) and fails on any panic; the
//! readers' own budgets keep memory bounded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use supmae_model::StateDict;
use supmae_train::checkpoint::CheckpointParts;

type B = burn::backend::Flex;

fn budget() -> Duration {
    let secs = std::env::var("SUPMAE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("supmae-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// xorshift64*: a fixed-seed stream, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four mutations: bit flips, interesting integers written over the bytes, byte
/// runs deleted, inserted or duplicated, or truncation.
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    const INTERESTING: [u64; 8] = [0, 1, 0x7f, 0xff, 0xffff_ffff, 1 << 31, 1 << 40, u64::MAX];
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            b.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(b.len());
        match rng.below(6) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = rng.next() as u8,
            2 => {
                let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let n = [1, 2, 4, 8][rng.below(4)].min(b.len() - at);
                b[at..at + n].copy_from_slice(&v[..n]);
            }
            3 => {
                let n = (1 + rng.below(16)).min(b.len() - at);
                b.drain(at..at + n);
            }
            4 => {
                let n = 1 + rng.below(16);
                let chunk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(at..at, chunk);
            }
            _ => b.truncate(at),
        }
    }
    b
}

/// Runs `target` on mutants of `seed` until the time budget is spent; returns the count.
fn fuzz(seed: &[u8], salt: u64, mut target: impl FnMut(&[u8])) -> usize {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ salt);
    let start = Instant::now();
    let mut runs = 0;
    while start.elapsed() < budget() {
        target(&mutate(seed, &mut rng));
        runs += 1;
    }
    runs
}

fn read_everything(path: &Path) {
    if let Ok(state) = StateDict::from_file(path) {
        let _ = state.entries_f32();
        let _ = supmae_model::inspect(&state);
    }
}

#[test]
fn fuzz_torch_reader() {
    let seed = std::fs::read(fixture("tools/parity/fixtures/tiny/supmae_tiny.pth")).unwrap();
    let file = scratch("pth").join("x.pth");
    let runs = fuzz(&seed, 1, |bytes| {
        std::fs::write(&file, bytes).unwrap();
        read_everything(&file);
    });
    eprintln!("torch reader: {runs} mutants");
}

#[test]
fn fuzz_safetensors() {
    let dir = scratch("st");
    let state =
        StateDict::from_file(fixture("tools/parity/fixtures/tiny/supmae_tiny.pth")).unwrap();
    let good = dir.join("good.safetensors");
    state.write_safetensors(&good).unwrap();
    let seed = std::fs::read(&good).unwrap();
    let file = dir.join("x.safetensors");
    let runs = fuzz(&seed, 2, |bytes| {
        std::fs::write(&file, bytes).unwrap();
        read_everything(&file);
    });
    eprintln!("safetensors: {runs} mutants");
}

#[test]
fn fuzz_native_checkpoint() {
    let dir = scratch("ckpt");
    let good = dir.join("good.ckpt");
    supmae::convert::<B>(
        &fixture("tools/parity/fixtures/tiny/supmae_tiny.pth"),
        &good,
        &Default::default(),
    )
    .unwrap();
    let seed = std::fs::read(&good).unwrap();
    let parts = CheckpointParts::decode(&seed, &good).unwrap();
    let file = dir.join("x.ckpt");
    let load = |bytes: &[u8]| {
        std::fs::write(&file, bytes).unwrap();
        if supmae_train::open::open(&file).is_ok() {
            let _ = supmae_train::pretrain::load_pretrained::<B>(&file, &Default::default());
        }
    };
    let raw = fuzz(&seed, 3, load);
    // Metadata and model record mutated, then re-checksummed: what a hostile author writes.
    let mut rng = Rng(4);
    let mut resealed = 0;
    let start = Instant::now();
    while start.elapsed() < budget() {
        let mut p = parts.clone();
        if rng.below(2) == 0 {
            p.meta = mutate(&p.meta, &mut rng);
        } else {
            p.model = mutate(&p.model, &mut rng);
        }
        load(&p.encode());
        resealed += 1;
    }
    eprintln!(".ckpt: {raw} raw mutants, {resealed} re-checksummed");
}

#[test]
fn fuzz_image_headers() {
    let png = std::fs::read(fixture(
        "crates/supmae-data/tests/data/photos/astronaut_pil_bicubic_224.png",
    ))
    .unwrap();
    let jpeg = std::fs::read(fixture("crates/supmae-data/tests/data/photos/chelsea.jpg")).unwrap();
    let path = Path::new("mutant");
    let eval = supmae_data::Transform::eval(32);
    for (salt, seed) in [(5, &png), (6, &jpeg)] {
        // Mutations near the header: keep the first 512 bytes' worth of changes meaningful.
        let head = &seed[..seed.len().min(4096)];
        let runs = fuzz(head, salt, |bytes| {
            if let Ok(img) = supmae_data::decode_image(bytes, path, 3, 1 << 22) {
                let mut out = vec![0.0; eval.output_len()];
                let _ = eval.apply(&img, &mut supmae_data::SampleRng::new(0), &mut out);
            }
        });
        eprintln!("image headers (salt {salt}): {runs} mutants");
    }
    // Whole JPEGs, mutated anywhere (entropy-coded data included), decoded as the training
    // loader decodes them: only a RandomResizedCrop box, with libjpeg's row skipping and
    // column cropping.
    let train = supmae_data::Transform::pretrain(32);
    let mut rng = supmae_data::SampleRng::new(1);
    let runs = fuzz(&jpeg, 7, |bytes| {
        let part = supmae_data::decode_image_part(bytes, path, 3, 1 << 22, &mut |w, h| {
            Ok(Some(supmae_data::transform::random_resized_crop_box(
                w,
                h,
                (0.08, 1.0),
                (3.0 / 4.0, 4.0 / 3.0),
                &mut rng,
            )))
        });
        if let Ok((img, Some(crop))) = part {
            assert!(crop.left + crop.width <= img.width && crop.top + crop.height <= img.height);
            let mut out = vec![0.0; train.output_len()];
            let resized = supmae_data::transform::resized_crop(&img, crop, 32, 32).unwrap();
            train.write_normalized(&resized, false, &mut out);
        }
    });
    eprintln!("whole JPEGs, crop decoding: {runs} mutants");
}
