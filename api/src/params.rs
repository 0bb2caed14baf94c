//! StorageClass parameters → a validated [`RaidSpec`].
//!
//! Every rule that does not depend on the volume's size is checked here, so
//! a bad StorageClass fails at CreateVolume before anything is written.
//! Size-dependent rules (region count, divisibility) are checked when the
//! table is built ([`crate::table`]).

use crate::error::{Error, Result};
use crate::quantity::parse_size;
use crate::raid_type::RaidType;
use crate::units::{Bytes, Sectors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the array's initial synchronisation is handled.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Let the kernel decide: a new array is fully resynchronised.
    #[default]
    Default,
    /// Force a full resynchronisation.
    Sync,
    /// Skip the initial resynchronisation (not for raid6 on a new set).
    Nosync,
}

/// raid10 copy placement.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Raid10Format {
    /// Copies in adjacent stripes (the default).
    #[default]
    Near,
    /// Copies far apart on each device.
    Far,
    /// Copies offset by one chunk.
    Offset,
}

impl Raid10Format {
    /// The table word.
    pub fn name(self) -> &'static str {
        match self {
            Raid10Format::Near => "near",
            Raid10Format::Far => "far",
            Raid10Format::Offset => "offset",
        }
    }
}

/// The filesystem made on a mount-mode volume.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    /// ext4 (the default).
    #[default]
    Ext4,
    /// xfs.
    Xfs,
}

/// Everything a StorageClass says about an array, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaidSpec {
    /// RAID type and layout.
    pub raid_type: RaidType,
    /// Devices in the array.
    pub legs: u32,
    /// Stripe chunk (ignored, and rendered as 0, for raid1).
    pub chunk_size: Bytes,
    /// Write-intent bitmap granularity; `None` picks it from the volume size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_size: Option<Bytes>,
    /// Initial synchronisation policy.
    #[serde(default)]
    pub sync: SyncPolicy,
    /// raid10: copies of each chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid10_copies: Option<u32>,
    /// raid10: copy placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid10_format: Option<Raid10Format>,
    /// raid1: legs that are only read when no other leg can serve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write_mostly: Vec<u32>,
    /// raid1: write-behind limit for write-mostly legs, in sectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_write_behind: Option<u32>,
    /// Bitmap flush interval in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_sleep: Option<u32>,
    /// raid4/5/6: stripe cache entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_cache: Option<u32>,
    /// Per-device recovery floor, bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_recovery_rate: Option<Bytes>,
    /// Per-device recovery ceiling, bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recovery_rate: Option<Bytes>,
    /// Filesystem for mount-mode volumes.
    #[serde(default)]
    pub fs_type: FsType,
}

/// The StorageClass keys dmraid-csi understands.
pub const KEYS: [&str; 15] = [
    "raidType",
    "legs",
    "chunkSize",
    "regionSize",
    "sync",
    "raid10Copies",
    "raid10Format",
    "writeMostly",
    "maxWriteBehind",
    "daemonSleep",
    "stripeCache",
    "minRecoveryRate",
    "maxRecoveryRate",
    "fsType",
    "csi.storage.k8s.io/fstype",
];

/// Default stripe chunk for striped types (LVM's default too).
pub const DEFAULT_CHUNK: Bytes = Bytes(64 << 10);
/// Smallest chunk: dm-raid refuses chunks under 8 sectors.
pub const MIN_CHUNK: Bytes = Bytes(4 << 10);
/// Largest chunk we offer (md's limit is far higher; larger chunks only waste space).
pub const MAX_CHUNK: Bytes = Bytes(2 << 20);
/// dm-raid keeps at most 2^21 regions in the write-intent bitmap.
pub const MAX_REGIONS: u64 = 1 << 21;
/// Default region size when the volume is small enough (LVM's default).
pub const DEFAULT_REGION: Bytes = Bytes(2 << 20);
/// md accepts 17..=32768 stripe cache entries.
pub const STRIPE_CACHE: std::ops::RangeInclusive<u32> = 17..=32768;
/// md's write-behind counter holds 16383; dm-raid halves the sector count first.
pub const MAX_WRITE_BEHIND: u32 = 2 * 16383;

