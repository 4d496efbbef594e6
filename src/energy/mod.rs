//! Energy and carbon accounting.
//!
//! The energy meter hands the ledger one interval at a time: its length,
//! the device's average power over it (measured or modelled), the grid's
//! carbon intensity, the cap in force and each tenant's busy time in it.
//!
//! - energy (J) = power × time;
//! - carbon (g) = energy (kWh) × intensity (gCO2eq/kWh), integrated interval by interval;
//! - each interval's energy and carbon are attributed to tenants by their
//!   share of the interval's busy time; an interval with no busy time is
//!   `idle` energy and carbon;
//! - carbon-delay product CDP = carbon (g) × mean end-to-end latency (s),
//!   per tenant and in total (lower is better: it rewards cutting carbon
//!   without paying for it in latency).
//!
//! An interval over which the intensity changed is priced stretch by
//! stretch ([`pricing`]).

pub mod pricing;

use pricing::{PricedSpan, Pricing};
use std::time::Duration;

/// Joules in a kilowatt-hour.
pub const J_PER_KWH: f64 = 3.6e6;

/// Accumulated energy and carbon of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergyLedger {
    /// Total energy, joules.
    pub energy_j: f64,
    /// Total carbon, grams CO2eq.
    pub carbon_g: f64,
    /// Energy attributed to each tenant, joules.
    pub tenant_energy_j: Vec<f64>,
    /// Energy of intervals in which no tenant was busy, joules.
    pub idle_energy_j: f64,
    /// Carbon attributed to each tenant, grams.
    pub tenant_carbon_g: Vec<f64>,
    /// Carbon of intervals in which no tenant was busy, grams.
    pub idle_carbon_g: f64,
    /// Energy of intervals whose intensity was unknown (before the carbon
    /// source's first reading, or a run without one), joules: counted in
    /// `energy_j`, missing from `carbon_g`, which is then a lower bound.
    pub unpriced_energy_j: f64,
    /// Time those intervals took.
    pub unpriced: Duration,
    /// Energy of intervals priced at a stale intensity (a trace row held
    /// over a gap, or the last reading of a source that stopped answering,
    /// past its staleness limit), joules: counted in `energy_j` and
    /// `carbon_g`, whose carbon is then partly an estimate.
    pub stale_priced_energy_j: f64,
    /// Time those intervals took.
    pub stale_priced: Duration,
    /// Time no good power reading covered — an energy counter's reset, or
    /// reads that failed until the run's end (a failed read earlier is
    /// covered by the next good one): in neither `elapsed` nor energy.
    pub unmetered: Duration,
    /// Time spent at each cap (watts, time), in order of first use.
    pub time_at_cap: Vec<(f64, Duration)>,
    /// Time accounted.
    pub elapsed: Duration,
}

impl EnergyLedger {
    /// A ledger for `tenants` tenants.
    pub fn new(tenants: usize) -> Self {
        EnergyLedger {
            tenant_energy_j: vec![0.0; tenants],
            tenant_carbon_g: vec![0.0; tenants],
            ..Default::default()
        }
    }

    /// Account one interval.
    pub fn record(
        &mut self,
        dt: Duration,
        power_w: f64,
        gco2_per_kwh: f64,
        cap_w: f64,
        tenant_busy: &[Duration],
    ) {
        self.record_one(
            dt,
            power_w,
            Pricing::Current(gco2_per_kwh),
            cap_w,
            tenant_busy,
        );
    }

    /// Account one interval whose intensity is unknown: its energy counts,
    /// its carbon cannot, and the ledger keeps how much energy went
    /// unpriced so a report can say the carbon total is incomplete
    /// (rather than count the interval at 0 g/kWh without a word).
    pub fn record_unpriced(
        &mut self,
        dt: Duration,
        power_w: f64,
        cap_w: f64,
        tenant_busy: &[Duration],
    ) {
        self.record_one(dt, power_w, Pricing::Unpriced, cap_w, tenant_busy);
    }

