//! Parsers of the `ecomap` command line's values (clap `value_parser`s),
//! here rather than in the binary so they are tested: every string gives
//! a value or a message that says what to write instead — never a panic.

use std::time::Duration;

/// `--sample`: all of every hour, or this much of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// Every second of every hour.
    Full,
    /// This much simulated time per trace hour.
    Part(Duration),
}

/// `--span`: whole trace hours, e.g. `3d`, `36h`, or `1y` (8760 h: a
/// trace year, not humantime's Julian 8766 h; `2y` is 17520 h).
pub fn parse_span(s: &str) -> Result<usize, String> {
    if let Some(years) = trace_years(s) {
        return years
            .filter(|&n| n > 0)
            .and_then(|n| n.checked_mul(crate::simulate::YEAR_H))
            .ok_or_else(|| format!("the span must be a positive number of years, got {s:?}"));
    }
    if let Some(e) = calendar_units(s, "the span") {
        return Err(e);
    }
    if s.starts_with('-') {
        return Err(format!(
            "the span must be positive, got {s:?}; write a span such as 3d, 30d, 36h or 1y"
        ));
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; write a span such as 3d, 30d, 36h or 1y"))?;
    let h = d.as_secs() / 3600;
    if h == 0 || d.as_secs() % 3600 != 0 {
        return Err(format!(
            "the span must be a positive whole number of hours (the traces are hourly), got {s:?}"
        ));
    }
    usize::try_from(h).map_err(|_| "span too long".into())
}

/// A whole number of trace years (`year`, `1y`, `2 years`): `Some(None)`
/// when it is years but not a usable number; `None` when it is not years
/// alone.
fn trace_years(s: &str) -> Option<Option<usize>> {
    if s == "year" {
        return Some(Some(1));
    }
    let n = ["years", "year", "y"]
        .iter()
        .find_map(|unit| s.strip_suffix(unit))
        .map(str::trim_end)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))?;
    Some(n.parse::<usize>().ok())
}

/// An error when `s` mixes years or months into other units: humantime
/// counts a year as 365.25 days (8766 h) and a month as 30.44 days, not the
/// traces' 8760-hour year.
fn calendar_units(s: &str, what: &str) -> Option<String> {
    let units: Vec<&str> = s
        .split(|c: char| c.is_ascii_digit() || c.is_whitespace())
        .filter(|u| !u.is_empty())
        .collect();
    let calendar = units
        .iter()
        .any(|u| matches!(*u, "y" | "year" | "years" | "M" | "month" | "months"));
    calendar.then(|| {
        format!(
            "{what} {s:?} mixes years or months with other units, which would count a year as \
             365.25 days and a month as 30.44; write years alone (1y = 8760 h, a trace year) or \
             days and hours (e.g. 30days)"
        )
    })
}

/// `--start`: a whole-hour offset from the trace's first row (`30days`,
/// `1y` = 8760 h) or a UTC date (`2023-06-01`).
pub fn parse_start(s: &str) -> Result<crate::simulate::StartAt, String> {
    if let Some(years) = trace_years(s) {
        return years
            .and_then(|n| n.checked_mul(crate::simulate::YEAR_H))
            .and_then(|h| u64::try_from(h).ok()?.checked_mul(3600))
            .map(|secs| crate::simulate::StartAt::Offset(Duration::from_secs(secs)))
            .ok_or_else(|| format!("--start {s:?}: too many years"));
    }
    if let Some(e) = calendar_units(s, "the start") {
        return Err(e);
    }
    match chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Ok(date) => return Ok(crate::simulate::StartAt::Date(date)),
        // Shaped like a date (digits and dashes) but not one, e.g. 2022-02-30.
        Err(e) if s.contains('-') && s.bytes().all(|b| b.is_ascii_digit() || b == b'-') => {
            return Err(format!(
                "{s:?} is not a date ({e}); write a date such as 2023-06-01"
            ));
        }
        Err(_) => {}
    }
    let d = humantime::parse_duration(s).map_err(|e| {
        format!("{e}; write an offset such as 0s or 30days, or a date such as 2023-06-01")
    })?;
    if d.as_secs() % 3600 != 0 || d.subsec_nanos() != 0 {
        return Err(format!(
            "the start must be a whole number of hours after the trace's first row (the traces are hourly), got {s:?}"
        ));
    }
    Ok(crate::simulate::StartAt::Offset(d))
}

