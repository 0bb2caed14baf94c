//! A volume's devices as data: an ordered list of typed layers, bottom-up
//! (today: the legs' dm-linear meta and data devices, then one dm-raid
//! array over them; integrity under each leg, crypt or a thin pool above
//! are further layers). Each layer's parameters render to and parse from
//! its table text. [`activate`] makes a stack live bottom-up, [`teardown`]
//! removes it top-down, and every layer boundary is a crash point
//! (`DMRAID_CRASH_AT=<layer>-live`).
//!
//! A table names a device of a lower layer by its name; [`activate`] puts
//! in the `major:minor` the kernel gave it when it was made.

use crate::error::Error;
use crate::kernel::dm::{self, DeviceMapper, DmError, DmInfo, Target};
use dmraid_api::table::RaidTable;
use dmraid_api::units::Sectors;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// The kinds of layer a stack can hold. A label names them; a kind this
/// driver does not know refuses the volume (a newer driver made it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LayerKind {
    /// dm-linear: a device made of segments of the devices below.
    Linear,
    /// dm-raid: the array over the legs' meta/data devices.
    Raid,
}

impl LayerKind {
    /// Every kind, in the order a stack holds them.
    pub const ALL: [LayerKind; 2] = [LayerKind::Linear, LayerKind::Raid];

    /// The device-mapper target type.
    pub fn target(self) -> &'static str {
        match self {
            LayerKind::Linear => "linear",
            LayerKind::Raid => "raid",
        }
    }
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.target())
    }
}

impl FromStr for LayerKind {
    type Err = StackError;
    fn from_str(s: &str) -> Result<Self, StackError> {
        LayerKind::ALL
            .into_iter()
            .find(|k| k.target() == s)
            .ok_or_else(|| {
                StackError(format!(
                    "layer {s:?} is not one this driver knows (it knows {}); a newer driver made it",
                    LayerKind::ALL.map(|k| k.target()).join(", ")
                ))
            })
    }
}

/// The stack every volume has today, as the labels record it.
pub const VOLUME_STACK: [LayerKind; 2] = [LayerKind::Linear, LayerKind::Raid];

/// The stack a label records (empty: written before stacks were recorded,
/// which is [`VOLUME_STACK`]), checked to be the one this driver makes.
pub fn check_recorded(recorded: &[String]) -> Result<(), StackError> {
    if recorded.is_empty() {
        return Ok(());
    }
    let kinds = recorded
        .iter()
        .map(|k| k.parse())
        .collect::<Result<Vec<LayerKind>, _>>()?;
    if kinds != VOLUME_STACK {
        let words = |k: &[LayerKind]| {
            k.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" → ")
        };
        return Err(StackError(format!(
            "its labels record the device stack {}; this driver makes {} only",
            words(&kinds),
            words(&VOLUME_STACK)
        )));
    }
    Ok(())
}

/// A table or stack that cannot be read, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StackError(pub String);

/// One segment of a linear device: `len` sectors of `dev` from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearSegment {
    /// The device below: `major:minor`, or the name of a device of a
    /// lower layer of the same stack.
    pub dev: String,
    /// Where the segment starts on that device.
    pub offset: Sectors,
    /// Its length.
    pub len: Sectors,
}

/// A dm-linear table: its segments in order, each mapped right after the
/// one before.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinearTable {
    /// The segments, in the device's order.
    pub segments: Vec<LinearSegment>,
}

impl LinearTable {
    /// One segment.
    pub fn one(dev: impl Into<String>, offset: Sectors, len: Sectors) -> Self {
        LinearTable {
            segments: vec![LinearSegment {
                dev: dev.into(),
                offset,
                len,
            }],
        }
    }

    /// The target lines.
    pub fn targets(&self) -> Vec<Target> {
        let mut at = Sectors(0);
        self.segments
            .iter()
            .map(|s| {
                let t = Target::new(at.0, s.len.0, "linear", format!("{} {}", s.dev, s.offset.0));
                at += s.len;
                t
            })
            .collect()
    }

