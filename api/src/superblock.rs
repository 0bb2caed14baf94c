//! The on-disk dm-raid superblock and md write-intent bitmap at the start of
//! each leg's metadata device: parse, count dirty regions, and the one patch
//! the driver makes after a crash (`array_resync_offset` := 0, so the kernel
//! resyncs the regions the bitmap marks dirty instead of dropping them; see
//! README "What the kernel really does"). Pure byte functions: the node does the I/O.
//!
//! Layouts: `struct dm_raid_superblock` in drivers/md/dm-raid.c (all
//! little-endian) and `bitmap_super_t` in drivers/md/md-bitmap.h.

use crate::error::{Error, Result};

/// `DmRd` as a little-endian u32.
pub const DM_RAID_MAGIC: u32 = 0x6452_6D44;
/// `bitm` as a little-endian u32.
pub const BITMAP_MAGIC: u32 = 0x6d74_6962;
/// Byte offset of the bitmap superblock on the metadata device.
pub const BITMAP_OFFSET: usize = 4096;
/// Bytes of the bitmap superblock before the bits.
pub const BITMAP_HEADER: usize = 256;
/// Compat features this code knows (FEATURE_FLAG_SUPPORTS_V190).
pub const KNOWN_COMPAT: u32 = 0x1;
/// The 1.9.0 on-disk layout: the fields after `stripe_sectors` exist.
pub const FEATURE_SUPPORTS_V190: u32 = 0x1;
/// Byte offset of array_resync_offset.
const RESYNC_OFFSET_AT: usize = 40;
/// Bytes of the 1.9.0 superblock (struct dm_raid_superblock, __packed):
/// through `incompat_features` at 144 (checked against the superblocks
/// each kernel writes by `--test kernel`).
pub const V190_LEN: usize = 148;
/// The kernel's "nothing to resync" (MaxSector).
pub const MAX_SECTOR: u64 = u64::MAX;

/// The dm-raid superblock fields the driver reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Feature flags.
    pub compat_features: u32,
    /// Devices in the set.
    pub num_devices: u32,
    /// This device's position.
    pub array_position: u32,
    /// Update counter.
    pub events: u64,
    /// Bit field of failed devices (pre-1.9 part).
    pub failed_devices: u64,
    /// How far this device has been recovered.
    pub disk_recovery_offset: u64,
    /// Where the array's resync stands (MaxSector = clean).
    pub array_resync_offset: u64,
    /// RAID level.
    pub level: u32,
    /// md layout number.
    pub layout: u32,
    /// Chunk in sectors.
    pub stripe_sectors: u32,
    /// The 1.9.0 extension, when the buffer holds it.
    pub v190: Option<SuperblockV190>,
}

/// The fields dm-raid 1.9.0 added (reshape state, sizes, incompat flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperblockV190 {
    /// Reshape state (active, backwards).
    pub flags: u32,
    /// Where a reshape stands (MaxSector: none).
    pub reshape_position: u64,
    /// Level being reshaped to (= level when no reshape).
    pub new_level: u32,
    /// Layout being reshaped to.
    pub new_layout: u32,
    /// Chunk being reshaped to.
    pub new_stripe_sectors: u32,
    /// Devices being added (+) or removed (-).
    pub delta_disks: i32,
    /// The array's size in sectors.
    pub array_sectors: u64,
    /// Where data starts on each data device.
    pub data_offset: u64,
    /// Where data starts after the reshape.
    pub new_data_offset: u64,
    /// Sectors of each data device in use.
    pub sectors: u64,
    /// Features an older kernel must refuse; none is defined.
    pub incompat_features: u32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parse the dm-raid superblock from the first bytes of a metadata device.
