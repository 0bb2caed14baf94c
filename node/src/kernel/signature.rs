//! What already lives on a device, as libblkid sees it: partition tables,
//! filesystems, RAID and volume-manager superblocks (md 0.90/1.0 and ZFS
//! labels at the end of a disk, FAT boot sectors, bcache, Ceph, LUKS, ...).
//! The driver refuses to claim a disk that carries any of them unless the
//! operator asks it to wipe, and then wipes exactly those signatures, at
//! both ends of the disk, the way `wipefs -a` does (same library calls).

use std::fmt;
use std::os::fd::AsRawFd;

/// One signature libblkid found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// libblkid's type name: `vfat`, `ext4`, `xfs`, `gpt`, `dos`, `PMBR`,
    /// `linux_raid_member`, `zfs_member`, ...
    pub kind: String,
    /// Byte offset of its magic on the device.
    pub offset: u64,
    /// What it is used for (`filesystem`, `raid`, `crypto`, `other`), or
    /// `partition table`.
    pub usage: String,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) at byte {}", self.kind, self.usage, self.offset)
    }
}

/// The signatures as one phrase: "vfat (filesystem) at byte 82, gpt ...".
pub fn describe(found: &[Found]) -> String {
    found
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every signature on the open device (or image file), without writing.
pub fn probe(file: &std::fs::File) -> std::io::Result<Vec<Found>> {
    scan(file, false)
}

/// Erase every signature libblkid reports, and nothing else (libblkid
/// clears each magic in place; a GPT is found and cleared at both ends).
/// `file` must be open for writing. Returns what was erased.
pub fn wipe(file: &std::fs::File) -> std::io::Result<Vec<Found>> {
    let found = scan(file, true)?;
    file.sync_all()?;
    Ok(found)
}

/// A probe freed when dropped.
struct Probe(libblkid_rs_sys::blkid_probe);

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: the pointer came from blkid_new_probe and is freed once.
        unsafe { libblkid_rs_sys::blkid_free_probe(self.0) }
    }
}

impl Probe {
    fn value(&self, name: &std::ffi::CStr) -> Option<String> {
        let mut data: *const libc::c_char = std::ptr::null();
        let mut len: usize = 0;
        // SAFETY: the probe is valid; libblkid points `data` at a buffer it
        // owns until the next probe call, which we copy out of at once.
        let rc = unsafe {
            libblkid_rs_sys::blkid_probe_lookup_value(self.0, name.as_ptr(), &mut data, &mut len)
        };
        if rc != 0 || data.is_null() {
            return None;
        }
        // SAFETY: libblkid returns a NUL-terminated string of `len` bytes
        // including the NUL.
        let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, len) };
        let text = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        Some(String::from_utf8_lossy(text).into_owned())
    }
}

fn blkid_err(what: &str) -> std::io::Error {
    let os = std::io::Error::last_os_error();
    std::io::Error::new(os.kind(), format!("libblkid {what}: {os}"))
}

