//! The reasons dmraid-csi gives: words on the wire (Kubernetes Events, the
//! RaidVolume's conditions, the log) and types in the code. The node writes
//! them and the controller and the tests read them through these enums, so
//! a reason cannot be spelt one way where it is written and another where
//! it is read.

use std::fmt;

macro_rules! reasons {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every reason, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The CamelCase word, as Kubernetes shows it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)*
                }
            }

            /// The reason a word names, if any.
            pub fn parse(word: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|r| r.as_str() == word)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

reasons!(
    /// Why the node tells of a volume: the reason of each Kubernetes Event
    /// (on the RaidVolume, its PV and PVC) and of the status's recent events.
    EventReason {
        /// A leg failed or its disk went missing (Warning).
        LegFailed,
        /// A leg's disk came back and the leg catches up from the bitmap.
        LegReturned,
        /// An unclean shutdown while degraded: the written regions may be torn (Warning).
        UncleanDegraded,
        /// An unclean shutdown: the bitmap's dirty regions resync.
        UncleanShutdown,
        /// The bitmap-only resync after an unclean shutdown could not be set up (Warning).
        CrashFixRefused,
        /// A leg is rebuilt onto a spare.
        RebuildStarted,
        /// Every leg is in sync again after a rebuild.
        RebuildFinished,
        /// A lost leg's rebuild waits `--rebuild-delay` for its disk.
        RebuildDelayed,
        /// A lost leg cannot be rebuilt yet (no room, no disk; Warning).
        RebuildBlocked,
        /// The initial or post-crash resync finished.
        ResyncFinished,
        /// A check or repair found mismatches (Warning).
        MismatchesFound,
        /// A check (scrub) started.
        CheckStarted,
        /// A check finished with no mismatch.
        CheckFinished,
        /// A leg is far slower than its peers (Warning).
        SlowLeg,
        /// Redundancy is back after an unclean degraded shutdown: the array is checked.
        WriteHoleCheck,
        /// A RaidVolume could not be made, grown or torn down (Warning).
        OperationFailed,
        /// The node of a volume being deleted no longer exists (the controller's; Warning).
        NodeGone,
    }
);

reasons!(
    /// Why an operation on a volume failed, as the node writes it on the
    /// RaidVolume's condition; the controller answers CSI with the code
    /// [`FailureReason::csi_code`] names.
    FailureReason {
        /// No disks with room for the legs.
        NoRoom,
        /// The parameters are not valid.
        InvalidSpec,
        /// A size outside what the volume allows.
        OutOfRange,
        /// Another operation holds the volume.
        Busy,
        /// Not possible in the volume's state (degraded, in use, a disk not claimed).
        NotPossible,
        /// A volume of that name exists with other parameters.
        SpecChanged,
        /// The disks that held the volume are away.
        DisksMissing,
        /// Anything else (a kernel or disk error).
        Internal,
    }
);

/// The CSI status codes a failure maps to (the names of gRPC's codes), the
/// same the standalone driver answers for the same engine error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsiCode {
    ResourceExhausted,
    InvalidArgument,
    AlreadyExists,
    OutOfRange,
    Aborted,
    FailedPrecondition,
    Internal,
}

impl FailureReason {
    /// The code CSI's spec gives this failure.
    pub const fn csi_code(self) -> CsiCode {
        match self {
            FailureReason::NoRoom => CsiCode::ResourceExhausted,
            FailureReason::InvalidSpec => CsiCode::InvalidArgument,
            FailureReason::OutOfRange => CsiCode::OutOfRange,
            FailureReason::Busy => CsiCode::Aborted,
            FailureReason::NotPossible | FailureReason::DisksMissing => CsiCode::FailedPrecondition,
            FailureReason::SpecChanged => CsiCode::AlreadyExists,
            FailureReason::Internal => CsiCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_word() {
        for r in EventReason::ALL {
            assert_eq!(EventReason::parse(r.as_str()), Some(*r));
            assert_eq!(r.to_string(), r.as_str());
        }
        for r in FailureReason::ALL {
            assert_eq!(FailureReason::parse(r.as_str()), Some(*r));
        }
        assert_eq!(EventReason::parse("legfailed"), None);
        assert_eq!(EventReason::LegFailed, "LegFailed");
    }
}