    /// Read back the target lines of a linear device.
    pub fn from_targets(targets: &[Target]) -> Result<Self, StackError> {
        let mut at = 0;
        let mut segments = Vec::new();
        for t in targets {
            if t.kind != "linear" {
                return Err(StackError(format!("{:?} is not a linear target", t.line())));
            }
            if t.start != at {
                return Err(StackError(format!(
                    "{:?} starts at {}, not where the target before it ends ({at})",
                    t.line(),
                    t.start
                )));
            }
            let mut words = t.params.split_whitespace();
            let (Some(dev), Some(offset), None) = (words.next(), words.next(), words.next()) else {
                return Err(StackError(format!(
                    "{:?}: a linear target takes `<device> <offset>`",
                    t.line()
                )));
            };
            let offset = offset.parse().map_err(|_| {
                StackError(format!("{:?}: offset {offset:?} is not a number", t.line()))
            })?;
            segments.push(LinearSegment {
                dev: dev.to_string(),
                offset: Sectors(offset),
                len: Sectors(t.length),
            });
            at += t.length;
        }
        Ok(LinearTable { segments })
    }
}

/// One layer's device parameters, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// A dm-linear device.
    Linear(LinearTable),
    /// A dm-raid array.
    Raid(RaidTable),
}

impl Layer {
    /// Its kind.
    pub fn kind(&self) -> LayerKind {
        match self {
            Layer::Linear(_) => LayerKind::Linear,
            Layer::Raid(_) => LayerKind::Raid,
        }
    }

    /// The table's target lines.
    pub fn targets(&self) -> Vec<Target> {
        match self {
            Layer::Linear(l) => l.targets(),
            Layer::Raid(r) => vec![Target::new(0, r.length.0, "raid", r.params())],
        }
    }

    /// Read a table back as the layer its first target's type names.
    pub fn from_targets(targets: &[Target]) -> Result<Self, StackError> {
        let kind: LayerKind = targets
            .first()
            .ok_or_else(|| StackError("an empty table".into()))?
            .kind
            .parse()?;
        match kind {
            LayerKind::Linear => Ok(Layer::Linear(LinearTable::from_targets(targets)?)),
            LayerKind::Raid => {
                let [t] = targets else {
                    return Err(StackError(format!(
                        "a raid table has one target, not {}",
                        targets.len()
                    )));
                };
                RaidTable::parse(&t.line())
                    .map(Layer::Raid)
                    .map_err(|e| StackError(e.to_string()))
            }
        }
    }

    /// The devices it maps onto, as its table names them.
    pub fn below(&self) -> Vec<&str> {
        match self {
            Layer::Linear(l) => l.segments.iter().map(|s| s.dev.as_str()).collect(),
            Layer::Raid(r) => r
                .legs
                .iter()
                .flatten()
                .flat_map(|l| [l.meta.as_str(), l.data.as_str()])
                .collect(),
        }
    }

    /// The same layer with each device `to` knows (a lower layer's name)
    /// replaced by what it gives (its `major:minor`).
    pub fn resolve(&self, to: impl Fn(&str) -> Option<String>) -> Layer {
        let swap = |d: &str| to(d).unwrap_or_else(|| d.to_string());
        match self {
            Layer::Linear(l) => Layer::Linear(LinearTable {
                segments: l
                    .segments
                    .iter()
                    .map(|s| LinearSegment {
                        dev: swap(&s.dev),
                        ..s.clone()
                    })
                    .collect(),
            }),
            Layer::Raid(r) => {
                let mut r = r.clone();
                for leg in r.legs.iter_mut().flatten() {
                    leg.meta = swap(&leg.meta);
                    leg.data = swap(&leg.data);
                }
                Layer::Raid(r)
            }
        }
    }
}