fn scan(file: &std::fs::File, wipe: bool) -> std::io::Result<Vec<Found>> {
    use libblkid_rs_sys as b;
    // SAFETY: plain constructor; null is checked.
    let raw = unsafe { b::blkid_new_probe() };
    if raw.is_null() {
        return Err(blkid_err("new probe"));
    }
    let probe = Probe(raw);
    // SAFETY: the probe is valid and `file` stays open for its whole life
    // (the probe is dropped at the end of this function).
    unsafe {
        if b::blkid_probe_set_device(probe.0, file.as_raw_fd(), 0, 0) != 0 {
            return Err(blkid_err("set device"));
        }
        b::blkid_probe_enable_superblocks(probe.0, 1);
        b::blkid_probe_set_superblocks_flags(
            probe.0,
            (b::BLKID_SUBLKS_MAGIC
                | b::BLKID_SUBLKS_TYPE
                | b::BLKID_SUBLKS_USAGE
                | b::BLKID_SUBLKS_BADCSUM) as libc::c_int,
        );
        b::blkid_probe_enable_partitions(probe.0, 1);
        b::blkid_probe_set_partitions_flags(
            probe.0,
            (b::BLKID_PARTS_MAGIC | b::BLKID_PARTS_FORCE_GPT) as libc::c_int,
        );
    }
    let mut found = Vec::new();
    // Each blkid_do_probe moves on to the next signature; after a wipe
    // libblkid steps back, so the same place is probed again (wipefs's loop).
    for _ in 0..1000 {
        // SAFETY: the probe is valid.
        let rc = unsafe { b::blkid_do_probe(probe.0) };
        if rc == 1 {
            return Ok(found);
        }
        if rc < 0 {
            return Err(blkid_err("probe"));
        }
        let sb = probe.value(c"SBMAGIC_OFFSET");
        let (kind, offset, usage) = match sb {
            Some(off) => (
                probe.value(c"TYPE").unwrap_or_else(|| "unknown".into()),
                off,
                probe.value(c"USAGE").unwrap_or_else(|| "other".into()),
            ),
            None => match probe.value(c"PTMAGIC_OFFSET") {
                Some(off) => (
                    probe.value(c"PTTYPE").unwrap_or_else(|| "unknown".into()),
                    off,
                    "partition table".to_string(),
                ),
                None => continue,
            },
        };
        found.push(Found {
            kind,
            offset: offset.trim().parse().unwrap_or(0),
            usage,
        });
        // SAFETY: the probe is valid and the device is open for writing
        // when `wipe` is asked (the caller's contract).
        if wipe && unsafe { b::blkid_do_wipe(probe.0, 0) } != 0 {
            return Err(blkid_err("wipe"));
        }
    }
    Err(std::io::Error::other(
        "libblkid reported more than 1000 signatures; refusing to go on",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::FileExt;

    fn image(size: u64) -> (tempfile::NamedTempFile, std::fs::File) {
        let t = tempfile::NamedTempFile::new().unwrap();
        t.as_file().set_len(size).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(t.path())
            .unwrap();
        (t, f)
    }

    /// A FAT boot sector of an EFI System Partition (what `mkfs.vfat -F 32`
    /// writes, less the boot code): no MBR partition entries, 0x55AA at 510.
    fn fat32_boot_sector() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
        b[3..11].copy_from_slice(b"mkfs.fat");
        b[11..13].copy_from_slice(&512u16.to_le_bytes()); // bytes per sector
        b[13] = 1; // sectors per cluster
        b[14..16].copy_from_slice(&32u16.to_le_bytes()); // reserved sectors
        b[16] = 2; // FATs
        b[21] = 0xF8; // media
        b[24..26].copy_from_slice(&32u16.to_le_bytes());
        b[26..28].copy_from_slice(&64u16.to_le_bytes());
        b[32..36].copy_from_slice(&(66_000u32).to_le_bytes()); // total sectors
        b[36..40].copy_from_slice(&(513u32).to_le_bytes()); // sectors per FAT
        b[44..48].copy_from_slice(&2u32.to_le_bytes()); // root cluster
        b[48..50].copy_from_slice(&1u16.to_le_bytes());
        b[50..52].copy_from_slice(&6u16.to_le_bytes());
        b[64] = 0x80;
        b[66] = 0x29;
        b[67..71].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        b[71..82].copy_from_slice(b"ESP        ");
        b[82..90].copy_from_slice(b"FAT32   ");
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn a_blank_device_has_no_signature() {
        let (_t, f) = image(8 << 20);
        assert_eq!(probe(&f).unwrap(), vec![]);
    }

    #[test]
    fn finds_a_fat_boot_sector_that_the_old_hand_list_missed() {
        let (_t, f) = image(40 << 20);
        f.write_all_at(&fat32_boot_sector(), 0).unwrap();
        let found = probe(&f).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, "vfat");
        assert_eq!(found[0].usage, "filesystem");
    }

    #[test]
    fn finds_zfs_labels_and_wipes_only_them() {
        // ZFS keeps labels at both ends of a vdev; libblkid counts the
        // uberblock magics in a label's ring at 128 KiB (a vdev is at
        // least 64 MiB).
        let size: u64 = 64 << 20;
        let (_t, mut f) = image(size);
        for label in [0u64, 256 << 10] {
            for n in 0..8u64 {
                f.write_all_at(
                    &0x00ba_b10cu64.to_le_bytes(),
                    label + (128 << 10) + n * 1024,
                )
                .unwrap();
            }
        }
        // A marker of ours elsewhere that the wipe must leave alone.
        f.seek(SeekFrom::Start(4 << 20)).unwrap();
        f.write_all(b"keep me").unwrap();
        let found = probe(&f).unwrap();
        assert!(
            !found.is_empty() && found.iter().all(|s| s.kind == "zfs_member"),
            "{found:?}"
        );
        let wiped = wipe(&f).unwrap();
        assert!(wiped.len() >= found.len(), "{wiped:?}");
        assert_eq!(probe(&f).unwrap(), vec![]);
        let mut keep = [0u8; 7];
        f.read_exact_at(&mut keep, 4 << 20).unwrap();
        assert_eq!(&keep, b"keep me");
    }

    fn run(cmd: &str, args: &[&str]) {
        let out = std::process::Command::new(cmd).args(args).output().unwrap();
        assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
    }

    #[test]
    fn a_gpt_is_found_and_wiped_at_both_ends_like_wipefs() {
        let (t, f) = image(64 << 20);
        let path = t.path().to_str().unwrap();
        let mut sfdisk = std::process::Command::new("sfdisk")
            .args(["-q", path])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: gpt\n,16M,U\n,\n")
            .unwrap();
        assert!(sfdisk.wait().unwrap().success());
        let found = probe(&f).unwrap();
        assert!(found.iter().any(|s| s.kind == "gpt"), "{found:?}");
        let wiped = wipe(&f).unwrap();
        let size = 64u64 << 20;
        assert!(
            wiped
                .iter()
                .any(|s| s.kind == "gpt" && s.offset == size - 512),
            "the backup header at the end is wiped too: {wiped:?}"
        );
        assert_eq!(probe(&f).unwrap(), vec![]);
    }

    #[test]
    fn finds_what_mkfs_writes() {
        for (mkfs, args, kind) in [
            ("mkfs.ext4", &["-q", "-F"][..], "ext4"),
            ("mkfs.xfs", &["-q", "-f"][..], "xfs"),
            ("mkfs.vfat", &[][..], "vfat"),
        ] {
            let (t, f) = image(300 << 20);
            let mut a = args.to_vec();
            a.push(t.path().to_str().unwrap());
            run(mkfs, &a);
            let found = probe(&f).unwrap();
            assert_eq!(
                found.first().map(|s| s.kind.as_str()),
                Some(kind),
                "{found:?}"
            );
        }
    }
}
