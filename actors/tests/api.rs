//! The embeddable API: a caller's input in, the model's outputs (or the
//! outcome that prevented them) out, through the real threaded runtime.

use ecomap::config::parse_ron;
use ecomap::config::policy::Policy;
use ecomap::config::rt::RtConfig;
use ecomap::config::workload::Workload;
use ecomap::request::Outcome;
#[cfg(feature = "tch")]
use ecomap::tensor::DataType;
use ecomap::tensor::TensorData;
use ecomap_actors::runtime::Runtime;
use ecomap_actors::tenant_queue::SubmitError;
use std::path::Path;
use std::time::Duration;

mod common;

// One runtime at a time: they share the machine's two cores.
use common::serial;

/// A runtime of `workload` on two unpinned workers under plain EDF.
fn start(workload: &str) -> Runtime {
    start_with(
        workload,
        r#"(workers: [(name: "w0"), (name: "w1")])"#,
        &Policy::edf("edf"),
    )
}

/// A runtime of the workload file `file` (one whose catalog path is
/// relative to it) on two unpinned workers under plain EDF.
#[cfg(feature = "tch")]
fn start_file(file: &Path) -> Runtime {
    let w = Workload::load(file)
        .unwrap_or_else(|e| panic!("{e} (the models come from scripts/setup.sh)"));
    let rt: RtConfig = parse_ron(
        r#"(workers: [(name: "w0"), (name: "w1")])"#,
        Path::new("rt.ron"),
        "rt",
    )
    .unwrap();
    Runtime::start(&w, &rt, &Policy::edf("edf")).unwrap()
}

fn start_with(workload: &str, rt: &str, policy: &Policy) -> Runtime {
    let w: Workload = parse_ron(workload, Path::new("w.ron"), "workload").unwrap();
    w.validate(Path::new("w.ron")).unwrap();
    let rt: RtConfig = parse_ron(rt, Path::new("rt.ron"), "rt").unwrap();
    Runtime::start(&w, &rt, policy).unwrap()
}

/// Wait until every request of `q` has been taken by a worker (polled, not
/// slept for: a loaded machine may take a while to run them).
fn wait_until_taken(q: &ecomap_actors::tenant_queue::TenantQueue) {
    let since = std::time::Instant::now();
    while q.waiting() > 0 {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the workers never took the requests"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

const ECHO: &str = r#"(tenants: [
    (name: "echo", model: Synthetic(service: "2ms"), arrival: Periodic(rate_hz: 1.0),
     deadline: "200ms", capacity: 8),
])"#;

