//! ViT-B-sized checkpoints of every official flavour, generated at test time by
//! `tools/checkpoints/make_official_like.py` (random weights, official key names, shapes
//! and save layouts). Skipped, with a message, where Python has no torch (CI checks the
//! tiny committed fixtures in `inspect.rs`, `convert.rs` and `embed.rs`).

use std::path::PathBuf;
use std::process::Command;

use supmae::burn::backend::Flex;
use supmae::convert;
use supmae_model::checkpoint::StateDict;
use supmae_model::{Flavour, inspect};

#[test]
fn every_official_flavour_at_vit_b_size() {
    let has_torch = Command::new("python3")
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        eprintln!("skipped: python3 with torch is not installed (pip install torch)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("supmae-vitb-{}", std::process::id()));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/checkpoints/make_official_like.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases = [
        (
            "supmae_pretrain_vit_base.pth",
            Flavour::SupMaePretrain {
                branch: "projection_head".into(),
            },
            Some((512, 1)),
        ),
        (
            "mae_pretrain_vit_base_full.pth",
            Flavour::MaeFull,
            Some((512, 8)),
        ),
        (
            "mae_visualize_vit_base.pth",
            Flavour::MaeFull,
            Some((512, 8)),
        ),
        ("mae_pretrain_vit_base.pth", Flavour::MaeEncoder, None),
        (
            "supmae_vitb_ft_100e.pth",
            Flavour::Finetuned { global_pool: true },
            None,
        ),
        (
            "mae_finetuned_vit_base.pth",
            Flavour::Finetuned { global_pool: true },
            None,
        ),
        ("mae_linprobe_vit_base.pth", Flavour::LinearProbe, None),
    ];
    for (file, flavour, decoder) in cases {
        let sd = StateDict::from_file(dir.join(file)).unwrap();
        let info = inspect(&sd).unwrap();
        assert_eq!(info.flavour, flavour, "{file}");
        assert_eq!(
            (
                info.embed_dim,
                info.depth,
                info.num_heads,
                info.patch_size,
                info.img_size
            ),
            (768, 12, 12, 16, 224),
            "{file}"
        );
        assert_eq!(info.decoder.map(|(d, b, _)| (d, b)), decoder, "{file}");
        if decoder.is_some() {
            assert_eq!(
                info.decoder.unwrap().2,
                16,
                "official decoders have 16 heads"
            );
        }
    }
    // Round trips through our native format give identical state dicts.
    for file in [
        "supmae_pretrain_vit_base.pth",
        "supmae_vitb_ft_100e.pth",
        "mae_linprobe_vit_base.pth",
    ] {
        let native = dir.join("native.ckpt");
        let back = dir.join("back.safetensors");
        convert::<Flex>(&dir.join(file), &native, &Default::default()).unwrap();
        convert::<Flex>(&native, &back, &Default::default()).unwrap();
        let a = StateDict::from_file(dir.join(file)).unwrap();
        let b = StateDict::from_file(&back).unwrap();
        // The released SupMAE names the branch `projection_head`; ours writes `cls_head`.
        let rename = |k: &str| k.replace("projection_head.", "cls_head.");
        let mut ka: Vec<String> = a.keys().map(rename).collect();
        ka.sort();
        let kb: Vec<String> = b.keys().map(str::to_string).collect();
        assert_eq!(ka, kb, "{file}");
        for key in a.keys() {
            assert_eq!(
                a.read_f32(key).unwrap(),
                b.read_f32(&rename(key)).unwrap(),
                "{file}: {key}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
