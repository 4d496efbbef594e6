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
