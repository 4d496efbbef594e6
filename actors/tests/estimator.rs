//! The estimator end to end: a tiny simulated profile, deterministic
//! training, evaluation against the baselines, and clear errors (exit 2)
//! for bad datasets and weights that do not fit the network.
#![cfg(feature = "tch")]

mod common;

use ecomap::catalog::Variant;
use ecomap::device::DeviceModel;
use ecomap::estimate::dataset::{read_profile, write_profile, ProfileRow};
use ecomap::estimate::descriptors::Descriptors;
use ecomap::estimate::profile_plan::ProfilePlan;
use ecomap::model::{ModelSpec, VisionModel};
use ecomap::sim::profile::{capable_units, simulate_configuration};
use ecomap_actors::estimator::network::{NetworkShape, PowerHead};
use ecomap_actors::estimator::train::{evaluate, examples, train, TrainOptions};
use ecomap_actors::estimator::TransformerEstimator;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{assert_exit_2, repo_root as root};

fn descriptors() -> Descriptors {
    Descriptors::load(&root().join("rt-config/model-descriptors.csv")).unwrap()
}

/// 60 configurations of four variants on the virtual Xavier (modelled).
fn tiny_dataset() -> Vec<ProfileRow> {
    let device = DeviceModel::load(&root().join("rt-config/devices/xavier.ron")).unwrap();
    let v = |name: &str, m| Variant {
        name: name.into(),
        model: ModelSpec::Vision(m),
        top1: None,
    };
    let variants = vec![
        v("resnet50", VisionModel::ResNet50),
        v("resnet18", VisionModel::ResNet18),
        v("mobilenet_v2", VisionModel::MobileNetV2),
        v("squeezenet1_1", VisionModel::SqueezeNet1_1),
    ];
    let plan = ProfilePlan {
        variants: variants.iter().map(|v| v.name.clone()).collect(),
        modes: vec!["MAXN".into(), "MODE_15W".into()],
        threads: vec![1],
        unit_kinds: device.spec().units.iter().map(|u| u.kind).collect(),
        capable: capable_units(&device, &variants),
        configs: 60,
        max_tenants: 4,
        seed: 3,
    };
    plan.configurations()
        .iter()
        .flat_map(|c| {
            simulate_configuration(&device, &plan, &variants, c, Duration::from_secs(5)).unwrap()
        })
        .collect()
}

fn options() -> TrainOptions {
    TrainOptions {
        epochs: 8,
        ..TrainOptions::default()
    }
}

