//! Checks of CSI requests that every Controller service makes the same way:
//! volume capabilities (single-node modes only, an access type required)
//! and the capacity range.

use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::{CapacityRange, VolumeCapability};
use tonic::Status;

/// Size of a volume when the request names none (CSI leaves it to the plugin).
pub const DEFAULT_SIZE: u64 = 1 << 30;

/// Every capability must be a single-node mode with an access type.
pub fn check_capabilities(caps: &[VolumeCapability]) -> Result<(), Status> {
    if caps.is_empty() {
        return Err(Status::invalid_argument("volume_capabilities is required"));
    }
    for c in caps {
        let mode = c.access_mode.as_ref().map(|m| m.mode).unwrap_or(0);
        let ok = [
            Mode::SingleNodeWriter,
            Mode::SingleNodeReaderOnly,
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
        ]
        .iter()
        .any(|m| *m as i32 == mode);
        if !ok {
            return Err(Status::invalid_argument(format!(
                "access mode {} is not supported: dmraid-csi volumes are local to one node (use a SINGLE_NODE_* mode)",
                Mode::try_from(mode).map(|m| m.as_str_name()).unwrap_or("UNKNOWN")
            )));
        }
        if c.access_type.is_none() {
            return Err(Status::invalid_argument(
                "volume capability needs an access type (block or mount)",
            ));
        }
    }
    Ok(())
}

/// Whether any capability asks for a raw block device.
pub fn wants_block(caps: &[VolumeCapability]) -> bool {
    caps.iter().any(|c| {
        matches!(
            c.access_type,
            Some(crate::csi::volume_capability::AccessType::Block(_))
        )
    })
}

/// Bytes to allocate for a capacity range, and the limit (if any).
pub fn requested_size(range: Option<&CapacityRange>) -> Result<(u64, Option<u64>), Status> {
    let range = range.cloned().unwrap_or_default();
    if range.required_bytes < 0 || range.limit_bytes < 0 {
        return Err(Status::invalid_argument(
            "capacity_range bytes must not be negative",
        ));
    }
    if range.limit_bytes > 0 && range.required_bytes > range.limit_bytes {
        return Err(Status::invalid_argument(format!(
            "capacity_range required_bytes {} is above limit_bytes {}",
            range.required_bytes, range.limit_bytes
        )));
    }
    let size = match (range.required_bytes, range.limit_bytes) {
        (0, 0) => DEFAULT_SIZE,
        (0, limit) => (limit as u64).min(DEFAULT_SIZE),
        (req, _) => req as u64,
    };
    let limit = (range.limit_bytes > 0).then_some(range.limit_bytes as u64);
    Ok((size, limit))
}

/// ListVolumes paging over `total` entries: (first index, next_token) for a
/// starting_token this driver issued (the index as text) and max_entries.
pub fn page(
    total: usize,
    starting_token: &str,
    max_entries: i32,
) -> Result<(usize, usize), Status> {
    let start = if starting_token.is_empty() {
        0
    } else {
        starting_token
            .parse()
            .ok()
            .filter(|s| *s <= total)
            .ok_or_else(|| {
                Status::aborted(format!(
                    "starting_token {starting_token:?} is not one this driver issued"
                ))
            })?
    };
    let max = if max_entries > 0 {
        max_entries as usize
    } else {
        usize::MAX
    };
    Ok((start, start.saturating_add(max).min(total)))
}

/// The token for the page after one that ended at `end` of `total`.
pub fn next_token(end: usize, total: usize) -> String {
    if end < total {
        end.to_string()
    } else {
        String::new()
    }
}

/// The answer to every snapshot call: we do not offer them.
pub fn snapshots_not_offered() -> Status {
    Status::unimplemented("snapshots are not offered by dmraid-csi")
}

/// What both Controller services (standalone and cluster) offer.
pub fn controller_capabilities() -> Vec<crate::csi::ControllerServiceCapability> {
    use crate::csi::controller_service_capability::{self as cap, rpc::Type};
    [
        Type::CreateDeleteVolume,
        Type::ListVolumes,
        Type::GetCapacity,
        Type::ExpandVolume,
        Type::VolumeCondition,
        Type::GetVolume,
    ]
    .into_iter()
    .map(|t| crate::csi::ControllerServiceCapability {
        r#type: Some(cap::Type::Rpc(cap::Rpc { r#type: t as i32 })),
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::volume_capability::{AccessMode, AccessType, BlockVolume};

    fn cap(mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(AccessType::Block(BlockVolume {})),
        }
    }

    #[test]
    fn multi_node_modes_are_refused_with_the_reason() {
        let e = check_capabilities(&[cap(Mode::MultiNodeMultiWriter)]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("local to one node"), "{}", e.message());
        check_capabilities(&[cap(Mode::SingleNodeWriter)]).unwrap();
        assert!(wants_block(&[cap(Mode::SingleNodeWriter)]));
    }

    #[test]
    fn pages_and_tokens() {
        assert_eq!(page(5, "", 0).unwrap(), (0, 5));
        assert_eq!(page(5, "", 2).unwrap(), (0, 2));
        assert_eq!(page(5, "4", 2).unwrap(), (4, 5));
        assert_eq!(next_token(2, 5), "2");
        assert_eq!(next_token(5, 5), "");
        assert_eq!(page(5, "6", 0).unwrap_err().code(), tonic::Code::Aborted);
        assert_eq!(page(5, "x", 0).unwrap_err().code(), tonic::Code::Aborted);
    }

    #[test]
    fn capacity_ranges() {
        assert_eq!(requested_size(None).unwrap(), (DEFAULT_SIZE, None));
        let r = |req, lim| CapacityRange {
            required_bytes: req,
            limit_bytes: lim,
        };
        assert_eq!(requested_size(Some(&r(5, 0))).unwrap(), (5, None));
        assert_eq!(requested_size(Some(&r(0, 7))).unwrap(), (7, Some(7)));
        assert_eq!(
            requested_size(Some(&r(10, 9))).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            requested_size(Some(&r(-1, 0))).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