#[test]
fn a_caller_gets_its_own_answer_blocking_polled_or_awaited() {
    let _s = serial();
    let r = start(ECHO);
    let q = r.queue(0).clone();
    let input = TensorData::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    // Blocking.
    let a = q.infer(input.clone(), None).unwrap();
    assert_eq!(a.outcome, Outcome::OnTime);
    assert_eq!(a.outputs, vec![input.clone()], "the synthetic model echoes");
    let t = a.timings.unwrap();
    assert!(t.service >= Duration::from_millis(2) && t.end_to_end >= t.service);
    assert_eq!(a.variant, Some(0));
    // Non-blocking: many in flight at once, each answered with its own input.
    let tickets: Vec<_> = (0..6)
        .map(|i| {
            let x = TensorData::from_f32(vec![1], &[i as f32]).unwrap();
            q.submit_input(x, Some(Duration::from_millis(150))).unwrap()
        })
        .collect();
    for (i, mut t) in tickets.into_iter().enumerate() {
        let deadline = t.request().deadline;
        assert_eq!(
            deadline.saturating_since(t.request().release),
            Duration::from_millis(150),
            "the tighter deadline"
        );
        // An answer is given once: taking it spends the ticket.
        let a = loop {
            match t.try_answer() {
                Ok(a) => break a,
                Err(back) => t = back,
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(a.outputs[0].to_f32().unwrap(), vec![i as f32]);
    }
    // Awaited, from async code.
    let x = TensorData::from_f32(vec![1], &[7.0]).unwrap();
    let ticket = q.submit_input(x, None).unwrap();
    // The API needs no particular async runtime: any executor polls it.
    let a = futures_executor::block_on(ticket);
    assert_eq!(a.outputs[0].to_f32().unwrap(), vec![7.0]);
    drop(q);
    let report = r.shutdown();
    assert!(report.is_conserved());
    assert_eq!(report.tenants[0].counts.on_time, 8);
}

#[test]
fn requests_that_cannot_be_served_resolve_to_their_outcome_and_are_counted() {
    let _s = serial();
    // One slow tenant, capacity 2, on one worker's worth of work.
    let r = start(
        r#"(tenants: [
            (name: "slow", model: Synthetic(service: "200ms"), arrival: Periodic(rate_hz: 1.0),
             deadline: "2s", capacity: 2),
        ])"#,
    );
    let q = r.queue(0).clone();
    let x = || TensorData::from_f32(vec![1], &[0.0]).unwrap();
    // Two take both workers; the next two queue with a 5 ms deadline and
    // expire (the workers are 200 ms from free); one more is beyond the
    // capacity of 2 waiting.
    let busy: Vec<_> = (0..2).map(|_| q.submit_input(x(), None).unwrap()).collect();
    wait_until_taken(&q);
    let doomed: Vec<_> = (0..2)
        .map(|_| q.submit_input(x(), Some(Duration::from_millis(5))).unwrap())
        .collect();
    let full = q.submit_input(x(), None);
    assert!(
        matches!(full, Err(SubmitError::QueueFull { .. })),
        "{full:?}"
    );
    for t in doomed {
        let a = t.wait();
        assert_eq!(a.outcome, Outcome::Expired, "{a:?}");
        assert!(a.outputs.is_empty() && a.timings.is_none());
    }
    for t in busy {
        assert!(t.wait().is_served());
    }
    drop(q);
    let report = r.shutdown();
    let c = &report.tenants[0].counts;
    assert!(report.is_conserved(), "{c:?}");
    assert_eq!((c.on_time, c.expired, c.rejected), (2, 2, 1));
}

#[test]
fn a_request_predicted_to_finish_late_is_shed_and_its_caller_told() {
    let _s = serial();
    // One worker, 300 ms passes, 500 ms deadlines, feasibility shedding on.
    let r = start_with(
        r#"(tenants: [
            (name: "slow", model: Synthetic(service: "300ms"), arrival: Periodic(rate_hz: 1.0),
             deadline: "500ms", capacity: 4),
        ])"#,
        r#"(workers: [(name: "w0")])"#,
        &Policy {
            shedding: true,
            ..Policy::edf("edf-shed")
        },
    );
    let q = r.queue(0).clone();
    let x = || TensorData::from_f32(vec![1], &[0.0]).unwrap();
    let first = q.submit_input(x(), None).unwrap();
    wait_until_taken(&q);
    // The worker is busy for about 300 ms more: this one could start then
    // and finish 300 ms later, past its 500 ms deadline — shed when the
    // worker is free, before its deadline has passed (so not `expired`).
    let second = q.submit_input(x(), None).unwrap();
    let a = second.wait();
    assert_eq!(a.outcome, Outcome::Shed, "{a:?}");
    assert!(a.outputs.is_empty() && a.timings.is_none());
    assert!(first.wait().is_served());
    drop(q);
    let report = r.shutdown();
    let c = &report.tenants[0].counts;
    assert!(report.is_conserved(), "{c:?}");
    assert_eq!((c.shed, c.submitted), (1, 2), "{c:?}");
}

#[cfg(feature = "tch")]
#[test]
fn an_input_the_model_does_not_take_is_refused_and_counted() {
    let _s = serial();
    let r = start(
        r#"(tenants: [
            (name: "cls", model: Vision(SqueezeNet1_1), arrival: Periodic(rate_hz: 1.0),
             deadline: "2s", capacity: 4),
        ])"#,
    );
    let q = r.queue(0).clone();
    assert_eq!(q.input_spec().unwrap().shape, vec![1, 3, -1, -1]);
    let flat = TensorData::from_f32(vec![12], &[0.0; 12]).unwrap();
    let e = q.submit_input(flat, None).unwrap_err();
    assert!(e.to_string().contains("takes shape [1, 3, -1, -1]"), "{e}");
    let ints = TensorData::new(DataType::Uint8, vec![1, 3, 8, 8], vec![0u8; 192].into()).unwrap();
    assert!(matches!(
        q.submit_input(ints, None),
        Err(SubmitError::BadInput { .. })
    ));
    assert!(matches!(
        q.submit_input(
            TensorData::from_f32(vec![1, 3, 32, 32], &[0.0; 3072]).unwrap(),
            Some(Duration::ZERO)
        ),
        Err(SubmitError::BadDeadline { .. })
    ));
    drop(q);
    let report = r.shutdown();
    assert_eq!(report.tenants[0].counts.rejected, 3);
    assert!(report.is_conserved());
}

