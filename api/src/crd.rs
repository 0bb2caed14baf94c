//! The cluster objects (group `dmraid.csi.io`, version `v1alpha1`, both
//! cluster-scoped): `RaidVolume`, written by the controller and reconciled
//! by the node that holds the array, and `RaidNode`, one per node, written
//! by that node's plugin. Types only: the chart's CRD YAML is generated from
//! them (`crdgen`), the controller and the node plugin read and write them.

use crate::params::RaidSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every dmraid-csi object.
pub const GROUP: &str = "dmraid.csi.io";
/// Label on a `RaidVolume` naming the node that holds it, so each node
/// plugin watches only its own volumes.
pub const NODE_LABEL: &str = "dmraid.csi.io/node";
/// Finalizer the node plugin keeps on a `RaidVolume` while its array exists.
pub const FINALIZER: &str = "dmraid.csi.io/array";
/// Field manager for every server-side apply of ours.
pub const FIELD_MANAGER: &str = "dmraid-csi";

/// How the volume is consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum VolumeMode {
    /// A filesystem (the StorageClass's fstype) mounted into the pod.
    #[default]
    Filesystem,
    /// The raw block device.
    Block,
}

/// The claim a volume was made for (from the provisioner's extra metadata),
/// so events reach `kubectl describe pvc`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRef {
    /// PVC namespace.
    pub namespace: String,
    /// PVC name.
    pub name: String,
    /// PV name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pv: String,
}

/// A dm-raid array on one node: what the controller asks for.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dmraid.csi.io",
    version = "v1alpha1",
    kind = "RaidVolume",
    plural = "raidvolumes",
    shortname = "rv",
    status = "RaidVolumeStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.raid.raidType"}"#,
    printcolumn = r#"{"name":"Legs","type":"integer","jsonPath":".spec.raid.legs"}"#,
    printcolumn = r#"{"name":"Size","type":"string","jsonPath":".status.size"}"#,
    printcolumn = r#"{"name":"Health","type":"string","jsonPath":".status.health"}"#,
    printcolumn = r#"{"name":"Sync%","type":"string","jsonPath":".status.syncPercent"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RaidVolumeSpec {
    /// The node whose disks hold the array.
    pub node: String,
    /// The name CreateVolume was called with (idempotency key).
    pub csi_name: String,
    /// Bytes asked for; raised by an expansion, never lowered.
    pub requested_bytes: u64,
    /// Sectors of each leg's data extent, as the controller computed it from
    /// the request (informative: the node computes the same with the same code).
    #[serde(default)]
    pub leg_sectors: u64,
    /// Filesystem or block.
    #[serde(default)]
    pub volume_mode: VolumeMode,
    /// The validated StorageClass parameters.
    pub raid: RaidSpec,
    /// The claim this volume backs, when the provisioner said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<ClaimRef>,
}

/// Where a volume is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Written by the controller, not yet seen by the node.
    #[default]
    Pending,
    /// The array is active and usable (it may be degraded or syncing; see health).
    Ready,
    /// The node could not make the array; the Ready condition says why.
    Failed,
    /// Being torn down.
    Deleting,
}

/// One leg as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegStatus {
    /// Position in the array.
    pub index: u32,
    /// in-sync, syncing, failed or missing.
    pub state: String,
    /// The disk it lives on, empty when that disk is gone.
    #[serde(default)]
    pub disk: String,
}

/// One thing that happened to the array (the newest few are kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeEvent {
    /// RFC 3339 time.
    pub time: String,
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: String,
    /// CamelCase reason (LegFailed, RebuildStarted, ...).
    pub reason: String,
    /// What happened, in words.
    pub message: String,
}

/// What the node reports of the array.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaidVolumeStatus {
    /// Life-cycle phase.
    #[serde(default)]
    pub phase: Phase,
    /// healthy, degraded, rebuilding, resyncing, scrubbing, failed, inactive.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health: String,
    /// The CSI volume condition's message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The CSI volume condition's abnormal flag.
    #[serde(default)]
    pub abnormal: bool,
    /// Usable bytes of the array.
    #[serde(default)]
    pub capacity_bytes: u64,
    /// The same, for people (e.g. "1Gi").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub size: String,
    /// The array's block device on the node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
    /// Per-leg state and disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<LegStatus>,
    /// The kernel's sync action (idle, resync, recover, check, repair, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sync_action: String,
    /// Sync progress as a whole percentage, as text for the printer column.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sync_percent: String,
    /// Estimated time left of a running resync or rebuild.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub eta: String,
    /// Mismatched sectors found by the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mismatch_count: Option<u64>,
    /// Ready, Degraded, Rebuilding, Resyncing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The newest events, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_events: Vec<VolumeEvent>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A node's claimed disks and room, written by that node's plugin. The
