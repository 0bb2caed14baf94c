//! Typed ids: a [`VolumeId`] is parsed once, where a request names a
//! volume, and everything past that point holds one that is known to be
//! usable as a device-mapper name part and a label key.

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
}