/// A caller that keeps its handle, and keeps submitting, while the runtime
/// shuts down: the shutdown ends (it used to wait for the handle to be
/// dropped, for ever), every request the caller had admitted gets one
/// counted outcome, and later submissions are refused as closed.
#[test]
fn shutdown_ends_while_a_caller_still_holds_and_uses_a_queue() {
    let _s = serial();
    // A long deadline: the test is about ending, not punctuality.
    let r = start(&ECHO.replace("deadline: \"200ms\"", "deadline: \"100s\""));
    let q = r.queue(0).clone();
    let x = TensorData::from_f32(vec![1], &[1.0]).unwrap();
    assert!(q.infer(x.clone(), None).unwrap().is_served());
    let caller = std::thread::spawn(move || {
        let (mut admitted, mut tickets) = (1u64, Vec::new());
        loop {
            match q.submit_input(x.clone(), None) {
                Ok(t) => {
                    admitted += 1;
                    tickets.push(t);
                }
                Err(SubmitError::Closed { .. }) => break,
                Err(SubmitError::QueueFull { .. }) => {
                    admitted += 1; // refused, and counted so
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("unexpected refusal: {e}"),
            }
        }
        // Still closed, and it still holds its handle.
        assert!(matches!(
            q.submit_input(x, None),
            Err(SubmitError::Closed { .. })
        ));
        (admitted, tickets, q)
    });
    std::thread::sleep(Duration::from_millis(50));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(r.shutdown());
    });
    let report = done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the shutdown ended with a caller's handle still alive");
    let (admitted, tickets, _still_held) = caller.join().unwrap();
    assert!(report.is_conserved(), "{:?}", report.tenants[0].counts);
    assert_eq!(report.tenants[0].counts.submitted, admitted);
    for t in tickets {
        let a = t
            .try_answer()
            .expect("every admitted request answered by the end");
        assert!(a.is_served(), "{a:?}");
    }
}

/// A family whose first variant is a Synthetic stand-in and whose second
/// is a real model: the tenant takes and gives what the real model does,
/// and a request the stand-in serves fails, counted, instead of being
/// answered with its own input echoed. (`ecomap serve` refuses such a
/// family; the library serves it this way.)
#[cfg(feature = "tch")]
#[test]
fn a_synthetic_stand_in_does_not_answer_for_a_real_family() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("models.ron"),
        r#"(families: [(name: "mixed", variants: [
            (name: "spin", model: Synthetic(service: "1ms")),
            (name: "real", model: Vision(SqueezeNet1_1))])])"#,
    )
    .unwrap();
    let file = dir.path().join("w.ron");
    std::fs::write(
        &file,
        r#"(catalog: "models.ron", tenants: [
            (name: "cls", model: Family("mixed"), arrival: Periodic(rate_hz: 1.0),
             deadline: "5s", capacity: 4),
        ])"#,
    )
    .unwrap();
    let r = start_file(&file);
    let (inputs, outputs) = r.model_io(0);
    assert_eq!(
        inputs[0].shape,
        vec![1, 3, -1, -1],
        "the real model's input"
    );
    assert_eq!(
        (outputs.len(), outputs[0].datatype, outputs[0].shape.clone()),
        (1, DataType::Fp32, vec![1, 1000]),
        "the real model's outputs"
    );
    // Plain EDF keeps the family's first variant: the stand-in serves.
    let frame = TensorData::from_f32(vec![1, 3, 32, 32], &[0.5; 3 * 32 * 32]).unwrap();
    let a = r.queue(0).infer(frame, None).unwrap();
    assert_eq!(a.outcome, Outcome::Failed, "{a:?}");
    assert!(a.outputs.is_empty(), "{a:?}");
    let report = r.shutdown();
    assert!(report.is_conserved());
    assert_eq!(
        (
            report.tenants[0].counts.failed,
            report.tenants[0].counts.submitted
        ),
        (1, 1)
    );
}