/// object's name is the node's name.
#[derive(CustomResource, Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dmraid.csi.io",
    version = "v1alpha1",
    kind = "RaidNode",
    plural = "raidnodes",
    shortname = "rn",
    status = "RaidNodeStatus",
    printcolumn = r#"{"name":"Disks","type":"integer","jsonPath":".status.diskCount"}"#,
    printcolumn = r#"{"name":"Volumes","type":"integer","jsonPath":".status.volumeCount"}"#,
    printcolumn = r#"{"name":"Free","type":"string","jsonPath":".status.free"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RaidNodeSpec {
    /// Disk paths or globs the node plugin was told to claim.
    #[serde(default)]
    pub disk_globs: Vec<String>,
}

/// One claimed disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskStatus {
    /// Device path on the node.
    pub path: String,
    /// The disk label's UUID.
    pub id: String,
    /// Bytes of the disk.
    pub size_bytes: u64,
    /// Bytes not allocated to any extent.
    pub free_bytes: u64,
    /// Free extents' lengths in 512-byte sectors (what capacity is computed from).
    #[serde(default)]
    pub free_extents: Vec<u64>,
    /// claimed (usable) or another word saying why not.
    pub state: String,
}

/// The largest new volume of one RAID layout that fits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LayoutCapacity {
    /// RAID type.
    pub raid_type: String,
    /// Legs.
    pub legs: u32,
    /// Bytes of the largest volume.
    pub largest_bytes: u64,
}

/// What a node has.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaidNodeStatus {
    /// Claimed disks.
    #[serde(default)]
    pub disks: Vec<DiskStatus>,
    /// Number of claimed disks (printer column).
    #[serde(default)]
    pub disk_count: u32,
    /// Volume ids held on this node.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Number of volumes (printer column).
    #[serde(default)]
    pub volume_count: u32,
    /// Free bytes over all disks, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub free: String,
    /// Largest volume per common layout, for people (GetCapacity computes
    /// from `disks[].freeExtents` for any StorageClass).
    #[serde(default)]
    pub capacity: Vec<LayoutCapacity>,
    /// Disks matching the globs that were not claimed, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// RFC 3339 time of the last report.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub updated: String,
}

impl RaidNodeStatus {
    /// Free extents per disk, the input of [`crate::capacity::largest_volume`].
    pub fn free_extents(&self) -> Vec<Vec<crate::units::Sectors>> {
        self.disks
            .iter()
            .filter(|d| d.state == "claimed")
            .map(|d| {
                d.free_extents
                    .iter()
                    .map(|s| crate::units::Sectors(*s))
                    .collect()
            })
            .collect()
    }
}

/// Bytes for people, in binary units ("1Gi", "1536Mi", "512").
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u32); 5] = [("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
    for (name, shift) in UNITS {
        let unit = 1u64 << shift;
        if b >= unit {
            if b.is_multiple_of(unit) {
                return format!("{}{name}", b >> shift);
            }
            let whole = b as f64 / unit as f64;
            if whole >= 10.0 {
                return format!("{whole:.0}{name}");
            }
            return format!("{whole:.1}{name}");
        }
    }
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::{CustomResourceExt, Resource};

    #[test]
    fn crds_are_cluster_scoped_in_our_group() {
        for crd in [RaidVolume::crd(), RaidNode::crd()] {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Cluster");
            assert_eq!(crd.spec.versions[0].name, "v1alpha1");
            assert!(crd.spec.versions[0].subresources.is_some());
        }
        assert_eq!(RaidVolume::plural(&()), "raidvolumes");
    }

    #[test]
    fn raid_volume_printer_columns_are_the_operators_view() {
        let crd = RaidVolume::crd();
        let cols: Vec<String> = crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.to_uppercase())
            .collect();
        assert_eq!(
            cols,
            ["NODE", "TYPE", "LEGS", "SIZE", "HEALTH", "SYNC%", "AGE"]
        );
    }

    #[test]
    fn schema_names_the_raid_types_the_parser_accepts() {
        let yaml = serde_json::to_string(&RaidVolume::crd()).unwrap();
        for t in ["raid1", "raid5_ls", "raid6_zr", "raid10"] {
            assert!(
                yaml.contains(&format!("\"{t}\"")),
                "{t} missing from the schema"
            );
        }
    }

    #[test]
    fn spec_round_trips_through_json() {
        let p: std::collections::BTreeMap<String, String> =
            [("raidType".to_string(), "raid5_ls".to_string())].into();
        let spec = RaidVolumeSpec {
            node: "n1".into(),
            csi_name: "pvc-1".into(),
            requested_bytes: 1 << 30,
            leg_sectors: 1 << 20,
            volume_mode: VolumeMode::Filesystem,
            raid: RaidSpec::from_parameters(&p).unwrap(),
            claim: None,
        };
        let j = serde_json::to_value(&spec).unwrap();
        assert_eq!(j["raid"]["raidType"], "raid5_ls");
        let back: RaidVolumeSpec = serde_json::from_value(j).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn human_bytes_reads_like_kubectl() {
        assert_eq!(human_bytes(1 << 30), "1Gi");
        assert_eq!(human_bytes(1536 << 20), "1.5Gi");
        assert_eq!(human_bytes(100 << 20), "100Mi");
        assert_eq!(human_bytes(512), "512");
    }
}
