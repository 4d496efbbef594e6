//! Set-up shared by the integration tests. Each test binary includes it
//! (`mod common;`) and uses what it needs.
#![allow(dead_code)]

/// The `i`-th core this process may run on (wrapping), so tests that pin
/// workers run under any cpuset, not only one that holds cores 0 and 1
/// (the runtime refuses a pinned core outside the process's mask).
pub fn core(i: usize) -> usize {
    let cores = ecomap_actors::rt::allowed_cores();
    cores[i % cores.len()]
}

/// Whether the process may hold two distinct cores.
pub fn two_cores() -> bool {
    ecomap_actors::rt::allowed_cores().len() >= 2
}

/// An rt-config of one worker `w0` pinned to [`core`]`(0)`, on
/// `platform` (RON, e.g. `Emulated(device: "…")`) if given.
pub fn one_worker_rt(platform: Option<&str>) -> String {
    let platform = platform.map_or(String::new(), |p| format!("platform: {p}, "));
    format!(
        r#"({platform}workers: [(name: "w0", core: Some({}))])"#,
        core(0)
    )
}

/// The repository's root (tests run from the `actors` crate's folder).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the actors crate sits in the repository")
        .to_path_buf()
}

/// The virtual Xavier's device description.
pub fn xavier_table() -> std::path::PathBuf {
    repo_root().join("rt-config/devices/xavier.ron")
}

/// `o` exited 2 (bad input), without a panic, and its stderr names every
/// needle.
pub fn assert_exit_2(o: &std::process::Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

/// One test at a time in a binary whose tests run real-time workers on
/// the same cores (one lock per test binary: each includes this module).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