/// The runtime returns the model's outputs for the caller's input: the
/// same numbers a direct libtorch call on the same input gives.
#[cfg(feature = "tch")]
#[test]
fn the_answer_is_the_models_output_for_the_callers_input() {
    use ecomap::model::VisionModel;
    use ecomap_actors::backend::torch::VisionNet;
    use tch::{Device, Kind, Tensor};
    let _s = serial();
    tch::set_num_threads(1);
    let r = start(
        r#"(tenants: [
            (name: "cls", model: Vision(SqueezeNet1_1), arrival: Periodic(rate_hz: 1.0),
             deadline: "5s", capacity: 4),
        ])"#,
    );
    let image = Tensor::rand([1, 3, 224, 224], (Kind::Float, Device::Cpu));
    let mut bytes = vec![0u8; 3 * 224 * 224 * 4];
    image.copy_data_u8(&mut bytes, 3 * 224 * 224);
    let input = TensorData::new(DataType::Fp32, vec![1, 3, 224, 224], bytes.into()).unwrap();
    let answer = r.queue(0).infer(input, None).unwrap();
    assert!(answer.is_served(), "{answer:?}");
    let got = &answer.outputs[0];
    assert_eq!(got.shape, vec![1, 1000]);
    let direct = VisionNet::new(VisionModel::SqueezeNet1_1, Device::Cpu).forward_on(&image);
    let want: Vec<f32> = Vec::try_from(direct.flatten(0, -1)).unwrap();
    let got = got.to_f32().unwrap();
    let worst = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs() / a.abs().max(1e-3))
        .fold(0.0_f32, f32::max);
    assert!(worst < 1e-4, "relative difference {worst}");
    // A frame of another size is resized to the model's input.
    let small = TensorData::from_f32(vec![1, 3, 96, 128], &vec![0.5; 3 * 96 * 128]).unwrap();
    let answer = r.queue(0).infer(small, None).unwrap();
    assert_eq!(answer.outputs[0].shape, vec![1, 1000]);
    let report = r.shutdown();
    assert!(report.is_conserved());
    assert_eq!(report.tenants[0].counts.on_time, 2);
}

/// The perception stack's detector (TorchScript export of torchvision's
/// Faster R-CNN and SSDlite, `scripts/export_models.py`, run by the set-up)
/// takes a camera frame and gives boxes, labels and scores.
#[cfg(feature = "tch")]
#[test]
fn the_detector_returns_boxes_labels_and_scores_for_a_frame() {
    let _s = serial();
    let catalog = common::repo_root().join("policies/perception-models.ron");
    let text = format!(
        r#"(catalog: "{}", tenants: [
            (name: "detector", model: Family("coco-detector"), arrival: Periodic(rate_hz: 1.0),
             deadline: "5s", capacity: 4),
            (name: "segmenter", model: Family("voc-segmenter"), arrival: Periodic(rate_hz: 1.0),
             deadline: "5s", capacity: 4),
        ])"#,
        catalog.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("perception.ron");
    std::fs::write(&file, text).unwrap();
    let r = start_file(&file);
    let (inputs, outputs) = r.model_io(0);
    assert_eq!(inputs[0].shape, vec![1, 3, -1, -1]);
    let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["boxes", "labels", "scores"]);
    let frame = TensorData::from_f32(vec![1, 3, 240, 320], &vec![0.4; 3 * 240 * 320]).unwrap();
    let a = r.queue(0).infer(frame.clone(), None).unwrap();
    assert!(a.is_served(), "{a:?}");
    let [boxes, labels, scores] = &a.outputs[..] else {
        panic!("three outputs, got {}", a.outputs.len())
    };
    let n = boxes.shape[0];
    assert_eq!(boxes.shape, vec![n, 4]);
    assert_eq!(
        (labels.dtype, labels.shape.clone()),
        (DataType::Int64, vec![n])
    );
    assert_eq!(
        (scores.dtype, scores.shape.clone()),
        (DataType::Fp32, vec![n])
    );
    let seg = r.queue(1).infer(frame, None).unwrap();
    assert_eq!(
        seg.outputs[0].shape,
        vec![1, 21, 240, 320],
        "per-pixel logits"
    );
    let report = r.shutdown();
    assert!(report.is_conserved());
}
