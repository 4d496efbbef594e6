//! `GET /metrics`: the run in the Prometheus exposition format, encoded by
//! `prometheus-client`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `ecomap_requests_total` | counter | `tenant`, `outcome` (every outcome, exact: read from the counters kept where each outcome is decided) |
//! | `ecomap_requests_submitted_total` | counter | `tenant` |
//! | `ecomap_end_to_end_seconds`, `ecomap_queue_seconds`, `ecomap_service_seconds` | histogram | `tenant` (served requests, observed by telemetry: a sample telemetry dropped is missing here too) |
//! | `ecomap_queue_depth` | gauge | `tenant` (admitted, not yet started) |
//! | `ecomap_active_variant` | gauge | `tenant` (0 = heaviest) |
//! | `ecomap_power_cap_watts`, `ecomap_power_watts` | gauge | `source` = `measured` / `modelled` |
//! | `ecomap_power_mode` | gauge (1) | `level` |
//! | `ecomap_carbon_intensity_grams_per_kwh` | gauge | — |
//! | `ecomap_energy_joules_total`, `ecomap_carbon_grams_total` | counter | `source` |
//!
//! The device's metrics are present when the rt-config has a platform.

use crate::control_plane::ControlView;
use crate::tenant_queue::TenantCounters;
use ecomap::request::{Completion, Outcome};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    tenant: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabel {
    level: String,
}

/// A label value as the exposition format writes it: prometheus-client
/// writes values verbatim, and a power mode's name comes from a device
/// or rt-config file, not from a checked set (tenant names are checked
/// file-safe), so a `"`, `\\` or line break in one would break the whole
/// scrape.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Latency buckets, seconds: 1 ms to 5 s.
const BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

fn new_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

type LatencyFamily = Family<TenantLabel, Histogram, fn() -> Histogram>;

/// The latency histograms telemetry observes, one per tenant.
#[derive(Debug, Clone)]
pub struct LatencyMetrics {
    names: Arc<[String]>,
    end_to_end: LatencyFamily,
    queueing: LatencyFamily,
    service: LatencyFamily,
}

impl LatencyMetrics {
    /// Histograms for these tenants.
    pub fn new(tenant_names: &[String]) -> Self {
        LatencyMetrics {
            names: tenant_names.into(),
            end_to_end: Family::new_with_constructor(new_histogram),
            queueing: Family::new_with_constructor(new_histogram),
            service: Family::new_with_constructor(new_histogram),
        }
    }

    /// Observe a served request (called by telemetry).
    pub fn observe(&self, c: &Completion) {
        let Some(name) = self.names.get(c.request.tenant.index()) else {
            return;
        };
        let label = TenantLabel {
            tenant: name.clone(),
        };
        self.end_to_end
            .get_or_create(&label)
            .observe(c.end_to_end().as_secs_f64());
        self.queueing
            .get_or_create(&label)
            .observe(c.queueing().as_secs_f64());
        self.service
            .get_or_create(&label)
            .observe(c.service().as_secs_f64());
    }
}

/// Reads the exact counters and the control plane's state at each scrape.
#[derive(Debug)]
struct RunCollector {
    names: Arc<[String]>,
    counters: Vec<Arc<TenantCounters>>,
    control: Option<ControlView>,
}

