//! The dm-raid model shared by the controller and the node: StorageClass
//! parameters, the raid table spec and its rendering, the status parser and
//! health model, capacity arithmetic, the sync translation and the on-disk
//! superblock. Pure code: no I/O of any kind, so every rule here is tested
//! exhaustively.

pub mod capacity;
pub mod crd;
pub mod error;
pub mod ids;
pub mod params;
pub mod quantity;
pub mod raid_type;
pub mod reasons;
pub mod redundancy;
pub mod status;
pub mod superblock;
pub mod sync;
pub mod table;
pub mod units;

pub use error::{Error, ErrorKind};
pub use ids::{DiskUuid, VolumeId};
pub use params::RaidSpec;
pub use raid_type::RaidType;
pub use reasons::{EventReason, FailureReason};
pub use status::RaidStatus;
pub use table::{LegDevs, RaidTable};