fn parse_u32(param: &'static str, text: &str, allowed: &str) -> Result<u32> {
    text.trim()
        .parse::<u32>()
        .map_err(|_| Error::invalid(param, text, allowed))
}

fn power_of_two_size(param: &'static str, text: &str, min: Bytes, max: Bytes) -> Result<Bytes> {
    let b = parse_size(param, text)?;
    if !b.0.is_power_of_two() || b < min || b > max {
        return Err(Error::invalid(
            param,
            text,
            format!("a power of two from {min} to {max}"),
        ));
    }
    Ok(b)
}

impl RaidSpec {
    /// [`RaidSpec::from_parameters`] of `key, value` pairs (tests, tools).
    pub fn from_pairs(kv: &[(&str, &str)]) -> Result<RaidSpec> {
        RaidSpec::from_parameters(
            &kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Parse and validate StorageClass parameters. Unknown keys are errors;
    /// `csi.storage.k8s.io/*` keys other than fstype are the sidecars' and are passed over.
    pub fn from_parameters(params: &BTreeMap<String, String>) -> Result<RaidSpec> {
        for key in params.keys() {
            if key == "rebuild" {
                return Err(Error::invalid(
                    "rebuild",
                    &params[key],
                    "nothing: the driver sets rebuild itself when it replaces a failed leg",
                ));
            }
            if !KEYS.contains(&key.as_str()) && !key.starts_with("csi.storage.k8s.io/") {
                return Err(Error::UnknownKey {
                    key: key.clone(),
                    allowed: KEYS[..14].join(", "),
                });
            }
        }
        let get = |k: &str| params.get(k).map(String::as_str);
        let raid_type = RaidType::parse(get("raidType").ok_or(Error::Missing("raidType"))?.trim())?;
        let legs = match get("legs") {
            Some(v) => parse_u32("legs", v, "a whole number of devices")?,
            None => raid_type.min_legs(),
        };
        let chunk_size = match (raid_type.uses_chunk(), get("chunkSize")) {
            (false, _) => Bytes(0),
            (true, Some(v)) => power_of_two_size("chunkSize", v, MIN_CHUNK, MAX_CHUNK)?,
            (true, None) => DEFAULT_CHUNK,
        };
        let region_size = get("regionSize")
            .map(|v| power_of_two_size("regionSize", v, MIN_CHUNK, Bytes(1 << 40)))
            .transpose()?;
        let sync = match get("sync").map(str::trim) {
            None | Some("default") => SyncPolicy::Default,
            Some("sync") => SyncPolicy::Sync,
            Some("nosync") => SyncPolicy::Nosync,
            Some(v) => return Err(Error::invalid("sync", v, "default, sync or nosync")),
        };
        let raid10_copies = get("raid10Copies")
            .map(|v| parse_u32("raid10Copies", v, "2 or more, at most legs"))
            .transpose()?;
        let raid10_format = match get("raid10Format").map(str::trim) {
            None => None,
            Some("near") => Some(Raid10Format::Near),
            Some("far") => Some(Raid10Format::Far),
            Some("offset") => Some(Raid10Format::Offset),
            Some(v) => return Err(Error::invalid("raid10Format", v, "near, far or offset")),
        };
        let write_mostly = match get("writeMostly") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(|i| parse_u32("writeMostly", i, "comma-separated leg indexes, e.g. 1,2"))
                .collect::<Result<Vec<_>>>()?,
        };
        let max_write_behind = get("maxWriteBehind")
            .map(|v| parse_u32("maxWriteBehind", v, "sectors, 0..=32766"))
            .transpose()?;
        let daemon_sleep = get("daemonSleep")
            .map(|v| parse_u32("daemonSleep", v, "milliseconds, 1..=86400000"))
            .transpose()?;
        let stripe_cache = get("stripeCache")
            .map(|v| parse_u32("stripeCache", v, "17..=32768 entries"))
            .transpose()?;
        let rate = |k: &'static str| get(k).map(|v| parse_size(k, v)).transpose();
        let min_recovery_rate = rate("minRecoveryRate")?;
        let max_recovery_rate = rate("maxRecoveryRate")?;
        let fs_type = match get("fsType")
            .or(get("csi.storage.k8s.io/fstype"))
            .map(str::trim)
        {
            None | Some("") | Some("ext4") => FsType::Ext4,
            Some("xfs") => FsType::Xfs,
            Some(v) => return Err(Error::invalid("fsType", v, "ext4 or xfs")),
        };
        let spec = RaidSpec {
            raid_type,
            legs,
            chunk_size,
            region_size,
            sync,
            raid10_copies,
            raid10_format,
            write_mostly,
            max_write_behind,
            daemon_sleep,
            stripe_cache,
            min_recovery_rate,
            max_recovery_rate,
            fs_type,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Check every rule that does not need the volume size. Also used on
    /// specs read back from disk labels or edited objects.
    pub fn validate(&self) -> Result<()> {
        let t = self.raid_type;
        if self.legs < t.min_legs() || self.legs > 64 {
            return Err(Error::invalid(
                "legs",
                self.legs,
                format!("{} to 64 devices for {t}", t.min_legs()),
            ));
        }
        if t.uses_chunk() {
            let c = self.chunk_size;
            if !c.0.is_power_of_two() || c < MIN_CHUNK || c > MAX_CHUNK {
                return Err(Error::invalid(
                    "chunkSize",
                    c,
                    format!("a power of two from {MIN_CHUNK} to {MAX_CHUNK}"),
                ));
            }
        } else if self.chunk_size != Bytes(0) {
            return Err(Error::invalid(
                "chunkSize",
                self.chunk_size,
                "0 for raid1 (mirrors have no chunks)",
            ));
        }
        if let Some(r) = self.region_size {
            // dm-raid: "Supplied region size (...) too small" below the chunk.
            if !r.0.is_power_of_two() || r < MIN_CHUNK || r < self.chunk_size {
                return Err(Error::invalid(
                    "regionSize",
                    r,
                    format!(
                        "a power of two, at least 4Ki and at least chunkSize ({})",
                        self.chunk_size
                    ),
                ));
            }
        }
        if self.sync == SyncPolicy::Nosync && t.level() == 6 {
            // dm-raid refuses nosync on a new raid6 set: parity must be computed.
            return Err(Error::invalid(
                "sync",
                "nosync",
                format!("default or sync for {t}: the kernel refuses nosync on a new raid6 set"),
            ));
        }
        let is10 = t == RaidType::Raid10;
        match (is10, self.raid10_copies) {
            (false, Some(c)) => {
                return Err(Error::invalid(
                    "raid10Copies",
                    c,
                    "only with raidType raid10",
                ))
            }
            (true, Some(c)) if c < 2 || c > self.legs => {
                return Err(Error::invalid(
                    "raid10Copies",
                    c,
                    format!("2 to legs ({})", self.legs),
                ))
            }
            _ => {}
        }
        if !is10 && self.raid10_format.is_some() {
            return Err(Error::invalid(
                "raid10Format",
                self.raid10_format.map(|f| f.name()).unwrap_or(""),
                "only with raidType raid10",
            ));
        }
        let is1 = t == RaidType::Raid1;
        if !self.write_mostly.is_empty() {
            if !is1 {
                return Err(Error::invalid(
                    "writeMostly",
                    self.joined_write_mostly(),
                    "only with raidType raid1",
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for &i in &self.write_mostly {
                if i >= self.legs || !seen.insert(i) {
                    return Err(Error::invalid(
                        "writeMostly",
                        self.joined_write_mostly(),
                        format!("distinct leg indexes 0..{}", self.legs - 1),
                    ));
                }
            }
            if seen.len() as u32 == self.legs {
                return Err(Error::invalid(
                    "writeMostly",
                    self.joined_write_mostly(),
                    "fewer than all legs: some leg must serve reads",
                ));
            }
        }
        if let Some(w) = self.max_write_behind {
            if !is1 {
                return Err(Error::invalid(
                    "maxWriteBehind",
                    w,
                    "only with raidType raid1",
                ));
            }
            if w > MAX_WRITE_BEHIND {
                return Err(Error::invalid(
                    "maxWriteBehind",
                    w,
                    format!("0..={MAX_WRITE_BEHIND} sectors"),
                ));
            }
        }
        if let Some(d) = self.daemon_sleep {
            if d == 0 || d > 86_400_000 {
                return Err(Error::invalid(
                    "daemonSleep",
                    d,
                    "milliseconds, 1..=86400000",
                ));
            }
        }
        if let Some(s) = self.stripe_cache {
            if !t.is_parity() {
                return Err(Error::invalid(
                    "stripeCache",
                    s,
                    "only with raid4, raid5 and raid6 types",
                ));
            }
            if !STRIPE_CACHE.contains(&s) {
                return Err(Error::invalid("stripeCache", s, "17..=32768 entries"));
            }
        }
        for (k, r) in [
            ("minRecoveryRate", self.min_recovery_rate),
            ("maxRecoveryRate", self.max_recovery_rate),
        ] {
            if let Some(r) = r {
                if r.0 < 1024 || r.0 / 1024 > i32::MAX as u64 {
                    return Err(Error::invalid(k, r, "1Ki per second up to 2Ti per second"));
                }
            }
        }
        if let (Some(lo), Some(hi)) = (self.min_recovery_rate, self.max_recovery_rate) {
            if lo > hi {
                return Err(Error::invalid(
                    "minRecoveryRate",
                    lo,
                    format!("at most maxRecoveryRate ({hi})"),
                ));
            }
        }
        Ok(())
    }

    fn joined_write_mostly(&self) -> String {
        self.write_mostly
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// raid10 copies (2 unless set); 1 for other types.
    pub fn copies(&self) -> u32 {
        if self.raid_type == RaidType::Raid10 {
            self.raid10_copies.unwrap_or(2)
        } else {
            1
        }
    }

    /// The chunk in sectors (0 for raid1).
    pub fn chunk_sectors(&self) -> Sectors {
        self.chunk_size.sectors()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err(kv: &[(&str, &str)]) -> String {
        RaidSpec::from_parameters(&params(kv))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_the_design_example() {
        let s = RaidSpec::from_parameters(&params(&[
            ("raidType", "raid5_ls"),
            ("legs", "4"),
            ("chunkSize", "64Ki"),
            ("regionSize", "2Mi"),
            ("sync", "default"),
            ("maxRecoveryRate", "100Mi"),
            ("csi.storage.k8s.io/fstype", "xfs"),
        ]))
        .unwrap();
        assert_eq!(s.raid_type, RaidType::Raid5_ls);
        assert_eq!(s.legs, 4);
        assert_eq!(s.chunk_sectors(), Sectors(128));
        assert_eq!(s.region_size, Some(Bytes(2 << 20)));
        assert_eq!(s.fs_type, FsType::Xfs);
        assert_eq!(s.max_recovery_rate, Some(Bytes(100 << 20)));
    }

    #[test]
    fn defaults_fill_in() {
        let s = RaidSpec::from_parameters(&params(&[("raidType", "raid6_zr")])).unwrap();
        assert_eq!(
            (s.legs, s.chunk_size, s.sync),
            (4, DEFAULT_CHUNK, SyncPolicy::Default)
        );
        let m = RaidSpec::from_parameters(&params(&[("raidType", "raid1"), ("chunkSize", "64Ki")]))
            .unwrap();
        assert_eq!(m.chunk_size, Bytes(0), "raid1 passes chunk 0");
    }

    #[test]
    fn rejects_unknown_keys_listing_allowed_ones() {
        let e = err(&[("raidType", "raid1"), ("raidLevel", "1")]);
        assert!(
            e.contains("\"raidLevel\"") && e.contains("chunkSize"),
            "{e}"
        );
        // the sidecars' own keys are passed over
        RaidSpec::from_parameters(&params(&[
            ("raidType", "raid1"),
            ("csi.storage.k8s.io/pvc/name", "x"),
        ]))
        .unwrap();
    }

    #[test]
    fn rejects_rebuild_as_a_storageclass_key() {
        assert!(err(&[("raidType", "raid1"), ("rebuild", "1")]).contains("the driver sets rebuild"));
    }

    #[test]
    fn rejects_odd_chunk_size() {
        let e = err(&[("raidType", "raid5_ls"), ("chunkSize", "48Ki")]);
        assert!(
            e.contains("chunkSize") && e.contains("48Ki") && e.contains("power of two"),
            "{e}"
        );
        assert!(err(&[("raidType", "raid5_ls"), ("chunkSize", "2Ki")]).contains("4Ki"));
    }

    #[test]
    fn rejects_too_few_legs_per_level() {
        for (t, n, min) in [
            ("raid1", "1", "2"),
            ("raid5_ls", "2", "3"),
            ("raid6_zr", "3", "4"),
            ("raid10", "1", "2"),
            ("raid4", "2", "3"),
        ] {
            let e = err(&[("raidType", t), ("legs", n)]);
            assert!(
                e.contains("legs") && e.contains(&format!("{min} to 64")),
                "{e}"
            );
        }
    }

    #[test]
    fn rejects_region_smaller_than_chunk() {
        let e = err(&[
            ("raidType", "raid5_ls"),
            ("chunkSize", "1Mi"),
            ("regionSize", "512Ki"),
        ]);
        assert!(
            e.contains("regionSize") && e.contains("at least chunkSize"),
            "{e}"
        );
    }

    #[test]
    fn rejects_nosync_for_raid6() {
        assert!(err(&[("raidType", "raid6_zr"), ("sync", "nosync")]).contains("refuses nosync"));
        RaidSpec::from_parameters(&params(&[("raidType", "raid5_ls"), ("sync", "nosync")]))
            .unwrap();
    }

    #[test]
    fn raid1_only_options_are_refused_elsewhere() {
        assert!(err(&[("raidType", "raid5_ls"), ("writeMostly", "1")])
            .contains("only with raidType raid1"));
        assert!(err(&[("raidType", "raid10"), ("maxWriteBehind", "256")])
            .contains("only with raidType raid1"));
        assert!(
            err(&[("raidType", "raid1"), ("writeMostly", "0,1")]).contains("fewer than all legs")
        );
        assert!(err(&[("raidType", "raid1"), ("writeMostly", "2")]).contains("0..1"));
        RaidSpec::from_parameters(&params(&[
            ("raidType", "raid1"),
            ("legs", "3"),
            ("writeMostly", "2"),
            ("maxWriteBehind", "256"),
        ]))
        .unwrap();
    }

    #[test]
    fn stripe_cache_range_and_level() {
        assert!(err(&[("raidType", "raid5_ls"), ("stripeCache", "16")]).contains("17..=32768"));
        assert!(err(&[("raidType", "raid5_ls"), ("stripeCache", "32769")]).contains("17..=32768"));
        assert!(err(&[("raidType", "raid1"), ("stripeCache", "256")])
            .contains("raid4, raid5 and raid6"));
    }

    #[test]
    fn raid10_options() {
        assert!(
            err(&[("raidType", "raid10"), ("legs", "4"), ("raid10Copies", "5")])
                .contains("2 to legs (4)")
        );
        assert!(err(&[("raidType", "raid5_ls"), ("raid10Copies", "2")])
            .contains("only with raidType raid10"));
        assert!(err(&[("raidType", "raid10"), ("raid10Format", "diagonal")])
            .contains("near, far or offset"));
    }

    #[test]
    fn recovery_rates_must_be_ordered() {
        let e = err(&[
            ("raidType", "raid1"),
            ("minRecoveryRate", "10Mi"),
            ("maxRecoveryRate", "1Mi"),
        ]);
        assert!(
            e.contains("minRecoveryRate") && e.contains("at most maxRecoveryRate"),
            "{e}"
        );
    }

    #[test]
    fn bad_sync_and_fstype() {
        assert!(
            err(&[("raidType", "raid1"), ("sync", "maybe")]).contains("default, sync or nosync")
        );
        assert!(err(&[("raidType", "raid1"), ("fsType", "btrfs")]).contains("ext4 or xfs"));
        assert!(err(&[]).contains("raidType is required"));
    }

    #[test]
    fn spec_round_trips_through_serde_json() {
        let s = RaidSpec::from_parameters(&params(&[
            ("raidType", "raid10"),
            ("legs", "4"),
            ("raid10Format", "far"),
        ]))
        .unwrap();
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains("\"raidType\":\"raid10\""), "{j}");
        assert_eq!(serde_json::from_str::<RaidSpec>(&j).unwrap(), s);
    }
}