/// The table text, one target a line, as `dmsetup table` prints it.
impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.targets().iter().map(Target::line).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl FromStr for Layer {
    type Err = StackError;
    fn from_str(s: &str) -> Result<Self, StackError> {
        let targets = s
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let w: Vec<&str> = line.split_whitespace().collect();
                let num = |i: usize| {
                    w.get(i).and_then(|x| x.parse::<u64>().ok()).ok_or_else(|| {
                        StackError(format!(
                            "{line:?}: a table line is `<start> <length> <type> <params>`"
                        ))
                    })
                };
                let kind = w
                    .get(2)
                    .ok_or_else(|| StackError(format!("{line:?} names no target type")))?;
                Ok(Target::new(num(0)?, num(1)?, kind, w[3..].join(" ")))
            })
            .collect::<Result<Vec<_>, StackError>>()?;
        Layer::from_targets(&targets)
    }
}

/// One device of a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its device-mapper name.
    pub name: String,
    /// Its device-mapper uuid, if it gets one.
    pub uuid: Option<String>,
    /// What it maps.
    pub layer: Layer,
}

/// A volume's devices, bottom-up: every device's table names only disks
/// or devices of the layers before it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stack {
    /// The layers, bottom first; every device of a layer has its kind.
    pub layers: Vec<Vec<Device>>,
}

impl Stack {
    /// The kinds of its layers, bottom first (what the labels record).
    pub fn kinds(&self) -> Vec<LayerKind> {
        self.layers
            .iter()
            .filter_map(|l| l.first().map(|d| d.layer.kind()))
            .collect()
    }

    /// Every device's name, top layer first: the order they come down.
    pub fn names_top_down(&self) -> Vec<&str> {
        self.layers
            .iter()
            .rev()
            .flat_map(|l| l.iter().map(|d| d.name.as_str()))
            .collect()
    }

    /// Check the stack is well made: each layer of one kind, each device
    /// named once, each name in a table a device of a lower layer (or not
    /// a name of this stack at all: a disk).
    pub fn check(&self) -> Result<(), StackError> {
        let mut below: BTreeSet<&str> = BTreeSet::new();
        let all: BTreeSet<&str> = self.names_top_down().into_iter().collect();
        if all.len() != self.names_top_down().len() {
            return Err(StackError(
                "a device name appears twice in the stack".into(),
            ));
        }
        for layer in &self.layers {
            let kinds: BTreeSet<LayerKind> = layer.iter().map(|d| d.layer.kind()).collect();
            if kinds.len() > 1 {
                return Err(StackError(format!("a layer mixes {kinds:?}")));
            }
            for d in layer {
                for dev in d.layer.below() {
                    if all.contains(dev) && !below.contains(dev) {
                        return Err(StackError(format!(
                            "{} maps {dev}, which is not in a layer below it",
                            d.name
                        )));
                    }
                }
            }
            below.extend(layer.iter().map(|d| d.name.as_str()));
        }
        Ok(())
    }
}

/// Make the stack's devices live, bottom-up: each device is created with
/// its table, or, when it is there already, left as it is if its live table
/// is the one wanted and given the wanted one otherwise ([`dm::activate`]).
/// Devices named in `reload` are reloaded even when their table reads the
/// same (the device below them vanished and came back). A stack that is
/// not well made ([`Stack::check`]) is refused before any device is
/// touched. After each layer the crash point `<kind>-live` is passed.
/// Returns every device's info.
pub fn activate(
    dm: &dyn DeviceMapper,
    stack: &Stack,
    reload: &BTreeSet<String>,
) -> Result<BTreeMap<String, DmInfo>, Error> {
    activate_with(dm, stack, reload, || Ok(()))
}