pub fn parse_superblock(b: &[u8]) -> Result<Superblock> {
    if b.len() < 64 {
        return Err(Error::parse(
            "dm-raid superblock",
            format!("{} bytes, need 64", b.len()),
        ));
    }
    let magic = u32_at(b, 0);
    if magic != DM_RAID_MAGIC {
        return Err(Error::parse(
            "dm-raid superblock",
            format!("magic {magic:#010x}, expected {DM_RAID_MAGIC:#010x} (DmRd)"),
        ));
    }
    Ok(Superblock {
        compat_features: u32_at(b, 4),
        num_devices: u32_at(b, 8),
        array_position: u32_at(b, 12),
        events: u64_at(b, 16),
        failed_devices: u64_at(b, 24),
        disk_recovery_offset: u64_at(b, 32),
        array_resync_offset: u64_at(b, RESYNC_OFFSET_AT),
        level: u32_at(b, 48),
        layout: u32_at(b, 52),
        stripe_sectors: u32_at(b, 56),
        v190: (b.len() >= V190_LEN).then(|| SuperblockV190 {
            flags: u32_at(b, 60),
            reshape_position: u64_at(b, 64),
            new_level: u32_at(b, 72),
            new_layout: u32_at(b, 76),
            new_stripe_sectors: u32_at(b, 80),
            delta_disks: u32_at(b, 84) as i32,
            array_sectors: u64_at(b, 88),
            data_offset: u64_at(b, 96),
            new_data_offset: u64_at(b, 104),
            sectors: u64_at(b, 112),
            // extended_failed_devices: 3 × 8 bytes at 120
            incompat_features: u32_at(b, 144),
        }),
    })
}

/// Whether the driver may edit this superblock: exactly the layout it was
/// written for (the 1.9.0 one, which every kernel since 4.8 writes), no
/// feature it does not know, no reshape under way (none of the driver's
/// doing). Anything else is refused with what was found.
pub fn check_editable(sb: &Superblock) -> Result<()> {
    let refuse = |why: String| {
        Err(Error::parse(
            "dm-raid superblock",
            format!("{why}; refusing to edit it"),
        ))
    };
    if sb.compat_features & !KNOWN_COMPAT != 0 {
        return refuse(format!(
            "unknown compat features {:#x} (known: {KNOWN_COMPAT:#x})",
            sb.compat_features
        ));
    }
    if sb.compat_features & FEATURE_SUPPORTS_V190 == 0 {
        return refuse("a pre-1.9.0 layout (compat feature 0x1 not set)".into());
    }
    let Some(x) = &sb.v190 else {
        return refuse(format!(
            "fewer than the {V190_LEN} bytes of the 1.9.0 layout"
        ));
    };
    if x.incompat_features != 0 {
        return refuse(format!(
            "unknown incompat features {:#x}",
            x.incompat_features
        ));
    }
    if x.flags != 0
        || x.reshape_position != MAX_SECTOR
        || x.delta_disks != 0
        || x.new_level != sb.level
        || x.new_layout != sb.layout
        || x.new_stripe_sectors != sb.stripe_sectors
        || x.new_data_offset != x.data_offset
    {
        return refuse(format!(
            "a reshape is recorded (flags {:#x}, position {:#x}, level {} -> {}, layout {} -> {}, chunk {} -> {}, {:+} devices, data offset {} -> {})",
            x.flags,
            x.reshape_position,
            sb.level,
            x.new_level,
            sb.layout,
            x.new_layout,
            sb.stripe_sectors,
            x.new_stripe_sectors,
            x.delta_disks,
            x.data_offset,
            x.new_data_offset
        ));
    }
    Ok(())
}

/// Make the kernel resync from the start on next activation, so it honours
/// the bitmap's dirty bits. Refuses a buffer that is not a dm-raid
/// superblock or carries features this code does not know. Returns the old offset.
pub fn set_array_resync_offset_zero(b: &mut [u8]) -> Result<u64> {
    let sb = parse_superblock(b)?;
    check_editable(&sb)?;
    b[RESYNC_OFFSET_AT..RESYNC_OFFSET_AT + 8].copy_from_slice(&0u64.to_le_bytes());
    Ok(sb.array_resync_offset)
}

