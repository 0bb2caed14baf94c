//! Which block devices the driver may claim: what sysfs and the mount
//! tables say of a device ([`DeviceFacts`]) and the rule on those facts
//! ([`refusal`]).

use super::real::devno_of;
use dmraid_api::units::Sectors;
use std::collections::BTreeMap;
use std::path::Path;

/// What sysfs and the mount tables say of one block device: the facts the
/// claim decision ([`refusal`]) rests on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Kernel name (`vda`, `nvme0n1p1`, `dm-3`).
    pub name: String,
    /// The whole disk's kernel name when this is a partition.
    pub partition_of: Option<String>,
    /// The whole disk's `major:minor` (this device's for a whole disk).
    pub domain: String,
    /// The kernel marks it read-only.
    pub read_only: bool,
    /// Devices built on it or on its partitions: (kernel name, dm name).
    pub holders: Vec<(String, Option<String>)>,
    /// Its partitions' kernel names.
    pub partitions: Vec<String>,
    /// Where it or one of its partitions is mounted or used as swap:
    /// (kernel name, mount point or "swap").
    pub in_use: Vec<(String, String)>,
    /// Size in bytes.
    pub size: u64,
}

/// Kernel name prefixes of devices that are not disks: the driver builds
/// on disks, never on another layer of the block stack.
const VIRTUAL: &[(&str, &str)] = &[
    ("dm-", "a device-mapper device"),
    ("md", "an md RAID device"),
    ("loop", "a loop device"),
    ("zram", "a zram device"),
    ("ram", "a RAM disk"),
    ("nbd", "a network block device"),
];

/// Why the driver must not claim this device, or None when it may. `exact`:
/// the operator named this path, no glob.
pub fn refusal(f: &DeviceFacts, exact: bool) -> Option<String> {
    if let Some((_, what)) = VIRTUAL.iter().find(|(p, _)| f.name.starts_with(p)) {
        return Some(format!("{} is {what}, not a disk", f.name));
    }
    if let Some((dev, at)) = f.in_use.first() {
        return Some(if *dev == f.name {
            format!("{} is in use ({at})", f.name)
        } else {
            format!("its partition {dev} is in use ({at})")
        });
    }
    let foreign: Vec<String> = f
        .holders
        .iter()
        .filter(|(_, dm)| !dm.as_deref().is_some_and(|n| n.starts_with("dmraid-")))
        .map(|(k, dm)| match dm {
            Some(n) => format!("{k} ({n})"),
            None => k.clone(),
        })
        .collect();
    if !foreign.is_empty() {
        return Some(format!(
            "held by {}: another device is built on it",
            foreign.join(", ")
        ));
    }
    if f.read_only {
        return Some(format!("{} is read-only", f.name));
    }
    if let Some(disk) = &f.partition_of {
        if !exact {
            return Some(format!(
                "a partition of {disk} matched by a glob: the driver claims whole disks; name a partition exactly to claim it"
            ));
        }
    }
    if !f.partitions.is_empty() {
        return Some(format!(
            "has partitions ({}): a partitioned disk belongs to something else",
            f.partitions.join(", ")
        ));
    }
    None
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Mounted devices and swap: `major:minor` -> where.
pub(super) fn uses() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() > 4 {
                out.entry(f[2].to_string())
                    .or_insert_with(|| format!("mounted at {}", f[4]));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/swaps") {
        for line in text.lines().skip(1) {
            if let Some(dev) = line.split_whitespace().next() {
                if let Ok(d) = devno_of(Path::new(dev)) {
                    out.insert(d, "swap".into());
                }
            }
        }
    }
    out
}

fn holders_of(sys: &Path) -> Vec<(String, Option<String>)> {
    let Ok(dir) = std::fs::read_dir(sys.join("holders")) else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dm = read_trim(&Path::new("/sys/class/block").join(&name).join("dm/name"));
            (name, dm)
        })
        .collect()
}

/// The facts of the block device with number `devno`, from sysfs.
pub(super) fn facts(devno: &str, uses: &BTreeMap<String, String>) -> std::io::Result<DeviceFacts> {
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{devno}"))?;
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_partition = sys.join("partition").exists();
    let whole = if is_partition {
        sys.parent().map(Path::to_path_buf).unwrap_or(sys.clone())
    } else {
        sys.clone()
    };
    let mut f = DeviceFacts {
        partition_of: is_partition.then(|| {
            whole
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        domain: read_trim(&whole.join("dev")).unwrap_or_else(|| devno.to_string()),
        read_only: read_trim(&sys.join("ro")).as_deref() == Some("1"),
        holders: holders_of(&sys),
        size: Sectors(
            read_trim(&sys.join("size"))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0),
        )
        .bytes()
        .0,
        name: name.clone(),
        ..DeviceFacts::default()
    };
    if let Some(at) = uses.get(devno) {
        f.in_use.push((name.clone(), at.clone()));
    }
    if !is_partition {
        for e in std::fs::read_dir(&sys)?.flatten() {
            let p = e.path();
            if !p.join("partition").exists() {
                continue;
            }
            let part = e.file_name().to_string_lossy().into_owned();
            if let Some(at) = read_trim(&p.join("dev")).and_then(|d| uses.get(&d).cloned()) {
                f.in_use.push((part.clone(), at));
            }
            f.holders.extend(holders_of(&p));
            f.partitions.push(part);
        }
        f.partitions.sort();
    }
    Ok(f)
}
