//! Real inference through libtorch: vision builtins, TorchScript files, and
//! the full runtime serving a real model.
#![cfg(feature = "tch")]

mod common;

use ecomap::config::rt::DeviceSpec;
use ecomap::model::{ModelSpec, VisionModel};
use ecomap_actors::backend::load_model;
use ecomap_actors::backend::torch::VisionNet;
use std::time::Duration;
use tch::{nn, nn::Module, CModule, Device, Kind, Tensor};

#[test]
fn vision_builtins_run_real_forward_passes() {
    tch::set_num_threads(1);
    for m in [
        VisionModel::ResNet50,
        VisionModel::ResNet18,
        VisionModel::MobileNetV2,
    ] {
        let net = VisionNet::new(m, Device::Cpu);
        let out = net.forward().unwrap();
        assert_eq!(out.size(), vec![1, 1000], "{m:?}");
        // Random weights, real arithmetic: the logits are finite and not all equal.
        let max = out.max().double_value(&[]);
        let min = out.min().double_value(&[]);
        assert!(max.is_finite() && min.is_finite() && max > min, "{m:?}");
        let mut loaded = load_model(&ModelSpec::Vision(m), DeviceSpec::Cpu).unwrap();
        loaded.run().unwrap();
        assert!(loaded.parameter_bytes() > 1_000_000, "{m:?}");
    }
}

/// Build a small conv net, trace it into TorchScript and save it: the test's
/// own `.pt` file.
fn save_tiny_torchscript(path: &std::path::Path) {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let p = vs.root();
    let conv = nn::conv2d(&p / "conv", 3, 8, 3, Default::default());
    let fc = nn::linear(&p / "fc", 8, 10, Default::default());
    // Constants in a trace must not require grad.
    vs.freeze();
    let example = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    let mut f = |xs: &[Tensor]| {
        let y = conv
            .forward(&xs[0])
            .relu()
            .adaptive_avg_pool2d([1, 1])
            .flatten(1, -1);
        vec![fc.forward(&y)]
    };
    let module = CModule::create_by_tracing("Tiny", "forward", &[example], &mut f).unwrap();
    module.save(path).unwrap();
}

#[test]
fn torchscript_modules_load_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.pt");
    save_tiny_torchscript(&path);
    let spec = ModelSpec::TorchScript {
        path: path.clone(),
        input_shape: vec![1, 3, 32, 32],
        example_shape: None,
        outputs: None,
    };
    spec.validate().unwrap();
    let mut m = load_model(&spec, DeviceSpec::Cpu).unwrap();
    for _ in 0..3 {
        m.run().unwrap();
    }
    // A wrong input shape is caught at load time by the trial pass.
    let wrong = ModelSpec::TorchScript {
        path,
        input_shape: vec![1, 5, 32, 32],
        example_shape: None,
        outputs: None,
    };
    let e = load_model(&wrong, DeviceSpec::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("trial forward pass with input [1, 5, 32, 32] failed"),
        "{e}"
    );
    // A file that is not TorchScript gets a clear load error.
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"definitely not a zip archive").unwrap();
    let e = load_model(
        &ModelSpec::TorchScript {
            path: junk,
            input_shape: vec![1, 3, 32, 32],
            example_shape: None,
            outputs: None,
        },
        DeviceSpec::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("not a loadable TorchScript module"), "{e}");
}

#[test]
fn missing_cuda_device_is_a_load_error_not_a_crash() {
    if tch::Cuda::device_count() > 3 {
        return;
    }
    let e = load_model(
        &ModelSpec::Vision(VisionModel::MobileNetV2),
        DeviceSpec::Cuda(3),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("CUDA device 3 is not available"), "{e}");
}

#[test]
fn the_runtime_serves_a_real_model_end_to_end() {
    use ecomap::config::{parse_ron, policy::Policy, rt::RtConfig, workload::Workload};
    use std::path::Path;
    let w: Workload = parse_ron(
        r#"(tenants: [
            (name: "cam", model: Vision(MobileNetV2), arrival: Periodic(rate_hz: 10.0),
             deadline: "500ms", capacity: 4),
        ])"#,
        Path::new("w.ron"),
        "workload",
    )
    .unwrap();
    let rt: RtConfig = parse_ron(
        &format!(
            r#"(load_generator: (sched: Fifo(priority: 40)),
                workers: [(name: "cpu0", core: Some({}), sched: Fifo(priority: 40))])"#,
            common::core(0)
        ),
        Path::new("rt.ron"),
        "rt",
    )
    .unwrap();
    let policy = Policy::edf("edf");
    let mut runtime = ecomap_actors::runtime::Runtime::start(&w, &rt, &policy).unwrap();
    runtime.run_load(Duration::from_secs(2), 1.0).unwrap();
    let report = runtime.shutdown();
    let c = report.tenants[0].counts;
    assert!(report.is_conserved(), "{}", report.render());
    assert!(c.submitted >= 15, "{c:?}");
    assert_eq!(c.failed, 0);
    // A MobileNetV2 forward pass on a CPU core takes milliseconds, not microseconds.
    let p50 = report.tenants[0].service.quantile_us(0.5).unwrap();
    assert!(
        p50 > 1_000,
        "service p50 {p50} µs is too fast to be a real forward pass"
    );
    assert_eq!(report.workers[0].served, c.on_time + c.late);
}

#[test]
fn a_model_that_fails_to_load_stops_start_up_with_its_names() {
    use ecomap::config::{parse_ron, policy::Policy, rt::RtConfig, workload::Workload};
    use std::path::Path;
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"nope").unwrap();
    let w: Workload = parse_ron(
        &format!(
            r#"(tenants: [
                (name: "seg", model: TorchScript(path: "{}", input_shape: [1, 3, 8, 8]),
                 arrival: Periodic(rate_hz: 10.0), deadline: "50ms", capacity: 4),
            ])"#,
            junk.display()
        ),
        Path::new("w.ron"),
        "workload",
    )
    .unwrap();
    let rt: RtConfig =
        parse_ron(r#"(workers: [(name: "cpu0")])"#, Path::new("rt.ron"), "rt").unwrap();
    let policy = Policy::edf("edf");
    let e = ecomap_actors::runtime::Runtime::start(&w, &rt, &policy)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("worker 'cpu0'") && e.contains("tenant 'seg'"),
        "{e}"
    );
}

/// libtorch's generator is process-wide; workers load their models at the
/// same time. Each instance must still get its own model's weights and
/// input, whatever else is loading beside it.
#[test]
fn concurrent_loads_give_each_instance_its_own_seeded_weights() {
    tch::set_num_threads(1);
    let reference = |m: VisionModel| VisionNet::new(m, Device::Cpu).forward().unwrap();
    let (squeeze, mobile) = (
        reference(VisionModel::SqueezeNet1_1),
        reference(VisionModel::MobileNetV2),
    );
    let handles: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                tch::set_num_threads(1);
                let m = if i % 2 == 0 {
                    VisionModel::SqueezeNet1_1
                } else {
                    VisionModel::MobileNetV2
                };
                (m, VisionNet::new(m, Device::Cpu).forward().unwrap())
            })
        })
        .collect();
    for h in handles {
        let (m, out) = h.join().unwrap();
        let want = if m == VisionModel::SqueezeNet1_1 {
            &squeeze
        } else {
            &mobile
        };
        assert!(
            out.equal(want),
            "{m:?} loaded beside others computes other numbers"
        );
    }
}
