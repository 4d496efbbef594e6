//! The simulated profile: the dataset `ecomap profile` measures on a real
//! device, produced instead by the simulator on a device model (every
//! figure **modelled**, and labelled so in the rows).
//!
//! Each configuration runs through [`simulate`] (the same dispatch step
//! and device model as every simulation) at one static mode for a window
//! of simulated time; per tenant the median and p95 service time and the
//! utilisation, and the device's mean power, are recorded.

use super::{simulate, SimError, SimSetup};
use crate::carbon::CarbonTrace;
use crate::catalog::Variant;
use crate::config::parse_ron;
use crate::config::policy::{PlanPolicy, Policy};
use crate::config::workload::Workload;
use crate::device::DeviceModel;
use crate::estimate::dataset::ProfileRow;
use crate::estimate::profile_plan::{ProfileConfig, ProfilePlan};
use std::path::Path;
use std::time::Duration;

/// Which of `variants` each unit of `device` can run (`[variant][unit]`).
pub fn capable_units(device: &DeviceModel, variants: &[Variant]) -> Vec<Vec<bool>> {
    variants
        .iter()
        .map(|v| {
            device
                .spec()
                .units
                .iter()
                .map(|u| device.model(&v.name).and_then(|c| c.ms(u.kind)).is_some())
                .collect()
        })
        .collect()
}

/// A constant-intensity trace one hour long (the profile does not depend
/// on carbon; the simulator needs a trace to run).
fn flat_trace() -> CarbonTrace {
    let csv = "timestamp,gco2_per_kwh\n2023-01-01T00:00:00Z,300\n2023-01-01T01:00:00Z,300\n2023-01-01T02:00:00Z,300\n";
    CarbonTrace::parse(csv.as_bytes(), Path::new("<flat profile trace>"))
        .expect("a well-formed built-in trace")
}