impl Collector for RunCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let zero = ConstCounter::new(0u64);
        let mut e = encoder.encode_descriptor(
            "ecomap_requests",
            "Requests by tenant and outcome (every request ends in exactly one)",
            None,
            zero.metric_type(),
        )?;
        for (name, c) in self.names.iter().zip(&self.counters) {
            for o in Outcome::ALL {
                let labels = OutcomeLabels {
                    tenant: name.clone(),
                    outcome: o.name().into(),
                };
                ConstCounter::new(c.outcome(o)).encode(e.encode_family(&labels)?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "ecomap_requests_submitted",
            "Requests offered, by tenant",
            None,
            zero.metric_type(),
        )?;
        for (name, c) in self.names.iter().zip(&self.counters) {
            let labels = TenantLabel {
                tenant: name.clone(),
            };
            ConstCounter::new(c.submitted.load(Ordering::Acquire))
                .encode(e.encode_family(&labels)?)?;
        }
        let gauge = ConstGauge::new(0i64);
        for (metric, help, read) in [
            (
                "ecomap_queue_depth",
                "Requests admitted and not yet started, by tenant",
                (|c: &TenantCounters| c.waiting.held()) as fn(&TenantCounters) -> usize,
            ),
            (
                "ecomap_active_variant",
                "The model variant serving the tenant now (0 = heaviest)",
                |c: &TenantCounters| c.active_variant.load(Ordering::Relaxed),
            ),
        ] {
            let mut e = encoder.encode_descriptor(metric, help, None, gauge.metric_type())?;
            for (name, c) in self.names.iter().zip(&self.counters) {
                let labels = TenantLabel {
                    tenant: name.clone(),
                };
                ConstGauge::new(i64::try_from(read(c)).unwrap_or(i64::MAX))
                    .encode(e.encode_family(&labels)?)?;
            }
        }
        let Some(control) = &self.control else {
            return Ok(());
        };
        let s = control.snapshot();
        let source = SourceLabel {
            source: if s.power_measured {
                "measured"
            } else {
                "modelled"
            }
            .into(),
        };
        let fgauge = ConstGauge::new(0.0f64);
        for (metric, help, v) in [
            (
                "ecomap_power_cap_watts",
                "The device's power cap in force",
                s.cap_w,
            ),
            (
                "ecomap_power_watts",
                "The device's power over the last meter interval",
                s.power_w,
            ),
        ] {
            let mut e = encoder.encode_descriptor(metric, help, None, fgauge.metric_type())?;
            ConstGauge::new(v).encode(e.encode_family(&source)?)?;
        }
        let mut e = encoder.encode_descriptor(
            "ecomap_power_mode",
            "The power mode in force (1 for its level)",
            None,
            gauge.metric_type(),
        )?;
        ConstGauge::new(1i64).encode(e.encode_family(&LevelLabel {
            level: escape_label(&s.level),
        })?)?;
        if let Some(g) = s.intensity {
            let e = encoder.encode_descriptor(
                "ecomap_carbon_intensity_grams_per_kwh",
                "The grid's carbon intensity in force",
                None,
                fgauge.metric_type(),
            )?;
            ConstGauge::new(g).encode(e)?;
        }
        let fcounter = ConstCounter::new(0.0f64);
        for (metric, help, v) in [
            (
                "ecomap_energy_joules",
                "Energy used since the start",
                s.energy_j,
            ),
            (
                "ecomap_carbon_grams",
                "Carbon emitted since the start (CO2eq)",
                s.carbon_g,
            ),
        ] {
            let mut e = encoder.encode_descriptor(metric, help, None, fcounter.metric_type())?;
            ConstCounter::new(v).encode(e.encode_family(&source)?)?;
        }
        Ok(())
    }
}

/// What `GET /metrics` renders.
#[derive(Debug, Clone)]
pub struct MetricsSource {
    registry: Arc<Registry>,
}

impl MetricsSource {
    /// Metrics of a run: its exact counters, the latency histograms
    /// telemetry fills, and the control plane's state if it has one.
    pub fn new(
        tenant_names: &[String],
        counters: Vec<Arc<TenantCounters>>,
        latency: &LatencyMetrics,
        control: Option<ControlView>,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "ecomap_end_to_end_seconds",
            "Release to the end of the forward pass, served requests",
            latency.end_to_end.clone(),
        );
        registry.register(
            "ecomap_queue_seconds",
            "Release to the start of the forward pass, served requests",
            latency.queueing.clone(),
        );
        registry.register(
            "ecomap_service_seconds",
            "The forward pass, served requests",
            latency.service.clone(),
        );
        registry.register_collector(Box::new(RunCollector {
            names: tenant_names.into(),
            counters,
            control,
        }));
        MetricsSource {
            registry: Arc::new(registry),
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::escape_label;

    #[test]
    fn label_values_are_escaped_as_the_exposition_format_asks() {
        assert_eq!(escape_label("MODE_15W"), "MODE_15W");
        assert_eq!(escape_label("a \"b\" \\ c\nd"), "a \\\"b\\\" \\\\ c\\nd");
    }
}
