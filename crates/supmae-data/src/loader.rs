//! A parallel, prefetching, deterministic batch loader.
//!
//! Why not Burn's `DataLoader`: it batches `Vec<Item>` (one allocation per image, then a
//! copy into the batch), its worker split makes augmentation randomness depend on the number
//! of workers, and it has no notion of skipping a bad file. This loader decodes and augments
//! on its own thread pool straight into one contiguous `[N, C, H, W]` buffer, draws every
//! sample's randomness from `(seed, epoch, index)` (the same crops whatever the thread
//! count), prefetches batches on a background thread, and can skip and report bad files.
//! [`HostBatch::to_tensors`] hands the result to Burn.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use burn::prelude::*;
use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::folder::{SkipPolicy, Skipped};
use crate::rng::SampleRng;
use crate::source::ImageSource;
use crate::transform::Transform;

/// Loader settings.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// Reshuffle every epoch (seeded).
    pub shuffle: bool,
    /// Drop the last incomplete batch (the official pre-training loader does).
    pub drop_last: bool,
    /// Seed of the shuffle and of every augmentation.
    pub seed: u64,
    /// Decode/augment threads (0 = all cores).
    pub threads: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// What to do with an image that cannot be read.
    pub policy: SkipPolicy,
    /// Data-parallel sharding: this loader yields only its peer's part of every global
    /// batch. `None` (or one peer) loads everything.
    pub shard: Option<Shard>,
}

/// One peer's part of data-parallel loading.
///
/// Every epoch's order (the same permutation on every peer) is cut into global batches of
/// `batch_size · peers` images; peer `rank` takes images `[rank · batch_size, (rank + 1) ·
/// batch_size)` of each. The union of the peers' batches is exactly the batch a single
/// process with `batch_size · peers` loads, in the same order, with the same per-image
/// augmentation draws: data-parallel training sees the same data as one big batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This peer's rank, `0..peers`.
    pub rank: usize,
    /// Number of peers.
    pub peers: usize,
}

impl LoaderConfig {
    /// Shuffled batches of `batch_size`, all cores, 2 batches of prefetch, errors fail.
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size,
            shuffle: true,
            drop_last: false,
            seed: 0,
            threads: 0,
            prefetch: 2,
            policy: SkipPolicy::Fail,
            shard: None,
        }
    }
}

/// One batch in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// Normalised images, `[N, C, size, size]` row-major.
    pub images: Vec<f32>,
    /// Class indices, `[N]`.
    pub labels: Vec<i64>,
    /// Dataset indices of the samples.
    pub indices: Vec<usize>,
    /// Channels `C`.
    pub channels: usize,
    /// Side `size`.
    pub size: usize,
}

impl HostBatch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The batch as Burn tensors on `device` (copies the host buffers; see
    /// [`into_tensors`](Self::into_tensors) to move them).
    ///
    /// # Shapes
    /// - images: `[N, C, size, size]`
    /// - labels: `[N]`
    pub fn to_tensors<B: Backend>(&self, device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        self.clone().into_tensors(device)
    }

    /// The batch as Burn tensors on `device`, moving the host buffers (no copy on the CPU
    /// backend).
    ///
    /// # Shapes
    /// - images: `[N, C, size, size]`
    /// - labels: `[N]`
    pub fn into_tensors<B: Backend>(self, device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        let n = self.len();
        let shape = [n, self.channels, self.size, self.size];
        let images = Tensor::from_data(TensorData::new(self.images, shape), device);
        let labels = Tensor::from_data(TensorData::new(self.labels, [n]), device);
        (images, labels)
    }
}

/// Loads batches of a [`ImageSource`] through a [`Transform`].
pub struct DataLoader<S: ImageSource + 'static> {
    source: Arc<S>,
    transform: Arc<Transform>,
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
}

impl<S: ImageSource + 'static> std::fmt::Debug for DataLoader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("samples", &self.source.len())
            .field("transform", &self.transform)
            .field("config", &self.config)
            .finish()
    }
}

