//! Property tests: no input makes the readers or the derived-value checks
//! panic. Bad input must become an error that says what is wrong.

use ecomap::arrival::{ArrivalGenerator, ArrivalProcess};
use ecomap::carbon::CarbonTrace;
use ecomap::config::parse_ron;
use ecomap::config::policy::Policy;
use ecomap::config::rt::RtConfig;
use ecomap::config::workload::Workload;
use ecomap::device::spec::DeviceSpec;
use ecomap::device::DeviceModel;
use ecomap::time::Timestamp;
use proptest::prelude::*;
use std::path::Path;
use std::time::Duration;

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(0.0),
        Just(-1.0),
        Just(1e-30),
        Just(1e30),
        0.0..1e4f64,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn carbon_trace_reader_never_panics(text in "\\PC{0,400}") {
        let _ = CarbonTrace::parse(text.as_bytes(), Path::new("t.csv"));
    }

    #[test]
    fn carbon_trace_rows_never_panic(
        rows in proptest::collection::vec(("[0-9: -]{0,25}", any_f64()), 0..20),
        offset in any::<u64>(),
    ) {
        let mut s = String::from("timestamp,gco2_per_kwh\n");
        for (t, v) in &rows {
            s.push_str(&format!("{t},{v}\n"));
        }
        if let Ok(trace) = CarbonTrace::parse(s.as_bytes(), Path::new("t.csv")) {
            let _ = trace.sample_at(Duration::from_secs(offset));
            let _ = trace.span();
        }
    }

    #[test]
    fn ron_readers_never_panic(text in "\\PC{0,300}") {
        let p = Path::new("x.ron");
        if let Ok(w) = parse_ron::<Workload>(&text, p, "workload") {
            let _ = w.validate(p);
        }
        let _ = parse_ron::<Policy>(&text, p, "policy");
        let _ = parse_ron::<RtConfig>(&text, p, "rt-config");
        if let Ok(d) = parse_ron::<DeviceSpec>(&text, p, "device") {
            let _ = DeviceModel::new(d);
        }
    }

    #[test]
    fn workload_numbers_are_checked_not_trusted(
        rate in any_f64(),
        jitter_ns in any::<u64>(),
        deadline_ns in any::<u64>(),
        capacity in any::<usize>(),
        factor in any_f64(),
        poisson in any::<bool>(),
    ) {
        let arrival = if poisson {
            format!("Poisson(rate_hz: {rate:?})")
        } else {
            format!("Periodic(rate_hz: {rate:?}, jitter: \"{jitter_ns}ns\")")
        };
        let text = format!(
            r#"(tenants: [(name: "t", model: Synthetic(service: "1ms"), arrival: {arrival},
                deadline: "{deadline_ns}ns", capacity: {capacity})])"#
        );
        let p = Path::new("w.ron");
        if let Ok(w) = parse_ron::<Workload>(&text, p, "workload") {
            if w.validate(p).is_ok() {
                // What validation lets through is a workload that can run.
                let t = &w.tenants[0];
                prop_assert!(t.arrival.rate_hz().is_finite() && t.arrival.rate_hz() > 0.0);
                prop_assert!(!t.deadline.is_zero());
                prop_assert!(t.capacity >= 1);
                if let Ok(scaled) = w.scaled(factor) {
                    let rate = scaled.tenants[0].arrival.rate_hz();
                    prop_assert!(rate.is_finite() && rate > 0.0, "scaled to {rate}");
                    let mut g = ArrivalGenerator::new(
                        scaled.tenants[0].arrival.clone(), 1, Timestamp::ZERO);
                    // Releases move forward in time.
                    let mut last = Timestamp::ZERO;
                    for _ in 0..3 {
                        let t = g.next_release();
                        prop_assert!(t >= last);
                        last = t;
                    }
                }
            }
        }
    }

    #[test]
    fn scaling_any_process_by_any_factor_never_panics(rate in any_f64(), factor in any_f64(),
                                                      jitter_ns in any::<u64>()) {
        let p = ArrivalProcess::Periodic { rate_hz: rate, jitter: Duration::from_nanos(jitter_ns) };
        let _ = p.scaled(factor);
        let _ = ArrivalProcess::Poisson { rate_hz: rate }.scaled(factor);
    }
}