#[test]
fn training_is_deterministic_and_evaluates_every_split() {
    let rows = tiny_dataset();
    let d = descriptors();
    let all = examples(&d, &rows, &options()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for run in 0..2 {
        let (est, loss) = train(d.clone(), &all, &options(), "tiny", "xavier", |_, _| {});
        assert!(loss.is_finite());
        // Some training mixes validate, and pick one of the 8 epochs.
        let meta = est.meta();
        assert!(meta.validation_configs > 0 && meta.validation_configs < meta.train_configs);
        assert!(
            meta.best_epoch.is_some_and(|e| (1..=8).contains(&e)),
            "{:?}",
            meta.best_epoch
        );
        let out = dir.path().join(format!("run{run}"));
        est.save(&out).unwrap();
        files.push(std::fs::read(out.join("estimator.safetensors")).unwrap());
    }
    assert_eq!(files[0], files[1], "same seed, same weights, byte for byte");
    let mut est = TransformerEstimator::load(&dir.path().join("run0"), d).unwrap();
    let rows = evaluate(&mut est, &all).unwrap();
    // 3 models × 3 targets per split present (squeezenet is held out).
    for split in ["train", "heldout-arch"] {
        assert_eq!(
            rows.iter().filter(|r| r.split == split).count(),
            9,
            "{split}"
        );
    }
    assert!(rows
        .iter()
        .all(|r| r.mape_pct.is_finite() && r.mape_pct >= 0.0));
}

fn ecomap(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ecomap"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

/// Train a tiny estimator with the CLI (2 epochs, `extra` options) into
/// `dir/est` from `dir/tiny-profile.csv`; the data and weights paths.
fn train_tiny(dir: &Path, extra: &[&str]) -> (String, PathBuf) {
    let data = dir.join("tiny-profile.csv");
    write_profile(&data, &tiny_dataset()).unwrap();
    assert_eq!(read_profile(&data).unwrap().len(), tiny_dataset().len());
    let out = dir.join("est");
    let mut args = vec![
        "train-estimator",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "2",
    ];
    args.extend_from_slice(extra);
    let o = ecomap(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("estimator_eval.csv").is_file());
    (data.to_str().unwrap().to_string(), out)
}

/// `train-estimator --evaluate` of the weights in `out` on `data`.
fn evaluate_weights(data: &str, out: &Path) -> std::process::Output {
    let out = out.to_str().unwrap();
    ecomap(&[
        "train-estimator",
        "--evaluate",
        "--data",
        data,
        "--weights",
        out,
        "--out",
        out,
    ])
}

/// Nothing of a held-out configuration reaches training: with every
/// held-out label tripled the weights and the normalisation constants are
/// the same, byte for byte (the splits are drawn from the variants, not
/// the labels).
#[test]
fn held_out_labels_do_not_reach_training() {
    use ecomap_actors::estimator::train::Split;
    let d = descriptors();
    let all = examples(&d, &tiny_dataset(), &options()).unwrap();
    assert!(
        all.iter().any(|e| e.split != Split::Train),
        "something held out"
    );
    let mut tripled = all.clone();
    for e in tripled.iter_mut().filter(|e| e.split != Split::Train) {
        e.p50_ms.iter_mut().for_each(|v| *v *= 3.0);
        e.p95_ms.iter_mut().for_each(|v| *v *= 3.0);
        e.power_w *= 3.0;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut saved = Vec::new();
    for (name, set) in [("a", &all), ("b", &tripled)] {
        let (est, _) = train(d.clone(), set, &options(), "tiny", "xavier", |_, _| {});
        let m = est.meta();
        let norms = (
            m.p50_mean,
            m.p50_std,
            m.power_mean,
            m.power_std,
            m.best_epoch,
        );
        let out = dir.path().join(name);
        est.save(&out).unwrap();
        saved.push((
            std::fs::read(out.join("estimator.safetensors")).unwrap(),
            format!("{norms:?}"),
        ));
    }
    assert_eq!(saved[0].1, saved[1].1, "normalisation and epoch kept");
    assert!(saved[0].0 == saved[1].0, "the same weights, byte for byte");
}

/// Retraining in place, with the descriptor table the last training left
/// beside its weights: the table is not copied onto itself (which
/// truncates it); an empty table is refused, exit 2.
#[test]
fn retraining_in_place_keeps_the_descriptor_table() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = train_tiny(dir.path(), &[]);
    let table = out.join("descriptors.csv");
    let before = std::fs::read(&table).unwrap();
    assert!(!before.is_empty());
    let o = ecomap(&[
        "train-estimator",
        "--data",
        &data,
        "--descriptors",
        table.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&table).unwrap(),
        before,
        "the table is intact"
    );
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let o = ecomap(&[
        "train-estimator",
        "--data",
        &data,
        "--descriptors",
        empty.to_str().unwrap(),
        "--out",
        dir.path().join("e").to_str().unwrap(),
    ]);
    common::assert_exit_2(&o, &["empty.csv", "no rows"]);
}

#[test]
fn weights_that_do_not_match_the_network_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = train_tiny(dir.path(), &[]);
    // The metadata now describes a wider network than the weights hold.
    let meta = std::fs::read_to_string(out.join("estimator.ron")).unwrap();
    std::fs::write(
        out.join("estimator.ron"),
        meta.replace("width: 32", "width: 48"),
    )
    .unwrap();
    assert_exit_2(
        &evaluate_weights(&data, &out),
        &["do not match the network", "retrain"],
    );
}

#[test]
fn an_additive_head_whose_metadata_disagrees_with_its_weights_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = train_tiny(dir.path(), &["--power-head", "additive"]);
    // Written together, they load.
    let o = evaluate_weights(&data, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The metadata of another training: same network, another power scale.
    let meta = std::fs::read_to_string(out.join("estimator.ron")).unwrap();
    let line = meta
        .lines()
        .find(|l| l.trim_start().starts_with("power_mean:"))
        .expect("estimator.ron names power_mean")
        .to_string();
    std::fs::write(
        out.join("estimator.ron"),
        meta.replace(&line, "    power_mean: 9.5,"),
    )
    .unwrap();
    assert_exit_2(
        &evaluate_weights(&data, &out),
        &["power_norm", "power_mean 9.5"],
    );
}

#[test]
fn train_estimator_flags_that_cannot_mean_anything_exit_2_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (data, weights) = train_tiny(dir.path(), &[]);
    let w = weights.to_str().unwrap();
    let fresh = dir.path().join("never-made");
    let f = fresh.to_str().unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec!["train-estimator", "--data", &data, "--out", f];
        args.extend_from_slice(extra);
        ecomap(&args)
    };
    assert_exit_2(
        &train(&["--heldout-arch", "vgg16"]),
        &[
            "--heldout-arch vgg16",
            "nothing would be held out",
            "squeezenet1_1",
        ],
    );
    assert_exit_2(&train(&["--epochs", "0"]), &["--epochs"]);
    assert_exit_2(&train(&["--weight-decay=-1"]), &["--weight-decay"]);
    assert_exit_2(&train(&["--weights", w]), &["--evaluate"]);
    // Evaluating: the split is the weights' own, and missing weights
    // leave no empty output folder behind.
    assert_exit_2(
        &train(&["--evaluate", "--weights", w, "--heldout-arch", "resnet18"]),
        &["trained holding out 'squeezenet1_1'"],
    );
    // Training-only settings would be ignored by an evaluation.
    for flag in [
        &["--seed", "7"][..],
        &["--epochs", "5"],
        &["--weight-decay", "0.2"],
        &["--validation", "0"],
        &["--power-head", "additive"],
    ] {
        let mut args = vec!["--evaluate", "--weights", w];
        args.extend_from_slice(flag);
        assert_exit_2(
            &train(&args),
            &[flag[0], "cannot be used with", "--evaluate"],
        );
    }
    assert_exit_2(
        &train(&[
            "--evaluate",
            "--weights",
            dir.path().join("nope").to_str().unwrap(),
        ]),
        &["nope"],
    );
    assert!(!fresh.exists(), "--out was made for a failed command");
}

