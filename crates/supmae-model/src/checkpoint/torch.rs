//! A strict reader for `torch.save` zip files.
//!
//! The zip directory comes from the `zip` crate; the pickle from our own restricted
//! unpickler ([`super::pickle`]). Every storage record must be stored uncompressed (as
//! `torch.save` writes it), lie inside the file, match its CRC-32 when read, and hold at
//! least the bytes its tensors' shapes, strides and offsets reach; all of that is checked
//! before a tensor's values are allocated, so a small file cannot make us allocate what it
//! merely declares.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::pickle::Pickle;
use super::tensor_ref::TensorRef;

/// Largest `data.pkl` accepted (a ViT-H state dict's pickle is well under 1 MiB; optimizer
/// state and training arguments add little).
pub const MAX_PICKLE_BYTES: u64 = 16 << 20;

/// Where a storage record's bytes are in the file.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    start: u64,
    len: u64,
    crc: u32,
}

/// A `torch.save` file's tensors and where their storages are.
#[derive(Debug)]
pub struct TorchFile {
    /// Tensors by dotted key.
    pub tensors: BTreeMap<String, TensorRef>,
    /// Storage records by key.
    pub records: BTreeMap<String, Record>,
}

fn read_at(file: &mut std::fs::File, rec: Record) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    file.seek(SeekFrom::Start(rec.start))
        .and_then(|_| file.take(rec.len).read_to_end(&mut buf))
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 != rec.len {
        return Err("the file ends inside the record".into());
    }
    if crc32fast::hash(&buf) != rec.crc {
        return Err("CRC-32 mismatch: the record is corrupted".into());
    }
    Ok(buf)
}

impl TorchFile {
    /// Reads the zip directory and the pickle of `path`, checking every tensor against its
    /// storage record. Reads no tensor values.
    pub fn open(path: &Path) -> Result<Self, String> {
        let mut file = super::open_regular(path).map_err(|e| e.to_string())?;
        let file_len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut zip = zip::ZipArchive::new(&mut file).map_err(|e| {
            format!(
                "not a zip-format torch.save file ({e}; files from torch < 1.6 must be re-saved)"
            )
        })?;
        let mut pickle = None;
        let mut entries = BTreeMap::new();
        for i in 0..zip.len() {
            let entry = zip
                .by_index_raw(i)
                .map_err(|e| format!("zip entry {i}: {e}"))?;
            let name = entry.name().to_string();
            let start = entry
                .data_start()
                .ok_or_else(|| format!("zip entry {name}: no data"))?;
            let len = entry.compressed_size();
            if entry.compression() != zip::CompressionMethod::Stored || entry.size() != len {
                return Err(format!(
                    "zip entry {name} is compressed (torch.save never does that)"
                ));
            }
            if start.checked_add(len).is_none_or(|end| end > file_len) {
                return Err(format!(
                    "zip entry {name} declares {len} bytes past the end of the {file_len}-byte file"
                ));
            }
            let rec = Record {
                start,
                len,
                crc: entry.crc32(),
            };
            if name.ends_with("/data.pkl") || name == "data.pkl" {
                if pickle.replace((name.clone(), rec)).is_some() {
                    return Err("two data.pkl records".into());
                }
            } else {
                entries.insert(name, rec);
            }
        }
        drop(zip);
        let (pkl_name, pkl) = pickle.ok_or("no data.pkl record: not a torch.save file")?;
        let prefix = pkl_name
            .strip_suffix("data.pkl")
            .unwrap_or_default()
            .to_string();
        if let Some(order) = entries.get(&format!("{prefix}byteorder"))
            && read_at(&mut file, *order).map_err(|e| format!("byteorder: {e}"))? != b"little"
        {
            return Err("a big-endian torch.save file".into());
        }
        if pkl.len > MAX_PICKLE_BYTES {
            return Err(format!(
                "data.pkl is {} bytes, over the {MAX_PICKLE_BYTES}-byte limit",
                pkl.len
            ));
        }
        let bytes = read_at(&mut file, pkl).map_err(|e| format!("data.pkl: {e}"))?;
        let parsed = Pickle::parse(&bytes).map_err(|e| format!("data.pkl: {e}"))?;
        let mut tensors = BTreeMap::new();
        let mut records = BTreeMap::new();
        for (key, t) in parsed.tensors()? {
            let rec_name = format!("{prefix}data/{}", t.storage);
            let rec = *entries
                .get(&rec_name)
                .ok_or_else(|| format!("tensor `{key}`: storage record {rec_name} is missing"))?;
            let need = t.storage_numel.checked_mul(t.dtype.size());
            if need != Some(rec.len) {
                return Err(format!(
                    "tensor `{key}`: storage {} holds {} bytes but declares {} elements of {} bytes",
                    t.storage,
                    rec.len,
                    t.storage_numel,
                    t.dtype.size()
                ));
            }
            records.insert(t.storage.clone(), rec);
            if tensors.insert(key.clone(), t).is_some() {
                return Err(format!("tensor `{key}` appears twice"));
            }
        }
        Ok(Self { tensors, records })
    }
}

/// Reads one tensor's values (as `f64`, exact for every supported dtype but int64 beyond
/// 2^53) from `path`, verifying the record's CRC.
pub fn read_values(path: &Path, t: &TensorRef, rec: Record) -> Result<Vec<f64>, String> {
    let mut file = super::open_regular(path).map_err(|e| e.to_string())?;
    let bytes = read_at(&mut file, rec).map_err(|e| format!("storage {}: {e}", t.storage))?;
    let size = t.dtype.size() as usize;
    let mut contiguous = true;
    let mut expect = 1u64;
    for (&n, &s) in t.shape.iter().zip(&t.stride).rev() {
        contiguous &= n <= 1 || s == expect;
        expect *= n as u64;
    }
    if contiguous {
        let start = t.offset as usize * size;
        let values = bytes[start..start + t.numel() * size].chunks_exact(size);
        return Ok(values.map(|b| t.dtype.to_f64(b)).collect());
    }
    let mut out = Vec::with_capacity(t.numel());
    let mut index = vec![0usize; t.shape.len()];
    for _ in 0..t.numel() {
        let at = t.offset as usize
            + index
                .iter()
                .zip(&t.stride)
                .map(|(&i, &s)| i * s as usize)
                .sum::<usize>();
        out.push(t.dtype.to_f64(&bytes[at * size..(at + 1) * size]));
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(out)
}
