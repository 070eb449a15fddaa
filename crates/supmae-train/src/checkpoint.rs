//! Training checkpoints: one self-checking file, written atomically.
//!
//! Layout: the magic `SUPMAE-TRAIN-CKPT\n`, then four length-prefixed sections (little-endian
//! `u64` length, then bytes): JSON metadata (config, epochs done, history), the model record,
//! the two AdamW records (decay and no-decay groups), then an FNV-1a 64 checksum of
//! everything before it. A truncated or corrupted file is a typed error, never a half-loaded
//! model.
//!
//! Writes go to a temporary file unique to the write, are flushed to disk, then renamed over
//! the old file (see [`crate::run_dir`]), so a crash at any point leaves either the previous
//! checkpoint or the new one, never a torn file.

use std::path::Path;

use crate::error::{Result, TrainError, io};

pub(crate) const MAGIC: &[u8] = b"SUPMAE-TRAIN-CKPT\n";

/// The largest metadata section [`CheckpointParts::read_meta`] accepts (config and history
/// are a few kilobytes; a larger declared length is a corrupted or hostile file).
pub const MAX_META_BYTES: u64 = 64 << 20;

/// The sections of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointParts {
    /// JSON metadata.
    pub meta: Vec<u8>,
    /// The model record.
    pub model: Vec<u8>,
    /// The AdamW record of the weight-decayed group.
    pub optim_decay: Vec<u8>,
    /// The AdamW record of the group without weight decay.
    pub optim_no_decay: Vec<u8>,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl CheckpointParts {
    /// Serialises the sections.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for section in [
            &self.meta,
            &self.model,
            &self.optim_decay,
            &self.optim_no_decay,
        ] {
            out.extend_from_slice(&(section.len() as u64).to_le_bytes());
            out.extend_from_slice(section);
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parses and verifies a checkpoint read from `path`.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason: &str| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if !bytes.starts_with(MAGIC) {
            return Err(bad("not a supmae training checkpoint (wrong magic bytes)"));
        }
        if bytes.len() < MAGIC.len() + 8 {
            return Err(bad("truncated"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        let mut sum_bytes = [0u8; 8];
        sum_bytes.copy_from_slice(sum);
        if fnv1a(body) != u64::from_le_bytes(sum_bytes) {
            return Err(bad("checksum mismatch: the file is truncated or corrupted"));
        }
        let mut rest = &body[MAGIC.len()..];
        let mut sections = Vec::with_capacity(4);
        for _ in 0..4 {
            if rest.len() < 8 {
                return Err(bad("truncated section header"));
            }
            let mut len = [0u8; 8];
            len.copy_from_slice(&rest[..8]);
            let len = u64::from_le_bytes(len) as usize;
            rest = &rest[8..];
            if rest.len() < len {
                return Err(bad("truncated section"));
            }
            sections.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes after the last section"));
        }
        let Ok([meta, model, optim_decay, optim_no_decay]) = <[Vec<u8>; 4]>::try_from(sections)
        else {
            return Err(bad("not four sections"));
        };
        Ok(Self {
            meta,
            model,
            optim_decay,
            optim_no_decay,
        })
    }

    /// Reads only the metadata section of `path` (the header and the JSON, not the tensors,
    /// and without verifying the checksum): what a checkpoint is, cheaply. The declared
    /// length is checked against the file's size and [`MAX_META_BYTES`] before anything is
    /// allocated.
    pub fn read_meta(path: &Path) -> Result<Vec<u8>> {
        use std::io::Read;
        let bad = |reason: &str| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let mut file = supmae_model::checkpoint::open_regular(path).map_err(io(path))?;
        let size = file.metadata().map_err(io(path))?.len();
        let mut head = vec![0u8; MAGIC.len() + 8];
        file.read_exact(&mut head)
            .map_err(|_| bad("not a supmae training checkpoint (too short)"))?;
        if !head.starts_with(MAGIC) {
            return Err(bad("not a supmae training checkpoint (wrong magic bytes)"));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&head[MAGIC.len()..]);
        let len = u64::from_le_bytes(len);
        if len > MAX_META_BYTES || len > size.saturating_sub(head.len() as u64 + 8) {
            return Err(bad("truncated or corrupted metadata section"));
        }
        let mut meta = vec![0u8; len as usize];
        file.read_exact(&mut meta)
            .map_err(|_| bad("truncated metadata section"))?;
        Ok(meta)
    }

    /// Reads and verifies `path`.
    pub fn read(path: &Path) -> Result<Self> {
        use std::io::Read;
        let mut bytes = Vec::new();
        supmae_model::checkpoint::open_regular(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(path))?;
        Self::decode(&bytes, path)
    }
}

pub use crate::run_dir::{tmp_path, write_atomic, write_atomic_with};

/// The checkpoint format this version writes and reads.
pub const FORMAT: u32 = 1;

/// A checkpoint's `format` against [`FORMAT`].
pub(crate) fn check_format(found: u32, path: &Path) -> Result<()> {
    if found == FORMAT {
        return Ok(());
    }
    Err(TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: format!(
            "checkpoint format {found}, but this supmae reads format {FORMAT}{}",
            if found > FORMAT {
                " (written by a newer supmae?)"
            } else {
                ""
            }
        ),
    })
}

/// `epochs_done` and the history length of a checkpoint against its recipe's epochs.
pub(crate) fn check_counters(
    epochs_done: usize,
    epochs: usize,
    history: usize,
    path: &Path,
) -> Result<()> {
    if epochs_done > epochs || history != epochs_done {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "inconsistent counters: {epochs_done} epochs done of {epochs}, {history} \
                 logged epochs"
            ),
        });
    }
    Ok(())
}

