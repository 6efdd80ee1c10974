//! Byte sizes as people write them (`512MiB`, `4GiB`) and as hangar prints them.

/// Parses a byte size: `512MiB`, `4GiB`, `100M`, `1g`, `65536`. Decimal and binary
/// suffixes are both read as binary units, as container tools do.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("`{s}` is not a size: use a number with an optional unit (KiB, MiB, GiB)")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "`{s}` has an unknown unit `{other}`: use KiB, MiB, GiB or TiB"
            ))
        }
    };
    let bytes = (value * mult as f64).round();
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(bytes as u64)
}

/// Formats a byte count the way [`parse_bytes`] reads it.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if n >= size {
            let v = n as f64 / size as f64;
            return if n.is_multiple_of(size) {
                format!("{}{name}", n / size)
            } else {
                format!("{v:.1}{name}")
            };
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<u64, &str>) {
        match (parse_bytes(input), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{input}: {got}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn sizes() {
        check("512MiB", Ok(512 << 20));
        check("4GiB", Ok(4 << 30));
        check("100M", Ok(100 << 20));
        check("1g", Ok(1 << 30));
        check("1.5GiB", Ok(3 << 29));
        check("65536", Ok(65536));
        check("12 parsecs", Err("unknown unit"));
        check("lots", Err("not a size"));
        check("0", Err("out of range"));
        assert_eq!(format_bytes(512 << 20), "512MiB");
        assert_eq!(format_bytes(1536), "1.5KiB");
    }
}
