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
    /// Model swaps (all-tenant rows).
    pub swaps: usize,
    /// Trace hours in the span.
    pub span_h: usize,
    /// Simulated seconds (less than the span when sampled).
    pub simulated_s: f64,
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
        cdp_g_s: cdp(carbon_g, Duration::from_secs_f64((mean / 1000.0).max(0.0))),
        accuracy_pct: if acc_n == 0 {
            f64::NAN
        } else {
            acc_sum / acc_n as f64
        },
        swaps: 0,
        span_h: 0,
        simulated_s: 0.0,
    }
}

/// The summary rows of one run: "all" first, then each tenant.
pub fn summary_rows(trace: &str, policy: &str, r: &SimResult) -> Vec<SummaryRow> {
    let mut all = TenantAccount::new("all");
    let (mut sum, mut n) = (0.0, 0);
    for (t, acc) in r.tenants.iter().enumerate() {
        let (c, a) = (&acc.counts, &mut all.counts);
        a.submitted += c.submitted;
        a.on_time += c.on_time;
        a.late += c.late;
        a.expired += c.expired;
        a.rejected += c.rejected;
        a.failed += c.failed;
        all.end_to_end.merge(&acc.end_to_end);
        let (s, k) = accuracy(acc, &r.top1[t]);
        sum += s;
        n += k;
    }
    let mut rows = vec![row(
        trace,
        policy,
        "all",
        &all,
        r.ledger.energy_j,
        r.ledger.carbon_g,
        (sum, n),
    )];
    rows[0].swaps = r.swaps;
    for (t, acc) in r.tenants.iter().enumerate() {
        let share = if r.ledger.carbon_g > 0.0 {
            r.ledger.tenant_carbon_g[t] / r.ledger.carbon_g
        } else {
            0.0
        };
        rows.push(row(
            trace,
            policy,
            &acc.name,
            acc,
            r.ledger.energy_j * share,
            r.ledger.tenant_carbon_g[t],
            accuracy(acc, &r.top1[t]),
        ));
    }
    for x in &mut rows {
        x.span_h = r.hours.len();
        x.simulated_s = r.simulated.as_secs_f64();
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
        w.write_record(&rec)?;
    }
    w.flush()?;
    Ok(())
}