/// [`activate`], with `before_top` run once the top layer's tables are
/// loaded and before any of them goes live (after the crash point
/// `<kind>-loaded`). A create records itself finished there: nothing of
/// the top layer has reached the disks yet (dm-raid writes its superblocks
/// when the array is resumed), and the label write does not compete with
/// the array's first writes. When `before_top` fails, the top layer's
/// devices are left loaded but not live.
pub fn activate_with(
    dm: &dyn DeviceMapper,
    stack: &Stack,
    reload: &BTreeSet<String>,
    before_top: impl FnOnce() -> Result<(), Error>,
) -> Result<BTreeMap<String, DmInfo>, Error> {
    stack
        .check()
        .map_err(|e| Error::Precondition(format!("a device stack not made right: {e}")))?;
    let mut made: BTreeMap<String, DmInfo> = BTreeMap::new();
    let Some((top, below)) = stack.layers.split_last() else {
        before_top()?;
        return Ok(made);
    };
    for layer in below {
        for d in layer {
            let table = d
                .layer
                .resolve(|n| made.get(n).map(DmInfo::devno))
                .targets();
            let info = if reload.contains(&d.name) && dm.info(&d.name)?.is_some() {
                dm::reload(dm, &d.name, &table)?
            } else {
                dm::activate(dm, &d.name, d.uuid.as_deref(), &table)?
            };
            made.insert(d.name.clone(), info);
        }
        passed(layer, "live");
    }
    // The top layer: every table loaded, then `before_top`, then live.
    let mut to_resume = Vec::new();
    for d in top {
        let table = d
            .layer
            .resolve(|n| made.get(n).map(DmInfo::devno))
            .targets();
        match dm::load_inactive(
            dm,
            &d.name,
            d.uuid.as_deref(),
            &table,
            reload.contains(&d.name),
        )? {
            Some(info) => {
                made.insert(d.name.clone(), info);
            }
            None => to_resume.push(d),
        }
    }
    passed(top, "loaded");
    before_top()?;
    for d in to_resume {
        let info = dm.resume(&d.name)?;
        made.insert(d.name.clone(), info);
    }
    passed(top, "live");
    Ok(made)
}

/// The crash point `<kind>-<what>` of a layer.
fn passed(layer: &[Device], what: &str) {
    if let Some(d) = layer.first() {
        super::crash_point(&format!("{}-{what}", d.layer.kind()));
    }
}

