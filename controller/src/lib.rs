//! The cluster side of dmraid-csi: the CSI Controller service backed by
//! `RaidVolume`/`RaidNode` objects, the CRD YAML generator, and their errors.

pub mod crds;
pub mod csi;
pub mod error;

pub use error::Error;
