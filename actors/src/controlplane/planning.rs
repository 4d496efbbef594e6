//! The mapping planner in the runtime: what the power governor needs to
//! plan (the problem, the search settings, the estimator) and how it turns
//! a plan into a cap and variants.
//!
//! ```text
//! CarbonReading ──► PowerGovernor ──PlanFor──► EstimatorActor (own thread)
//!                        ▲  │                        │ planner::plan(…)
//!                        │  └──────── Plan ◄─────────┘
//!                        └─ apply: mode's cap → Platform + PowerCell,
//!                                  variants, workers → PlanCell → EdfDispatcher
//! ```
//!
//! The plan chooses the mode, the variants and each tenant's worker: the
//! dispatcher moves a tenant to the one worker its plan names, between
//! requests (`EdfDispatcher::pull_plan`), when that worker holds the
//! tenant's models and is alive; otherwise the tenant stays where it is.

use ecomap::config::policy::{PlanPolicy, Policy};
use ecomap::config::rt::{DeviceSpec, RtConfig};
use ecomap::config::workload::Workload;
use ecomap::device::spec::UnitKind;
use ecomap::device::DeviceModel;
use ecomap::estimate::descriptors::Descriptors;
use ecomap::planner::{PlanMode, PlanProblem, PlanTenant, PlanVariant, SearchOptions};
use std::path::PathBuf;
use std::sync::Arc;

/// Everything the runtime needs to plan, checked before anything starts.
#[derive(Debug, Clone)]
pub struct RuntimePlanning {
    /// The problem (tenants, modes, workers as units).
    pub problem: PlanProblem,
    /// Weights and search settings.
    pub options: SearchOptions,
    /// Re-plan when the priced intensity moved this much (g/kWh).
    pub hysteresis_gco2: f64,
    /// The intensity carbon is priced at.
    pub carbon_price: ecomap::planner::CarbonPrice,
    /// The budget on the mean accuracy lost, if any.
    pub mean_accuracy_lost: Option<ecomap::planner::MeanAccuracyBudget>,
    /// Per mode of the problem: the cap that selects it on the platform.
    pub caps_w: Vec<f64>,
    /// The trained estimator's folder.
    pub estimator: PathBuf,
    /// Its descriptor table.
    pub descriptors: Descriptors,
    /// The workers out (died, not restored): set by the dispatcher, read
    /// by the governor, which plans around them.
    pub lost_units: Arc<crate::dataplane::lost_units::LostUnits>,
}

/// The kind of unit a worker is, as the estimator's tokens name it: the
/// planner's and `ecomap profile`'s one reading, so a profile row and a
/// plan's query describe the same worker alike.
pub fn worker_unit_kind(worker: &ecomap::config::rt::WorkerSpec) -> UnitKind {
    match worker.device {
        DeviceSpec::Cpu => UnitKind::Cpu,
        DeviceSpec::Cuda(_) => UnitKind::Gpu,
    }
}

