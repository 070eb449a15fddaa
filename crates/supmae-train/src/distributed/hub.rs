//! The multi-process link: a star over TCP around process 0.
//!
//! Wire format, all little-endian: a hello of `MAGIC, rank: u32, peers: u32` from every
//! worker; then, per all-reduce, every worker sends `len: u64` and `len` f32 values, and
//! process 0 answers each with the mean, in the same framing. Process 0 adds the buffers in
//! rank order and divides by the number of peers, so every process receives the very same
//! bits.

use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::error::{Result, TrainError};

const MAGIC: u32 = 0x5355_504d; // "SUPM"
const CONNECT_FOR: Duration = Duration::from_secs(600);

fn err(what: String) -> TrainError {
    TrainError::Collective(what)
}

/// Process 0 listens on `master`'s port and accepts the others; the others connect.
/// Returns `(rank, stream)` pairs: every other rank for process 0, rank 0 for the others.
pub(super) fn connect(master: &str, rank: usize, peers: usize) -> Result<Vec<(usize, TcpStream)>> {
    if rank == 0 {
        let port = master.rsplit_once(':').map_or("", |(_, p)| p);
        let listener = TcpListener::bind(format!("0.0.0.0:{port}"))
            .map_err(|e| err(format!("process 0 cannot listen on port {port}: {e}")))?;
        let mut streams: Vec<Option<TcpStream>> = (0..peers).map(|_| None).collect();
        for _ in 1..peers {
            let (mut s, from) = listener
                .accept()
                .map_err(|e| err(format!("accepting a peer: {e}")))?;
            let hello = read_u32s::<3>(&mut s)
                .map_err(|e| err(format!("peer at {from} sent no greeting: {e}")))?;
            let (r, p) = (hello[1] as usize, hello[2] as usize);
            if hello[0] != MAGIC {
                return Err(err(format!("{from} is not a supmae peer")));
            }
            if p != peers || r == 0 || r >= peers || streams[r].is_some() {
                return Err(err(format!(
                    "peer at {from} says it is rank {r} of {p}; this run has {peers} peers \
                     and rank {r} is {}",
                    if r > 0 && r < peers && streams[r].is_some() {
                        "taken"
                    } else {
                        "out of range"
                    }
                )));
            }
            s.set_nodelay(true).ok();
            streams[r] = Some(s);
        }
        Ok(streams
            .into_iter()
            .enumerate()
            .filter_map(|(r, s)| s.map(|s| (r, s)))
            .collect())
    } else {
        let start = Instant::now();
        let mut stream = loop {
            match TcpStream::connect(master) {
                Ok(s) => break s,
                Err(e) if start.elapsed() > CONNECT_FOR => {
                    return Err(err(format!(
                        "rank {rank} could not reach process 0 at {master} for {} s: {e}",
                        CONNECT_FOR.as_secs()
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        stream.set_nodelay(true).ok();
        let mut hello = Vec::with_capacity(12);
        for v in [MAGIC, rank as u32, peers as u32] {
            hello.extend_from_slice(&v.to_le_bytes());
        }
        stream
            .write_all(&hello)
            .map_err(|e| err(format!("greeting process 0 at {master}: {e}")))?;
        Ok(vec![(0, stream)])
    }
}

fn read_u32s<const N: usize>(s: &mut impl Read) -> std::io::Result<[u32; N]> {
    let mut out = [0u32; N];
    for v in &mut out {
        let mut b = [0u8; 4];
        s.read_exact(&mut b)?;
        *v = u32::from_le_bytes(b);
    }
    Ok(out)
}

fn send(s: &TcpStream, values: &[f32]) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, s);
    w.write_all(&(values.len() as u64).to_le_bytes())?;
    for v in values {
        w.write_all(&v.to_le_bytes())?;
    }
    w.flush()
}

fn receive(mut r: &TcpStream, expect: usize) -> std::io::Result<Vec<f32>> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len) as usize;
    if len != expect {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len} values where {expect} were expected (peers out of step)"),
        ));
    }
    let mut bytes = vec![0u8; len * 4];
    r.read_exact(&mut bytes)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// The element-wise mean of every peer's `own`.
pub(super) fn all_reduce_mean(
    streams: &[(usize, TcpStream)],
    rank: usize,
    peers: usize,
    own: Vec<f32>,
) -> Result<Vec<f32>> {
    let n = own.len();
    let lost = |r: usize, e: std::io::Error| err(format!("rank {r}: {e} (did a peer stop?)"));
    if rank == 0 {
        let mut sum = own;
        for (r, s) in streams.iter() {
            let theirs = receive(s, n).map_err(|e| lost(*r, e))?;
            for (a, b) in sum.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        let k = peers as f32;
        for a in &mut sum {
            *a /= k;
        }
        for (r, s) in streams.iter() {
            send(s, &sum).map_err(|e| lost(*r, e))?;
        }
        Ok(sum)
    } else {
        let (_, s) = streams
            .first()
            .ok_or_else(|| err("not connected to process 0".into()))?;
        send(s, &own).map_err(|e| lost(0, e))?;
        receive(s, n).map_err(|e| lost(0, e))
    }
}