    /// Account one interval priced at a stale reading: as
    /// [`EnergyLedger::record`], and the ledger keeps how much energy was
    /// priced so, so a report can say how much of the carbon rests on an
    /// old reading.
    pub fn record_stale(
        &mut self,
        dt: Duration,
        power_w: f64,
        gco2_per_kwh: f64,
        cap_w: f64,
        tenant_busy: &[Duration],
    ) {
        self.record_one(
            dt,
            power_w,
            Pricing::Stale(gco2_per_kwh),
            cap_w,
            tenant_busy,
        );
    }

    fn record_one(
        &mut self,
        dt: Duration,
        power_w: f64,
        pricing: Pricing,
        cap_w: f64,
        tenant_busy: &[Duration],
    ) {
        let span = PricedSpan {
            length: dt,
            pricing,
        };
        self.record_spans(power_w, cap_w, tenant_busy, &[span]);
    }

    /// Account one interval at one average power whose intensity changed
    /// within it: each span's energy is priced as the span says (the
    /// interval lasts as long as the spans together). Tenants share every
    /// span's energy and carbon by their busy time over the whole interval.
    pub fn record_spans(
        &mut self,
        power_w: f64,
        cap_w: f64,
        tenant_busy: &[Duration],
        spans: &[PricedSpan],
    ) {
        if spans.is_empty() {
            return;
        }
        let busy: f64 = tenant_busy.iter().map(Duration::as_secs_f64).sum();
        let mut dt = Duration::ZERO;
        for span in spans {
            let energy = power_w.max(0.0) * span.length.as_secs_f64();
            let carbon = span
                .pricing
                .gco2_per_kwh()
                .map_or(0.0, |g| energy / J_PER_KWH * g.max(0.0));
            match span.pricing {
                Pricing::Unpriced => {
                    self.unpriced_energy_j += energy;
                    self.unpriced += span.length;
                }
                Pricing::Stale(_) => {
                    self.stale_priced_energy_j += energy;
                    self.stale_priced += span.length;
                }
                Pricing::Current(_) => {}
            }
            self.energy_j += energy;
            self.carbon_g += carbon;
            if busy > 0.0 {
                for ((e, c), b) in self
                    .tenant_energy_j
                    .iter_mut()
                    .zip(&mut self.tenant_carbon_g)
                    .zip(tenant_busy)
                {
                    let share = b.as_secs_f64() / busy;
                    *e += energy * share;
                    *c += carbon * share;
                }
            } else {
                self.idle_energy_j += energy;
                self.idle_carbon_g += carbon;
            }
            dt += span.length;
        }
        self.elapsed += dt;
        match self.time_at_cap.iter_mut().find(|(c, _)| *c == cap_w) {
            Some((_, t)) => *t += dt,
            None => self.time_at_cap.push((cap_w, dt)),
        }
    }

    /// Note an interval whose power could not be read.
    pub fn record_unmetered(&mut self, dt: Duration) {
        self.unmetered += dt;
    }

    /// Mean power over the run, watts.
    pub fn mean_power_w(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.energy_j / self.elapsed.as_secs_f64()
        }
    }
}

