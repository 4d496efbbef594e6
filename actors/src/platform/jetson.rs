//! Jetson AGX Xavier: nvpmodel modes or sysfs clock caps; INA3221 power rails.
//!
//! Paths (under `sysfs_root`):
//! - GPU devfreq: `sys/devices/17000000.gv11b/devfreq/17000000.gv11b/max_freq` (Hz);
//! - CPUs: `sys/devices/system/cpu/cpuN/cpufreq/scaling_max_freq` (kHz) and `…/cpuN/online`;
//! - power, L4T 32 (iio, mW): `sys/bus/i2c/drivers/ina3221x/1-0040/iio:device0/in_power{0,1,2}_input`
//!   (GPU, CPU, SOC) and `1-0041/iio:device1/in_power{0,1,2}_input` (CV, VDDRQ, SYS5V);
//! - power, L4T 35 (hwmon): `sys/bus/i2c/drivers/ina3221/1-004{0,1}/hwmon/hwmonK/in{1,2,3}_input`
//!   (mV) and `curr{1,2,3}_input` (mA).
//!
//! A write the device refuses is an error naming the file; the governor then
//! carries on read-only.

use super::{
    read_non_negative, read_text, write_value, AppliedCap, Platform, PlatformError, PowerReading,
};
use ecomap::config::rt::{JetsonControl, JetsonSpec};
use ecomap::device::pick_for_cap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const GPU_MAX_FREQ: &str = "sys/devices/17000000.gv11b/devfreq/17000000.gv11b/max_freq";

/// How often the rails are sampled between meter reads. The INA3221
/// reports instantaneous power; inference at 30 Hz swings it within tens of
/// milliseconds, so one reading per second would price a second at
/// whatever instant it hit. (tegrastats' default interval is 1 s; 100 ms
/// is ten samples per meter interval for the cost of reading six sysfs
/// files.)
const POWER_POLL: Duration = Duration::from_millis(100);

/// A Jetson AGX Xavier.
#[derive(Debug)]
pub struct JetsonBackend {
    spec: JetsonSpec,
    applied: Option<AppliedCap>,
    /// Sum (W) and count of the samples polled since the last read.
    polled: (f64, u32),
    /// The clock files as the run found them (each read before its first
    /// write; `Clocks` control), written back by [`Platform::restore`].
    original: Option<Vec<(PathBuf, String)>>,
    /// The clock level last written (GPU Hz, CPU kHz, CPUs online).
    clocks_in_force: Option<(u64, u64, usize)>,
}

/// How long `nvpmodel` may take to switch modes before it is killed and
/// the cap reported as failed (a mode switch takes a second or two). It
/// runs on the control-plane thread, under the platform's lock: kept below
/// the watchdog's `HANG_AFTER` (10 s), so a slow switch fails as a cap
/// that could not be set rather than as a hung control plane.
const NVPMODEL_PATIENCE: Duration = Duration::from_secs(8);

