//! The dm-raid table: a typed [`RaidTable`], built from a [`RaidSpec`] with
//! every kernel rule checked first (the kernel's own error goes only to
//! dmesg), rendered to the exact table line, and parsed back from what
//! `dmsetup table` prints so the engine can compare loaded with wanted.
//!
//! Line format (dm-raid.rst): `<start> <len> raid <type> <#raid_params>
//! <chunk_size> [optional params...] <#raid_devs> <meta0> <data0> ...`,
//! where `#raid_params` counts every word of the parameters and a missing
//! device is `- -`.

use crate::capacity::{array_sectors, leg_granularity, region_sectors};
use crate::error::{Error, Result};
use crate::params::{Raid10Format, RaidSpec, SyncPolicy, STRIPE_CACHE};
use crate::raid_type::RaidType;
use crate::units::Sectors;
use serde::{Deserialize, Serialize};

/// The metadata and data device of one leg (`/dev/...` or `major:minor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegDevs {
    /// Metadata device: superblock and bitmap.
    pub meta: String,
    /// Data device.
    pub data: String,
}

/// The table flag that steers initial synchronisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncFlag {
    /// `sync`: force a full resynchronisation.
    Sync,
    /// `nosync`: skip it.
    Nosync,
}

/// A recovery ceiling (KiB/s) that never binds: far above any disk,
/// within the kernel's range (dm-raid takes up to `INT_MAX`). The node's
/// rebuild policy puts it in the table of a sync it lets run unhindered.
pub const UNLIMITED_RECOVERY_RATE: u64 = 1_000_000_000;

/// A dm-raid table, every field as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaidTable {
    /// Type and layout.
    pub raid_type: RaidType,
    /// Table length: the array's size.
    pub length: Sectors,
    /// Chunk in sectors (0 for raid1).
    pub chunk: Sectors,
    /// `sync` or `nosync`, if either.
    pub sync: Option<SyncFlag>,
    /// `rebuild <idx>` positions.
    pub rebuild: Vec<u32>,
    /// `daemon_sleep <ms>`.
    pub daemon_sleep: Option<u32>,
    /// `min_recovery_rate <KiB/s>`.
    pub min_recovery_rate: Option<u64>,
    /// `max_recovery_rate <KiB/s>`.
    pub max_recovery_rate: Option<u64>,
    /// `write_mostly <idx>` positions (raid1).
    pub write_mostly: Vec<u32>,
    /// `max_write_behind <sectors>` (raid1).
    pub max_write_behind: Option<u32>,
    /// `stripe_cache <entries>` (raid4/5/6).
    pub stripe_cache: Option<u32>,
    /// `region_size <sectors>`.
    pub region_size: Option<Sectors>,
    /// `raid10_copies <n>`.
    pub raid10_copies: Option<u32>,
    /// `raid10_format near|far|offset`.
    pub raid10_format: Option<Raid10Format>,
    /// One entry per position; `None` renders `- -` (a missing leg).
    pub legs: Vec<Option<LegDevs>>,
}

