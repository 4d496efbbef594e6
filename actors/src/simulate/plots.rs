//! SVG plots of a simulation (plotters): where people would rather look
//! than read a CSV.
//!
//! Per trace: intensity and the power mode each policy ran over the span;
//! each tenant's variant over time under `ecomap`; end-to-end latency CDFs
//! per policy. Over all traces: carbon and CDP per policy relative to
//! `max-perf`.

use ecomap::sim::output::SummaryRow;
use ecomap::sim::SimResult;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

type PlotResult<T> = Result<T, Box<dyn std::error::Error>>;

const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

/// Intensity over the span, and each policy's mean modelled power per day.
fn carbon_and_power(path: &Path, trace: &str, runs: &[(&str, &SimResult)]) -> PlotResult<()> {
    let root = SVGBackend::new(path, (1100, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(260);
    let hours = runs[0].1.hours.len() as f64;
    let g_max = runs[0]
        .1
        .hours
        .iter()
        .map(|h| h.gco2_per_kwh)
        .fold(1.0, f64::max);
    let mut c = ChartBuilder::on(&top)
        .caption(
            format!("{trace}: grid carbon intensity"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..hours / 24.0, 0.0..g_max * 1.05)?;
    c.configure_mesh()
        .x_desc("day of span")
        .y_desc("gCO2eq/kWh")
        .draw()?;
    c.draw_series(LineSeries::new(
        runs[0]
            .1
            .hours
            .iter()
            .map(|h| (h.hour as f64 / 24.0, h.gco2_per_kwh)),
        &BLACK,
    ))?;
    // Daily mean power per policy (hourly is too dense to read over a year).
    let daily = |r: &SimResult| -> Vec<(f64, f64)> {
        r.hours
            .chunks(24)
            .enumerate()
            .map(|(d, c)| {
                (
                    d as f64 + 0.5,
                    c.iter().map(|h| h.power_w).sum::<f64>() / c.len() as f64,
                )
            })
            .collect()
    };
    let p_max = runs
        .iter()
        .flat_map(|(_, r)| r.hours.iter().map(|h| h.power_w))
        .fold(1.0, f64::max);
    let mut c = ChartBuilder::on(&bottom)
        .caption(
            "mean device power per day, by policy (MODELLED)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..hours / 24.0, 0.0..p_max * 1.1)?;
    c.configure_mesh()
        .x_desc("day of span")
        .y_desc("W")
        .draw()?;
    for (i, (name, r)) in runs.iter().enumerate() {
        let col = colour(i);
        c.draw_series(LineSeries::new(daily(r), &col))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Each tenant's variant (0 = heaviest) per hour under one policy.
fn variants(
    path: &Path,
    trace: &str,
    policy: &str,
    r: &SimResult,
    tenants: &[String],
) -> PlotResult<()> {
    let root = SVGBackend::new(path, (1100, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let hours = r.hours.len() as f64;
    let v_max = r
        .hours
        .iter()
        .flat_map(|h| h.variants.iter().copied())
        .max()
        .unwrap_or(0) as f64;
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!("{trace}, {policy}: variant per tenant (0 = heaviest), daily mean"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..hours / 24.0, -0.1..v_max + 0.5)?;
    c.configure_mesh()
        .x_desc("day of span")
        .y_desc("variant")
        .draw()?;
    for (t, name) in tenants.iter().enumerate() {
        let col = colour(t);
        let pts: Vec<(f64, f64)> = r
            .hours
            .chunks(24)
            .enumerate()
            .map(|(d, c)| {
                (
                    d as f64 + 0.5,
                    c.iter().map(|h| h.variants[t] as f64).sum::<f64>() / c.len() as f64,
                )
            })
            .collect();
        c.draw_series(LineSeries::new(pts, &col))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// End-to-end latency CDF of all tenants, per policy.
fn latency_cdf(path: &Path, trace: &str, runs: &[(&str, &SimResult)]) -> PlotResult<()> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let merged: Vec<(&str, ecomap::accounting::LatencyHistogram)> = runs
        .iter()
        .map(|(n, r)| {
            let mut h = ecomap::accounting::LatencyHistogram::default();
            for t in &r.tenants {
                h.merge(&t.end_to_end);
            }
            (*n, h)
        })
        .collect();
    let x_max = merged
        .iter()
        .filter_map(|(_, h)| h.quantile_us(0.999))
        .max()
        .unwrap_or(1) as f64
        / 1000.0;
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!("{trace}: end-to-end latency CDF, all tenants"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..1.0)?;
    c.configure_mesh()
        .x_desc("ms")
        .y_desc("fraction served by then")
        .draw()?;
    for (i, (name, h)) in merged.iter().enumerate() {
        if h.is_empty() {
            continue;
        }
        let col = colour(i);
        let pts: Vec<(f64, f64)> = (0..=200)
            .map(|k| {
                let q = k as f64 / 200.0 * 0.999;
                (h.quantile_us(q).unwrap_or(0) as f64 / 1000.0, q)
            })
            .collect();
        c.draw_series(LineSeries::new(pts, &col))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Carbon and CDP per policy relative to max-perf, mean over traces.
fn policy_bars(path: &Path, rows: &[SummaryRow]) -> PlotResult<bool> {
    let all: Vec<&SummaryRow> = rows.iter().filter(|r| r.tenant == "all").collect();
    let mut policies: Vec<&str> = Vec::new();
    for r in &all {
        if !policies.contains(&r.policy.as_str()) {
            policies.push(&r.policy);
        }
    }
    let base = |trace: &str| {
        all.iter()
            .find(|r| r.trace == trace && r.policy == "max-perf")
    };
    let mut bars = Vec::new();
    for p in &policies {
        let ratios: Vec<(f64, f64)> = all
            .iter()
            .filter(|r| r.policy == *p)
            .filter_map(|r| {
                let b = base(&r.trace)?;
                Some((r.carbon_g / b.carbon_g, r.cdp_g_s / b.cdp_g_s))
            })
            .collect();
        if ratios.is_empty() {
            return Ok(false); // no max-perf to compare with
        }
        let n = ratios.len() as f64;
        bars.push((
            *p,
            ratios.iter().map(|r| r.0).sum::<f64>() / n,
            ratios.iter().map(|r| r.1).sum::<f64>() / n,
        ));
    }
    let root = SVGBackend::new(path, (1000, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let y_max = bars.iter().map(|b| b.1.max(b.2)).fold(1.0, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&root)
        .caption(
            "carbon (blue) and CDP (orange) relative to max-perf, mean over traces (MODELLED power)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..bars.len() as f64, 0.0..y_max)?;
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("× max-perf")
        .draw()?;
    // One label under each pair of bars (plotters places axis labels
    // itself, which skips some).
    for (i, b) in bars.iter().enumerate() {
        let (x, y) = c.backend_coord(&(i as f64 + 0.5, 0.0));
        let style = ("sans-serif", 13).into_font().color(&BLACK);
        let w = b.0.len() as i32 * 7 / 2;
        root.draw(&Text::new(b.0.to_string(), (x - w, y + 8), style))?;
    }
    c.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let x = i as f64;
        Rectangle::new([(x + 0.15, 0.0), (x + 0.5, b.1)], colour(0).filled())
    }))?;
    c.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let x = i as f64;
        Rectangle::new([(x + 0.5, 0.0), (x + 0.85, b.2)], colour(1).filled())
    }))?;
    root.present()?;
    Ok(true)
}

/// Write every plot into `dir`; returns the files written.
pub fn write_plots(
    dir: &Path,
    traces: &[String],
    runs: &[Vec<(&str, &SimResult)>],
    tenants: &[String],
    rows: &[SummaryRow],
) -> PlotResult<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for (trace, runs) in traces.iter().zip(runs) {
        if runs.is_empty() {
            continue;
        }
        let f = dir.join(format!("{trace}__power.svg"));
        carbon_and_power(&f, trace, runs)?;
        files.push(f);
        let f = dir.join(format!("{trace}__latency_cdf.svg"));
        latency_cdf(&f, trace, runs)?;
        files.push(f);
        let (name, r) = runs
            .iter()
            .find(|(n, _)| *n == "ecomap")
            .unwrap_or(&runs[0]);
        let f = dir.join(format!("{trace}__variants_{name}.svg"));
        variants(&f, trace, name, r, tenants)?;
        files.push(f);
    }
    let f = dir.join("policies.svg");
    if policy_bars(&f, rows)? {
        files.push(f);
    }
    Ok(files)
}