#[test]
fn a_bad_dataset_row_exits_2_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.csv");
    let mut rows = tiny_dataset();
    rows.truncate(5);
    write_profile(&data, &rows).unwrap();
    let text = std::fs::read_to_string(&data).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    // Line 4: a service time that is not a number.
    let fields: Vec<&str> = lines[3].split(',').collect();
    let mut broken: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
    broken[15] = "fast".into();
    lines[3] = broken.join(",");
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let o = ecomap(&[
        "train-estimator",
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_exit_2(&o, &["line 4", "column 16"]);
}

#[test]
fn evaluating_on_a_dataset_with_nothing_to_fit_the_baselines_on_exits_2() {
    // Only configurations of the committed weights' held-out architecture
    // (SqueezeNet 1.1): the lookup and linear baselines have no training
    // rows.
    let root = root();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root.join("rt-config/host-profile.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    // Configurations whose every row is squeezenet1_1.
    let mut by_config: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for l in lines {
        by_config
            .entry(l.split(',').next().unwrap())
            .or_default()
            .push(l);
    }
    let kept: Vec<&str> = by_config
        .values()
        .filter(|rows| rows.iter().all(|r| r.contains(",squeezenet1_1,")))
        .flatten()
        .copied()
        .collect();
    assert!(!kept.is_empty());
    let data = dir.path().join("only-heldout.csv");
    std::fs::write(&data, format!("{header}\n{}\n", kept.join("\n"))).unwrap();
    let o = ecomap(&[
        "train-estimator",
        "--evaluate",
        "--data",
        data.to_str().unwrap(),
        "--weights",
        root.join("rt-config/host-estimator").to_str().unwrap(),
        "--out",
        dir.path().join("eval").to_str().unwrap(),
    ]);
    assert_exit_2(&o, &["no configuration falls in the training split"]);
}

/// Predictions of `est` by both forward passes agree to float rounding.
fn assert_paths_agree(est: &mut TransformerEstimator, queries: &[ecomap::estimate::MappingQuery]) {
    use ecomap::estimate::MappingEstimator as _;
    let slow = est.predict_libtorch(queries).unwrap();
    let fast = est.predict(queries).unwrap();
    assert_eq!(slow.len(), fast.len());
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * a.abs().max(b.abs()) + 1e-9;
    for (i, (s, f)) in slow.iter().zip(&fast).enumerate() {
        assert!(
            close(s.power_w, f.power_w),
            "query {i}: power {} vs {}",
            s.power_w,
            f.power_w
        );
        assert_eq!(s.service_p50_s.len(), f.service_p50_s.len());
        for j in 0..s.service_p50_s.len() {
            assert!(
                close(s.service_p50_s[j], f.service_p50_s[j])
                    && close(s.service_p95_s[j], f.service_p95_s[j]),
                "query {i} tenant {j}: {s:?} vs {f:?}"
            );
        }
    }
}

#[test]
fn the_query_path_computes_what_libtorch_computes() {
    let d = descriptors();
    let rows = tiny_dataset();
    let all = examples(&d, &rows, &options()).unwrap();
    // One batch of 1- to 4-tenant candidates, so libtorch pads and masks.
    let queries: Vec<_> = all.iter().map(|e| e.query.clone()).collect();
    assert!(queries.iter().any(|q| q.tenants.len() == 1));
    assert!(queries.iter().any(|q| q.tenants.len() == 4));
    // The committed Xavier weights, as ecomap loads them at start…
    let mut est = TransformerEstimator::load(
        &root().join("rt-config/devices/xavier-estimator"),
        d.clone(),
    )
    .unwrap();
    assert_paths_agree(&mut est, &queries);
    // The committed host estimator (the additive power head)…
    let mut est =
        TransformerEstimator::load(&root().join("rt-config/host-estimator"), d.clone()).unwrap();
    assert_eq!(est.meta().shape.power_head, PowerHead::Additive);
    assert_paths_agree(&mut est, &queries);
    // …and a freshly trained network (the query path copies the weights
    // after training changed them).
    let (mut est, _) = train(d.clone(), &all, &options(), "tiny", "xavier", |_, _| {});
    assert_paths_agree(&mut est, &queries);
    // The additive power head, both paths, and through a save and load.
    let additive = TrainOptions {
        shape: NetworkShape {
            power_head: PowerHead::Additive,
            ..NetworkShape::default()
        },
        ..options()
    };
    let (mut est, _) = train(d.clone(), &all, &additive, "tiny", "xavier", |_, _| {});
    assert_paths_agree(&mut est, &queries);
    let dir = tempfile::tempdir().unwrap();
    est.save(dir.path()).unwrap();
    let mut loaded = TransformerEstimator::load(dir.path(), d).unwrap();
    assert_eq!(loaded.meta().shape.power_head, PowerHead::Additive);
    assert_paths_agree(&mut loaded, &queries);
    use ecomap::estimate::MappingEstimator as _;
    let (a, b) = (
        est.predict(&queries).unwrap(),
        loaded.predict(&queries).unwrap(),
    );
    assert_eq!(a, b);
}

/// `ecomap run` with the host planner for a few seconds: the power
/// governor prices its first plan at the reading as read (`Absolute`), or,
/// with `Relative`, at exactly the typical intensity (the trailing mean
/// starts at the first reading) — the same pricer the simulator uses; with
/// a mean accuracy budget, the first plan is searched at the policy's own
/// weight and says so.
#[test]
fn the_runtime_governor_prices_its_plans_as_the_policy_says() {
    let root = root();
    let trace = root.join("../shared/data/carbon/electricitymaps_2023/US-CAL-CISO_2023_hourly.csv");
    // The trace's first hour, as the carbon monitor reads it.
    let first: f64 = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .nth(1)
        // The direct intensity, the column the monitor reads.
        .and_then(|l| l.split(',').nth(4).map(|x| x.trim().parse().unwrap()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (price, budget, expected) in [
        ("Absolute", "None", first),
        (
            "Relative(window_hours: 168.0, typical_g_per_kwh: 400.0)",
            "None",
            400.0,
        ),
        ("Absolute", "Some((points: 1.0))", first),
        // Nothing may be lost, and the weight climbs at once: the next
        // reading searches at the ceiling.
        ("Absolute", "Some((points: 0.0, gain_hours: 0.01))", first),
    ] {
        let policy = dir.path().join("p.ron");
        std::fs::write(
            &policy,
            format!(
                r#"(name: "priced", queue_order: EarliestDeadline,
                    carbon: Trace(path: "{}", speedup: 3600.0, start_offset: "0s"),
                    plan: Some(Mapping(accuracy_point_g_per_h: 1.0, carbon_price: {price},
                        mean_accuracy_lost: {budget},
                        estimator: Some("{}"), device: Some("{}"))))"#,
                trace.display(),
                root.join("rt-config/host-estimator").display(),
                root.join("rt-config/devices/host.ron").display(),
            ),
        )
        .unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_ecomap"))
            .current_dir(&root)
            .args([
                "run",
                "--policy",
                policy.to_str().unwrap(),
                "--workload",
                "workloads/robot-mixed.ron",
                "--duration",
                "3s",
                "--out",
                dir.path().join("out").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{price}: {log}");
        let line = format!("plan priced at {expected:.1} gCO2/kWh");
        assert!(log.contains(&line), "{price}: no '{line}' in\n{log}");
        let weighed = "; accuracy weight ×1.00 (mean lost so far —)";
        assert_eq!(log.contains(weighed), budget != "None", "{budget}: {log}");
        if budget.contains("0.01") {
            // Every plan the host can run loses some accuracy below its
            // heaviest variants, so an hour later the level is at its ceiling.
            assert!(log.contains("accuracy weight ×4.00"), "{log}");
        }
    }
}
