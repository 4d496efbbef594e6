//! Writing HdrHistogram percentile distributions (`.hgrm` files).
//!
//! The format is the one HdrHistogram's `outputPercentileDistribution`
//! prints and the HdrHistogram plotter reads: a header, one row per
//! percentile step (value, percentile, cumulative count, 1/(1-percentile)),
//! and a footer with mean, standard deviation, max and count. The `hdrhistogram`
//! crate stores and iterates histograms but does not print this format, so
//! this module does only the printing.

use hdrhistogram::Histogram;
use std::fmt::Write as _;

/// Render `h` as an `.hgrm` percentile distribution. Values are divided by
/// `unit_ratio` on output (e.g. 1000.0 turns µs into ms);
/// `ticks_per_half_distance` is the number of rows per halving of the
/// remaining percentile (HdrHistogram's default is 5).
pub fn percentile_distribution(
    h: &Histogram<u64>,
    unit_ratio: f64,
    ticks_per_half_distance: u32,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(ticks_per_half_distance) {
            total += v.count_since_last_iteration();
            let value = h.highest_equivalent(v.value_iterated_to()) as f64 / unit_ratio;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{:>12.3} {:>2.12} {:>10} {:>14.2}",
                    value,
                    q,
                    total,
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{:>12.3} {:>2.12} {:>10}", value, q, total);
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            h.mean() / unit_ratio,
            h.stdev() / unit_ratio,
            h.highest_equivalent(h.max()) as f64 / unit_ratio,
        )
    };
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        mean, stdev
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        max,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_has_header_rows_and_footer_matching_the_data() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap(); // 1..1000 ms in µs
        }
        let text = percentile_distribution(&h, 1000.0, 5);
        let mut lines = text.lines();
        assert!(lines.next().unwrap().contains("Percentile"));
        let rows: Vec<(f64, f64, u64)> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains("Value"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect();
        assert!(rows.len() > 20);
        // Values and percentiles never decrease; the last row holds everything.
        assert!(rows
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let last = rows.last().unwrap();
        assert_eq!(last.2, 1000);
        assert!((last.0 - 1000.0).abs() < 1.0, "{last:?}");
        assert!(text.contains("Total count    =         1000"));
        assert!(text.contains("#[Mean    =      500.5"), "{text}");
    }

    #[test]
    fn empty_histogram_still_writes_a_valid_file() {
        let h = Histogram::<u64>::new_with_bounds(1, 1000, 3).unwrap();
        let text = percentile_distribution(&h, 1.0, 5);
        assert!(text.contains("Total count    =            0"));
    }
}
