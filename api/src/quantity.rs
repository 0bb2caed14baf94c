//! Kubernetes quantities for sizes (`64Ki`, `2Mi`, `1G`, `4096`) as bytes.

use crate::error::{Error, Result};
use crate::units::Bytes;

const SUFFIXES: [(&str, u64); 12] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// Parse a size for parameter `param`: a whole number with an optional
/// binary (`Ki`..`Ei`) or decimal (`k`..`E`) suffix.
pub fn parse_size(param: &'static str, text: &str) -> Result<Bytes> {
    let allowed =
        "a whole number of bytes with an optional suffix Ki, Mi, Gi, Ti, k, M, G, T (e.g. 64Ki)";
    let t = text.trim();
    let (digits, mult) = SUFFIXES
        .iter()
        .find_map(|(s, m)| t.strip_suffix(s).map(|d| (d, *m)))
        .unwrap_or((t, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(param, text, allowed));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| Error::invalid(param, text, allowed))?;
    n.checked_mul(mult)
        .map(Bytes)
        .ok_or_else(|| Error::invalid(param, text, "a size below 16Ei"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(parse_size("chunkSize", "64Ki").unwrap(), Bytes(65536));
        assert_eq!(parse_size("x", "2Mi").unwrap(), Bytes(2 << 20));
        assert_eq!(parse_size("x", "1G").unwrap(), Bytes(1_000_000_000));
        assert_eq!(parse_size("x", "100M").unwrap(), Bytes(100_000_000));
        assert_eq!(parse_size("x", "4096").unwrap(), Bytes(4096));
        assert_eq!(parse_size("x", "8k").unwrap(), Bytes(8000));
    }

    #[test]
    fn rejects_garbage_naming_param_and_value() {
        for bad in ["", "Ki", "-1", "1.5Gi", "12Q", "0x10", "99999999999999Ei"] {
            let e = parse_size("chunkSize", bad).unwrap_err().to_string();
            assert!(
                e.contains("chunkSize") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,24}") {
            let _ = parse_size("x", &s);
        }

        #[test]
        fn display_round_trips(n in 0u64..(1 << 40)) {
            let b = Bytes(n);
            prop_assert_eq!(parse_size("x", &b.to_string()).unwrap(), b);
        }
    }
}
