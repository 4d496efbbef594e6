//! Admission-time schedulability: can a workload be feasible at all on
//! these units at the power mode in force?
//!
//! Two necessary conditions, checked before any request is released (the
//! runtime warns, or refuses under `--strict`):
//!
//! 1. **Each request fits its deadline.** A tenant whose fastest variant
//!    takes longer than its deadline at this mode misses every request,
//!    whatever the scheduler does.
//! 2. **The work fits the units (utilisation).** For every set `S` of
//!    units, the tenants that only `S` can serve bring `Σ rate × service`
//!    seconds of work per second, which must not exceed `|S|`. (Hall's
//!    condition: with one set — every unit — it is the usual `U ≤ m`; the
//!    subsets catch a tenant pinned to one busy unit while another idles.)
//!
//! Passing is not a guarantee (bursts, contention and EDF's own limits on
//! several units remain); failing is a proof that deadlines will be missed
//! or requests shed, so a deployment that must hold every deadline can
//! refuse to start.
//!
//! ```
//! use ecomap::dispatch::schedulability::{check, TenantDemand};
//! use std::time::Duration;
//! let cam = TenantDemand {
//!     name: "cam".into(),
//!     rate_hz: 30.0,
//!     deadline: Duration::from_millis(33),
//!     service: Duration::from_millis(20),
//!     units: vec![true, false],
//! };
//! let units = ["gpu".to_string(), "dla0".to_string()];
//! assert!(check(&[cam.clone()], &units).is_feasible()); // 0.6 of one unit
//! let twice = TenantDemand { rate_hz: 60.0, ..cam };
//! let verdict = check(&[twice], &units);
//! assert!(!verdict.is_feasible()); // 1.2 units of work, pinned to one unit
//! assert!(verdict.problems[0].to_string().contains("gpu"));
//! ```

use std::time::Duration;

/// What one tenant asks of the units.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantDemand {
    /// Tenant name (for messages).
    pub name: String,
    /// Mean arrival rate, requests per second.
    pub rate_hz: f64,
    /// Relative deadline.
    pub deadline: Duration,
    /// Service time of its fastest variant at the power mode in force.
    pub service: Duration,
    /// `units[u]`: whether unit `u` may serve it.
    pub units: Vec<bool>,
}

/// Why a workload cannot be feasible.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Infeasibility {
    /// No unit may serve the tenant.
    #[error("tenant '{tenant}' has no execution unit that serves it")]
    NoUnit {
        /// Tenant name.
        tenant: String,
    },
    /// One request takes longer than the deadline.
    #[error(
        "tenant '{tenant}': one request takes {service_ms:.1} ms on its fastest variant at this \
         power mode, past its {deadline_ms:.1} ms deadline; every request would miss"
    )]
    ServiceExceedsDeadline {
        /// Tenant name.
        tenant: String,
        /// Fastest service time, milliseconds.
        service_ms: f64,
        /// Deadline, milliseconds.
        deadline_ms: f64,
    },
    /// More work than the units can do.
    #[error(
        "tenants {} bring {demand:.2} units' worth of work per second, but only {} ({}) can serve \
         them; lower their rates, give them lighter variants or more units, or raise the power mode",
        quoted(.tenants), plural_units(.units.len()), .units.join(", ")
    )]
    Overloaded {
        /// The tenants confined to `units`.
        tenants: Vec<String>,
        /// The unit names.
        units: Vec<String>,
        /// Their work, in units (1.0 = one unit busy all the time).
        demand: f64,
    },
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural_units(n: usize) -> String {
    if n == 1 {
        "1 unit".into()
    } else {
        format!("{n} units")
    }
}

/// The verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedulability {
    /// Total work over the number of units (1.0 = every unit always busy).
    pub utilisation: f64,
    /// Why the workload cannot be feasible; empty if both conditions hold.
    pub problems: Vec<Infeasibility>,
}

