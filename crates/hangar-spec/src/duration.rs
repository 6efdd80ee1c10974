//! Durations as the environment file writes them: `90s`, `30m`, `1h30m`, `12h`, `2d`.

use std::time::Duration;

const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];

/// Parses a duration made of `<number><unit>` parts, units `d h m s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let hint = "use e.g. 90s, 30m, 1h30m, 12h";
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(format!("empty duration ({hint})"));
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("`{s}` is not a duration ({hint})"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}` is out of range"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(char::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        let Some((_, secs)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(if unit.is_empty() {
                format!("`{s}` lacks a unit ({hint})")
            } else {
                format!("`{s}` has an unknown unit `{unit}` ({hint})")
            });
        };
        total = n
            .checked_mul(*secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{s}` is out of range"))?;
        rest = &rest[unit_len..];
    }
    if total == 0 {
        return Err(format!("`{s}` is zero; give a positive duration"));
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration the way [`parse_duration`] reads it (whole seconds).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// A measured span, as a log or a page shows it: `850ms`, `12.3s`.
pub fn format_millis(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// How long ago something was, `ms` milliseconds back: "just now", "5 min ago",
/// "2 h ago" (up to two days), "3 d ago".
pub fn format_ago(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<u64, &str>) {
        match (parse_duration(input), expected) {
            (Ok(got), Ok(want)) => {
                assert_eq!(got.as_secs(), want, "{input}");
                assert_eq!(parse_duration(&format_duration(got)).unwrap(), got);
            }
            (Err(got), Err(want)) => assert!(got.contains(want), "{input}: {got}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn durations() {
        check("90s", Ok(90));
        check("30m", Ok(1800));
        check("1h30m", Ok(5400));
        check("12h", Ok(43_200));
        check("2d", Ok(172_800));
        check("30", Err("lacks a unit"));
        check("3x", Err("unknown unit `x`"));
        check("m", Err("not a duration"));
        check("0s", Err("zero"));
        check("", Err("empty"));
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    fn check_millis(ms: i64, expected: &str) {
        assert_eq!(format_millis(ms), expected);
    }

    #[test]
    fn spans_read_in_ms_then_tenths_of_seconds() {
        check_millis(0, "0ms");
        check_millis(850, "850ms");
        check_millis(1000, "1.0s");
        check_millis(12_345, "12.3s");
    }

    fn check_ago(ms: i64, expected: &str) {
        assert_eq!(format_ago(ms), expected);
    }

    #[test]
    fn ages_read_in_the_largest_whole_unit() {
        check_ago(-5_000, "just now");
        check_ago(59_999, "just now");
        check_ago(60_000, "1 min ago");
        check_ago(7_199_000, "1 h ago");
        check_ago(172_799_000, "47 h ago");
        check_ago(86_400_000 * 3, "3 d ago");
    }
}
