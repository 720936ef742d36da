//! The statistics the bench binaries report: medians with distribution-free
//! intervals, and the path orders that make round-by-round comparisons fair.

use std::time::Duration;

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The median of `v` and a distribution-free 95 % confidence interval for
/// it (the order statistics that a sign test puts around the median), or
/// the whole range when there are too few values for one.
pub fn median_with_interval(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    // Largest k with P(Binomial(n, 1/2) < k) <= 2.5 %: the interval is the
    // k-th smallest to the k-th largest value.
    let mut below = 0.0;
    let mut k = 0;
    for i in 0..n {
        let p = binomial_half(n, i);
        if below + p > 0.025 {
            break;
        }
        below += p;
        k = i + 1;
    }
    let (low, high) = if k == 0 {
        (v[0], v[n - 1])
    } else {
        (v[k - 1], v[n - k])
    };
    // Already sorted: the median is read off, as `median` would.
    (v[n / 2], low, high)
}

/// P(Binomial(n, 1/2) = i).
fn binomial_half(n: usize, i: usize) -> f64 {
    let mut ln = 0.0;
    for j in 0..i {
        ln += ((n - j) as f64).ln() - ((j + 1) as f64).ln();
    }
    (ln - n as f64 * std::f64::consts::LN_2).exp()
}

/// The order of three paths in each round: all six, each followed by its
/// reverse. Over any even number of rounds each path runs before each
/// other as often as after, and over six each runs first, second and third
/// equally often.
pub const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [2, 1, 0],
    [1, 2, 0],
    [0, 2, 1],
    [2, 0, 1],
    [1, 0, 2],
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_interval_is_the_sign_test_one() {
        // n = 20: P(B < 6) = 2.07 %, P(B < 7) = 5.77 %: 6th smallest to
        // 6th largest.
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(median_with_interval(v), (11.0, 6.0, 15.0));
        // n = 5: even the extremes leave 6.25 % outside.
        let v: Vec<f64> = (1..=5).map(f64::from).collect();
        assert_eq!(median_with_interval(v), (3.0, 1.0, 5.0));
        let total: f64 = (0..=10).map(|i| binomial_half(10, i)).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }
}
