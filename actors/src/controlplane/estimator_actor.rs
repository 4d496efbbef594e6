//! `EstimatorActor` (actix): the latency/power estimator and the mapping
//! planner, off the data plane.
//!
//! It runs on a [`SyncArbiter`] thread of its own — a forward pass or a
//! plan search takes milliseconds and must not stall the control plane's
//! event loop — and answers two messages: [`PredictBatch`] (score these
//! candidate mappings, in one batched call) and [`PlanFor`] (search the
//! best mapping for an intensity). Real-time threads never send to it.
//!
//! ```
//! use actix::prelude::*;
//! use ecomap::device::DeviceModel;
//! use ecomap::estimate::analytic::AnalyticEstimator;
//! use ecomap::estimate::{MappingQuery, Placement};
//! use ecomap::device::spec::UnitKind;
//! use ecomap_actors::controlplane::estimator_actor::{EstimatorActor, PredictBatch};
//!
//! let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
//! let device = DeviceModel::load(&root.join("rt-config/devices/xavier.ron")).unwrap();
//! let sys = System::new();
//! sys.block_on(async move {
//!     let addr = EstimatorActor::start(move || {
//!         Box::new(AnalyticEstimator::from_names(device.clone(), vec!["resnet50".into()]))
//!     });
//!     let query = MappingQuery {
//!         mode_fracs: [1.0, 1.0, 1.0],
//!         tenants: vec![Placement { model: 0, unit: 0, kind: UnitKind::Gpu, threads: 1, rate_hz: 30.0 }],
//!     };
//!     let answer = addr.send(PredictBatch(vec![query])).await.unwrap().unwrap();
//!     assert!((answer[0].service_p50_s[0] - 0.00337).abs() < 1e-3); // ResNet-50 on the GPU at MAXN
//! });
//! ```

use actix::prelude::*;
use ecomap::estimate::{EstimateError, MappingEstimator, MappingPrediction, MappingQuery};
use ecomap::planner::{Plan, PlanError, PlanProblem, SearchOptions};

/// The actor: owns one estimator.
pub struct EstimatorActor {
    estimator: Box<dyn MappingEstimator + Send>,
    queries: u64,
}

impl EstimatorActor {
    /// Start the actor on its own thread; `make` builds its estimator there
    /// (libtorch state is created on the thread that uses it).
    pub fn start(
        make: impl Fn() -> Box<dyn MappingEstimator + Send> + Send + Sync + 'static,
    ) -> Addr<EstimatorActor> {
        SyncArbiter::start(1, move || EstimatorActor {
            estimator: make(),
            queries: 0,
        })
    }
}

impl Actor for EstimatorActor {
    type Context = SyncContext<Self>;
}

/// Score candidate mappings in one batch.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<MappingPrediction>, EstimateError>")]
pub struct PredictBatch(pub Vec<MappingQuery>);

impl Handler<PredictBatch> for EstimatorActor {
    type Result = Result<Vec<MappingPrediction>, EstimateError>;

    fn handle(&mut self, msg: PredictBatch, _: &mut Self::Context) -> Self::Result {
        self.queries += msg.0.len() as u64;
        self.estimator.predict(&msg.0)
    }
}

/// Plan `problem` for an intensity (g/kWh).
#[derive(Debug, Message)]
#[rtype(result = "Result<Plan, PlanError>")]
pub struct PlanFor {
    /// What to plan.
    pub problem: PlanProblem,
    /// Grid intensity, g/kWh.
    pub gco2_per_kwh: f64,
    /// Search settings and weights.
    pub options: SearchOptions,
}

impl Handler<PlanFor> for EstimatorActor {
    type Result = Result<Plan, PlanError>;

    fn handle(&mut self, msg: PlanFor, _: &mut Self::Context) -> Self::Result {
        let plan = ecomap::planner::plan(
            &msg.problem,
            self.estimator.as_mut(),
            msg.gco2_per_kwh,
            &msg.options,
        )?;
        self.queries += plan.evaluated as u64;
        Ok(plan)
    }
}

/// How many candidates the actor has scored.
#[derive(Debug, Message)]
#[rtype(result = "u64")]
pub struct QueriesServed;

impl Handler<QueriesServed> for EstimatorActor {
    type Result = u64;

    fn handle(&mut self, _: QueriesServed, _: &mut Self::Context) -> u64 {
        self.queries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecomap::device::spec::UnitKind;
    use ecomap::device::DeviceModel;
    use ecomap::estimate::analytic::AnalyticEstimator;
    use ecomap::planner::{PlanMode, PlanTenant, PlanVariant};

    fn device() -> DeviceModel {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        DeviceModel::load(&root.join("rt-config/devices/xavier.ron")).unwrap()
    }

    fn names() -> Vec<String> {
        vec!["resnet50".into(), "resnet18".into()]
    }

    #[test]
    fn plans_through_the_actor_match_direct_planning() {
        let d = device();
        let problem = PlanProblem {
            tenants: vec![PlanTenant {
                name: "cam".into(),
                variants: vec![
                    PlanVariant {
                        name: "resnet50".into(),
                        model: 0,
                        top1: Some(76.13),
                        units: vec![0, 1],
                    },
                    PlanVariant {
                        name: "resnet18".into(),
                        model: 1,
                        top1: Some(69.758),
                        units: vec![0, 1],
                    },
                ],
                rate_hz: 30.0,
                deadline_s: 0.033,
                accuracy_floor: None,
            }],
            modes: (0..d.modes().len())
                .map(|m| PlanMode {
                    name: d.modes()[m].name.clone(),
                    fracs: d.mode_fracs(m),
                })
                .collect(),
            units: vec![UnitKind::Gpu, UnitKind::Dla],
            threads: 1,
        };
        let options = SearchOptions::default();
        let direct = ecomap::planner::plan(
            &problem,
            &mut AnalyticEstimator::from_names(d.clone(), names()),
            300.0,
            &options,
        )
        .unwrap();
        let sys = System::new();
        let (via_actor, served) = sys.block_on(async move {
            let addr = EstimatorActor::start(move || {
                Box::new(AnalyticEstimator::from_names(d.clone(), names()))
            });
            let plan = addr
                .send(PlanFor {
                    problem,
                    gco2_per_kwh: 300.0,
                    options,
                })
                .await
                .unwrap()
                .unwrap();
            (plan, addr.send(QueriesServed).await.unwrap())
        });
        assert_eq!(via_actor, direct);
        assert_eq!(served, direct.evaluated as u64);
    }
}