impl Schedulability {
    /// Whether both necessary conditions hold.
    pub fn is_feasible(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Above this many units only the set of every unit is checked (2^units
/// subsets otherwise).
const MAX_SUBSET_UNITS: usize = 16;

/// Check `tenants` on the units named in `units`.
pub fn check(tenants: &[TenantDemand], units: &[String]) -> Schedulability {
    let m = units.len();
    let mut problems = Vec::new();
    let work: Vec<f64> = tenants
        .iter()
        .map(|t| t.rate_hz.max(0.0) * t.service.as_secs_f64())
        .collect();
    for t in tenants {
        debug_assert_eq!(t.units.len(), m, "one flag per unit");
        if !t.units.iter().any(|&u| u) {
            problems.push(Infeasibility::NoUnit {
                tenant: t.name.clone(),
            });
        } else if t.service > t.deadline {
            problems.push(Infeasibility::ServiceExceedsDeadline {
                tenant: t.name.clone(),
                service_ms: t.service.as_secs_f64() * 1e3,
                deadline_ms: t.deadline.as_secs_f64() * 1e3,
            });
        }
    }
    let total: f64 = work.iter().sum();
    let utilisation = if m == 0 {
        f64::INFINITY
    } else {
        total / m as f64
    };
    // The most overloaded set of units: the one whose confined work exceeds
    // its size by the most (the smallest such set on ties, the clearest
    // message).
    let masks: Box<dyn Iterator<Item = u64>> = if m <= MAX_SUBSET_UNITS {
        Box::new(1..(1u64 << m))
    } else {
        Box::new(std::iter::once(u64::MAX))
    };
    let mut worst: Option<(f64, u32, u64, f64)> = None;
    for mask in masks {
        let in_set = |u: usize| u >= 64 || mask & (1 << u) != 0;
        let confined: f64 = tenants
            .iter()
            .zip(&work)
            .filter(|(t, _)| {
                t.units.iter().any(|&on| on)
                    && t.units.iter().enumerate().all(|(u, &on)| !on || in_set(u))
            })
            .map(|(_, w)| w)
            .sum();
        let size = (0..m).filter(|&u| in_set(u)).count() as u32;
        let excess = confined - f64::from(size);
        if excess > 1e-9
            && worst.is_none_or(|(e, s, _, _)| excess > e + 1e-9 || (excess > e - 1e-9 && size < s))
        {
            worst = Some((excess, size, mask, confined));
        }
    }
    if let Some((_, _, mask, demand)) = worst {
        let in_set = |u: usize| u >= 64 || mask & (1 << u) != 0;
        problems.push(Infeasibility::Overloaded {
            tenants: tenants
                .iter()
                .filter(|t| {
                    t.units.iter().any(|&on| on)
                        && t.units.iter().enumerate().all(|(u, &on)| !on || in_set(u))
                })
                .map(|t| t.name.clone())
                .collect(),
            units: (0..m)
                .filter(|&u| in_set(u))
                .map(|u| units[u].clone())
                .collect(),
            demand,
        });
    }
    Schedulability {
        utilisation,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, rate: f64, service_ms: u64, deadline_ms: u64, units: &[bool]) -> TenantDemand {
        TenantDemand {
            name: name.into(),
            rate_hz: rate,
            deadline: Duration::from_millis(deadline_ms),
            service: Duration::from_millis(service_ms),
            units: units.to_vec(),
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("cpu{i}")).collect()
    }

    #[test]
    fn work_that_fits_the_units_passes() {
        let v = check(
            &[
                t("det", 30.0, 20, 33, &[true, true]),
                t("seg", 5.0, 60, 200, &[true, true]),
            ],
            &names(2),
        );
        assert!(v.is_feasible(), "{:?}", v.problems);
        assert!((v.utilisation - 0.45).abs() < 1e-9);
    }

    #[test]
    fn more_work_than_units_is_refused_with_the_numbers() {
        let v = check(
            &[
                t("det", 60.0, 20, 33, &[true, true]),
                t("seg", 20.0, 60, 200, &[true, true]),
            ],
            &names(2),
        );
        let [Infeasibility::Overloaded {
            tenants,
            units,
            demand,
        }] = &v.problems[..]
        else {
            panic!("one overload expected: {:?}", v.problems)
        };
        assert_eq!(tenants, &["det", "seg"]);
        assert_eq!(units, &["cpu0", "cpu1"]);
        assert!((demand - 2.4).abs() < 1e-9);
        let text = v.problems[0].to_string();
        assert!(text.contains("2.40 units' worth") && text.contains("2 units (cpu0, cpu1)"));
    }

    #[test]
    fn a_tenant_confined_to_one_busy_unit_is_caught_though_the_total_fits() {
        // Total 1.2 on 2 units fits, but 'det' alone needs 1.2 of cpu0.
        let v = check(
            &[
                t("det", 60.0, 20, 33, &[true, false]),
                t("idle", 0.0, 1, 10, &[false, true]),
            ],
            &names(2),
        );
        assert!(
            matches!(&v.problems[..], [Infeasibility::Overloaded { units, .. }] if units == &["cpu0"])
        );
    }

    #[test]
    fn a_request_longer_than_its_deadline_and_a_tenant_without_units_are_named() {
        let v = check(
            &[
                t("slow", 1.0, 50, 40, &[true]),
                t("orphan", 1.0, 1, 40, &[false]),
            ],
            &names(1),
        );
        assert_eq!(v.problems.len(), 2);
        assert!(v.problems[0].to_string().contains("'slow'"));
        assert!(v.problems[1].to_string().contains("'orphan'"));
    }
}