thread_local! {
    /// Set while [`decode_record`] runs: panics on this thread are not printed.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Decodes a Burn record (model or optimizer) from checkpoint bytes.
///
/// Burn 0.21 panics on some malformed records instead of returning an error (an invalid
/// parameter id: `ParamId::deserialize`'s "Invalid id.", found by our fuzzer in re-checksummed
/// files). Such a panic is caught here and returned as the error text; while decoding, the
/// panic hook stays quiet on this thread (it is wrapped once, and defers to the previous
/// hook everywhere else).
pub(crate) fn decode_record<B, R>(
    bytes: Vec<u8>,
    device: &B::Device,
) -> std::result::Result<R, String>
where
    B: burn::prelude::Backend,
    R: burn::record::Record<B>,
{
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET_PANICS.with(|q| q.set(true));
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Recorder::<B>::load(
            &NamedMpkBytesRecorder::<FullPrecisionSettings>::new(),
            bytes,
            device,
        )
    }));
    QUIET_PANICS.with(|q| q.set(false));
    match decoded {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(payload) => Err(format!(
            "malformed record ({})",
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Burn panicked while decoding it".into())
        )),
    }
}

/// Builds a model with `init` and loads the model record `bytes` into it, refusing a record
/// that does not fit: fewer bytes than `params` (the config's parameter count) need as
/// `f32` (checked before `init` allocates anything), a parameter whose shape differs from
/// the config's, or parameters the config's model does not have (more blocks than `depth`).
pub(crate) fn load_model<B, M>(
    path: &Path,
    bytes: Vec<u8>,
    params: usize,
    init: impl FnOnce() -> std::result::Result<M, supmae_model::ModelError>,
    device: &B::Device,
) -> Result<M>
where
    B: burn::prelude::Backend,
    M: supmae_model::checkpoint::BlockCounts<B>,
{
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;
    let bad = |reason: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let len = bytes.len();
    if (len as u64) < 4 * params as u64 {
        return Err(bad(format!(
            "the model record holds {len} bytes, too few for the {params} parameters of the \
             model its metadata describes (metadata and record disagree)"
        )));
    }
    let fresh = init()?;
    let expected = supmae_model::checkpoint::param_keys(&fresh);
    let record: M::Record =
        decode_record::<B, _>(bytes, device).map_err(|e| bad(format!("model record: {e}")))?;
    for (list, expected, found) in fresh.block_counts(&record) {
        if expected != found {
            return Err(bad(format!(
                "model record: {found} `{list}` but the metadata's model has {expected}"
            )));
        }
    }
    let model = fresh.load_record(record);
    let found = supmae_model::checkpoint::param_keys(&model);
    for (e, f) in expected.iter().zip(&found) {
        if e.shape != f.shape {
            return Err(bad(format!(
                "model record: `{}` has shape {:?} but the metadata's model needs {:?}",
                e.key, f.shape, e.shape
            )));
        }
    }
    let again = Recorder::<B>::record(&Rec::new(), model.clone().into_record(), ())
        .map_err(|e| bad(format!("model record: {e}")))?;
    if again.len() != len {
        return Err(bad(format!(
            "the model record holds {len} bytes but the metadata's model takes {} (more \
             blocks or parameters than the metadata says?)",
            again.len()
        )));
    }
    Ok(model)
}

/// Packs several records into one section (the optimizer groups of a fine-tuning run): a
/// little-endian `u64` count, then per record a `u64` length and its bytes.
pub fn pack(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = (records.len() as u64).to_le_bytes().to_vec();
    for r in records {
        out.extend_from_slice(&(r.len() as u64).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// Unpacks [`pack`]; `None` when a declared count or length does not fit the bytes (nothing
/// is allocated from a declared size before it is checked).
pub fn unpack(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let read_u64 =
        |b: &[u8]| -> Option<u64> { Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?)) };
    let count = read_u64(bytes)?;
    let mut rest = &bytes[8..];
    if count > rest.len() as u64 / 8 {
        return None;
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = read_u64(rest)?;
        rest = &rest[8..];
        if len > rest.len() as u64 {
            return None;
        }
        let (record, tail) = rest.split_at(len as usize);
        out.push(record.to_vec());
        rest = tail;
    }
    rest.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_records_round_trip_and_bad_lengths_are_refused() {
        let records = vec![vec![1u8, 2, 3], Vec::new(), vec![9; 20]];
        let packed = pack(&records);
        assert_eq!(unpack(&packed).unwrap(), records);
        assert!(unpack(&packed[..packed.len() - 1]).is_none(), "truncated");
        let mut huge = packed.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            unpack(&huge).is_none(),
            "a declared count larger than the bytes"
        );
        assert!(unpack(&[1, 2]).is_none());
    }

    fn parts() -> CheckpointParts {
        CheckpointParts {
            meta: b"{\"epoch\": 1}".to_vec(),
            model: vec![1, 2, 3],
            optim_decay: vec![4; 100],
            optim_no_decay: vec![],
        }
    }

    #[test]
    fn round_trip_and_corruption_is_detected() {
        let p = Path::new("x.ckpt");
        let bytes = parts().encode();
        assert_eq!(CheckpointParts::decode(&bytes, p).unwrap(), parts());
        for cut in [0, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                CheckpointParts::decode(&bytes[..cut], p).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        let err = CheckpointParts::decode(&flipped, p).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        let err = CheckpointParts::decode(b"PK\x03\x04 a torch file", p).unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
    }
}
