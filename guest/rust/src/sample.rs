//! Sampling in the guest: greedy (argmax, lowest id on ties), or top-k → top-p → min-p →
//! temperature → one draw from a seeded splitmix64 stream. The order, the candidate order (logit
//! descending, then id ascending), the double-precision sums and the generator are those of the C
//! SDK's sampler (guest/sdk/sample.c) without its logit bias and penalties, so that for the same
//! seed and settings both pick the same tokens.

/// Index of the largest logit, the lowest index on ties (as a scalar `>` scan picks; NaNs are
/// never picked over a number). 0 for an empty slice.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate().skip(1) {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// Sampler settings; the defaults are "off" except temperature 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerParams {
    /// <= 0: greedy.
    pub temperature: f32,
    /// 0: off.
    pub top_k: usize,
    /// 1 (or 0): off.
    pub top_p: f32,
    /// 0: off; keeps tokens with p >= min_p * p_max.
    pub min_p: f32,
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> SamplerParams {
        SamplerParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 0 }
    }
}

/// A sampler: its settings and its random stream.
#[derive(Clone, Debug)]
pub struct Sampler {
    p: SamplerParams,
    rng: u64,
    idx: Vec<u32>,
}

impl Sampler {
    pub fn new(p: SamplerParams) -> Sampler {
        Sampler { p, rng: p.seed, idx: Vec::new() }
    }

    pub fn params(&self) -> &SamplerParams {
        &self.p
    }

    /// The next 64 bits of the splitmix64 stream.
    pub fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    /// A uniform double in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9007199254740992.0)
    }

    /// Picks a token from `logits` (one per vocabulary entry, at least one).
    pub fn sample(&mut self, logits: &[f32]) -> i32 {
        if self.p.temperature <= 0.0 || logits.len() <= 1 {
            return argmax(logits) as i32;
        }
        let n = self.candidates(logits);
        let idx = core::mem::take(&mut self.idx);
        let token = self.draw(&idx[..n], logits);
        self.idx = idx;
        token
    }

    /// Top-p, min-p and temperature over the sorted candidates `c`, then one draw.
    fn draw(&mut self, c: &[u32], logits: &[f32]) -> i32 {
        let l0 = logits[c[0] as usize];
        let rel = |i: u32| (logits[i as usize] - l0) as f64;
        let mut n = c.len();
        // top-p over the softmax at temperature 1
        if self.p.top_p > 0.0 && self.p.top_p < 1.0 {
            let sum: f64 = c.iter().map(|&i| rel(i).exp()).sum();
            let mut cum = 0.0;
            for (k, &i) in c.iter().enumerate() {
                cum += rel(i).exp() / sum;
                if cum >= self.p.top_p as f64 {
                    n = k + 1;
                    break;
                }
            }
        }
        // min-p: logit >= max + ln(min_p); the candidates stay sorted
        if self.p.min_p > 0.0 {
            let thr = l0 + self.p.min_p.ln();
            let mut m = 1;
            while m < n && logits[c[m] as usize] >= thr {
                m += 1;
            }
            n = m;
        }
        let t = self.p.temperature as f64;
        let sum: f64 = c[..n].iter().map(|&i| (rel(i) / t).exp()).sum();
        let u = self.uniform() * sum;
        let mut cum = 0.0;
        for &i in c[..n].iter() {
            cum += (rel(i) / t).exp();
            if u < cum {
                return i as i32;
            }
        }
        c[n - 1] as i32
    }

    /// Fills `idx` with the candidates best first (logit descending, id ascending): the top_k
    /// largest, or all. Returns their count.
    fn candidates(&mut self, logits: &[f32]) -> usize {
        let nv = logits.len();
        self.idx.clear();
        self.idx.extend(0..nv as u32);
        // a total order: higher logit first, then lower id (NaN last)
        let order = |a: &u32, b: &u32| {
            let (x, y) = (logits[*a as usize], logits[*b as usize]);
            y.partial_cmp(&x).unwrap_or_else(|| x.is_nan().cmp(&y.is_nan())).then(a.cmp(b))
        };
        let k = self.p.top_k;
        if k > 0 && k < nv {
            self.idx.select_nth_unstable_by(k - 1, order);
            self.idx.truncate(k);
        }
        self.idx.sort_unstable_by(order);
        self.idx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, -1.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 2.0]), 0); // as the scalar scan: NaN never loses a `>`
        assert_eq!(argmax(&[1.0, f32::NAN, 2.0]), 2);
        let mut s = Sampler::new(SamplerParams { temperature: 0.0, ..Default::default() });
        assert_eq!(s.sample(&[0.5, 2.0, 2.0, 1.0]), 1);
    }

    #[test]
    fn splitmix64_stream() {
        // the reference stream of splitmix64 from seed 0 (Vigna's splitmix64.c)
        let mut s = Sampler::new(SamplerParams::default());
        assert_eq!(s.next_u64(), 0xE220A8397B1DCDAF);
        assert_eq!(s.next_u64(), 0x6E789E6AA1B965F4);
        assert_eq!(s.next_u64(), 0x06C45D188009454F);
    }

    #[test]
    fn truncation_keeps_the_best() {
        let logits = [1.0f32, 5.0, 3.0, 5.0, -2.0];
        // top_k 1 is greedy whatever the draw
        for seed in 0..20 {
            let mut s = Sampler::new(SamplerParams { top_k: 1, seed, ..Default::default() });
            assert_eq!(s.sample(&logits), 1);
        }
        // top_k 2: ids 1 and 3 (equal logits, lower id first); both are drawn over many seeds
        let mut seen = [0; 5];
        for seed in 0..200 {
            let mut s = Sampler::new(SamplerParams { top_k: 2, seed, ..Default::default() });
            seen[s.sample(&logits) as usize] += 1;
        }
        assert!(seen[1] > 0 && seen[3] > 0 && seen[0] + seen[2] + seen[4] == 0, "{:?}", seen);
        // a tiny top_p keeps only the first candidate; min_p 1 keeps the maximum (both ids)
        let mut s = Sampler::new(SamplerParams { top_p: 0.01, seed: 7, ..Default::default() });
        assert_eq!(s.sample(&logits), 1);
        for seed in 0..50 {
            let mut s = Sampler::new(SamplerParams { min_p: 1.0, seed, ..Default::default() });
            let t = s.sample(&logits);
            assert!(t == 1 || t == 3);
        }
        // one seed, one stream
        let p = SamplerParams { temperature: 0.8, seed: 42, ..Default::default() };
        let (mut a, mut b) = (Sampler::new(p), Sampler::new(p));
        for _ in 0..10 {
            assert_eq!(a.sample(&logits), b.sample(&logits));
        }
    }
}