/// Simulate one configuration of `plan` for `window` of simulated time.
pub fn simulate_configuration(
    device: &DeviceModel,
    plan: &ProfilePlan,
    variants: &[Variant],
    cfg: &ProfileConfig,
    window: Duration,
) -> Result<Vec<ProfileRow>, SimError> {
    let mode_name = &plan.modes[cfg.mode];
    let mode = device
        .mode_by_name(mode_name)
        .ok_or_else(|| SimError::UnknownMode {
            mode: mode_name.clone(),
            device: device.name().to_string(),
            modes: device.modes().iter().map(|m| m.name.clone()).collect(),
        })?;
    let units = &device.spec().units;
    let window_s = window.as_secs_f64();
    let mut tenants_ron = String::new();
    let mut rates = Vec::new();
    for (i, &(v, u, util)) in cfg.tenants.iter().enumerate() {
        let variant = &variants[v];
        let solo_s = device
            .service_s(&variant.name, units[u].kind, mode)
            .ok_or_else(|| SimError::NoCost {
                tenant: format!("t{i}"),
                variant: variant.name.clone(),
                device: device.name().to_string(),
            })?;
        // The unit's share at the solo service time, and at least 20
        // requests per window so the percentiles have samples.
        let rate = (util / solo_s).max(20.0 / window_s);
        rates.push(rate);
        let model = ron::to_string(&variant.model).expect("a model spec serialises");
        tenants_ron.push_str(&format!(
            "(name: \"t{i}\", model: {model}, units: Some([\"{}\"]), \
             arrival: Periodic(rate_hz: {rate:.6}, jitter: \"1ms\"), deadline: \"10s\", capacity: 256),",
            units[u].name
        ));
    }
    let here = Path::new("<simulated profile>");
    let mut workload: Workload = parse_ron(
        &format!("(seed: {}, tenants: [{tenants_ron}])", cfg.id),
        here,
        "workload",
    )
    .expect("a generated workload parses");
    for (t, &(v, _, _)) in workload.tenants.iter_mut().zip(&cfg.tenants) {
        t.resolved = vec![variants[v].clone()];
    }
    let mut policy = Policy::edf("profile");
    policy.plan = Some(PlanPolicy::Static {
        mode: mode_name.clone(),
    });
    let trace = flat_trace();
    let setup = SimSetup {
        workload: &workload,
        device,
        policy: &policy,
        trace: &trace,
        start: Duration::ZERO,
        hours: 1,
        sample: Some(window),
        seed: u64::from(cfg.id),
        service_seed: None,
        accuracy_target: None,
        planning: None,
        service_replay: None,
    };
    let result = simulate(&setup, |_| {})?;
    let simulated_s = result.simulated.as_secs_f64().max(1e-9);
    // The ledger extrapolates the sampled window to the hour; the hour's
    // row has the window's mean power.
    let power_w = result.hours.first().map_or(f64::NAN, |h| h.power_w);
    let fracs = device.mode_fracs(mode);
    let util: Vec<f64> = result
        .tenants
        .iter()
        .map(|a| a.service.len() as f64 * a.service.mean_us().unwrap_or(0.0) / 1e6 / simulated_s)
        .collect();
    Ok(cfg
        .tenants
        .iter()
        .enumerate()
        .map(|(i, &(v, u, _))| {
            let a = &result.tenants[i];
            let ms = |q: f64| a.service.quantile_us(q).unwrap_or(0) as f64 / 1000.0;
            let unit_util: f64 = cfg
                .tenants
                .iter()
                .enumerate()
                .filter(|(_, t)| t.1 == u)
                .map(|(j, _)| util[j])
                .sum();
            ProfileRow {
                config: cfg.id,
                device: device.name().to_string(),
                mode: mode_name.clone(),
                mode_gpu_frac: fracs[0],
                mode_dla_frac: fracs[1],
                mode_cpu_frac: fracs[2],
                threads: cfg.threads,
                n_tenants: cfg.tenants.len() as u32,
                tenant: format!("t{i}"),
                variant: variants[v].name.clone(),
                unit: units[u].name.clone(),
                unit_index: u as u32,
                unit_kind: units[u].kind.name().to_string(),
                rate_hz: rates[i],
                served: a.service.len(),
                service_p50_ms: ms(0.5),
                service_p95_ms: ms(0.95),
                tenant_util: util[i].min(1.5),
                unit_util: unit_util.min(1.5),
                power_w,
                source: "modelled".into(),
                power_source: "modelled".into(),
                window_s: simulated_s,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::spec::UnitKind;

    fn xavier() -> DeviceModel {
        DeviceModel::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("rt-config/devices/xavier.ron"),
        )
        .unwrap()
    }

    fn variant(name: &str, model: crate::model::VisionModel) -> Variant {
        Variant {
            name: name.into(),
            model: crate::model::ModelSpec::Vision(model),
            top1: None,
        }
    }

    #[test]
    fn a_solo_tenant_gets_the_device_models_service_time() {
        use crate::model::VisionModel::*;
        let d = xavier();
        let variants = vec![variant("resnet50", ResNet50), variant("resnet18", ResNet18)];
        let plan = ProfilePlan {
            variants: variants.iter().map(|v| v.name.clone()).collect(),
            modes: vec!["MAXN".into(), "MODE_10W".into()],
            threads: vec![1],
            unit_kinds: d.spec().units.iter().map(|u| u.kind).collect(),
            capable: capable_units(&d, &variants),
            configs: 40,
            max_tenants: 4,
            seed: 1,
        };
        let configs = plan.configurations();
        // resnet50 on gpu, dla, cpu; resnet18 likewise: 2 × 3 kinds × 2 modes.
        assert_eq!(configs.iter().filter(|c| c.tenants.len() == 1).count(), 12);
        let rows =
            simulate_configuration(&d, &plan, &variants, &configs[0], Duration::from_secs(20))
                .unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.variant.as_str(), r.unit_kind.as_str()),
            ("resnet50", "gpu")
        );
        let expect = d.service_s("resnet50", UnitKind::Gpu, 0).unwrap() * 1000.0;
        // Log-normal with CV 1.1% around the model's mean: the median is close.
        assert!(
            (r.service_p50_ms / expect - 1.0).abs() < 0.03,
            "{} vs {expect}",
            r.service_p50_ms
        );
        assert!(r.service_p95_ms >= r.service_p50_ms);
        assert!(r.power_w > d.modes()[0].idle_w && r.source == "modelled");
        // A mix: every tenant gets a row, power above idle.
        let mix = configs.iter().find(|c| c.tenants.len() >= 3).unwrap();
        let rows =
            simulate_configuration(&d, &plan, &variants, mix, Duration::from_secs(20)).unwrap();
        assert_eq!(rows.len(), mix.tenants.len());
        assert!(rows.iter().all(|r| r.served >= 20));
    }
}
