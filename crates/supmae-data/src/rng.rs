//! A small counter-based random generator: every sample gets its own stream derived from
//! `(seed, epoch, index)`, so augmentations do not depend on thread count or order.

/// SplitMix64 generator (Steele, Lea, Flood 2014): tiny, fast, and good enough for
/// augmentation parameters.
#[derive(Debug, Clone)]
pub struct SampleRng {
    state: u64,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SampleRng {
    /// A generator seeded directly.
    pub fn new(seed: u64) -> Self {
        Self { state: mix(seed) }
    }

    /// The stream of sample `index` in `epoch` of a run seeded with `seed`.
    pub fn for_sample(seed: u64, epoch: u64, index: u64) -> Self {
        Self::new(mix(mix(seed ^ 0x5eed_5eed) ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)) ^ index)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[low, high)`.
    pub fn uniform_range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// Uniform integer in `[low, high)` (`high > low`), without modulo bias.
    pub fn int_range(&mut self, low: u64, high: u64) -> u64 {
        let span = high - low;
        // Lemire's multiply-shift with rejection.
        loop {
            let x = self.next_u64();
            let m = u128::from(x) * u128::from(span);
            let l = m as u64;
            if l >= span.wrapping_neg() % span {
                return low + (m >> 64) as u64;
            }
        }
    }

    /// A standard normal sample (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A `Gamma(shape, 1)` sample (Marsaglia-Tsang; boosted for `shape < 1`).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = 1.0 - self.uniform();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v;
            }
        }
    }

    /// A `Beta(a, b)` sample, as `np.random.beta` (ratio of gammas).
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        if x + y > 0.0 { x / (x + y) } else { 0.5 }
    }

    /// A random permutation of `0..n` (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.int_range(0, i as u64 + 1) as usize;
            order.swap(i, j);
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map(|_| SampleRng::for_sample(1, 2, 3).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let b = SampleRng::for_sample(1, 2, 4).next_u64();
        let c = SampleRng::for_sample(1, 3, 3).next_u64();
        assert_ne!(a[0], b);
        assert_ne!(a[0], c);
    }

    #[test]
    fn ranges_and_permutations() {
        let mut rng = SampleRng::new(7);
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            let v = rng.int_range(3, 8);
            counts[(v - 3) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        let mut p = rng.permutation(100);
        p.sort_unstable();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
        let u = rng.uniform_range(0.2, 1.0);
        assert!((0.2..1.0).contains(&u));
    }

    #[test]
    fn normal_gamma_and_beta_have_their_moments() {
        let mut rng = SampleRng::new(11);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.01,
            "{mean} {var}"
        );
        // Beta(0.8, 0.8) (Mixup's alpha): mean 1/2, variance ab/((a+b)^2 (a+b+1)) = 0.0962.
        let bs: Vec<f64> = (0..n).map(|_| rng.beta(0.8, 0.8)).collect();
        assert!(bs.iter().all(|b| (0.0..=1.0).contains(b)));
        let mean = bs.iter().sum::<f64>() / n as f64;
        let var = bs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            (mean - 0.5).abs() < 0.005 && (var - 0.0962).abs() < 0.003,
            "{mean} {var}"
        );
        // Gamma(1.0) is exponential: mean 1.
        let g = (0..n).map(|_| rng.gamma(1.0)).sum::<f64>() / n as f64;
        assert!((g - 1.0).abs() < 0.01, "{g}");
    }
}
