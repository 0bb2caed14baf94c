//! The cluster side of dmraid-csi: the CSI Controller service backed by
//! `RaidVolume`/`RaidNode` objects, the in-process provisioner (for clusters
//! without the CSI sidecar images), the CRD YAML generator, and their errors.

pub mod crds;
pub mod csi;
pub mod error;
pub mod provisioner;
pub mod volume_id;

pub use error::Error;
