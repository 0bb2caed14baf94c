//! The CSI volume id of a cluster volume, which is also the name of its
//! `RaidVolume` object. An id from a request is parsed before it reaches an
//! API path: `x/status` or `a?b` would otherwise address another resource
//! or carry a query, and an upper-case name is one no object can have.

use std::fmt;

/// Longest object name the id may be: a DNS-1123 label, which every id
/// this controller hands out is (a PV name `pvc-<uuid>` or `v-<hash>`).
const MAX_LEN: usize = 63;

/// A volume id that is a valid `RaidVolume` name (a DNS-1123 label).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeId(String);

/// Why a string is not a volume id this controller could have issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadId {
    /// The id is empty.
    #[error("volume_id is required")]
    Empty,
    /// The id is not a DNS-1123 label.
    #[error("volume id {id:?} is not one dmraid-csi issues: {why}")]
    Malformed {
        /// The id given.
        id: String,
        /// The rule it breaks.
        why: &'static str,
    },
}

/// The rule `s` breaks as a DNS-1123 label, if any.
fn label_problem(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    if b.len() > MAX_LEN {
        return Some("it is longer than 63 characters");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return Some("it may hold only lower-case letters, digits and '-'");
    }
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Some("it must start and end with a letter or digit");
    }
    None
}

impl VolumeId {
    /// Parse an id from a request (DeleteVolume, ControllerExpandVolume, ...).
    pub fn parse(id: &str) -> Result<VolumeId, BadId> {
        if id.is_empty() {
            return Err(BadId::Empty);
        }
        match label_problem(id) {
            None => Ok(VolumeId(id.to_string())),
            Some(why) => Err(BadId::Malformed {
                id: id.to_string(),
                why,
            }),
        }
    }

    /// The id for a CreateVolume name: the name itself when it is a valid
    /// object name (PV names such as `pvc-<uuid>` are), else a stable hash
    /// of it, so the same name always gives the same id.
    pub fn for_name(name: &str) -> VolumeId {
        if !name.is_empty() && label_problem(name).is_none() {
            return VolumeId(name.to_string());
        }
        // FNV-1a, 64 bit: stable across versions and machines.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        VolumeId(format!("v-{h:016x}"))
    }

    /// The id as text (the `RaidVolume` name).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pv_names_are_their_own_ids_and_others_hash() {
        let pv = "pvc-0b0e3c1e-7c43-4a4b-9a53-2a4f1b2f6b01";
        assert_eq!(VolumeId::for_name(pv).as_str(), pv);
        let h = VolumeId::for_name("sanity-Create Volume_1");
        assert!(
            h.as_str().starts_with("v-") && h.as_str().len() == 18,
            "{h}"
        );
        assert_eq!(h, VolumeId::for_name("sanity-Create Volume_1"));
        assert_ne!(h, VolumeId::for_name("sanity-Create Volume_2"));
        assert!(VolumeId::for_name("-x").as_str().starts_with("v-"));
        assert!(VolumeId::for_name("x/status").as_str().starts_with("v-"));
    }

    #[test]
    fn ids_that_are_not_object_names_do_not_parse() {
        for bad in [
            "x/status",
            "a?b",
            "a#b",
            "Pvc-1",
            "a.b",
            "a b",
            "-a",
            "a-",
            "..",
            "%2F",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(VolumeId::parse(bad), Err(BadId::Malformed { .. })),
                "{bad:?} parsed"
            );
        }
        assert_eq!(VolumeId::parse(""), Err(BadId::Empty));
        assert_eq!(VolumeId::parse("pvc-1").unwrap().as_str(), "pvc-1");
    }

    #[test]
    fn every_issued_id_parses_back() {
        for name in [
            "pvc-0b0e3c1e-7c43-4a4b-9a53-2a4f1b2f6b01",
            "sanity-Create Volume_1",
            "x/status",
            "",
            "é",
            &"b".repeat(200),
        ] {
            let id = VolumeId::for_name(name);
            assert_eq!(VolumeId::parse(id.as_str()), Ok(id.clone()), "{name:?}");
        }
    }
}
