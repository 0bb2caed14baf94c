//! Typed ids: a [`VolumeId`] is parsed once, where a request names a
//! volume, and everything past that point holds one that is known to be
//! usable as a device-mapper name part and a label key. A [`DiskUuid`] is
//! the id a claimed disk's label gives it.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a volume id may be, in words.
pub const VOLUME_ID_RULE: &str = "1-100 characters of a-z, A-Z, 0-9, '.', '_' and '-'";

/// A volume id the node can use: 1–100 of `[A-Za-z0-9._-]` (no '/', so it
/// names no path; no '+', so no leg device's name is another volume's).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeId(String);

impl VolumeId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VolumeId {
    type Err = Error;
    fn from_str(id: &str) -> Result<Self> {
        let ok = !id.is_empty()
            && id.len() <= 100
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(VolumeId(id.to_string()))
        } else {
            Err(Error::invalid("volume id", id, VOLUME_ID_RULE))
        }
    }
}

impl TryFrom<String> for VolumeId {
    type Error = Error;
    fn try_from(id: String) -> Result<Self> {
        id.parse()
    }
}

impl From<VolumeId> for String {
    fn from(id: VolumeId) -> String {
        id.0
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for VolumeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What a disk uuid may be, in words.
pub const DISK_UUID_RULE: &str = "1-64 printable ASCII characters other than space and '/'";

/// The id the driver gave a disk when it claimed it (the kernel's random
/// uuid), recorded in the disk's label: how a disk is known wherever it
/// shows up. Labels hold it as a plain JSON string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DiskUuid(String);

impl DiskUuid {
    /// The uuid as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DiskUuid {
    type Err = Error;
    fn from_str(u: &str) -> Result<Self> {
        let ok =
            !u.is_empty() && u.len() <= 64 && u.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
        if ok {
            Ok(DiskUuid(u.to_string()))
        } else {
            Err(Error::invalid("disk uuid", u, DISK_UUID_RULE))
        }
    }
}

impl TryFrom<String> for DiskUuid {
    type Error = Error;
    fn try_from(u: String) -> Result<Self> {
        u.parse()
    }
}

impl From<DiskUuid> for String {
    fn from(u: DiskUuid) -> String {
        u.0
    }
}

impl fmt::Display for DiskUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DiskUuid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for DiskUuid {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for DiskUuid {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<String> for DiskUuid {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<DiskUuid> for String {
    fn eq(&self, other: &DiskUuid) -> bool {
        *self == other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_id_parses_only_when_the_node_can_use_it() {
        for good in ["v", "pvc-0a1b", "a.b_c-d", &"x".repeat(100)] {
            assert_eq!(good.parse::<VolumeId>().unwrap().as_str(), good);
        }
        for bad in ["", "a/b", "../x", "a+b", "a b", "é", &"x".repeat(101)] {
            let e = bad.parse::<VolumeId>().unwrap_err().to_string();
            assert!(e.contains(VOLUME_ID_RULE), "{bad:?}: {e}");
        }
        let json = serde_json::to_string(&"pvc-1".parse::<VolumeId>().unwrap()).unwrap();
        assert_eq!(json, "\"pvc-1\"");
        assert!(serde_json::from_str::<VolumeId>("\"a/b\"").is_err());
    }

    #[test]
    fn a_disk_uuid_is_the_labels_plain_string() {
        let kernel = "0f8e4c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b";
        let u: DiskUuid = serde_json::from_str(&format!("\"{kernel}\"")).unwrap();
        assert_eq!(u, *kernel);
        assert_eq!(serde_json::to_string(&u).unwrap(), format!("\"{kernel}\""));
        // The fallback where the kernel gives no uuid: 32 hex digits.
        assert!("0000018c3f2a9b7e5d4c3b2a19080706"
            .parse::<DiskUuid>()
            .is_ok());
        for bad in ["", "a b", "../x", &"x".repeat(65)] {
            let e = bad.parse::<DiskUuid>().unwrap_err().to_string();
            assert!(e.contains(DISK_UUID_RULE), "{bad:?}: {e}");
        }
    }
}
