//! The hypervisor's steal time: the share of a virtual machine's CPU time
//! that its host gave to other guests (Linux `/proc/stat`, the `steal`
//! column).
//!
//! On a shared VM it goes with part of the difference between two runs of
//! the same workload: in one set of five back-to-back overloaded runs of
//! the fidelity check (session 13, docs/results.md §6), the two that lost
//! about 4% of their CPU time this way met 13–19 points fewer of their
//! deadlines than the three that lost under 1.3%. `ecomap run`'s report prints it, so a
//! latency histogram measured under a noisy neighbour says so.
//!
//! ```
//! use ecomap_actors::platform::cpu_steal::CpuTimes;
//!
//! let before = CpuTimes::parse("cpu  100 0 50 800 10 0 0 40 0 0\n").unwrap();
//! let after = CpuTimes::parse("cpu  300 0 150 1400 10 0 0 140 0 0\n").unwrap();
//! // 1000 jiffies passed, 100 of them stolen.
//! assert_eq!(after.stolen_since(&before), Some(0.1));
//! ```

use std::path::Path;

/// The machine's CPU time so far, all CPUs together, in clock ticks
/// (`USER_HZ`; only ratios are used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice + system + idle + iowait + irq + softirq + steal (guest
    /// time is already counted in user and nice).
    total: u64,
    /// Time the hypervisor ran something else while this VM's CPUs wanted to run.
    steal: u64,
}

impl CpuTimes {
    /// The times now, from `/proc/stat`; `None` where there is none (not
    /// Linux) or its `cpu` line has no steal column (kernels before 2.6.11).
    pub fn read() -> Option<Self> {
        Self::read_from(Path::new("/proc/stat"))
    }

    /// The times from a file in `/proc/stat`'s format.
    pub fn read_from(path: &Path) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// The times from `/proc/stat`'s text: its first line,
    /// `cpu  user nice system idle iowait irq softirq steal [guest guest_nice]`.
    pub fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        if fields.len() < 8 {
            return None;
        }
        Some(CpuTimes {
            total: fields.iter().sum(),
            steal: fields[7],
        })
    }

    /// The share (0–1) of the CPU time since `earlier` that was stolen;
    /// `None` when no time passed (or the counters went backwards, which a
    /// reading from another boot would show).
    pub fn stolen_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let steal = self.steal.checked_sub(earlier.steal)?;
        (total > 0).then(|| steal as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // /proc/stat as this 2-vCPU VM writes it (the first three lines).
    const STAT: &str = "cpu  3964058 385 544489 3161527 25880 0 7235 58560 0 0\n\
                        cpu0 1850361 195 243824 1745904 9555 0 1329 29472 0 0\n\
                        cpu1 2113696 190 300664 1415623 16324 0 5906 29087 0 0\n\
                        intr 1 2 3\n";

    #[test]
    fn the_machine_line_gives_the_total_and_the_steal() {
        let t = CpuTimes::parse(STAT).unwrap();
        assert_eq!(t.steal, 58560);
        assert_eq!(
            t.total,
            3964058 + 385 + 544489 + 3161527 + 25880 + 7235 + 58560
        );
    }

    #[test]
    fn the_share_stolen_is_over_the_time_between_two_readings() {
        let a = CpuTimes::parse(STAT).unwrap();
        let b = CpuTimes {
            total: a.total + 2000,
            steal: a.steal + 80,
        };
        assert_eq!(b.stolen_since(&a), Some(0.04));
        assert_eq!(a.stolen_since(&a), None, "no time passed");
        assert_eq!(a.stolen_since(&b), None, "counters went backwards");
    }

    #[test]
    fn a_stat_without_a_steal_column_or_a_cpu_line_gives_none() {
        assert_eq!(CpuTimes::parse("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(CpuTimes::parse("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 x 4 5 6 7 8\n"), None);
        assert_eq!(CpuTimes::parse(""), None);
        assert_eq!(CpuTimes::read_from(Path::new("/nonexistent/stat")), None);
    }

    #[test]
    fn this_linux_machine_has_one() {
        if Path::new("/proc/stat").exists() {
            // (A sandbox such as gVisor may show all zeros.)
            let t = CpuTimes::read().expect("a Linux /proc/stat with a steal column");
            assert!(t.steal <= t.total, "{t:?}");
        }
    }
}