/// Remove devices top-down: `layers` bottom first, as a [`Stack`] holds
/// them. A device that is not there is skipped; the first that cannot go
/// (open, busy) stops it with the layers below still whole.
pub fn teardown(dm: &dyn DeviceMapper, layers: &[Vec<String>]) -> Result<(), DmError> {
    for layer in layers.iter().rev() {
        for name in layer {
            dm::remove_if_present(dm, name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::dm::FakeDm;
    use dmraid_api::table::LegDevs;

    fn raid1(meta: [&str; 2], data: [&str; 2]) -> RaidTable {
        let line = format!(
            "0 2048 raid raid1 3 0 region_size 1024 2 {} {} {} {}",
            meta[0], data[0], meta[1], data[1]
        );
        RaidTable::parse(&line).unwrap()
    }

    fn two_leg_stack() -> Stack {
        let linear = |name: &str, at: u64, len: u64| Device {
            name: name.into(),
            uuid: None,
            layer: Layer::Linear(LinearTable::one("8:16", Sectors(at), Sectors(len))),
        };
        Stack {
            layers: vec![
                vec![
                    linear("v+m0", 0, 8),
                    linear("v+d0", 8, 2048),
                    linear("v+m1", 4096, 8),
                    linear("v+d1", 4104, 2048),
                ],
                vec![Device {
                    name: "v".into(),
                    uuid: Some("DMRAID-v".into()),
                    layer: Layer::Raid(raid1(["v+m0", "v+m1"], ["v+d0", "v+d1"])),
                }],
            ],
        }
    }

    #[test]
    fn a_layer_renders_to_its_table_and_parses_back() {
        let linear = Layer::Linear(LinearTable {
            segments: vec![
                LinearSegment {
                    dev: "8:16".into(),
                    offset: Sectors(2048),
                    len: Sectors(100),
                },
                LinearSegment {
                    dev: "8:16".into(),
                    offset: Sectors(9000),
                    len: Sectors(50),
                },
            ],
        });
        assert_eq!(
            linear.to_string(),
            "0 100 linear 8:16 2048\n100 50 linear 8:16 9000"
        );
        assert_eq!(linear.to_string().parse::<Layer>().unwrap(), linear);
        let raid = Layer::Raid(raid1(["253:0", "253:2"], ["253:1", "253:3"]));
        assert_eq!(raid.to_string().parse::<Layer>().unwrap(), raid);
        assert_eq!(raid.kind(), LayerKind::Raid);
    }

    #[test]
    fn a_table_that_is_not_a_layer_is_refused_in_words() {
        let gap = "0 100 linear 8:16 0\n200 50 linear 8:16 100".parse::<Layer>();
        assert!(gap
            .unwrap_err()
            .0
            .contains("not where the target before it ends"));
        let unknown = "0 100 integrity 8:16 0 32 J 0".parse::<Layer>();
        assert!(unknown.unwrap_err().0.contains("not one this driver knows"));
        let err = "integrity".parse::<LayerKind>().unwrap_err().0;
        assert!(err.contains("it knows linear, raid"), "{err}");
        assert!("0 100 linear 8:16".parse::<Layer>().is_err());
    }

    #[test]
    fn a_stack_comes_up_bottom_up_with_lower_names_resolved_and_down_top_down() {
        let dm = FakeDm::new();
        let stack = two_leg_stack();
        stack.check().unwrap();
        assert_eq!(stack.kinds(), VOLUME_STACK);
        let made = activate(&dm, &stack, &BTreeSet::new()).unwrap();
        let table = dm.table("v").unwrap();
        let Layer::Raid(live) = Layer::from_targets(&table).unwrap() else {
            panic!("the top is not a raid")
        };
        // The array maps the linears by the numbers the kernel gave them.
        assert_eq!(
            live.legs[1],
            Some(LegDevs {
                meta: made["v+m1"].devno(),
                data: made["v+d1"].devno(),
            })
        );
        // Again: nothing changes (each table already live).
        let again = activate(&dm, &stack, &BTreeSet::new()).unwrap();
        assert_eq!(again["v"].devno(), made["v"].devno());
        // An open array stops the teardown before the legs under it go.
        dm.set_open("v", true);
        let layers: Vec<Vec<String>> = stack
            .layers
            .iter()
            .map(|l| l.iter().map(|d| d.name.clone()).collect())
            .collect();
        assert!(teardown(&dm, &layers).is_err());
        assert!(dm.info("v+d0").unwrap().is_some());
        dm.set_open("v", false);
        teardown(&dm, &layers).unwrap();
        assert!(DeviceMapper::names(&dm).unwrap().is_empty());
    }

    #[test]
    fn a_recorded_stack_other_than_linear_under_raid_is_refused_in_words() {
        let rec = |k: &[&str]| k.iter().map(ToString::to_string).collect::<Vec<_>>();
        check_recorded(&[]).unwrap();
        check_recorded(&rec(&["linear", "raid"])).unwrap();
        let unknown = check_recorded(&rec(&["linear", "integrity", "raid"]))
            .unwrap_err()
            .0;
        assert!(
            unknown.contains("\"integrity\" is not one this driver knows"),
            "{unknown}"
        );
        let other = check_recorded(&rec(&["raid", "linear"])).unwrap_err().0;
        assert!(
            other.contains("raid → linear; this driver makes linear → raid only"),
            "{other}"
        );
    }

    #[test]
    fn a_stack_naming_a_device_above_itself_is_refused() {
        let mut stack = two_leg_stack();
        stack.layers.swap(0, 1);
        assert!(stack
            .check()
            .unwrap_err()
            .0
            .contains("not in a layer below it"));
    }
}
