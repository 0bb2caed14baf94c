//! Typed sizes. The kernel speaks 512-byte sectors in tables and bytes
//! elsewhere; a newtype for each keeps the two from mixing.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Bytes in one sector as device-mapper counts them.
pub const SECTOR_SIZE: u64 = 512;

/// A length or offset in 512-byte sectors.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct Sectors(pub u64);

/// A length or offset in bytes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct Bytes(pub u64);

impl Sectors {
    /// The same length in bytes.
    pub const fn bytes(self) -> Bytes {
        Bytes(self.0 * SECTOR_SIZE)
    }
}

impl Bytes {
    /// Whole sectors in this many bytes (rounded down).
    pub const fn sectors(self) -> Sectors {
        Sectors(self.0 / SECTOR_SIZE)
    }

    /// True when the length is a whole number of sectors.
    pub const fn is_sector_aligned(self) -> bool {
        self.0.is_multiple_of(SECTOR_SIZE)
    }
}

impl fmt::Display for Sectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

impl fmt::Display for Bytes {
    /// Prints the largest binary unit that divides the value exactly (`64Ki`, `3Gi`, `1000`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 5] = [
            ("Pi", 1 << 50),
            ("Ti", 1 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ];
        for (suffix, unit) in UNITS {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{}", self.0 / unit, suffix);
            }
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_and_bytes_convert_both_ways() {
        assert_eq!(Sectors(8).bytes(), Bytes(4096));
        assert_eq!(Bytes(4096).sectors(), Sectors(8));
        assert!(!Bytes(4097).is_sector_aligned());
    }

    #[test]
    fn bytes_display_uses_exact_binary_units() {
        assert_eq!(Bytes(64 << 10).to_string(), "64Ki");
        assert_eq!(Bytes(3 << 30).to_string(), "3Gi");
        assert_eq!(Bytes(1536).to_string(), "1536");
    }
}