/// Carbon-delay product: grams × seconds of mean end-to-end latency.
pub fn cdp(carbon_g: f64, mean_latency: Duration) -> f64 {
    carbon_g * mean_latency.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carbon_integrates_power_and_intensity_and_is_attributed_by_busy_time() {
        let mut l = EnergyLedger::new(2);
        // 36 W for 100 s = 3600 J = 1 Wh = 0.001 kWh; at 500 g/kWh → 0.5 g.
        l.record(
            Duration::from_secs(100),
            36.0,
            500.0,
            40.0,
            &[Duration::from_secs(30), Duration::from_secs(10)],
        );
        assert!((l.energy_j - 3600.0).abs() < 1e-9);
        assert!((l.carbon_g - 0.5).abs() < 1e-12);
        assert!((l.tenant_carbon_g[0] - 0.375).abs() < 1e-12);
        assert!((l.tenant_carbon_g[1] - 0.125).abs() < 1e-12);
        assert!((l.tenant_energy_j[0] - 2700.0).abs() < 1e-9);
        assert!((l.tenant_energy_j[1] - 900.0).abs() < 1e-9);
        // An idle interval at another cap.
        l.record(
            Duration::from_secs(100),
            36.0,
            100.0,
            15.0,
            &[Duration::ZERO; 2],
        );
        assert!((l.idle_carbon_g - 0.1).abs() < 1e-12);
        assert!((l.idle_energy_j - 3600.0).abs() < 1e-9);
        // Tenant 0 was busy in the dirtier interval only: its share of the
        // energy is its share of the busy time, not of the carbon (a
        // tenant busy in clean hours is not credited less energy).
        l.record(
            Duration::from_secs(100),
            36.0,
            0.0,
            15.0,
            &[Duration::ZERO, Duration::from_secs(10)],
        );
        assert!((l.tenant_energy_j[1] - 4500.0).abs() < 1e-9);
        assert!((l.tenant_carbon_g[1] - 0.125).abs() < 1e-12);
        let energy: f64 = l.tenant_energy_j.iter().sum::<f64>() + l.idle_energy_j;
        assert!((energy - l.energy_j).abs() < 1e-9, "energy is conserved");
        assert_eq!(l.unpriced_energy_j, 0.0);
        let attributed: f64 = l.tenant_carbon_g.iter().sum::<f64>() + l.idle_carbon_g;
        assert!(
            (attributed - l.carbon_g).abs() < 1e-12,
            "carbon is conserved"
        );
        assert_eq!(
            l.time_at_cap,
            vec![
                (40.0, Duration::from_secs(100)),
                (15.0, Duration::from_secs(200))
            ]
        );
        assert!((l.mean_power_w() - 36.0).abs() < 1e-9);
        // An interval with no intensity: energy counted, carbon not, and
        // the ledger says how much went unpriced.
        let carbon = l.carbon_g;
        l.record_unpriced(
            Duration::from_secs(10),
            36.0,
            15.0,
            &[Duration::from_secs(5), Duration::ZERO],
        );
        assert_eq!(l.carbon_g, carbon);
        assert!((l.unpriced_energy_j - 360.0).abs() < 1e-9);
        assert_eq!(l.unpriced, Duration::from_secs(10));
        assert!((l.tenant_energy_j[0] - 3060.0).abs() < 1e-9);
        assert!((cdp(2.0, Duration::from_millis(250)) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn an_interval_priced_in_spans_is_the_sum_of_its_spans() {
        let busy = [Duration::from_secs(3), Duration::from_secs(1)];
        let spans = [
            PricedSpan {
                length: Duration::from_millis(250),
                pricing: Pricing::Unpriced,
            },
            PricedSpan {
                length: Duration::from_millis(500),
                pricing: Pricing::Current(400.0),
            },
            PricedSpan {
                length: Duration::from_millis(250),
                pricing: Pricing::Stale(800.0),
            },
        ];
        let mut whole = EnergyLedger::new(2);
        whole.record_spans(36.0, 15.0, &busy, &spans);
        let mut apart = EnergyLedger::new(2);
        let quarter = Duration::from_millis(250);
        apart.record_unpriced(quarter, 36.0, 15.0, &busy);
        apart.record(quarter * 2, 36.0, 400.0, 15.0, &busy);
        apart.record_stale(quarter, 36.0, 800.0, 15.0, &busy);
        // 36 J at 0, 400 and 800 g/kWh for 9, 18 and 9 J.
        assert!((whole.energy_j - 36.0).abs() < 1e-12);
        assert!((whole.carbon_g - (18.0 * 400.0 + 9.0 * 800.0) / J_PER_KWH).abs() < 1e-15);
        assert!((whole.unpriced_energy_j - 9.0).abs() < 1e-12);
        assert!((whole.stale_priced_energy_j - 9.0).abs() < 1e-12);
        assert_eq!(whole.stale_priced, quarter);
        assert_eq!(whole.unpriced, quarter);
        assert_eq!(whole.elapsed, Duration::from_secs(1));
        assert_eq!(whole.time_at_cap, vec![(15.0, Duration::from_secs(1))]);
        for (a, b) in whole.tenant_carbon_g.iter().zip(&apart.tenant_carbon_g) {
            assert!((a - b).abs() < 1e-15);
        }
        assert!((whole.tenant_energy_j[0] - 27.0).abs() < 1e-12);
        assert_eq!(whole.time_at_cap, apart.time_at_cap);
        // No spans: nothing happened.
        let before = whole.clone();
        whole.record_spans(36.0, 40.0, &busy, &[]);
        assert_eq!(whole, before);
    }
}
