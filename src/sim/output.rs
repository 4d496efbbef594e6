//! The simulator's tables: `summary.csv` rows and per-hour timelines.

use super::SimResult;
use crate::accounting::TenantAccount;
use crate::energy::cdp;
use serde::Serialize;
use std::io::Write;
use std::time::Duration;

/// One row of `summary.csv`: one trace × policy, for all tenants
/// (`tenant` = "all") or one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryRow {
    /// Trace file stem, e.g. "DE-LU_2023_hourly".
    pub trace: String,
    /// Policy name.
    pub policy: String,
    /// "all" or a tenant name.
    pub tenant: String,
    /// Requests simulated.
    pub submitted: u64,
    /// Finished by the deadline.
    pub on_time: u64,
    /// Finished after it.
    pub late: u64,
    /// Deadline passed before it could start.
    pub expired: u64,
    /// Refused at admission.
    pub rejected: u64,
    /// Dropped before starting: predicted to finish past the deadline.
    pub shed: u64,
    /// Backend failures (none in simulation unless modelled).
    pub failed: u64,
    /// Percent of submitted not on time.
    pub miss_pct: f64,
    /// Energy over the span, joules (modelled; tenants: attributed by busy time).
    pub energy_j: f64,
    /// Carbon over the span, grams.
    pub carbon_g: f64,
    /// Mean release-to-finish latency of served requests, ms.
    pub mean_e2e_ms: f64,
    /// 99th percentile of the same, ms.
    pub p99_e2e_ms: f64,
    /// Carbon × mean end-to-end latency (g·s).
    pub cdp_g_s: f64,
    /// Mean published accuracy of the variants that served, over served requests (%).
    pub accuracy_pct: f64,
    /// Share of served requests per variant, heaviest first, e.g.
    /// "0.700/0.300" (tenant rows).
    pub variant_shares: String,
    /// Model swaps (all-tenant rows).
    pub swaps: usize,
    /// Trace hours in the span.
    pub span_h: usize,
    /// Simulated seconds (less than the span when sampled).
    pub simulated_s: f64,
    /// Energy `carbon_g` leaves out: metered before the first intensity
    /// reading, joules (all-tenant rows; empty on tenant rows).
    pub unpriced_energy_j: Option<f64>,
    /// Energy priced at a stale intensity reading — a trace row held over
    /// a gap, or a live source silent past its limit —, joules: that part
    /// of `carbon_g` is an estimate (all-tenant rows; empty on tenant rows).
    pub stale_priced_energy_j: Option<f64>,
}

fn accuracy(acc: &TenantAccount, top1: &[Option<f64>]) -> (f64, u64) {
    let mut sum = 0.0;
    let mut n = 0;
    for (v, &served) in acc.served_by_variant.iter().enumerate() {
        if let Some(Some(a)) = top1.get(v) {
            sum += a * served as f64;
            n += served;
        }
    }
    (sum, n)
}

fn row(
    trace: &str,
    policy: &str,
    tenant: &str,
    acc: &TenantAccount,
    energy_j: f64,
    carbon_g: f64,
    (acc_sum, acc_n): (f64, u64),
) -> SummaryRow {
    let c = &acc.counts;
    let mean = acc
        .end_to_end
        .mean_us()
        .map(|us| us / 1000.0)
        .unwrap_or(f64::NAN);
    SummaryRow {
        trace: trace.into(),
        policy: policy.into(),
        tenant: tenant.into(),
        submitted: c.submitted,
        on_time: c.on_time,
        late: c.late,
        expired: c.expired,
        rejected: c.rejected,
        shed: c.shed,
        failed: c.failed,
        miss_pct: if c.submitted == 0 {
            0.0
        } else {
            100.0 * (c.submitted - c.on_time) as f64 / c.submitted as f64
        },
        energy_j,
        carbon_g,
        mean_e2e_ms: mean,
        p99_e2e_ms: acc
            .end_to_end
            .quantile_us(0.99)
            .map_or(f64::NAN, |us| us as f64 / 1000.0),
        // No request served, no mean latency: no CDP either (0 would read
        // as the best score).
        cdp_g_s: if mean.is_finite() {
            cdp(carbon_g, Duration::from_secs_f64((mean / 1000.0).max(0.0)))
        } else {
            f64::NAN
        },
        accuracy_pct: if acc_n == 0 {
            f64::NAN
        } else {
            acc_sum / acc_n as f64
        },
        variant_shares: if tenant == "all" {
            String::new()
        } else {
            let served: u64 = acc.served_by_variant.iter().sum();
            acc.served_by_variant
                .iter()
                .map(|&k| format!("{:.3}", k as f64 / served.max(1) as f64))
                .collect::<Vec<_>>()
                .join("/")
        },
        swaps: 0,
        span_h: 0,
        simulated_s: 0.0,
        unpriced_energy_j: None,
        stale_priced_energy_j: None,
    }
}

/// What a summary is made of: per-tenant accounts, energy and carbon, the
/// variants' published accuracy. Both the simulator and `ecomap run
/// --summary` fill it, so their tables compare column for column.
#[derive(Debug, Clone, Copy)]
pub struct RunTotals<'a> {
    /// Per-tenant outcomes and histograms.
    pub tenants: &'a [TenantAccount],
    /// Total energy, joules (0 when not metered).
    pub energy_j: f64,
    /// Total carbon, grams.
    pub carbon_g: f64,
    /// Energy attributed to each tenant by busy time (empty when not metered).
    pub tenant_energy_j: &'a [f64],
    /// Carbon attributed to each tenant (empty when not metered).
    pub tenant_carbon_g: &'a [f64],
    /// `top1[t][v]`: published accuracy of tenant `t`'s variant `v`.
    pub top1: &'a [Vec<Option<f64>>],
    /// Model swaps.
    pub swaps: usize,
    /// Trace hours covered.
    pub span_h: usize,
    /// Seconds simulated (or run).
    pub simulated_s: f64,
    /// Energy left out of the carbon total (before the first reading), joules.
    pub unpriced_energy_j: f64,
    /// Energy priced at a stale reading, joules.
    pub stale_priced_energy_j: f64,
}

