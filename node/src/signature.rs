//! What already lives on a disk, from its first bytes: the driver refuses to
//! claim a disk that carries a partition table, filesystem or RAID
//! signature unless the operator asks it to wipe. Offsets from the formats'
//! own definitions (as libblkid probes them).

use std::fmt;

/// Bytes from the start of the disk the caller must pass in.
pub const HEAD_BYTES: usize = 128 * 1024;

/// A signature found on a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// GPT partition table ("EFI PART" at LBA 1).
    Gpt,
    /// MBR partition table (0x55AA at 510 with a partition entry).
    Mbr,
    /// ext2/3/4 (0xEF53 at 1080).
    Ext,
    /// XFS ("XFSB" at 0).
    Xfs,
    /// btrfs ("_BHRfS_M" at 64 KiB + 64).
    Btrfs,
    /// Linux swap ("SWAPSPACE2" at 4086).
    Swap,
    /// LVM2 physical volume ("LABELONE" in sectors 0–3).
    Lvm,
    /// md RAID v1.1/1.2 superblock (0xa92b4efc at 0 or 4 KiB).
    Md,
    /// A dm-raid metadata superblock ("DmRd" at 0).
    DmRaid,
    /// LUKS ("LUKS\xba\xbe" at 0).
    Luks,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signature::Gpt => "a GPT partition table",
            Signature::Mbr => "an MBR partition table",
            Signature::Ext => "an ext2/3/4 filesystem",
            Signature::Xfs => "an XFS filesystem",
            Signature::Btrfs => "a btrfs filesystem",
            Signature::Swap => "Linux swap",
            Signature::Lvm => "an LVM2 physical volume",
            Signature::Md => "an md RAID superblock",
            Signature::DmRaid => "a dm-raid superblock",
            Signature::Luks => "a LUKS header",
        })
    }
}

fn at(head: &[u8], off: usize, magic: &[u8]) -> bool {
    head.get(off..off + magic.len()) == Some(magic)
}

/// The first signature found in `head` (the disk's first [`HEAD_BYTES`]).
pub fn detect(head: &[u8]) -> Option<Signature> {
    if at(head, 512, b"EFI PART") {
        return Some(Signature::Gpt);
    }
    if at(head, 0, b"XFSB") {
        return Some(Signature::Xfs);
    }
    if at(head, 0, b"LUKS\xba\xbe") {
        return Some(Signature::Luks);
    }
    if at(head, 0, b"DmRd") {
        return Some(Signature::DmRaid);
    }
    if at(head, 1080, &[0x53, 0xEF]) {
        return Some(Signature::Ext);
    }
    if at(head, 65536 + 64, b"_BHRfS_M") {
        return Some(Signature::Btrfs);
    }
    if at(head, 4086, b"SWAPSPACE2") || at(head, 4086, b"SWAP-SPACE") {
        return Some(Signature::Swap);
    }
    if (0..4).any(|s| at(head, s * 512, b"LABELONE")) {
        return Some(Signature::Lvm);
    }
    let md = 0xa92b_4efcu32.to_le_bytes();
    if at(head, 0, &md) || at(head, 4096, &md) {
        return Some(Signature::Md);
    }
    // An MBR: boot signature plus a partition entry with a type byte set.
    if at(head, 510, &[0x55, 0xAA])
        && (0..4).any(|i| head.get(446 + i * 16 + 4).is_some_and(|t| *t != 0))
    {
        return Some(Signature::Mbr);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(off: usize, magic: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEAD_BYTES];
        b[off..off + magic.len()].copy_from_slice(magic);
        b
    }

    #[test]
    fn finds_each_signature() {
        assert_eq!(detect(&with(1080, &[0x53, 0xEF])), Some(Signature::Ext));
        assert_eq!(detect(&with(0, b"XFSB")), Some(Signature::Xfs));
        assert_eq!(detect(&with(512, b"EFI PART")), Some(Signature::Gpt));
        assert_eq!(detect(&with(65600, b"_BHRfS_M")), Some(Signature::Btrfs));
        assert_eq!(detect(&with(4086, b"SWAPSPACE2")), Some(Signature::Swap));
        assert_eq!(detect(&with(512, b"LABELONE")), Some(Signature::Lvm));
        assert_eq!(
            detect(&with(4096, &0xa92b_4efcu32.to_le_bytes())),
            Some(Signature::Md)
        );
        assert_eq!(detect(&with(0, b"DmRd")), Some(Signature::DmRaid));
        let mut mbr = with(510, &[0x55, 0xAA]);
        mbr[446 + 4] = 0x83;
        assert_eq!(detect(&mbr), Some(Signature::Mbr));
    }

    #[test]
    fn blank_and_boot_signature_alone_are_not_claimed_signatures() {
        assert_eq!(detect(&vec![0u8; HEAD_BYTES]), None);
        assert_eq!(detect(&with(510, &[0x55, 0xAA])), None);
        assert_eq!(detect(&[]), None);
        assert_eq!(Signature::Ext.to_string(), "an ext2/3/4 filesystem");
    }
}
