//! The `ecomap` binary: bad input gets a clear message and exit code 2,
//! never a panic; a good run prints the table and writes `.hgrm` files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WORKLOAD: &str = r#"(
    tenants: [
        (name: "cam", model: Synthetic(service: "1ms"),
         arrival: Periodic(rate_hz: 50.0, jitter: "1ms"), deadline: "20ms", capacity: 4),
    ],
)"#;
const POLICY: &str = r#"(name: "edf", queue_order: EarliestDeadline)"#;

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let f = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        f.write("w.ron", WORKLOAD);
        f.write("rt.ron", &common::one_worker_rt(None));
        f.write("p.ron", POLICY);
        f
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn run(&self, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec![
            "run".into(),
            "--rt-config".into(),
            self.path("rt.ron").display().to_string(),
            "--policy".into(),
            self.path("p.ron").display().to_string(),
            "--workload".into(),
            self.path("w.ron").display().to_string(),
            "--out".into(),
            self.path("out").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Command::new(env!("CARGO_BIN_EXE_ecomap"))
            .args(&args)
            .output()
            .unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

use common::assert_exit_2 as assert_bad_input;

#[test]
fn a_short_run_prints_the_table_and_writes_hgrm_files() {
    let f = Files::new();
    let o = f.run(&["--duration", "1s"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("submitted") && out.contains("cam"), "{out}");
    assert!(out.contains("p99.9"));
    let hgrm = std::fs::read_to_string(f.path("out").join("cam.hgrm")).unwrap();
    assert!(hgrm.contains("Percentile") && hgrm.contains("Total count"));
    assert!(Path::new(&f.path("out").join("cam.service.hgrm")).exists());
}

#[test]
fn a_pass_log_has_a_row_per_pass_and_replays_into_the_simulator() {
    let f = Files::new();
    let log = f.path("passes.csv");
    let summary = f.path("summary.csv");
    let o = f.run(&[
        "--duration",
        "1s",
        "--pass-log",
        log.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = std::fs::read_to_string(&log).unwrap();
    let mut lines = rows.lines();
    assert_eq!(
        lines.next(),
        Some("tenant,request,worker,variant,release_us,started_us,finished_us,service_us,outcome")
    );
    let passes: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // One row per served request (the synthetic tenant never fails).
    let totals = std::fs::read_to_string(&summary).unwrap();
    let mut csv = totals.lines();
    let header: Vec<&str> = csv.next().unwrap().split(',').collect();
    let all: Vec<&str> = csv.next().unwrap().split(',').collect();
    let col = |name: &str| -> u64 {
        all[header.iter().position(|h| *h == name).unwrap()]
            .parse()
            .unwrap()
    };
    assert_eq!(passes.len() as u64, col("on_time") + col("late"), "{rows}");
    for p in &passes {
        assert_eq!((p[0], p[2], p[3]), ("cam", "w0", "0"), "{p:?}");
        let (start, finish, service): (u64, u64, u64) = (
            p[5].parse().unwrap(),
            p[6].parse().unwrap(),
            p[7].parse().unwrap(),
        );
        assert!(
            finish >= start && service.abs_diff(finish - start) <= 1,
            "{p:?}"
        );
        // The synthetic model sleeps 1 ms.
        assert!(service >= 1_000, "{p:?}");
    }
    // The simulator replays it; a log of another workload is bad input.
    let sim = |workload: &Path, out: &str| {
        Command::new(env!("CARGO_BIN_EXE_ecomap"))
            .current_dir(common::repo_root())
            .args([
                "simulate",
                "--policies",
                "edf",
                "--span",
                "1h",
                "--sample",
                "10s",
            ])
            .args([
                "--traces",
                "../shared/data/carbon/eia_2022/CISO_2022_hourly_avgCI.csv",
            ])
            .arg("--workload")
            .arg(workload)
            .arg("--service-replay")
            .arg(&log)
            .arg("--out")
            .arg(f.path(out))
            .output()
            .unwrap()
    };
    let o = sim(&f.path("w.ron"), "sim");
    assert!(o.status.success(), "{}", stderr(&o));
    let other = f.write("other.ron", &WORKLOAD.replace("\"cam\"", "\"lidar\""));
    let o = sim(&other, "sim2");
    assert_bad_input(&o, &["passes.csv", "line 2", "'cam'", "'lidar'"]);
    // An output that cannot be created is refused before the run.
    let o = f.run(&["--duration", "1s", "--pass-log", "/nonexistent/dir/p.csv"]);
    assert_bad_input(&o, &["--pass-log", "/nonexistent/dir/p.csv"]);
}

#[test]
fn malformed_ron_reports_file_line_and_column() {
    let f = Files::new();
    let p = f.write(
        "w.ron",
        "(\n  tenants: [\n    (name: \"cam\" model: Synthetic(service: \"1ms\"))\n",
    );
    let o = f.run(&["--duration", "1s"]);
    assert_bad_input(&o, &[&format!("{}:3:", p.display()), "hint:"]);
}

#[test]
fn unknown_model_and_unknown_field_are_named() {
    let f = Files::new();
    f.write(
        "w.ron",
        &WORKLOAD.replace("Synthetic(service: \"1ms\")", "Vision(YoloV99)"),
    );
    assert_bad_input(&f.run(&[]), &["YoloV99", "ResNet18"]);
    f.write(
        "w.ron",
        &WORKLOAD.replace("capacity: 4", "capacity: 4, colour: 3"),
    );
    assert_bad_input(&f.run(&[]), &["colour"]);
}

#[test]
fn zero_or_negative_rates_and_deadlines_are_refused() {
    let f = Files::new();
    f.write("w.ron", &WORKLOAD.replace("rate_hz: 50.0", "rate_hz: 0.0"));
    assert_bad_input(
        &f.run(&[]),
        &["\"cam\".arrival", "rate_hz must be a positive"],
    );
    f.write("w.ron", &WORKLOAD.replace("rate_hz: 50.0", "rate_hz: -3.0"));
    assert_bad_input(&f.run(&[]), &["rate_hz must be a positive"]);
    f.write("w.ron", &WORKLOAD.replace("\"20ms\"", "\"0s\""));
    assert_bad_input(&f.run(&[]), &["deadline must be positive"]);
    f.write("w.ron", &WORKLOAD.replace("\"20ms\"", "\"-5ms\""));
    assert_bad_input(&f.run(&[]), &["w.ron:"]);
}

#[test]
fn a_core_the_machine_lacks_is_refused() {
    let f = Files::new();
    f.write("rt.ron", r#"(workers: [(name: "w0", core: Some(4096))])"#);
    assert_bad_input(
        &f.run(&[]),
        &[
            "core 4096 is not one this process may run on",
            "may run on: this machine lets it use",
        ],
    );
}

#[test]
fn durations_that_do_not_parse_are_refused() {
    let f = Files::new();
    for bad in ["twenty", "20 parsecs", "0s", "-1s"] {
        let arg = format!("--duration={bad}");
        assert_bad_input(&f.run(&[&arg]), &["--duration"]);
    }
    assert_bad_input(&f.run(&["--load-factor=-2"]), &["--load-factor"]);
    // Positive, but it takes every rate below one request per 11.6 days.
    assert_bad_input(
        &f.run(&["--load-factor=1e-25"]),
        &["--load-factor", "below"],
    );
}

#[test]
fn an_absurd_trace_speedup_is_refused_before_any_work() {
    let f = Files::new();
    with_platform(&f);
    let trace = f.write(
        "t.csv",
        "timestamp,gco2_per_kwh\n2023-01-01 00:00:00,100\n2023-01-01 01:00:00,200\n",
    );
    assert_bad_input(
        &f.run(&[
            "--carbon-trace",
            trace.to_str().unwrap(),
            "--carbon-speedup",
            "1e20",
        ]),
        &["speedup must be in"],
    );
}

#[test]
fn a_governor_whose_readings_go_stale_between_polls_is_refused() {
    let f = Files::new();
    with_platform(&f);
    f.write(
        "p.ron",
        r#"(name: "p", carbon: Http(provider: UkNationalGrid, poll: "5m"),
            governor: (rule: Fixed(cap_w: 40.0), max_staleness: "5s", fallback_cap_w: 15.0))"#,
    );
    assert_bad_input(
        &f.run(&["--duration", "1s"]),
        &["p.ron", "max_staleness 5s", "poll 5m", "\"15m\""],
    );
}

#[test]
fn a_carbon_api_address_that_is_no_address_is_refused() {
    let f = Files::new();
    with_platform(&f);
    f.write(
        "p.ron",
        r#"(name: "p", carbon: Http(provider: UkNationalGrid, base_url: "htp://x", poll: "5m"))"#,
    );
    assert_bad_input(
        &f.run(&["--duration", "1s"]),
        &[
            "p.ron",
            "base_url \"htp://x\" is not an http:// or https:// address",
        ],
    );
}

#[test]
fn a_missing_file_is_named() {
    let f = Files::new();
    std::fs::remove_file(f.path("p.ron")).unwrap();
    assert_bad_input(&f.run(&[]), &["p.ron: cannot read the file"]);
}

/// An rt-config with the emulated platform, so carbon is tracked.
fn with_platform(f: &Files) {
    let table = common::xavier_table();
    f.write(
        "rt.ron",
        &common::one_worker_rt(Some(&format!(r#"Emulated(device: "{}")"#, table.display()))),
    );
}

#[test]
fn bad_carbon_traces_stop_start_up_with_exit_2_before_any_work() {
    let f = Files::new();
    with_platform(&f);
    let cases: [(&str, &str, &str); 5] = [
        (
            "header.csv",
            "time,value\n2023-01-01 00:00:00,5\n",
            "unknown carbon-trace header",
        ),
        ("empty.csv", "timestamp,gco2_per_kwh\n", "no usable rows"),
        (
            "backwards.csv",
            "timestamp,gco2_per_kwh\n2023-01-01T01:00:00Z,5\n2023-01-01T00:00:00Z,6\n",
            "backwards.csv:3: timestamp",
        ),
        (
            "negative.csv",
            "timestamp,gco2_per_kwh\n2023-01-01T00:00:00Z,-40\n",
            "negative carbon intensity -40",
        ),
        ("missing.csv", "", "cannot read the carbon trace"),
    ];
    for (name, text, needle) in cases {
        let path = if name == "missing.csv" {
            f.path("missing.csv")
        } else {
            f.write(name, text)
        };
        let o = f.run(&["--carbon-trace", path.to_str().unwrap(), "--duration", "5s"]);
        assert_bad_input(&o, &[needle]);
        assert!(!stderr(&o).contains("serving for"), "{name}: work started");
    }
}

#[test]
fn outputs_that_cannot_be_written_are_refused_before_any_work() {
    let f = Files::new();
    let file = f.write("a-file", "not a folder");
    // --out names a file: nothing can go in it.
    let mut args = vec!["run".to_string()];
    for (flag, name) in [
        ("--rt-config", "rt.ron"),
        ("--policy", "p.ron"),
        ("--workload", "w.ron"),
    ] {
        args.push(flag.into());
        args.push(f.path(name).display().to_string());
    }
    args.extend([
        "--out".into(),
        file.display().to_string(),
        "--duration".into(),
        "5s".into(),
    ]);
    let o = Command::new(env!("CARGO_BIN_EXE_ecomap"))
        .args(&args)
        .output()
        .unwrap();
    assert_bad_input(&o, &["--out", "cannot be written"]);
    assert!(!stderr(&o).contains("serving for"), "work started");
    // A summary inside that file cannot be created either.
    let inside = file.join("s.csv");
    let o = f.run(&["--summary", inside.to_str().unwrap(), "--duration", "5s"]);
    assert_bad_input(&o, &["--summary", "cannot be written"]);
}

#[test]
fn a_policy_name_that_cannot_name_files_is_refused() {
    let f = Files::new();
    for name in ["v2/ecomap", "x__plans", ""] {
        f.write("p.ron", &format!(r#"(name: "{name}")"#));
        let o = f.run(&["--duration", "5s"]);
        assert_bad_input(&o, &["p.ron", "letters, digits, '-' and '_'"]);
    }
}

#[test]
fn a_trace_start_offset_past_its_last_row_is_refused() {
    let f = Files::new();
    with_platform(&f);
    let trace = f.write(
        "short.csv",
        "timestamp,gco2_per_kwh\n2023-01-01T00:00:00Z,5\n2023-01-01T01:00:00Z,6\n",
    );
    f.write(
        "p.ron",
        &format!(
            r#"(name: "late", carbon: Trace(path: "{}", speedup: 3600.0, start_offset: "3h"))"#,
            trace.display()
        ),
    );
    let o = f.run(&["--duration", "5s"]);
    assert_bad_input(
        &o,
        &["start_offset 3h is past its last row (1h after its first)"],
    );
    assert!(!stderr(&o).contains("serving for"), "work started");
}

#[test]
fn a_trace_run_reports_energy_carbon_and_writes_the_timeline() {
    let f = Files::new();
    with_platform(&f);
    let trace = f.write(
        "t.csv",
        "timestamp,WND,avg_CI\n2022-01-01 00:00:00+00:00,1,100\n2022-01-01 01:00:00+00:00,1,\n2022-01-01 02:00:00+00:00,1,500\n",
    );
    let o = f.run(&[
        "--carbon-trace",
        trace.to_str().unwrap(),
        "--carbon-speedup",
        "3600",
        "--duration",
        "2s",
        "--timeline",
        f.path("tl.csv").to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains("power MODELLED") && out.contains("carbon "),
        "{out}"
    );
    assert!(out.contains("CDP"), "{out}");
    // The empty row is reported with its line and held.
    assert!(
        stderr(&o).contains("t.csv:3: empty intensity"),
        "{}",
        stderr(&o)
    );
    let tl = std::fs::read_to_string(f.path("tl.csv")).unwrap();
    assert!(
        tl.starts_with("t_s,gco2_per_kwh,cap_w,level,power_w,utilisation,queue_cam"),
        "{tl}"
    );
    assert!(tl.lines().count() >= 2);
}

#[test]
fn carbon_without_a_platform_is_refused() {
    let f = Files::new();
    let trace = f.write("t.csv", "timestamp,gco2_per_kwh\n2023-01-01T00:00:00Z,5\n");
    assert_bad_input(
        &f.run(&["--carbon-trace", trace.to_str().unwrap()]),
        &["no `platform`", "p.ron", "rt.ron"],
    );
}

#[test]
fn bad_model_catalogs_and_families_exit_2() {
    let f = Files::new();
    let family = WORKLOAD.replace("tenants: [", "catalog: \"models.ron\",\n    tenants: [");
    let family = family.replace("Synthetic(service: \"1ms\")", "Family(\"fam\")");
    f.write("w.ron", &family);
    f.write(
        "models.ron",
        r#"(families: [(name: "fam", variants: [
            (name: "ts", model: TorchScript(path: "gone.pt", input_shape: [1, 3, 8, 8]))])])"#,
    );
    assert_bad_input(&f.run(&[]), &["models.ron", "gone.pt does not exist"]);
    f.write(
        "models.ron",
        r#"(families: [(name: "fam", variants: [(name: "x", model: Vision(ResNet9000))])])"#,
    );
    assert_bad_input(&f.run(&[]), &["models.ron", "ResNet9000"]);
    f.write(
        "models.ron",
        r#"(families: [(name: "other", variants: [(name: "x", model: Synthetic(service: "1ms"))])])"#,
    );
    assert_bad_input(&f.run(&[]), &["no family \"fam\" in the catalog"]);
    f.write("w.ron", &family.replace("catalog: \"models.ron\",", ""));
    assert_bad_input(&f.run(&[]), &["no `catalog`"]);
    // A catalog that is named is checked even when no tenant uses it.
    f.write(
        "w.ron",
        &WORKLOAD.replace("tenants: [", "catalog: \"nope.ron\",\n    tenants: ["),
    );
    assert_bad_input(&f.run(&[]), &["nope.ron"]);
}

/// A Synthetic stand-in answers with its input: `serve` refuses a family
/// that mixes one with real models before loading anything. (Without
/// libtorch the real variant is refused first, by another message.)
#[cfg(feature = "tch")]
#[test]
fn serving_refuses_a_family_that_mixes_synthetic_and_real_variants() {
    let f = Files::new();
    let family = WORKLOAD
        .replace("tenants: [", "catalog: \"models.ron\",\n    tenants: [")
        .replace("Synthetic(service: \"1ms\")", "Family(\"mixed\")");
    f.write("w.ron", &family);
    f.write(
        "models.ron",
        r#"(families: [(name: "mixed", variants: [
            (name: "real", model: Vision(SqueezeNet1_1)),
            (name: "spin", model: Synthetic(service: "1ms"))])])"#,
    );
    let o = Command::new(env!("CARGO_BIN_EXE_ecomap"))
        .args(["serve", "--rt-config"])
        .arg(f.path("rt.ron"))
        .arg("--policy")
        .arg(f.path("p.ron"))
        .arg("--workload")
        .arg(f.path("w.ron"))
        .arg("--out")
        .arg(f.path("out"))
        .args(["--listen", "127.0.0.1:0", "--duration", "1s"])
        .output()
        .unwrap();
    assert_bad_input(
        &o,
        &[
            "w.ron",
            "mixes Synthetic variants (spin)",
            "only real models",
        ],
    );
}

#[test]
fn a_family_of_one_variant_serves_without_swaps() {
    let f = Files::new();
    let family = WORKLOAD
        .replace("tenants: [", "catalog: \"models.ron\",\n    tenants: [")
        .replace("Synthetic(service: \"1ms\")", "Family(\"solo\")");
    f.write("w.ron", &family);
    f.write(
        "models.ron",
        r#"(families: [(name: "solo", variants: [(name: "spin", model: Synthetic(service: "1ms"), top1: 50.0)])])"#,
    );
    f.write(
        "p.ron",
        r#"(name: "q", quality: (miss_rate_threshold: 0.01, upgrade_after: "1s"))"#,
    );
    let o = f.run(&["--duration", "1s"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains("swaps   0  mean top-1 of served 50.00%"),
        "{out}"
    );
}

#[test]
fn check_accepts_the_shipped_defaults() {
    let root = common::repo_root();
    for (workload, policy) in [
        ("workloads/robot.ron", "policies/edf.ron"),
        ("workloads/synthetic.ron", "policies/fifo.ron"),
        ("workloads/robot.ron", "policies/ecomap-power.ron"),
        ("workloads/robot.ron", "policies/carbon-agnostic.ron"),
        ("workloads/robot-mixed.ron", "policies/reactive.ron"),
        ("workloads/robot-mixed.ron", "policies/ecomap-host.ron"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_ecomap"))
            .current_dir(&root)
            .args(["check", "--workload", workload, "--policy", policy])
            .output()
            .unwrap();
        // A build without libtorch refuses the real models by name (exit
        // 2); only the synthetic workload runs there.
        if ecomap_actors::backend::HAS_LIBTORCH || workload == "workloads/synthetic.ron" {
            assert!(o.status.success(), "{workload}: {}", stderr(&o));
        } else {
            assert_bad_input(&o, &["needs libtorch", "rebuild with default features"]);
        }
    }
}

/// Start `ecomap run` for a minute, send it `signal` once it says it
/// serves (its signal handlers are in place by then), and return its
/// output.
fn interrupt_a_run(f: &Files, signal: libc::c_int) -> (Output, std::time::Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ecomap"))
        .args([
            "run",
            "--rt-config",
            f.path("rt.ron").to_str().unwrap(),
            "--policy",
            f.path("p.ron").to_str().unwrap(),
            "--workload",
            f.path("w.ron").to_str().unwrap(),
            "--out",
            f.path("out").to_str().unwrap(),
            "--duration",
            "60s",
            "--summary",
            f.path("summary.csv").to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    // Read stderr as it comes, telling us when the run serves.
    let (serving_tx, serving_rx) = std::sync::mpsc::channel();
    let stderr_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = Vec::new();
        for line in std::io::BufReader::new(stderr_pipe).lines() {
            let line = line.unwrap();
            if line.contains("serving for") {
                let _ = serving_tx.send(());
            }
            all.extend_from_slice(line.as_bytes());
            all.push(b'\n');
        }
        all
    });
    serving_rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the run never said it serves");
    // Usually some requests are out by then (50 per second); the test
    // does not depend on it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0);
    let mut out = child.wait_with_output().unwrap();
    out.stderr = reader.join().unwrap();
    (out, t0.elapsed())
}

#[test]
fn a_signal_stops_the_run_drains_and_reports_with_an_interrupted_status() {
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let f = Files::new();
        let (o, took) = interrupt_a_run(&f, signal);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
        assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
        // The full report, the histograms, and every request counted once.
        assert!(out.contains("cam") && out.contains("on_time"), "{out}");
        // A signal before the first release is a run of nothing, counted.
        assert_summary_conserved(&f.path("summary.csv"), false);
        assert!(f.path("out/cam.hgrm").exists());
    }
}

#[test]
fn a_workload_that_cannot_be_feasible_is_refused_under_strict_and_warned_about_otherwise() {
    let f = Files::new();
    // 50 requests/s of 30 ms each on one worker: 1.5 workers' worth, and
    // each takes longer than the 20 ms deadline.
    f.write(
        "w.ron",
        &WORKLOAD.replace(
            r#"Synthetic(service: "1ms")"#,
            r#"Synthetic(service: "30ms")"#,
        ),
    );
    let o = f.run(&["--duration", "1s", "--strict"]);
    assert_bad_input(
        &o,
        &[
            "cannot meet its deadlines",
            "--strict",
            "'cam'",
            "past its 20.0 ms deadline",
            "1 unit (w0)",
        ],
    );
    assert!(
        !stderr(&o).contains("serving for 1s"),
        "refused before serving"
    );
    let o = f.run(&["--duration", "1s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("admission: the workload cannot be feasible"),
        "{out}"
    );
}

#[test]
fn a_control_plane_that_dies_mid_run_exits_3_with_the_report_saying_so() {
    let f = Files::new();
    with_platform(&f);
    f.write(
        "p.ron",
        r#"(name: "capped", carbon: Fixed(gco2_per_kwh: 100.0),
            governor: (rule: Fixed(cap_w: 40.0), max_staleness: "1h", fallback_cap_w: 15.0))"#,
    );
    let summary = f.path("summary.csv");
    let o = f.run(&[
        "--duration",
        "2s",
        "--inject-fault",
        "control-plane-panic@500ms",
        "--summary",
        summary.to_str().unwrap(),
    ]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(out.contains("DEGRADED control plane failed"), "{out}");
    assert!(out.contains("fallback cap 15 W"), "{out}");
    assert!(err.contains("the run was degraded"), "{err}");
    assert_summary_conserved(&summary, true);
}

/// Every row of a `--summary` CSV (the `all` row and each tenant's) puts
/// each submitted request in exactly one outcome, and, if `traffic`,
/// something was submitted.
fn assert_summary_conserved(path: &Path, traffic: bool) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(!rows.is_empty(), "{text}");
    for r in &rows {
        let n = |c: &str| r[col(c)].parse::<u64>().unwrap();
        let ended: u64 = ["on_time", "late", "expired", "rejected", "shed", "failed"]
            .iter()
            .map(|c| n(c))
            .sum();
        assert!(!traffic || n("submitted") > 0, "{text}");
        assert_eq!(n("submitted"), ended, "{text}");
    }
}

#[test]
fn fault_specs_that_do_not_parse_or_name_no_worker_are_bad_input() {
    let f = Files::new();
    assert_bad_input(
        &f.run(&["--inject-fault", "melt@1s"]),
        &["unknown fault \"melt\""],
    );
    assert_bad_input(
        &f.run(&["--inject-fault", "worker-panic:gpu7@1s"]),
        &["no worker named 'gpu7'", "w0"],
    );
    assert_bad_input(
        &f.run(&["--inject-fault", "worker-panic:w0@90s", "--duration", "60s"]),
        &["a fault at 1m 30s would never fire in a run of 1m"],
    );
    assert_bad_input(
        &f.run(&["--inject-fault", "load-panic:w0@2s"]),
        &["load-panic fires while the models load"],
    );
}

/// `ecomap profile --simulate` in a temporary folder: `--configs` and
/// `--out` as given, the rest the shipped defaults.
fn profile_simulated(out: &Path, configs: &str, resume: bool) -> Output {
    let mut args = vec![
        "profile",
        "--simulate",
        "--configs",
        configs,
        "--window",
        "1s",
        "--seed",
        "5",
        "--out",
        out.to_str().unwrap(),
    ];
    if resume {
        args.push("--resume");
    }
    Command::new(env!("CARGO_BIN_EXE_ecomap"))
        .current_dir(common::repo_root())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_simulated_profile_writes_its_rows_and_an_interrupted_one_resumes_to_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.csv");
    // 80: past the 56 solo configurations (7 variants × 4 modes × 2
    // thread counts), so mixes of several tenants, several rows each.
    let o = profile_simulated(&full, "80", false);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&full).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<&str> = lines.collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let configs: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r.split(',').nth(col("config")).unwrap())
        .collect();
    assert_eq!(configs.len(), 80, "one configuration each: {configs:?}");
    assert!(rows.len() > 80, "a row per tenant of each configuration");
    // Cut it off inside a configuration of several tenants, as an
    // interrupted profile leaves it, and resume.
    let config_of = |r: &str| r.split(',').next().unwrap().to_owned();
    let inside = (1..rows.len())
        .rev()
        .find(|&i| config_of(rows[i]) == config_of(rows[i - 1]))
        .expect("a configuration with two rows");
    let cut = dir.path().join("cut.csv");
    // The last line kept is itself cut off mid-way, without its newline.
    let keep: Vec<&str> = text.lines().take(1 + inside + 1).collect();
    let last = keep[keep.len() - 1];
    let mut partial = keep[..keep.len() - 1].join("\n") + "\n";
    partial.push_str(&last[..last.len() / 2]);
    std::fs::write(&cut, &partial).unwrap();
    let o = profile_simulated(&cut, "80", true);
    assert!(
        stderr(&o).contains("dropped to run them again"),
        "{}",
        stderr(&o)
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = std::fs::read_to_string(&cut).unwrap();
    let sorted = |t: &str| {
        let mut v: Vec<String> = t.lines().skip(1).map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&resumed), sorted(&text), "the same rows, none twice");
    // Interrupted before its first configuration: an empty file, or a
    // header cut off mid-way. Resuming starts it afresh, header and all.
    for start in ["", &text[..text.find(',').unwrap()]] {
        std::fs::write(&cut, start).unwrap();
        let o = profile_simulated(&cut, "80", true);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            std::fs::read_to_string(&cut).unwrap(),
            text,
            "from {start:?}"
        );
    }
    // Resuming with another seed: the file is another plan's, refused
    // (before, its ids were skipped and the plans mixed), and left as it was.
    let other_seed = |out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_ecomap"))
            .current_dir(common::repo_root())
            .args(["profile", "--simulate", "--configs", "80", "--window", "1s"])
            .args(["--seed", "6", "--resume", "--out", out.to_str().unwrap()])
            .output()
            .unwrap()
    };
    assert_bad_input(
        &other_seed(&full),
        &["--resume", "holds configuration", "other --seed"],
    );
    assert_eq!(std::fs::read_to_string(&full).unwrap(), text);
    // Also one cut short: refused before its cut rows are dropped.
    let cut_short = dir.path().join("cut-short.csv");
    std::fs::write(&cut_short, &partial).unwrap();
    assert_bad_input(&other_seed(&cut_short), &["--resume", "other --seed"]);
    assert_eq!(std::fs::read_to_string(&cut_short).unwrap(), partial);
    // Bad input: no configurations, a window too short to measure.
    assert_bad_input(&profile_simulated(&full, "0", false), &["--configs", "0"]);
    let o = Command::new(env!("CARGO_BIN_EXE_ecomap"))
        .current_dir(common::repo_root())
        .args(["profile", "--simulate", "--configs", "4", "--window", "1us"])
        .args(["--out", dir.path().join("w.csv").to_str().unwrap()])
        .output()
        .unwrap();
    assert_bad_input(&o, &["--window", "at least 100ms"]);
}