/// The bitmap superblock fields the driver reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapSuper {
    /// Bitmap format version.
    pub version: u32,
    /// Update counter.
    pub events: u64,
    /// Events when bits were last cleared.
    pub events_cleared: u64,
    /// Sectors the bitmap covers.
    pub sync_size: u64,
    /// State bits.
    pub state: u32,
    /// Bytes per region (bit).
    pub chunksize: u32,
}

impl BitmapSuper {
    /// Regions (bits) the bitmap has.
    pub fn regions(&self) -> u64 {
        if self.chunksize == 0 {
            0
        } else {
            (self.sync_size * 512).div_ceil(u64::from(self.chunksize))
        }
    }
}

/// Parse the bitmap superblock (the bytes at [`BITMAP_OFFSET`]).
pub fn parse_bitmap_super(b: &[u8]) -> Result<BitmapSuper> {
    if b.len() < 56 {
        return Err(Error::parse(
            "bitmap superblock",
            format!("{} bytes, need 56", b.len()),
        ));
    }
    let magic = u32_at(b, 0);
    if magic != BITMAP_MAGIC {
        return Err(Error::parse(
            "bitmap superblock",
            format!("magic {magic:#010x}, expected {BITMAP_MAGIC:#010x} (bitm)"),
        ));
    }
    let chunksize = u32_at(b, 52);
    if chunksize != 0 && !chunksize.is_power_of_two() {
        return Err(Error::parse(
            "bitmap superblock",
            format!("chunksize {chunksize} is not a power of two"),
        ));
    }
    Ok(BitmapSuper {
        version: u32_at(b, 4),
        events: u64_at(b, 24),
        events_cleared: u64_at(b, 32),
        sync_size: u64_at(b, 40),
        state: u32_at(b, 48),
        chunksize,
    })
}

/// Dirty regions among the first `regions` bits of `bits` (the bytes after
/// the bitmap header); bits beyond the buffer count as clean.
pub fn count_dirty_bits(bits: &[u8], regions: u64) -> u64 {
    let full = (regions / 8) as usize;
    let mut n: u64 = bits
        .iter()
        .take(full)
        .map(|b| u64::from(b.count_ones()))
        .sum();
    let rest = (regions % 8) as u32;
    if rest > 0 {
        if let Some(b) = bits.get(full) {
            n += u64::from((b & ((1u8 << rest) - 1)).count_ones());
        }
    }
    n
}