/// `--sample`: `full`, or simulated time per trace hour in [1 s, 1 h]
/// (less than a second would sample too few arrivals to mean anything).
pub fn parse_sample(s: &str) -> Result<Sample, String> {
    if s == "full" {
        return Ok(Sample::Full);
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; write `full` or a duration such as 2m"))?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
        return Err(format!("--sample must be in [1s, 1h] or `full`, got {s:?}"));
    }
    Ok(Sample::Part(d))
}

/// `--jobs`: a whole number of parallel runs, at least 1.
pub fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "--jobs must be a whole number ≥ 1 (runs at once; at most one per run is used), got {s:?}"
        )),
    }
}

/// `--duration`: a positive duration such as `20s` or `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; write a duration such as 20s, 500ms or 1m30s"))?;
    if d.is_zero() {
        return Err("the duration must be positive".into());
    }
    Ok(d)
}

/// A positive, finite number (`--load-factor`, `--carbon-speedup`).
pub fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_parse_and_bad_ones_say_why() {
        assert_eq!(parse_span("1y"), Ok(crate::simulate::YEAR_H));
        assert_eq!(parse_span("3d"), Ok(72));
        assert!(parse_span("90m")
            .unwrap_err()
            .contains("whole number of hours"));
        // Years are trace years of 8760 hours, however they are spelled.
        assert_eq!(parse_span("1years"), Ok(crate::simulate::YEAR_H));
        assert_eq!(parse_span("2y"), Ok(2 * crate::simulate::YEAR_H));
        assert_eq!(parse_span("1 year"), Ok(crate::simulate::YEAR_H));
        assert!(parse_span("0y").unwrap_err().contains("positive"));
        assert_eq!(parse_sample("full"), Ok(Sample::Full));
        assert!(parse_sample("2h").unwrap_err().contains("--sample"));
        assert!(parse_sample("1ns").unwrap_err().contains("[1s, 1h]"));
        assert_eq!(parse_jobs("3"), Ok(3));
        assert!(parse_jobs("0").unwrap_err().contains("≥ 1"));
        // An impossible date says so; a part-hour offset is refused.
        assert!(parse_start("2022-02-30")
            .unwrap_err()
            .contains("not a date"));
        assert!(parse_start("59m")
            .unwrap_err()
            .contains("whole number of hours"));
        // Years are trace years for --start too; mixed calendar units say why not.
        assert_eq!(
            parse_start("1y"),
            Ok(crate::simulate::StartAt::Offset(Duration::from_secs(
                8760 * 3600
            )))
        );
        assert!(parse_start("1month").unwrap_err().contains("30.44"));
        assert!(parse_span("1y12h").unwrap_err().contains("years alone"));
        assert_eq!(parse_span("30days"), Ok(720));
        assert!(parse_span("-1d").unwrap_err().contains("positive"));
        assert_eq!(
            parse_start("2h"),
            Ok(crate::simulate::StartAt::Offset(Duration::from_secs(7200)))
        );
        assert!(parse_positive("-1").is_err() && parse_positive("NaN").is_err());
        assert!(parse_duration("0s").unwrap_err().contains("positive"));
        assert!(matches!(
            parse_start("2023-06-01"),
            Ok(crate::simulate::StartAt::Date(_))
        ));
    }

    proptest! {
        #[test]
        fn no_string_makes_a_parser_panic(s in "\\PC{0,40}") {
            let _ = parse_span(&s);
            let _ = parse_start(&s);
            let _ = parse_sample(&s);
            let _ = parse_duration(&s);
            let _ = parse_positive(&s);
            let _ = parse_jobs(&s);
        }

        #[test]
        fn no_number_makes_a_parser_panic(x in any::<f64>(), n in any::<u64>()) {
            for s in [format!("{x}"), format!("{x:e}"), format!("{n}h"), format!("{n}s"), format!("{n}y")] {
                let _ = parse_span(&s);
                let _ = parse_sample(&s);
                let _ = parse_positive(&s);
                let _ = parse_duration(&s);
            }
        }
    }
}