impl RaidTable {
    /// Build the table for `spec` with `leg_data` sectors per leg's data
    /// device. `new_array`: the metadata devices are blank (first activation).
    /// `rebuild`: positions to rebuild (the engine's replacement legs).
    pub fn build(
        spec: &RaidSpec,
        leg_data: Sectors,
        legs: Vec<Option<LegDevs>>,
        new_array: bool,
        rebuild: &[u32],
    ) -> Result<RaidTable> {
        spec.validate()?;
        if legs.len() != spec.legs as usize {
            return Err(Error::invalid(
                "legs",
                legs.len(),
                format!("{} leg devices for this spec", spec.legs),
            ));
        }
        let length = array_sectors(spec, leg_data)?;
        let sync = match spec.sync {
            // `sync` in the table starts no resync on dm-raid 1.15.1 (measured,
            // see crate::sync); a new array is fully resynced without a flag.
            SyncPolicy::Default | SyncPolicy::Sync => None,
            // raid0 refuses nosync (it never resyncs anyway).
            SyncPolicy::Nosync if spec.raid_type == RaidType::Raid0 => None,
            // nosync only means something for a new array; on an existing one
            // the superblock wins, and the kernel refuses nosync with rebuild.
            SyncPolicy::Nosync if new_array && rebuild.is_empty() => Some(SyncFlag::Nosync),
            SyncPolicy::Nosync => None,
        };
        let sync = if rebuild.is_empty() { sync } else { None };
        let kib = |b: Option<crate::units::Bytes>| b.map(|b| b.0 / 1024);
        let table = RaidTable {
            raid_type: spec.raid_type,
            length,
            chunk: spec.chunk_sectors(),
            sync,
            rebuild: rebuild.to_vec(),
            daemon_sleep: spec.daemon_sleep,
            min_recovery_rate: kib(spec.min_recovery_rate),
            max_recovery_rate: kib(spec.max_recovery_rate),
            write_mostly: spec.write_mostly.clone(),
            max_write_behind: spec.max_write_behind,
            stripe_cache: spec.stripe_cache,
            region_size: region_sectors(spec, length)?,
            raid10_copies: (spec.raid_type == RaidType::Raid10).then(|| spec.copies()),
            raid10_format: spec.raid10_format,
            legs,
        };
        table.check(new_array, Some(leg_data))?;
        Ok(table)
    }