/// From the first bytes of a metadata device: (dirty regions, regions).
pub fn dirty_regions(meta: &[u8]) -> Result<(u64, u64)> {
    let sb = parse_bitmap_super(meta.get(BITMAP_OFFSET..).unwrap_or(&[]))?;
    let regions = sb.regions();
    let bits = meta.get(BITMAP_OFFSET + BITMAP_HEADER..).unwrap_or(&[]);
    Ok((count_dirty_bits(bits, regions), regions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(resync: u64, compat: u32) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        b[0..4].copy_from_slice(&DM_RAID_MAGIC.to_le_bytes());
        assert_eq!(&b[0..4], b"DmRd");
        b[4..8].copy_from_slice(&compat.to_le_bytes());
        b[8..12].copy_from_slice(&4u32.to_le_bytes());
        b[12..16].copy_from_slice(&2u32.to_le_bytes());
        b[16..24].copy_from_slice(&77u64.to_le_bytes());
        b[40..48].copy_from_slice(&resync.to_le_bytes());
        b[48..52].copy_from_slice(&5u32.to_le_bytes());
        b[52..56].copy_from_slice(&2u32.to_le_bytes());
        b[56..60].copy_from_slice(&128u32.to_le_bytes());
        // 1.9.0: not reshaping (position MaxSector, new_* = current), sizes.
        b[64..72].copy_from_slice(&MAX_SECTOR.to_le_bytes());
        b[72..76].copy_from_slice(&5u32.to_le_bytes());
        b[76..80].copy_from_slice(&2u32.to_le_bytes());
        b[80..84].copy_from_slice(&128u32.to_le_bytes());
        b[88..96].copy_from_slice(&1032192u64.to_le_bytes());
        b[112..120].copy_from_slice(&516096u64.to_le_bytes());
        let bm = &mut b[BITMAP_OFFSET..];
        bm[0..4].copy_from_slice(&BITMAP_MAGIC.to_le_bytes());
        assert_eq!(&bm[0..4], b"bitm");
        bm[4..8].copy_from_slice(&4u32.to_le_bytes());
        bm[40..48].copy_from_slice(&516096u64.to_le_bytes());
        bm[52..56].copy_from_slice(&(512u32 * 1024).to_le_bytes());
        b
    }

    #[test]
    fn parses_and_zeroes_the_resync_offset() {
        let mut b = meta(MAX_SECTOR, 1);
        let sb = parse_superblock(&b).unwrap();
        assert_eq!(
            (sb.num_devices, sb.array_position, sb.events, sb.level),
            (4, 2, 77, 5)
        );
        assert_eq!(set_array_resync_offset_zero(&mut b).unwrap(), MAX_SECTOR);
        assert_eq!(parse_superblock(&b).unwrap().array_resync_offset, 0);
        // nothing else moved
        let mut expect = meta(0, 1);
        expect[40..48].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(b, expect);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let refused = |b: &mut Vec<u8>| -> String {
            let before = b.clone();
            let e = set_array_resync_offset_zero(b).unwrap_err().to_string();
            assert_eq!(*b, before, "a refused superblock is untouched");
            assert!(e.contains("refusing to edit it"), "{e}");
            e
        };
        let mut b = meta(MAX_SECTOR, 0x8 | 1);
        assert!(refused(&mut b).contains("unknown compat"));
        let mut b = meta(MAX_SECTOR, 0);
        assert!(refused(&mut b).contains("pre-1.9.0"));
        let mut b = meta(MAX_SECTOR, 1);
        b[144..148].copy_from_slice(&2u32.to_le_bytes());
        assert!(refused(&mut b).contains("unknown incompat features 0x2"));
        // flags, reshape position (low half), new level, layout, chunk, delta disks
        for (at, v) in [(60, 1u32), (64, 7), (72, 6), (76, 3), (80, 64), (84, 1)] {
            let mut b = meta(MAX_SECTOR, 1);
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            assert!(refused(&mut b).contains("reshape"), "field at {at}");
        }
        let mut short = meta(MAX_SECTOR, 1)[..100].to_vec();
        assert!(refused(&mut short).contains("fewer than the 148 bytes"));
        let sb = parse_superblock(&meta(MAX_SECTOR, 1)).unwrap();
        let x = sb.v190.unwrap();
        assert_eq!(
            (x.array_sectors, x.sectors, x.new_level),
            (1032192, 516096, 5)
        );
        let mut junk = vec![0u8; 4096];
        assert!(set_array_resync_offset_zero(&mut junk)
            .unwrap_err()
            .to_string()
            .contains("DmRd"));
        assert_eq!(junk, vec![0u8; 4096], "a refused buffer is untouched");
    }

    #[test]
    fn counts_dirty_regions_like_vm_notes() {
        let mut b = meta(MAX_SECTOR, 1);
        // 516096 sectors at 512 KiB per region = 504 regions (the array measured in the VM).
        let bits = BITMAP_OFFSET + BITMAP_HEADER;
        for r in [0usize, 7, 8, 100, 503] {
            b[bits + r / 8] |= 1 << (r % 8);
        }
        b[bits + 63] |= 0x80; // bit 511: past the 504 regions, ignored
        assert_eq!(dirty_regions(&b).unwrap(), (5, 504));
    }

    proptest! {
        #[test]
        fn count_matches_a_bit_by_bit_count(bits in proptest::collection::vec(any::<u8>(), 0..64), regions in 0u64..600) {
            let naive = (0..regions).filter(|r| bits.get((r / 8) as usize).is_some_and(|b| b & (1 << (r % 8)) != 0)).count() as u64;
            prop_assert_eq!(count_dirty_bits(&bits, regions), naive);
        }

        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_superblock(&b);
            let _ = parse_bitmap_super(&b);
            let _ = dirty_regions(&b);
        }
    }
}
