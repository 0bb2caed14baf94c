//! The node crate's one error type, and the one place it maps to CSI
//! status codes.

use crate::engine::allocator::NoRoom;
use crate::engine::labels::LabelError;
use crate::kernel::dm::DmError;
use crate::kernel::paths::PathError;
use std::path::PathBuf;

/// Something the node could not do, in an operator's words.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The dm-raid model refused the request.
    #[error(transparent)]
    Model(#[from] dmraid_api::Error),
    /// Not enough room on the claimed disks.
    #[error("no room for the volume: {0}")]
    NoRoom(#[from] NoRoom),
    /// A device-mapper call failed.
    #[error(transparent)]
    Dm(#[from] DmError),
    /// A disk label could not be read or written.
    #[error("{path}: {source}")]
    Label {
        /// The disk.
        path: String,
        /// What went wrong.
        source: LabelError,
    },
    /// Disk I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The disk or file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A disk the operator named cannot be claimed.
    #[error("{0}")]
    Claim(String),
    /// No such volume.
    #[error("volume {0} does not exist on this node")]
    NotFound(String),
    /// Same name, different request.
    #[error("volume {0} already exists with a different spec or size")]
    AlreadyExists(String),
    /// The id a CSI name maps to belongs to a volume made for another name.
    #[error("volume name {name:?} maps to id {id}, which belongs to the volume named {owner:?}; choose another name")]
    NameTaken {
        /// The id.
        id: String,
        /// The name asked for.
        name: String,
        /// The name the volume was made for.
        owner: String,
    },
    /// A volume that was made on this node, none of whose disks is here now.
    #[error("volume {id} was made on this node, but {detail}; it is never made again over other disks: it comes back with its data when its disks return")]
    DisksMissing {
        /// The volume.
        id: String,
        /// Which disks are missing, as far as the node knows.
        detail: String,
    },
    /// The volume is in a state that forbids the request.
    #[error("{0}")]
    Precondition(String),
    /// A volume id the node cannot use.
    #[error("volume id {0:?} is not usable: use {rule}", rule = dmraid_api::ids::VOLUME_ID_RULE)]
    BadId(String),
    /// A staging, target or volume path the node will not use.
    #[error("{what} {source}")]
    Path {
        /// The request field (`staging_target_path`, `target_path`, `volume_path`).
        what: &'static str,
        /// Why not.
        source: PathError,
    },
    /// Something other than the volume is mounted where a stage or publish
    /// request points; the node leaves it alone.
    #[error("{path} already has {found} mounted, not volume {volume}")]
    MountedOther {
        /// The staging or target path.
        path: PathBuf,
        /// What is mounted there, as mountinfo or stat tells it.
        found: String,
        /// The volume asked for.
        volume: String,
    },
    /// The volume is not what is mounted at a stats or expand request's path.
    #[error("volume {volume} is not at {path}: {found}")]
    NotAtPath {
        /// The volume_path.
        path: PathBuf,
        /// What is there instead.
        found: String,
        /// The volume asked for.
        volume: String,
    },
    /// Another operation on the same volume is running.
    #[error("an operation on volume {0} is already in flight; retry")]
    Busy(String),
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use dmraid_api::ErrorKind;
        use tonic::Code;
        let code = match &e {
            Error::Model(m) => match m.kind() {
                ErrorKind::InvalidArgument => Code::InvalidArgument,
                ErrorKind::OutOfRange => Code::OutOfRange,
                ErrorKind::Corrupt => Code::Internal,
            },
            Error::NoRoom(_) => Code::ResourceExhausted,
            Error::Dm(_) | Error::Label { .. } | Error::Io { .. } => Code::Internal,
            Error::Claim(_) | Error::Precondition(_) | Error::DisksMissing { .. } => {
                Code::FailedPrecondition
            }
            Error::NotFound(_) => Code::NotFound,
            Error::BadId(_) | Error::Path { .. } => Code::InvalidArgument,
            Error::MountedOther { .. } => Code::AlreadyExists,
            Error::NotAtPath { .. } => Code::NotFound,
            Error::AlreadyExists(_) | Error::NameTaken { .. } => Code::AlreadyExists,
            Error::Busy(_) => Code::Aborted,
        };
        tonic::Status::new(code, e.to_string())
    }
}
