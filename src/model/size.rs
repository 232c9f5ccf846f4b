//! Sizes: parsing `10G`, validating byte counts, printing human sizes.

use super::Invalid;

/// Share sizes are whole sectors, so an iSCSI LUN or a loop device can present them.
pub const SECTOR: u64 = 512;
/// The largest share size accepted: 8 EiB minus one sector is beyond any filesystem; we cap
/// at 1 PiB, which XFS and thin LVM both carry.
pub const MAX_SIZE: u64 = 1 << 50;

/// Check a share size in bytes: positive, a whole number of 512-byte sectors, at most 1 PiB.
pub fn validate_size(size: u64) -> Result<(), Invalid> {
    if size == 0 {
        return Err(Invalid::new("size must be greater than 0"));
    }
    if size % SECTOR != 0 {
        return Err(Invalid::new(format!(
            "size {size} is not a multiple of {SECTOR} bytes"
        )));
    }
    if size > MAX_SIZE {
        return Err(Invalid::new(format!(
            "size {size} is larger than the maximum of {} ({MAX_SIZE} bytes)",
            format_size(MAX_SIZE)
        )));
    }
    Ok(())
}

/// Parse a size: plain bytes (`1048576`) or a number with a binary suffix
/// (`512K`, `10M`, `10G`, `1T`, `1P`, optionally followed by `i`/`iB`/`B`).
pub fn parse_size(text: &str) -> Result<u64, Invalid> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(Invalid::new(format!(
            "size {text:?} does not start with a number"
        )));
    }
    let value: u64 = num
        .parse()
        .map_err(|_| Invalid::new(format!("size {text:?} is too large")))?;
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KI" | "KIB" | "KB" => 10,
        "M" | "MI" | "MIB" | "MB" => 20,
        "G" | "GI" | "GIB" | "GB" => 30,
        "T" | "TI" | "TIB" | "TB" => 40,
        "P" | "PI" | "PIB" | "PB" => 50,
        other => {
            return Err(Invalid::new(format!(
                "size {text:?} has an unknown unit {other:?} (use K, M, G, T or P)"
            )))
        }
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| Invalid::new(format!("size {text:?} is too large")))
}

/// Print a byte count the way people read it: `10G`, `1.5T`, `512`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["", "K", "M", "G", "T", "P"];
    let mut unit = 0;
    let mut value = bytes as f64;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}")
    } else if (value - value.round()).abs() < 0.05 {
        format!("{}{}", value.round(), UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_suffixes() {
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("8k"), Ok(8192));
    }

    #[test]
    fn refuses_garbage() {
        for t in [
            "",
            "G",
            "-1",
            "1X",
            "1.5G",
            "99999999999999999999",
            "20000000P",
        ] {
            assert!(parse_size(t).is_err(), "{t:?}");
        }
    }

    #[test]
    fn validates_sizes() {
        assert!(validate_size(0).is_err());
        assert!(validate_size(513).is_err());
        assert!(validate_size(MAX_SIZE + SECTOR).is_err());
        assert!(validate_size(u64::MAX).is_err());
        assert!(validate_size(1 << 30).is_ok());
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(10 << 30), "10G");
        assert_eq!(format_size(1536 << 20), "1.5G");
    }

    proptest! {
        #[test]
        fn round_trips_whole_units(n in 1u64..100_000, unit in 0usize..5) {
            let suffix = ["", "K", "M", "G", "T"][unit];
            let bytes = parse_size(&format!("{n}{suffix}")).unwrap();
            prop_assert_eq!(bytes, n << (10 * unit));
        }
    }
}