/// The summary rows of one run: "all" first, then each tenant.
pub fn summary_rows(trace: &str, policy: &str, r: &SimResult) -> Vec<SummaryRow> {
    totals_rows(
        trace,
        policy,
        &RunTotals {
            tenants: &r.tenants,
            energy_j: r.ledger.energy_j,
            carbon_g: r.ledger.carbon_g,
            tenant_energy_j: &r.ledger.tenant_energy_j,
            tenant_carbon_g: &r.ledger.tenant_carbon_g,
            top1: &r.top1,
            swaps: r.swaps,
            span_h: r.hours.len(),
            simulated_s: r.simulated.as_secs_f64(),
            unpriced_energy_j: r.ledger.unpriced_energy_j,
            stale_priced_energy_j: r.ledger.stale_priced_energy_j,
        },
    )
}

/// Summary rows from run totals: "all" first, then each tenant.
pub fn totals_rows(trace: &str, policy: &str, r: &RunTotals<'_>) -> Vec<SummaryRow> {
    let mut all = TenantAccount::new("all");
    let (mut sum, mut n) = (0.0, 0);
    for (t, acc) in r.tenants.iter().enumerate() {
        let (c, a) = (&acc.counts, &mut all.counts);
        a.submitted += c.submitted;
        a.on_time += c.on_time;
        a.late += c.late;
        a.expired += c.expired;
        a.rejected += c.rejected;
        a.shed += c.shed;
        a.failed += c.failed;
        all.end_to_end.merge(&acc.end_to_end);
        let (s, k) = accuracy(acc, r.top1.get(t).map_or(&[], Vec::as_slice));
        sum += s;
        n += k;
    }
    let mut rows = vec![row(
        trace,
        policy,
        "all",
        &all,
        r.energy_j,
        r.carbon_g,
        (sum, n),
    )];
    rows[0].swaps = r.swaps;
    rows[0].unpriced_energy_j = Some(r.unpriced_energy_j);
    rows[0].stale_priced_energy_j = Some(r.stale_priced_energy_j);
    for (t, acc) in r.tenants.iter().enumerate() {
        rows.push(row(
            trace,
            policy,
            &acc.name,
            acc,
            r.tenant_energy_j.get(t).copied().unwrap_or(0.0),
            r.tenant_carbon_g.get(t).copied().unwrap_or(0.0),
            accuracy(acc, r.top1.get(t).map_or(&[], Vec::as_slice)),
        ));
    }
    for x in &mut rows {
        x.span_h = r.span_h;
        x.simulated_s = r.simulated_s;
    }
    rows
}

/// Write summary rows as CSV (header first).
pub fn write_summary(out: impl Write, rows: &[SummaryRow]) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    for r in rows {
        w.serialize(r)?;
    }
    w.flush()?;
    Ok(())
}

/// Write a run's per-hour timeline as CSV.
pub fn write_timeline(out: impl Write, r: &SimResult, tenants: &[String]) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let mut header: Vec<String> = [
        "hour",
        "utc",
        "gco2_per_kwh",
        "mode",
        "power_w_modelled",
        "energy_j",
        "carbon_g",
        "submitted",
        "on_time",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(tenants.iter().map(|t| format!("variant_{t}")));
    header.extend(tenants.iter().map(|t| format!("unit_{t}")));
    w.write_record(&header)?;
    for h in &r.hours {
        let mut rec = vec![
            h.hour.to_string(),
            h.at.format("%Y-%m-%d %H:%M").to_string(),
            format!("{:.2}", h.gco2_per_kwh),
            h.mode.clone(),
            format!("{:.3}", h.power_w),
            format!("{:.1}", h.energy_j),
            format!("{:.6}", h.carbon_g),
            h.submitted.to_string(),
            h.on_time.to_string(),
        ];
        rec.extend(h.variants.iter().map(|v| v.to_string()));
        rec.extend(h.units.iter().cloned());
        w.write_record(&rec)?;
    }
    w.flush()?;
    Ok(())
}

/// Write the mapping planner's decisions: one row per plan, with the
/// mapping (`variant@unit` per tenant, `;`-separated) and why.
pub fn write_plans<W: std::io::Write>(
    w: W,
    plans: &[super::mapping::PlanLogEntry],
) -> Result<(), csv::Error> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record([
        "hour",
        "gco2_per_kwh",
        "priced_gco2_per_kwh",
        "accuracy_weight",
        "outcome",
        "mode",
        "mapping",
        "predicted_power_w",
        "predicted_accuracy_pct",
        "predicted_mean_delay_ms",
        "worst_deadline_fraction",
        "evaluated",
    ])?;
    for p in plans {
        out.write_record([
            p.hour.to_string(),
            format!("{:.1}", p.gco2_per_kwh),
            format!("{:.1}", p.priced_gco2_per_kwh),
            format!("{:.3}", p.accuracy_weight),
            p.outcome.clone(),
            p.mode.clone(),
            p.mapping.join(";"),
            format!("{:.3}", p.predicted_power_w),
            format!("{:.3}", p.predicted_accuracy),
            format!("{:.2}", p.predicted_mean_delay_ms),
            format!("{:.3}", p.worst_deadline_fraction),
            p.evaluated.to_string(),
        ])?;
    }
    out.flush()?;
    Ok(())
}