/// Run `binary args` with no input (a mode change that wants a reboot
/// asks on stdin), killing it past `patience`; its failure, or its
/// silence, is the error.
fn run_bounded(binary: &str, args: &[&str], patience: Duration) -> Result<(), PlatformError> {
    use std::process::Stdio;
    let command = format!("{binary} {}", args.join(" "));
    let fail = |why: String| PlatformError::Command {
        command: command.clone(),
        why,
    };
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    match wait_timeout::ChildExt::wait_timeout(&mut child, patience) {
        Ok(Some(_)) => {}
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "no answer within {}: killed",
                humantime::format_duration(patience)
            )));
        }
        Err(e) => return Err(fail(e.to_string())),
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl JetsonBackend {
    /// A backend for `spec`; nothing is touched until a cap is set.
    pub fn new(spec: JetsonSpec) -> Self {
        JetsonBackend {
            spec,
            applied: None,
            clocks_in_force: None,
            polled: (0.0, 0),
            original: None,
        }
    }

    /// The files a `Clocks` cap writes, in the order they are written: the
    /// GPU, then each CPU online (or off) before its frequency. `online`
    /// CPUs stay up (cpu0 always).
    fn clock_writes(
        &self,
        gpu_hz: u64,
        cpu_khz: u64,
        online: usize,
        cpus: usize,
    ) -> Vec<(PathBuf, String)> {
        let mut writes = vec![(self.path(GPU_MAX_FREQ), gpu_hz.to_string())];
        for n in 0..cpus {
            let base = format!("sys/devices/system/cpu/cpu{n}");
            // cpu0 cannot go offline; bring others up before capping them.
            if n > 0 {
                let up = if n < online { "1" } else { "0" };
                writes.push((self.path(&format!("{base}/online")), up.to_string()));
            }
            if n < online.max(1) {
                writes.push((
                    self.path(&format!("{base}/cpufreq/scaling_max_freq")),
                    cpu_khz.to_string(),
                ));
            }
        }
        writes
    }

    /// What the files of `writes` hold now (those that can be read: an
    /// offline CPU has no cpufreq folder).
    fn current_values(writes: &[(PathBuf, String)]) -> Vec<(PathBuf, String)> {
        writes
            .iter()
            .filter_map(|(p, _)| read_text(p).ok().map(|v| (p.clone(), v)))
            .collect()
    }

    /// The rails' total power now, watts.
    fn instant_watts(&self) -> Result<f64, PlatformError> {
        let mut mw = 0.0;
        for r in self.rails()? {
            mw += r.milliwatts()?;
        }
        Ok(mw / 1000.0)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.spec.sysfs_root.join(rel)
    }

    /// The power rails this device exposes, as (label, power-in-mW reader) paths.
    fn rails(&self) -> Result<Vec<Rail>, PlatformError> {
        // L4T 32: iio power channels in mW.
        let mut rails = Vec::new();
        for (addr, dev) in [("1-0040", "iio:device0"), ("1-0041", "iio:device1")] {
            for ch in 0..3 {
                let p = self.path(&format!(
                    "sys/bus/i2c/drivers/ina3221x/{addr}/{dev}/in_power{ch}_input"
                ));
                if p.exists() {
                    rails.push(Rail::PowerMw(p));
                }
            }
        }
        if !rails.is_empty() {
            return Ok(rails);
        }
        // L4T 35: hwmon voltage (mV) and current (mA) per channel.
        for addr in ["1-0040", "1-0041"] {
            let dir = self.path(&format!("sys/bus/i2c/drivers/ina3221/{addr}/hwmon"));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                for ch in 1..=3 {
                    let v = e.path().join(format!("in{ch}_input"));
                    let c = e.path().join(format!("curr{ch}_input"));
                    if v.exists() && c.exists() {
                        rails.push(Rail::VoltCurrent(v, c));
                    }
                }
            }
        }
        if rails.is_empty() {
            return Err(PlatformError::NoSensor(format!(
                "no INA3221 rails under {} (looked for ina3221x iio on L4T 32 and ina3221 hwmon on L4T 35)",
                self.spec.sysfs_root.display()
            )));
        }
        Ok(rails)
    }

    /// Write one clock level, all or nothing: a write that fails (a CPU
    /// the device lacks, `EBUSY` taking one offline) puts back the files
    /// already written, so the device is never left half at one level and
    /// half at another while the report names the old one.
    fn apply_clocks(
        &mut self,
        gpu_hz: u64,
        cpu_khz: u64,
        online: usize,
        cpus: usize,
    ) -> Result<(), PlatformError> {
        let writes = self.clock_writes(gpu_hz, cpu_khz, online, cpus);
        let before = Self::current_values(&writes);
        let original = self.original.get_or_insert_with(Vec::new);
        for (i, (path, value)) in writes.iter().enumerate() {
            // What the run found, for `restore`: read just before the first
            // write to each file (a CPU brought online a moment ago has its
            // cpufreq folder back only now).
            if !original.iter().any(|(p, _)| p == path) {
                if let Ok(found) = read_text(path) {
                    original.push((path.clone(), found));
                }
            }
            if let Err(e) = write_value(path, value) {
                // Undo in reverse (frequencies before a CPU goes back
                // offline), best effort: the error that stopped us is the
                // one to report, and an undo that fails is logged.
                for (done, _) in writes[..i].iter().rev() {
                    if let Some((_, old)) = before.iter().find(|(p, _)| p == done) {
                        if let Err(undo) = write_value(done, old) {
                            tracing::warn!("jetson: could not undo a clock write: {undo}");
                        }
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

enum Rail {
    PowerMw(PathBuf),
    VoltCurrent(PathBuf, PathBuf),
}

impl Rail {
    fn milliwatts(&self) -> Result<f64, PlatformError> {
        match self {
            Rail::PowerMw(p) => read_non_negative(p),
            Rail::VoltCurrent(v, c) => Ok(read_non_negative(v)? * read_non_negative(c)? / 1000.0),
        }
    }
}

impl Platform for JetsonBackend {
    fn name(&self) -> String {
        format!("jetson ({})", self.spec.sysfs_root.display())
    }

    fn set_cap(&mut self, cap_w: f64) -> Result<AppliedCap, PlatformError> {
        if self.applied.as_ref().is_some_and(|a| a.cap_w == cap_w) {
            return Ok(self.applied.clone().expect("checked"));
        }
        let applied = match &self.spec.control {
            JetsonControl::ReadOnly => AppliedCap {
                cap_w,
                level: "read-only".into(),
                slowdown: 1.0,
            },
            JetsonControl::Nvpmodel { binary, modes } => {
                let mode = pick_for_cap(modes, cap_w, |m| m.budget_w).ok_or_else(|| {
                    PlatformError::Command {
                        command: format!("{binary} -m ?"),
                        why: "no nvpmodel modes configured".into(),
                    }
                })?;
                let level = format!("nvpmodel {}", mode.id);
                // Another cap that picks the mode in force: nothing to run.
                if self.applied.as_ref().is_none_or(|a| a.level != level) {
                    run_bounded(binary, &["-m", &mode.id.to_string()], NVPMODEL_PATIENCE)?;
                }
                AppliedCap {
                    cap_w,
                    level,
                    slowdown: mode.slowdown,
                }
            }
            JetsonControl::Clocks { levels, cpus } => {
                let l = pick_for_cap(levels, cap_w, |l| l.cap_w)
                    .ok_or_else(|| PlatformError::NoSensor("no clock levels configured".into()))?
                    .clone();
                let cpus = *cpus;
                let setting = (l.gpu_max_hz, l.cpu_max_khz, l.cpus_online);
                // Another cap that picks the level in force: nothing to write.
                if self.clocks_in_force != Some(setting) {
                    self.apply_clocks(l.gpu_max_hz, l.cpu_max_khz, l.cpus_online, cpus)?;
                    self.clocks_in_force = Some(setting);
                }
                AppliedCap {
                    cap_w,
                    level: format!("gpu {} MHz", l.gpu_max_hz / 1_000_000),
                    slowdown: l.slowdown,
                }
            }
        };
        tracing::info!("jetson: cap {cap_w} W → {}", applied.level);
        self.applied = Some(applied.clone());
        Ok(applied)
    }

    fn current_cap(&self) -> Option<&AppliedCap> {
        self.applied.as_ref()
    }

    /// Put the clock files back as they were before the first cap (CPUs
    /// online first, then their frequencies, the GPU last). An nvpmodel
    /// mode is left as it is: `nvpmodel` has no way to say which mode was
    /// in force before without parsing its report.
    fn restore(&mut self) -> Result<(), PlatformError> {
        let Some(original) = self.original.take() else {
            return Ok(());
        };
        let mut first_error = None;
        let online = original.iter().filter(|(p, _)| p.ends_with("online"));
        let rest = original.iter().filter(|(p, _)| !p.ends_with("online"));
        for (path, value) in online.chain(rest) {
            if let Err(e) = write_value(path, value) {
                first_error.get_or_insert(e);
            }
        }
        self.applied = None;
        self.clocks_in_force = None;
        first_error.map_or(Ok(()), Err)
    }

    /// The mean of the samples polled since the last read and one taken
    /// now (the interval's end); the polled ones alone if the rails fail
    /// now, so a failed read at the end does not lose a measured interval.
    fn read_power(
        &mut self,
        _dt: Duration,
        _utilisation: f64,
    ) -> Result<PowerReading, PlatformError> {
        let now = self.instant_watts();
        let (sum, n) = std::mem::take(&mut self.polled);
        let watts = match now {
            Ok(w) => (sum + w) / f64::from(n + 1),
            Err(_) if n > 0 => sum / f64::from(n),
            Err(e) => return Err(e),
        };
        Ok(PowerReading {
            watts,
            measured: true,
        })
    }

    fn power_poll_interval(&self) -> Option<Duration> {
        Some(POWER_POLL)
    }

    fn poll_power(&mut self) {
        // A failed sample is left out; the read at the interval's end
        // reports a sensor that has gone.
        if let Ok(w) = self.instant_watts() {
            self.polled.0 += w;
            self.polled.1 += 1;
        }
    }

    fn max_cap_w(&self) -> f64 {
        match &self.spec.control {
            JetsonControl::Nvpmodel { modes, .. } => {
                modes.iter().map(|m| m.budget_w).fold(0.0, f64::max)
            }
            JetsonControl::Clocks { levels, .. } => {
                levels.iter().map(|l| l.cap_w).fold(0.0, f64::max)
            }
            JetsonControl::ReadOnly => f64::INFINITY,
        }
    }
}

/// Lay out a fake Xavier sysfs tree under `root` (for tests and dry runs):
/// GPU devfreq, `cpus` CPUs and INA3221 rails in the L4T 32 (iio) layout
/// with the given milliwatts, or the L4T 35 (hwmon) layout when `hwmon`.
pub fn write_fixture(
    root: &Path,
    cpus: usize,
    rails_mw: [u64; 6],
    hwmon: bool,
) -> std::io::Result<()> {
    let gpu = root.join(GPU_MAX_FREQ);
    std::fs::create_dir_all(gpu.parent().expect("has parent"))?;
    std::fs::write(&gpu, "1377000000\n")?;
    std::fs::write(
        gpu.with_file_name("available_frequencies"),
        "114750000 216750000 318750000 420750000 522750000 624750000 675750000 828750000 905250000 1032750000 1198500000 1236750000 1338750000 1377000000\n",
    )?;
    for n in 0..cpus {
        let d = root.join(format!("sys/devices/system/cpu/cpu{n}/cpufreq"));
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("scaling_max_freq"), "2265600\n")?;
        std::fs::write(d.parent().expect("has parent").join("online"), "1\n")?;
    }
    for (i, (addr, dev)) in [("1-0040", "iio:device0"), ("1-0041", "iio:device1")]
        .iter()
        .enumerate()
    {
        for ch in 0..3 {
            let mw = rails_mw[i * 3 + ch];
            if hwmon {
                let d = root.join(format!(
                    "sys/bus/i2c/drivers/ina3221/{addr}/hwmon/hwmon{}",
                    i + 1
                ));
                std::fs::create_dir_all(&d)?;
                // 5 V rails: mV and mA such that V×I = the power.
                std::fs::write(d.join(format!("in{}_input", ch + 1)), "5000\n")?;
                std::fs::write(
                    d.join(format!("curr{}_input", ch + 1)),
                    format!("{}\n", mw / 5),
                )?;
            } else {
                let d = root.join(format!("sys/bus/i2c/drivers/ina3221x/{addr}/{dev}"));
                std::fs::create_dir_all(&d)?;
                std::fs::write(d.join(format!("in_power{ch}_input")), format!("{mw}\n"))?;
            }
        }
    }
    Ok(())
}

/// A fake Xavier sysfs tree under `root` (the L4T 32 layout, 8 CPUs) whose
/// rails draw 7.5 W, and the rt-config `platform` entry that meters it
/// without changing anything: what the runtime's tests of a Jetson use.
pub fn read_only_fixture(root: &Path) -> std::io::Result<String> {
    write_fixture(root, 8, [1000, 2000, 3000, 400, 500, 600], false)?;
    Ok(format!(
        r#"Jetson((sysfs_root: "{}", control: ReadOnly))"#,
        root.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecomap::config::rt::{ClockLevel, NvpMode};

    fn clocks(root: &Path) -> JetsonBackend {
        JetsonBackend::new(JetsonSpec {
            sysfs_root: root.to_path_buf(),
            control: JetsonControl::Clocks {
                cpus: 8,
                levels: vec![
                    ClockLevel {
                        cap_w: 30.0,
                        gpu_max_hz: 1_377_000_000,
                        cpu_max_khz: 2_265_600,
                        cpus_online: 8,
                        slowdown: 1.0,
                    },
                    ClockLevel {
                        cap_w: 15.0,
                        gpu_max_hz: 675_750_000,
                        cpu_max_khz: 1_190_400,
                        cpus_online: 4,
                        slowdown: 2.0,
                    },
                ],
            },
        })
    }

    #[test]
    fn clock_caps_write_the_real_files() {
        let dir = tempfile::tempdir().unwrap();
        write_fixture(dir.path(), 8, [1000, 2000, 3000, 400, 500, 600], false).unwrap();
        let mut j = clocks(dir.path());
        let a = j.set_cap(20.0).unwrap();
        assert_eq!((a.slowdown, a.level.as_str()), (2.0, "gpu 675 MHz"));
        let read = |rel: &str| std::fs::read_to_string(dir.path().join(rel)).unwrap();
        assert_eq!(read(GPU_MAX_FREQ), "675750000");
        assert_eq!(
            read("sys/devices/system/cpu/cpu3/cpufreq/scaling_max_freq"),
            "1190400"
        );
        assert_eq!(read("sys/devices/system/cpu/cpu5/online"), "0");
        assert_eq!(read("sys/devices/system/cpu/cpu1/online"), "1");
        j.set_cap(30.0).unwrap();
        assert_eq!(read(GPU_MAX_FREQ), "1377000000");
        assert_eq!(read("sys/devices/system/cpu/cpu5/online"), "1");
        assert_eq!(j.max_cap_w(), 30.0);
    }

    #[test]
    fn a_level_that_cannot_be_written_whole_is_undone_and_the_end_restores_the_device() {
        let dir = tempfile::tempdir().unwrap();
        write_fixture(dir.path(), 8, [0; 6], false).unwrap();
        let read = |rel: &str| std::fs::read_to_string(dir.path().join(rel)).unwrap();
        let mut j = clocks(dir.path());
        // cpu6 cannot be taken offline (a directory where its file is).
        let cpu6 = dir.path().join("sys/devices/system/cpu/cpu6/online");
        std::fs::remove_file(&cpu6).unwrap();
        std::fs::create_dir(&cpu6).unwrap();
        let e = j.set_cap(15.0).unwrap_err().to_string();
        assert!(e.contains("cpu6/online: write 0 failed"), "{e}");
        // cpu4 and cpu5 went offline and cpu0..3 were capped before the
        // failure: all put back.
        assert_eq!(read("sys/devices/system/cpu/cpu5/online"), "1");
        assert_eq!(read("sys/devices/system/cpu/cpu4/online"), "1");
        assert_eq!(
            read("sys/devices/system/cpu/cpu2/cpufreq/scaling_max_freq"),
            "2265600"
        );
        assert_eq!(read(GPU_MAX_FREQ), "1377000000");
        assert!(j.current_cap().is_none());
        // A level that can be written, then the run's end (a new run: the
        // state before its first cap is what it puts back).
        std::fs::remove_dir(&cpu6).unwrap();
        std::fs::write(&cpu6, "1\n").unwrap();
        let mut j = clocks(dir.path());
        j.set_cap(15.0).unwrap();
        assert_eq!(read(GPU_MAX_FREQ), "675750000");
        assert_eq!(read("sys/devices/system/cpu/cpu6/online"), "0");
        j.restore().unwrap();
        assert_eq!(read(GPU_MAX_FREQ), "1377000000");
        assert_eq!(read("sys/devices/system/cpu/cpu6/online"), "1");
        assert_eq!(
            read("sys/devices/system/cpu/cpu2/cpufreq/scaling_max_freq"),
            "2265600"
        );
    }

    #[test]
    fn power_is_the_sum_of_the_ina3221_rails_on_both_l4t_layouts() {
        for hwmon in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            write_fixture(dir.path(), 2, [1000, 2000, 3000, 400, 500, 600], hwmon).unwrap();
            let mut j = clocks(dir.path());
            let p = j.read_power(Duration::from_secs(1), 0.0).unwrap();
            assert!((p.watts - 7.5).abs() < 1e-9, "hwmon={hwmon}: {p:?}");
            assert!(p.measured);
        }
        // An idle rail's current dips a few mA below zero: it counts as 0,
        // not as a failed read of every rail.
        let dir = tempfile::tempdir().unwrap();
        write_fixture(dir.path(), 2, [1000, 2000, 3000, 400, 500, 600], true).unwrap();
        let curr = dir
            .path()
            .join("sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/curr1_input");
        std::fs::write(&curr, "-3\n").unwrap();
        let p = clocks(dir.path())
            .read_power(Duration::from_secs(1), 0.0)
            .unwrap();
        assert!((p.watts - 6.5).abs() < 1e-9, "{p:?}");
        let empty = tempfile::tempdir().unwrap();
        let e = clocks(empty.path())
            .read_power(Duration::from_secs(1), 0.0)
            .unwrap_err();
        assert!(e.to_string().contains("no INA3221 rails"), "{e}");
    }

    #[test]
    fn a_read_averages_the_samples_polled_since_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let rail = dir
            .path()
            .join("sys/bus/i2c/drivers/ina3221x/1-0040/iio:device0/in_power0_input");
        write_fixture(dir.path(), 2, [0; 6], false).unwrap();
        let mut j = clocks(dir.path());
        assert_eq!(j.power_poll_interval(), Some(POWER_POLL));
        // A burst: 20 W, 20 W, then idle 2 W when the meter reads.
        std::fs::write(&rail, "20000\n").unwrap();
        j.poll_power();
        j.poll_power();
        std::fs::write(&rail, "2000\n").unwrap();
        let p = j.read_power(Duration::from_secs(1), 0.0).unwrap();
        assert!((p.watts - 14.0).abs() < 1e-9, "{p:?}");
        // The samples were spent: the next read starts afresh.
        let p = j.read_power(Duration::from_secs(1), 0.0).unwrap();
        assert!((p.watts - 2.0).abs() < 1e-9, "{p:?}");
        // Rails that vanish at the interval's end: the polled samples
        // still measure it; with none polled, the read is an error.
        j.poll_power();
        std::fs::remove_dir_all(dir.path().join("sys/bus")).unwrap();
        let p = j.read_power(Duration::from_secs(1), 0.0).unwrap();
        assert!((p.watts - 2.0).abs() < 1e-9, "{p:?}");
        assert!(j.read_power(Duration::from_secs(1), 0.0).is_err());
    }

    #[test]
    fn an_unwritable_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_fixture(dir.path(), 2, [0; 6], false).unwrap();
        // Root may write any mode; a directory in the file's place is refused.
        let gpu = dir.path().join(GPU_MAX_FREQ);
        std::fs::remove_file(&gpu).unwrap();
        std::fs::create_dir(&gpu).unwrap();
        let e = clocks(dir.path()).set_cap(15.0).unwrap_err().to_string();
        assert!(e.contains("max_freq: write 675750000 failed"), "{e}");
    }

    #[test]
    fn nvpmodel_modes_run_the_command_and_report_its_failure() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let ok = dir.path().join("nvpmodel");
        std::fs::write(
            &ok,
            format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
        )
        .unwrap();
        let bad = dir.path().join("nvpmodel-bad");
        std::fs::write(&bad, "#!/bin/sh\necho 'NVPM ERROR: bad mode' >&2\nexit 3\n").unwrap();
        for f in [&ok, &bad] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let modes = vec![
            NvpMode {
                id: 0,
                budget_w: 40.0,
                slowdown: 1.0,
            },
            NvpMode {
                id: 3,
                budget_w: 30.0,
                slowdown: 1.6,
            },
            NvpMode {
                id: 2,
                budget_w: 15.0,
                slowdown: 2.0,
            },
        ];
        let mut j = JetsonBackend::new(JetsonSpec {
            sysfs_root: dir.path().to_path_buf(),
            control: JetsonControl::Nvpmodel {
                binary: ok.display().to_string(),
                modes: modes.clone(),
            },
        });
        assert_eq!(j.set_cap(20.0).unwrap().level, "nvpmodel 2");
        assert_eq!(j.set_cap(20.0).unwrap().level, "nvpmodel 2"); // idempotent: no second call
                                                                  // Another cap, the same mode: no second call either.
        let a = j.set_cap(25.0).unwrap();
        assert_eq!((a.cap_w, a.level.as_str()), (25.0, "nvpmodel 2"));
        assert_eq!(j.set_cap(35.0).unwrap().slowdown, 1.6);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "-m 2\n-m 3\n");
        // An nvpmodel that never answers is killed, and the cap fails.
        let e = run_bounded("sleep", &["30"], Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`sleep 30`") && e.contains("no answer within 100ms"),
            "{e}"
        );
        let mut j = JetsonBackend::new(JetsonSpec {
            sysfs_root: dir.path().to_path_buf(),
            control: JetsonControl::Nvpmodel {
                binary: bad.display().to_string(),
                modes,
            },
        });
        let e = j.set_cap(40.0).unwrap_err().to_string();
        assert!(
            e.contains("-m 0` failed") && e.contains("NVPM ERROR: bad mode"),
            "{e}"
        );
    }
}
