//! The synthetic backend: a busy-wait of a fixed service time.
//!
//! It occupies the worker's core exactly like a CPU-bound forward pass would
//! (a sleep would free the core and hide interference), so scheduler
//! benchmarks measure what a real model would see.

use super::{Backend, BackendError, LoadedModel};
use ecomap::config::rt::DeviceSpec;
use ecomap::model::ModelSpec;
use ecomap::tensor::TensorData;
use std::time::{Duration, Instant};

/// Spins for `Synthetic { service }` per request.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyntheticBackend;

/// A loaded synthetic model.
#[derive(Debug)]
pub struct SpinModel {
    service: Duration,
}

impl SpinModel {
    /// A model that takes `service` per request.
    pub fn new(service: Duration) -> Self {
        SpinModel { service }
    }
}

impl LoadedModel for SpinModel {
    fn run(&mut self) -> Result<(), BackendError> {
        let start = Instant::now();
        while start.elapsed() < self.service {
            std::hint::spin_loop();
        }
        Ok(())
    }

    /// Spins for the service time and echoes the input: a model whose
    /// output is known, for testing the path from caller to model and back.
    fn infer(&mut self, input: &TensorData) -> Result<Vec<TensorData>, BackendError> {
        self.run()?;
        Ok(vec![input.clone()])
    }
}

impl Backend for SyntheticBackend {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn load(
        &self,
        spec: &ModelSpec,
        _device: DeviceSpec,
    ) -> Result<Box<dyn LoadedModel>, BackendError> {
        match spec {
            ModelSpec::Synthetic { service } => Ok(Box::new(SpinModel::new(*service))),
            other => Err(BackendError::Load {
                model: other.to_string(),
                reason: "the synthetic backend only runs Synthetic models".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_for_at_least_the_service_time() {
        let spec = ModelSpec::Synthetic {
            service: Duration::from_millis(3),
        };
        let mut m = SyntheticBackend.load(&spec, DeviceSpec::Cpu).unwrap();
        let t = Instant::now();
        m.run().unwrap();
        assert!(t.elapsed() >= Duration::from_millis(3));
        let e = SyntheticBackend
            .load(
                &ModelSpec::Vision(ecomap::model::VisionModel::ResNet18),
                DeviceSpec::Cpu,
            )
            .err()
            .unwrap();
        assert!(e.to_string().contains("only runs Synthetic"));
    }
}