impl RuntimePlanning {
    /// `None` unless the policy plans with `Mapping`; `Err` says what is
    /// missing or wrong (exit 2).
    pub fn prepare(
        policy: &Policy,
        workload: &Workload,
        rt: &RtConfig,
    ) -> Result<Option<RuntimePlanning>, String> {
        let Some(PlanPolicy::Mapping {
            accuracy_point_g_per_h,
            delay_ms_g_per_h,
            max_accuracy_lost,
            mean_accuracy_lost,
            margin,
            hysteresis_gco2,
            beam_width,
            carbon_price,
            estimator,
            device,
        }) = &policy.plan
        else {
            return Ok(None);
        };
        if policy.carbon.is_none() {
            return Err(
                "plan: a planning policy needs a `carbon` source to plan from (a Trace, Http or \
                 Fixed intensity)"
                    .into(),
            );
        }
        let estimator = estimator.clone().ok_or(
            "plan: ecomap run needs a trained estimator for this host: set `estimator: \
             Some(\"../rt-config/host-estimator\")` (ecomap train-estimator)",
        )?;
        let device_path = device.clone().ok_or(
            "plan: ecomap run needs `device: Some(…)`, the device description whose modes the \
             estimator was trained with (e.g. \"../rt-config/devices/host.ron\")",
        )?;
        let device = DeviceModel::load(&device_path).map_err(|e| e.to_string())?;
        // The estimator folder carries the descriptor table it was trained with.
        let descriptors_path = estimator.join("descriptors.csv");
        let descriptors = Descriptors::load(&descriptors_path).map_err(|e| e.to_string())?;
        check_estimator(&estimator, &descriptors, &device)?;
        let mut modes = Vec::new();
        let mut caps_w = Vec::new();
        for (m, spec) in device.modes().iter().enumerate() {
            if let Some(cap) = spec.cap_w {
                modes.push(PlanMode {
                    name: spec.name.clone(),
                    fracs: device.mode_fracs(m),
                });
                caps_w.push(cap);
            }
        }
        if modes.is_empty() {
            return Err(format!(
                "plan: no mode of {} has a cap_w the platform could select",
                device_path.display()
            ));
        }
        if rt.workers.len() > ecomap::estimate::MAX_UNITS {
            return Err(format!(
                "plan: the estimator's tokens name at most {} units, the rt-config has {} workers",
                ecomap::estimate::MAX_UNITS,
                rt.workers.len()
            ));
        }
        let units: Vec<UnitKind> = rt.workers.iter().map(worker_unit_kind).collect();
        let tenants = workload
            .tenants
            .iter()
            .map(|t| {
                let workers: Vec<usize> = (0..rt.workers.len())
                    .filter(|&w| rt.worker_serves(w, &t.name))
                    .collect();
                let variants = t
                    .variants()
                    .into_iter()
                    .map(|v| {
                        Ok(PlanVariant {
                            model: descriptors.index(&v.name).ok_or_else(|| {
                                format!(
                                    "plan: tenant '{}': variant '{}' has no model descriptor in \
                                     {}; add it (scripts/model_descriptors.py) and retrain",
                                    t.name,
                                    v.name,
                                    descriptors_path.display()
                                )
                            })?,
                            name: v.name,
                            top1: v.top1,
                            units: workers.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(PlanTenant {
                    name: t.name.clone(),
                    variants,
                    rate_hz: t.arrival.rate_hz(),
                    deadline_s: t.deadline.as_secs_f64(),
                    accuracy_floor: t.accuracy_floor,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Some(RuntimePlanning {
            problem: PlanProblem {
                tenants,
                modes,
                units,
                threads: rt.intra_op_threads as u32,
            },
            options: SearchOptions {
                accuracy_point_g_per_h: *accuracy_point_g_per_h,
                delay_ms_g_per_h: *delay_ms_g_per_h,
                max_accuracy_lost: *max_accuracy_lost,
                margin: *margin,
                beam_width: *beam_width,
                ..SearchOptions::default()
            },
            hysteresis_gco2: *hysteresis_gco2,
            carbon_price: *carbon_price,
            mean_accuracy_lost: *mean_accuracy_lost,
            caps_w,
            estimator,
            descriptors,
            lost_units: crate::dataplane::lost_units::LostUnits::new(),
        }))
    }
}

/// Load the trained estimator once, so a bad one is refused before start.
#[cfg(feature = "tch")]
fn check_estimator(
    dir: &std::path::Path,
    d: &Descriptors,
    device: &DeviceModel,
) -> Result<(), String> {
    let est = crate::estimator::TransformerEstimator::load(dir, d.clone())
        .map_err(|e| format!("plan: {e}"))?;
    crate::estimator::check_trained_on(est.meta(), dir, device).map_err(|e| format!("plan: {e}"))
}

#[cfg(not(feature = "tch"))]
fn check_estimator(_: &std::path::Path, _: &Descriptors, _: &DeviceModel) -> Result<(), String> {
    Err("plan: the trained estimator needs libtorch: build with the default `tch` feature".into())
}

/// An estimator that always fails (its weights vanished after the start
/// check): plans are then refused and noted, the plan in force is kept.
struct Unavailable(String);

impl ecomap::estimate::MappingEstimator for Unavailable {
    fn predict(
        &mut self,
        _: &[ecomap::estimate::MappingQuery],
    ) -> Result<Vec<ecomap::estimate::MappingPrediction>, ecomap::estimate::EstimateError> {
        Err(ecomap::estimate::EstimateError::Backend(self.0.clone()))
    }
}

/// Build the estimator the planning actor owns (on its own thread).
pub fn make_estimator(
    planning: &RuntimePlanning,
) -> Box<dyn ecomap::estimate::MappingEstimator + Send> {
    #[cfg(feature = "tch")]
    {
        tch::set_num_threads(1);
        match crate::estimator::TransformerEstimator::load(
            &planning.estimator,
            planning.descriptors.clone(),
        ) {
            Ok(e) => Box::new(e),
            Err(e) => Box::new(Unavailable(e.to_string())),
        }
    }
    #[cfg(not(feature = "tch"))]
    {
        Box::new(Unavailable(format!(
            "{}: no libtorch in this build",
            planning.estimator.display()
        )))
    }
}
