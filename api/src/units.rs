//! Typed sizes. The kernel speaks 512-byte sectors in tables and bytes
//! elsewhere; a newtype for each keeps the two from mixing.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, Sub, SubAssign};

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

/// Arithmetic within one unit. `+`, `-`, `+=`, `-=` and `* u64` behave as
/// on `u64`: they panic on overflow in debug builds and wrap in release, so
/// use them where the operands are known to fit (lengths within a disk);
/// `checked_*` returns `None` instead, `saturating_sub` stops at zero.
macro_rules! unit_ops {
    ($unit:ident) => {
        impl $unit {
            /// `self + rhs`, or `None` on overflow.
            pub const fn checked_add(self, rhs: $unit) -> Option<$unit> {
                match self.0.checked_add(rhs.0) {
                    Some(n) => Some($unit(n)),
                    None => None,
                }
            }

            /// `self - rhs`, or `None` when `rhs` is larger.
            pub const fn checked_sub(self, rhs: $unit) -> Option<$unit> {
                match self.0.checked_sub(rhs.0) {
                    Some(n) => Some($unit(n)),
                    None => None,
                }
            }

            /// `self - rhs`, or zero when `rhs` is larger.
            pub const fn saturating_sub(self, rhs: $unit) -> $unit {
                $unit(self.0.saturating_sub(rhs.0))
            }

            /// True for a length of zero.
            pub const fn is_zero(&self) -> bool {
                self.0 == 0
            }
        }

        impl Add for $unit {
            type Output = $unit;
            fn add(self, rhs: $unit) -> $unit {
                $unit(self.0 + rhs.0)
            }
        }

        impl Sub for $unit {
            type Output = $unit;
            fn sub(self, rhs: $unit) -> $unit {
                $unit(self.0 - rhs.0)
            }
        }

        impl AddAssign for $unit {
            fn add_assign(&mut self, rhs: $unit) {
                self.0 += rhs.0;
            }
        }

        impl SubAssign for $unit {
            fn sub_assign(&mut self, rhs: $unit) {
                self.0 -= rhs.0;
            }
        }

        impl Mul<u64> for $unit {
            type Output = $unit;
            fn mul(self, rhs: u64) -> $unit {
                $unit(self.0 * rhs)
            }
        }

        impl Div<u64> for $unit {
            type Output = $unit;
            /// Rounds down; panics when `rhs` is zero, like `u64`.
            fn div(self, rhs: u64) -> $unit {
                $unit(self.0 / rhs)
            }
        }

        impl Sum for $unit {
            fn sum<I: Iterator<Item = $unit>>(iter: I) -> $unit {
                $unit(iter.map(|u| u.0).sum())
            }
        }

        impl<'a> Sum<&'a $unit> for $unit {
            fn sum<I: Iterator<Item = &'a $unit>>(iter: I) -> $unit {
                iter.copied().sum()
            }
        }
    };
}

unit_ops!(Sectors);
unit_ops!(Bytes);

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
    #[test]
    fn same_unit_adds_and_subtracts() {
        assert_eq!(Sectors(3) + Sectors(4), Sectors(7));
        assert_eq!(Sectors(7) - Sectors(4), Sectors(3));
        assert_eq!(Bytes(3) + Bytes(4), Bytes(7));
        assert_eq!(Bytes(7) - Bytes(4), Bytes(3));
        let mut s = Sectors(10);
        s += Sectors(5);
        assert_eq!(s, Sectors(15));
        s -= Sectors(15);
        assert_eq!(s, Sectors(0));
        let mut b = Bytes(1);
        b += Bytes(1);
        b -= Bytes(2);
        assert_eq!(b, Bytes(0));
    }

    #[test]
    fn scales_by_a_count() {
        assert_eq!(Sectors(8) * 3, Sectors(24));
        assert_eq!(Sectors(25) / 3, Sectors(8));
        assert_eq!(Bytes(4096) * 2, Bytes(8192));
        assert_eq!(Bytes(4097) / 2, Bytes(2048));
    }

    #[test]
    fn checked_ops_return_none_on_overflow() {
        assert_eq!(Sectors(1).checked_add(Sectors(2)), Some(Sectors(3)));
        assert_eq!(Sectors(u64::MAX).checked_add(Sectors(1)), None);
        assert_eq!(Sectors(3).checked_sub(Sectors(2)), Some(Sectors(1)));
        assert_eq!(Sectors(2).checked_sub(Sectors(3)), None);
        assert_eq!(Bytes(u64::MAX).checked_add(Bytes(1)), None);
        assert_eq!(Bytes(0).checked_sub(Bytes(1)), None);
        assert_eq!(Bytes(5).checked_sub(Bytes(5)), Some(Bytes(0)));
    }

    #[test]
    fn saturating_sub_stops_at_zero() {
        assert_eq!(Sectors(5).saturating_sub(Sectors(2)), Sectors(3));
        assert_eq!(Sectors(2).saturating_sub(Sectors(5)), Sectors(0));
        assert_eq!(Bytes(2).saturating_sub(Bytes(5)), Bytes(0));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic]
    fn plain_add_panics_on_overflow_in_debug() {
        let _ = Sectors(u64::MAX) + Sectors(1);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic]
    fn plain_sub_panics_on_underflow_in_debug() {
        let _ = Bytes(0) - Bytes(1);
    }

    #[test]
    fn sums_owned_and_borrowed() {
        let v = [Sectors(1), Sectors(2), Sectors(3)];
        assert_eq!(v.iter().sum::<Sectors>(), Sectors(6));
        assert_eq!(v.into_iter().sum::<Sectors>(), Sectors(6));
        assert_eq!(std::iter::empty::<Bytes>().sum::<Bytes>(), Bytes(0));
        assert_eq!([Bytes(512), Bytes(512)].iter().sum::<Bytes>(), Bytes(1024));
    }

    #[test]
    fn is_zero_and_serializes_as_a_bare_number() {
        assert!(Sectors(0).is_zero() && !Sectors(1).is_zero());
        assert!(Bytes::default().is_zero());
        assert_eq!(serde_json::to_string(&Sectors(2048)).unwrap(), "2048");
        assert_eq!(serde_json::from_str::<Sectors>("7").unwrap(), Sectors(7));
    }
}