    /// Check the kernel's rules on this table (dm-raid.c's constructor, said
    /// first and in words). `new_array`: metadata is blank.
    pub fn check(&self, new_array: bool, leg_data: Option<Sectors>) -> Result<()> {
        let t = self.raid_type;
        let n = self.legs.len() as u32;
        if n < t.min_legs() || n > 64 {
            return Err(Error::invalid(
                "legs",
                n,
                format!("{} to 64 devices for {t}", t.min_legs()),
            ));
        }
        if t.uses_chunk() {
            // dm-raid: chunk must be a power of two and at least 8 sectors.
            if !self.chunk.0.is_power_of_two() || self.chunk.0 < 8 {
                return Err(Error::invalid(
                    "chunk_size",
                    self.chunk,
                    "a power of two, at least 8 sectors",
                ));
            }
        }
        if let Some(r) = self.region_size {
            if !r.0.is_power_of_two()
                || r < self.chunk
                || r.0 > self.length.0
                || self.length.0.div_ceil(r.0) > crate::params::MAX_REGIONS
            {
                return Err(Error::invalid(
                    "region_size",
                    r,
                    "a power of two >= chunk, <= the array length, with at most 2^21 regions",
                ));
            }
        }
        if self.sync.is_some() && !self.rebuild.is_empty() {
            return Err(Error::invalid(
                "rebuild",
                self.rebuild.len(),
                "no rebuild together with sync or nosync: the kernel refuses the combination",
            ));
        }
        if self.sync == Some(SyncFlag::Nosync) && t.level() == 6 && new_array {
            return Err(Error::invalid(
                "nosync",
                t,
                "not on a new raid6 set: the kernel refuses it",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for &i in &self.rebuild {
            if i >= n || !seen.insert(i) {
                return Err(Error::invalid(
                    "rebuild",
                    i,
                    format!("distinct positions 0..{}", n - 1),
                ));
            }
        }
        if !self.rebuild.is_empty() && new_array {
            return Err(Error::invalid(
                "rebuild",
                self.rebuild[0],
                "only on an existing array: a new array has nothing to rebuild from",
            ));
        }
        let copies = self.raid10_copies.unwrap_or(2);
        let tolerated = t.tolerated_failures(n, copies);
        let missing = self.legs.iter().filter(|l| l.is_none()).count() as u32;
        if self.rebuild.len() as u32 + missing
            > tolerated.max(if t.level() == 10 { n / copies } else { 0 })
        {
            return Err(Error::invalid(
                "rebuild",
                self.rebuild.len(),
                format!("at most {tolerated} rebuilt or missing legs for {t} with {n} legs ({missing} missing)"),
            ));
        }
        for &i in &self.rebuild {
            if self.legs[i as usize].is_none() {
                return Err(Error::invalid(
                    "rebuild",
                    i,
                    "a position with devices (not `- -`)",
                ));
            }
        }
        if !self.write_mostly.is_empty() || self.max_write_behind.is_some() {
            if t != RaidType::Raid1 {
                return Err(Error::invalid("write_mostly", t, "raid1 only"));
            }
            if self.write_mostly.iter().any(|&i| i >= n) {
                return Err(Error::invalid(
                    "write_mostly",
                    n,
                    format!("positions 0..{}", n - 1),
                ));
            }
        }
        if let Some(s) = self.stripe_cache {
            if !t.is_parity() || !STRIPE_CACHE.contains(&s) {
                return Err(Error::invalid(
                    "stripe_cache",
                    s,
                    "17..=32768, raid4/5/6 only",
                ));
            }
        }
        if self.raid10_copies.is_some() != (t == RaidType::Raid10)
            || (self.raid10_format.is_some() && t != RaidType::Raid10)
        {
            return Err(Error::invalid(
                "raid10_copies",
                t,
                "raid10 options only for raid10",
            ));
        }
        if t == RaidType::Raid10 && (copies < 2 || copies > n) {
            return Err(Error::invalid("raid10_copies", copies, format!("2..={n}")));
        }
        if let (Some(lo), Some(hi)) = (self.min_recovery_rate, self.max_recovery_rate) {
            if lo > hi {
                return Err(Error::invalid(
                    "min_recovery_rate",
                    lo,
                    format!("at most max_recovery_rate {hi}"),
                ));
            }
        }
        if let Some(leg) = leg_data {
            let stripes = match t {
                RaidType::Raid10 => u64::from(n),
                _ => u64::from(crate::capacity::data_stripes(t, n)),
            };
            let per_leg = if t == RaidType::Raid10 {
                self.length.0 * u64::from(copies)
            } else {
                self.length.0
            };
            // dm-raid: "Target length not divisible by number of data devices".
            if per_leg % stripes != 0 || per_leg / stripes > leg.0 {
                return Err(Error::invalid(
                    "length",
                    self.length,
                    format!("divisible by {stripes} data stripes and within the legs' {leg}"),
                ));
            }
            if t.uses_chunk() && leg.0 % self.chunk.0 != 0 {
                return Err(Error::invalid(
                    "leg size",
                    leg,
                    format!("a multiple of the chunk ({})", self.chunk),
                ));
            }
        }
        Ok(())
    }

    /// The raid parameter words, in the order the kernel prints them.
    fn param_words(&self) -> Vec<String> {
        let mut w = vec![self.chunk.0.to_string()];
        match self.sync {
            Some(SyncFlag::Sync) => w.push("sync".into()),
            Some(SyncFlag::Nosync) => w.push("nosync".into()),
            None => {}
        }
        for i in &self.rebuild {
            w.extend(["rebuild".into(), i.to_string()]);
        }
        let mut opt = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                w.extend([k.to_string(), v]);
            }
        };
        opt("daemon_sleep", self.daemon_sleep.map(|v| v.to_string()));
        opt(
            "min_recovery_rate",
            self.min_recovery_rate.map(|v| v.to_string()),
        );
        opt(
            "max_recovery_rate",
            self.max_recovery_rate.map(|v| v.to_string()),
        );
        for i in &self.write_mostly {
            w.extend(["write_mostly".into(), i.to_string()]);
        }
        let mut opt = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                w.extend([k.to_string(), v]);
            }
        };
        opt(
            "max_write_behind",
            self.max_write_behind.map(|v| v.to_string()),
        );
        opt("stripe_cache", self.stripe_cache.map(|v| v.to_string()));
        opt("region_size", self.region_size.map(|v| v.0.to_string()));
        opt("raid10_copies", self.raid10_copies.map(|v| v.to_string()));
        opt(
            "raid10_format",
            self.raid10_format.map(|f| f.name().to_string()),
        );
        w
    }

    /// The target parameters: everything after `raid` in the line.
    pub fn params(&self) -> String {
        let words = self.param_words();
        let mut s = format!("{} {} {}", self.raid_type, words.len(), words.join(" "));
        s.push_str(&format!(" {}", self.legs.len()));
        for leg in &self.legs {
            match leg {
                Some(l) => s.push_str(&format!(" {} {}", l.meta, l.data)),
                None => s.push_str(" - -"),
            }
        }
        s
    }

    /// The whole table line: `0 <len> raid <params>`.
    pub fn render(&self) -> String {
        format!("0 {} raid {}", self.length.0, self.params())
    }

    /// Parse a table line (`<start> <len> raid ...`, as `dmsetup table`
    /// prints it) back into a table. Rules are not checked: the kernel has
    /// taken it; call [`RaidTable::check`] to compare against them.
    pub fn parse(line: &str) -> Result<RaidTable> {
        let bad = |why: String| Error::parse("raid table", format!("{why} in {line:?}"));
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 3 || w[2] != "raid" {
            return Err(bad("not a raid target line".into()));
        }
        let num = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| bad(format!("{s:?} is not a number")))
        };
        let length = Sectors(num(w[1])?);
        let w = &w[3..];
        let raid_type = RaidType::parse(w.first().ok_or_else(|| bad("no type".into()))?)
            .map_err(|e| bad(e.to_string()))?;
        let nparams = num(w.get(1).ok_or_else(|| bad("no #raid_params".into()))?)? as usize;
        if nparams == 0 || w.len() < 2 + nparams + 1 {
            return Err(bad(format!(
                "#raid_params {nparams} does not match the words"
            )));
        }
        let params = &w[2..2 + nparams];
        let mut t = RaidTable {
            raid_type,
            length,
            chunk: Sectors(num(params[0])?),
            sync: None,
            rebuild: vec![],
            daemon_sleep: None,
            min_recovery_rate: None,
            max_recovery_rate: None,
            write_mostly: vec![],
            max_write_behind: None,
            stripe_cache: None,
            region_size: None,
            raid10_copies: None,
            raid10_format: None,
            legs: vec![],
        };
        let mut i = 1;
        while i < params.len() {
            let key = params[i];
            let value = || {
                params
                    .get(i + 1)
                    .copied()
                    .ok_or_else(|| bad(format!("{key} without a value")))
            };
            let small = |v: &str| -> Result<u32> {
                num(v)?
                    .try_into()
                    .map_err(|_| bad(format!("{v} too large")))
            };
            match key {
                "sync" => t.sync = Some(SyncFlag::Sync),
                "nosync" => t.sync = Some(SyncFlag::Nosync),
                _ => {
                    let v = value()?;
                    match key {
                        "rebuild" => t.rebuild.push(small(v)?),
                        "daemon_sleep" => t.daemon_sleep = Some(small(v)?),
                        "min_recovery_rate" => t.min_recovery_rate = Some(num(v)?),
                        "max_recovery_rate" => t.max_recovery_rate = Some(num(v)?),
                        "write_mostly" => t.write_mostly.push(small(v)?),
                        "max_write_behind" => t.max_write_behind = Some(small(v)?),
                        "stripe_cache" => t.stripe_cache = Some(small(v)?),
                        "region_size" => t.region_size = Some(Sectors(num(v)?)),
                        "raid10_copies" => t.raid10_copies = Some(small(v)?),
                        "raid10_format" => {
                            t.raid10_format = Some(match v {
                                "near" => Raid10Format::Near,
                                "far" => Raid10Format::Far,
                                "offset" => Raid10Format::Offset,
                                _ => return Err(bad(format!("raid10_format {v:?}"))),
                            })
                        }
                        _ => return Err(bad(format!("unknown raid parameter {key:?}"))),
                    }
                    i += 1;
                }
            }
            i += 1;
        }
        let rest = &w[2 + nparams..];
        let ndevs = num(rest[0])? as usize;
        if rest.len() != 1 + 2 * ndevs {
            return Err(bad(format!(
                "{ndevs} devices but {} device words",
                rest.len() - 1
            )));
        }
        for pair in rest[1..].chunks(2) {
            t.legs.push(match (pair[0], pair[1]) {
                ("-", "-") => None,
                (m, d) => Some(LegDevs {
                    meta: m.to_string(),
                    data: d.to_string(),
                }),
            });
        }
        Ok(t)
    }

    /// True when `other` asks the kernel for the same array (devices compared as written).
    pub fn same_array(&self, other: &RaidTable) -> bool {
        self == other
    }

    /// The smallest per-leg data size a leg must have for this table.
    pub fn leg_granularity(spec: &RaidSpec) -> Sectors {
        leg_granularity(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::RaidSpec;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn spec(kv: &[(&str, &str)]) -> RaidSpec {
        RaidSpec::from_pairs(kv).unwrap()
    }

    fn devs(n: u32) -> Vec<Option<LegDevs>> {
        (0..n)
            .map(|i| {
                Some(LegDevs {
                    meta: format!("253:{}", 2 * i),
                    data: format!("253:{}", 2 * i + 1),
                })
            })
            .collect()
    }

    #[test]
    fn renders_the_vm_notes_line() {
        let mut s = spec(&[
            ("raidType", "raid5_ls"),
            ("legs", "4"),
            ("chunkSize", "64Ki"),
            ("regionSize", "512Ki"),
        ]);
        s.max_recovery_rate = Some(crate::units::Bytes(1_000_000 * 1024));
        let t = RaidTable::build(&s, Sectors(516096), devs(4), true, &[]).unwrap();
        assert_eq!(
            t.render(),
            "0 1548288 raid raid5_ls 5 128 max_recovery_rate 1000000 region_size 1024 4 253:0 253:1 253:2 253:3 253:4 253:5 253:6 253:7"
        );
    }

    #[test]
    fn raid1_passes_chunk_zero_and_missing_legs_render_dashes() {
        let s = spec(&[("raidType", "raid1"), ("legs", "3")]);
        let mut legs = devs(3);
        legs[1] = None;
        let t = RaidTable::build(&s, Sectors(8192), legs, false, &[]).unwrap();
        assert!(
            t.render()
                .starts_with("0 8192 raid raid1 3 0 region_size 4096 3 253:0 253:1 - - 253:4"),
            "{}",
            t.render()
        );
    }

    #[test]
    fn counts_every_param_word() {
        let s = spec(&[
            ("raidType", "raid1"),
            ("legs", "3"),
            ("writeMostly", "1,2"),
            ("maxWriteBehind", "256"),
            ("daemonSleep", "1000"),
        ]);
        let t = RaidTable::build(&s, Sectors(8192), devs(3), true, &[]).unwrap();
        let params = t.params();
        let words: Vec<&str> = params.split_whitespace().collect();
        let n: usize = words[1].parse().unwrap();
        assert_eq!(
            words[2 + n],
            "3",
            "#raid_devs follows exactly #raid_params words: {}",
            t.params()
        );
    }

    #[test]
    fn rebuild_is_refused_with_sync_flags_and_on_new_arrays() {
        let s = spec(&[("raidType", "raid5_ls"), ("sync", "nosync")]);
        // build() drops nosync when rebuilding: the kernel refuses the pair.
        let t = RaidTable::build(&s, Sectors(8192), devs(3), false, &[1]).unwrap();
        assert_eq!((t.sync, t.rebuild.clone()), (None, vec![1]));
        let e = RaidTable::build(&s, Sectors(8192), devs(3), true, &[1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("only on an existing array"), "{e}");
        let mut bad = t.clone();
        bad.sync = Some(SyncFlag::Sync);
        assert!(bad
            .check(false, None)
            .unwrap_err()
            .to_string()
            .contains("refuses the combination"));
    }

    #[test]
    fn rebuilding_more_legs_than_the_level_tolerates_is_refused() {
        let s = spec(&[("raidType", "raid5_ls"), ("legs", "4")]);
        let e = RaidTable::build(&s, Sectors(8192), devs(4), false, &[0, 1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 1"), "{e}");
        let s6 = spec(&[("raidType", "raid6_zr"), ("legs", "5")]);
        RaidTable::build(&s6, Sectors(8192), devs(5), false, &[0, 3]).unwrap();
    }

    #[test]
    fn leg_not_a_chunk_multiple_is_refused() {
        let s = spec(&[("raidType", "raid5_ls")]);
        let e = RaidTable::build(&s, Sectors(8200), devs(3), true, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("multiple of"), "{e}");
    }

    #[test]
    fn parses_what_dmsetup_prints() {
        let line = "0 1548288 raid raid5_ls 3 128 region_size 1024 4 254:0 254:1 254:2 254:3 - - 254:6 254:7";
        let t = RaidTable::parse(line).unwrap();
        assert_eq!(t.raid_type, RaidType::Raid5_ls);
        assert_eq!(t.region_size, Some(Sectors(1024)));
        assert!(t.legs[2].is_none());
        assert_eq!(t.render(), line);
    }

    #[test]
    fn parse_rejects_garbage_with_the_line() {
        for bad in [
            "",
            "0 10 linear 8:0 0",
            "0 10 raid raid5_ls 9 128 3 a b c d e f",
            "0 10 raid raid5_ls 1 128 2 a b",
            "0 x raid raid1 1 0 2 a b c d",
        ] {
            let e = RaidTable::parse(bad).unwrap_err().to_string();
            assert!(e.contains("raid table"), "{e}");
        }
    }

    #[test]
    fn every_type_builds_with_its_defaults_and_round_trips() {
        for kind in crate::raid_type::ALL {
            let sync = if kind.level() == 6 { "sync" } else { "nosync" };
            let s = spec(&[("raidType", kind.name()), ("sync", sync)]);
            let leg = Sectors(leg_granularity(&s).0 * 1000);
            let t = RaidTable::build(&s, leg, devs(s.legs), true, &[])
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(RaidTable::parse(&t.render()).unwrap(), t, "{kind}");
        }
    }

    fn arb_spec() -> impl Strategy<Value = (RaidSpec, u64)> {
        (
            0usize..crate::raid_type::ALL.len(),
            2u32..9,
            0u32..4,
            0u32..3,
            any::<bool>(),
            1u64..5000,
        )
            .prop_filter_map(
                "valid specs",
                |(t, legs, chunk_pow, sync, stripe, units)| {
                    let kind = crate::raid_type::ALL[t];
                    let mut kv = vec![
                        ("raidType".to_string(), kind.name().to_string()),
                        ("legs".into(), legs.to_string()),
                    ];
                    kv.push(("chunkSize".into(), format!("{}Ki", 4u64 << (chunk_pow * 2))));
                    kv.push((
                        "sync".into(),
                        ["default", "sync", "nosync"][sync as usize].into(),
                    ));
                    if stripe && kind.is_parity() {
                        kv.push(("stripeCache".into(), "256".into()));
                    }
                    let p: BTreeMap<String, String> = kv.into_iter().collect();
                    let s = RaidSpec::from_parameters(&p).ok()?;
                    Some((s, units))
                },
            )
    }

    proptest! {
        #[test]
        fn accepted_specs_render_lines_that_parse_back((s, units) in arb_spec()) {
            let leg = Sectors(leg_granularity(&s).0 * units);
            if let Ok(t) = RaidTable::build(&s, leg, devs(s.legs), true, &[]) {
                let back = RaidTable::parse(&t.render()).unwrap();
                prop_assert_eq!(&back, &t);
                // Independent restatement of the kernel's rules on the rendered line.
                let line = t.render();
                let words: Vec<&str> = line.split_whitespace().collect();
                let n: usize = words[4].parse().unwrap();
                prop_assert_eq!(words[5 + n].parse::<usize>().unwrap(), s.legs as usize);
                let chunk: u64 = words[5].parse().unwrap();
                if s.raid_type.uses_chunk() { prop_assert!(chunk >= 8 && chunk.is_power_of_two()); } else { prop_assert_eq!(chunk, 0); }
                prop_assert!(!(words.contains(&"sync") && words.contains(&"nosync")));
                if let Some(r) = t.region_size { prop_assert!(r.0 >= chunk && r.0.is_power_of_two() && t.length.0 / r.0 <= 1 << 21); }
            }
        }

        #[test]
        fn parse_never_panics(s in "[ 0-9a-z_:-]{0,80}") {
            let _ = RaidTable::parse(&s);
            let _ = RaidTable::parse(&format!("0 100 raid {s}"));
        }
    }
}