impl<S: ImageSource + 'static> DataLoader<S> {
    /// A loader over `source`.
    pub fn new(source: Arc<S>, transform: Transform, config: LoaderConfig) -> Result<Self> {
        transform.validate()?;
        if config.batch_size == 0 {
            return Err(DataError::InvalidConfig {
                field: "batch_size",
                reason: "must be at least 1".into(),
            });
        }
        if let Some(shard) = config.shard {
            let bad = |reason: String| {
                Err(DataError::InvalidConfig {
                    field: "shard",
                    reason,
                })
            };
            if shard.peers == 0 || shard.rank >= shard.peers {
                return bad(format!(
                    "rank {} of {} peers is out of range",
                    shard.rank, shard.peers
                ));
            }
            if shard.peers > 1 && !config.drop_last {
                return bad(
                    "sharded loading needs drop_last, so that every peer gets the same \
                     number of batches"
                        .into(),
                );
            }
            if shard.peers > 1 && config.policy == SkipPolicy::Skip {
                return bad(
                    "sharded loading cannot skip unreadable images (peers would \
                     disagree on the number of batches); find them with `check_dataset` and \
                     remove them"
                        .into(),
                );
            }
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("supmae-data-{i}"))
            .build()
            .map_err(|e| DataError::InvalidConfig {
                field: "threads",
                reason: e.to_string(),
            })?;
        Ok(Self {
            source,
            transform: Arc::new(transform),
            config,
            pool: Arc::new(pool),
        })
    }

    /// The dataset.
    pub fn source(&self) -> &Arc<S> {
        &self.source
    }

    /// The settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches per epoch when nothing is skipped.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.order_len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Samples this loader visits per epoch (its shard's share under sharding).
    fn order_len(&self) -> usize {
        match self.config.shard {
            Some(s) if s.peers > 1 => {
                self.source.len() / (self.config.batch_size * s.peers) * self.config.batch_size
            }
            _ => self.source.len(),
        }
    }

    /// The sample order of `epoch` (this peer's part of it under sharding).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let all: Vec<usize> = if self.config.shuffle {
            SampleRng::for_sample(self.config.seed, epoch, u64::MAX).permutation(self.source.len())
        } else {
            (0..self.source.len()).collect()
        };
        match self.config.shard {
            Some(s) if s.peers > 1 => {
                let b = self.config.batch_size;
                all.chunks_exact(b * s.peers)
                    .flat_map(|global| global[s.rank * b..(s.rank + 1) * b].iter().copied())
                    .collect()
            }
            _ => all,
        }
    }

    /// Starts producing the batches of `epoch` on a background thread.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let (tx, rx) = sync_channel(self.config.prefetch.max(1));
        let skipped = Arc::new(Mutex::new(Vec::new()));
        let job = Producer {
            source: Arc::clone(&self.source),
            transform: Arc::clone(&self.transform),
            config: self.config.clone(),
            pool: Arc::clone(&self.pool),
            order: self.order(epoch),
            epoch,
            skipped: Arc::clone(&skipped),
        };
        let failed = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("supmae-data-prefetch".into())
            .spawn(move || job.run(tx));
        if let Err(source) = spawned {
            let _ = failed.try_send(Err(DataError::Io {
                path: "<data loader thread>".into(),
                source,
            }));
        }
        Epoch { rx, skipped }
    }
}

/// The batches of one epoch, produced ahead on a background thread.
pub struct Epoch {
    rx: Receiver<Result<HostBatch>>,
    skipped: Arc<Mutex<Vec<Skipped>>>,
}

impl Epoch {
    /// Samples skipped so far under [`SkipPolicy::Skip`].
    pub fn skipped(&self) -> Vec<Skipped> {
        self.skipped.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Iterator for Epoch {
    type Item = Result<HostBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

struct Producer<S: ImageSource> {
    source: Arc<S>,
    transform: Arc<Transform>,
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
    order: Vec<usize>,
    epoch: u64,
    skipped: Arc<Mutex<Vec<Skipped>>>,
}

impl<S: ImageSource> Producer<S> {
    fn run(self, tx: SyncSender<Result<HostBatch>>) {
        let per = self.transform.output_len();
        let b = self.config.batch_size;
        let mut cursor = 0;
        while cursor < self.order.len() {
            let mut images = vec![0f32; b * per];
            let mut indices = Vec::with_capacity(b);
            // Fill the batch; under the skip policy, failed samples are replaced by the next
            // ones so batches stay full.
            while indices.len() < b && cursor < self.order.len() {
                let need = (b - indices.len()).min(self.order.len() - cursor);
                let candidates = &self.order[cursor..cursor + need];
                cursor += need;
                let start = indices.len();
                let region = &mut images[start * per..(start + need) * per];
                let results: Vec<Result<()>> = self.pool.install(|| {
                    region
                        .par_chunks_mut(per)
                        .zip(candidates.par_iter())
                        .map(|(out, &index)| self.load_one(index, out))
                        .collect()
                });
                let mut write = start;
                for (k, (result, &index)) in results.into_iter().zip(candidates).enumerate() {
                    match result {
                        Ok(()) => {
                            if write != start + k {
                                let from = (start + k) * per;
                                images.copy_within(from..from + per, write * per);
                            }
                            indices.push(index);
                            write += 1;
                        }
                        Err(error) => match self.config.policy {
                            SkipPolicy::Fail => {
                                let _ = tx.send(Err(error));
                                return;
                            }
                            SkipPolicy::Skip => {
                                if let Ok(mut s) = self.skipped.lock() {
                                    s.push(Skipped {
                                        what: self.source.describe(index),
                                        reason: error.to_string(),
                                    });
                                }
                            }
                        },
                    }
                }
            }
            if indices.is_empty() || (self.config.drop_last && indices.len() < b) {
                return;
            }
            images.truncate(indices.len() * per);
            let batch = HostBatch {
                labels: indices
                    .iter()
                    .map(|&i| self.source.label(i) as i64)
                    .collect(),
                indices,
                images,
                channels: usize::from(self.transform.channels),
                size: self.transform.size as usize,
            };
            if tx.send(Ok(batch)).is_err() {
                return; // the consumer stopped
            }
        }
    }

    fn load_one(&self, index: usize, out: &mut [f32]) -> Result<()> {
        let mut rng = SampleRng::for_sample(self.config.seed, self.epoch, index as u64);
        self.transform
            .load_and_apply(&*self.source, index, &mut rng, out)
    }
}
