//! The label format's unit tests: slots, torn writes, validation, room.

use super::*;
use proptest::prelude::*;
use std::io::Cursor;

/// Sectors of the in-memory test disk: the label area and as much again.
const DISK: u64 = 2 * LABEL_AREA.0;

fn disk() -> Cursor<Vec<u8>> {
    Cursor::new(vec![0u8; Sectors(DISK).bytes().0 as usize])
}

/// Put `body` into slot `index` with sequence `seq` and good checksums,
/// as a writer that does not check what it writes would.
fn put_slot(d: &mut Cursor<Vec<u8>>, index: u64, seq: u64, body: &[u8]) {
    let mut h = [0u8; HEADER];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&seq.to_le_bytes());
    h[20..24].copy_from_slice(&(body.len() as u32).to_le_bytes());
    h[24..28].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    let at = (index * SLOT_BYTES) as usize;
    d.get_mut()[at..at + HEADER].copy_from_slice(&h);
    d.get_mut()[at + HEADER..at + HEADER + body.len()].copy_from_slice(body);
}

/// label(1) written normally (slot A, sequence 1), then `bad` forced
/// into slot B with sequence 2.
fn good_a_then_bad_b(bad: &DiskLabel) -> Cursor<Vec<u8>> {
    let mut d = disk();
    let mut l = read(&mut d).unwrap();
    write(&mut d, &mut l, &label(1)).unwrap();
    put_slot(&mut d, 1, 2, &serde_json::to_vec(bad).unwrap());
    d
}

fn with_extent(start: u64, len: u64) -> DiskLabel {
    let mut l = label(2);
    l.extents.push(Extent {
        volume: "w".into(),
        leg: 1,
        role: Role::Meta,
        start: Sectors(start),
        len: Sectors(len),
        offset: Sectors(0),
        state: ExtentState::Active,
    });
    l
}

fn label(n: u64) -> DiskLabel {
    let mut l = new_label("uuid-1".parse().unwrap(), "node-a", 1);
    l.extents.push(Extent {
        volume: "v".into(),
        leg: 0,
        role: Role::Data,
        start: Sectors(2048 + n),
        len: Sectors(100),
        offset: Sectors(0),
        state: ExtentState::Active,
    });
    l.volumes.insert(
        "v".into(),
        VolumeRecord {
            spec: serde_json::json!({"n": n}),
            clean_shutdown: n.is_multiple_of(2),
            complete: true,
            generation: n,
            uid: format!("uid-{n}"),
            created: 0,
            last_check: 0,
            stack: Vec::new(),
        },
    );
    l
}

#[test]
fn blank_disk_has_no_label_and_round_trips() {
    let mut d = disk();
    let mut l = read(&mut d).unwrap();
    assert!(l.label.is_none());
    write(&mut d, &mut l, &label(1)).unwrap();
    write(&mut d, &mut l, &label(2)).unwrap();
    let back = read(&mut d).unwrap();
    assert_eq!(back.label, Some(label(2)));
    assert_eq!(back.seq, 2);
    assert!(has_magic(d.get_ref()));
}

#[test]
fn an_extent_is_written_as_plain_sector_numbers_without_a_zero_offset() {
    let mut e = label(0).extents.remove(0);
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"volume":"v","leg":0,"role":"data","start":2048,"len":100,"state":"active"}"#
    );
    e.offset = Sectors(100);
    let json = serde_json::to_string(&e).unwrap();
    assert!(json.contains(r#""len":100,"offset":100,"#), "{json}");
    assert_eq!(serde_json::from_str::<Extent>(&json).unwrap(), e);
}

#[test]
fn writes_alternate_slots() {
    let mut d = disk();
    let mut l = read(&mut d).unwrap();
    write(&mut d, &mut l, &label(1)).unwrap();
    assert_eq!(&d.get_ref()[0..8], MAGIC);
    assert_ne!(
        &d.get_ref()[SLOT_BYTES as usize..SLOT_BYTES as usize + 8],
        MAGIC
    );
    write(&mut d, &mut l, &label(2)).unwrap();
    assert_eq!(
        &d.get_ref()[SLOT_BYTES as usize..SLOT_BYTES as usize + 8],
        MAGIC
    );
}

#[test]
fn a_damaged_copy_falls_back_to_the_other() {
    let mut d = disk();
    let mut l = read(&mut d).unwrap();
    write(&mut d, &mut l, &label(1)).unwrap();
    write(&mut d, &mut l, &label(2)).unwrap();
    // corrupt the newest (slot B) body
    d.get_mut()[SLOT_BYTES as usize + HEADER + 3] ^= 0xff;
    let back = read(&mut d).unwrap();
    assert_eq!(back.label, Some(label(1)));
    // the next write goes over the damaged slot, keeping the good one
    let mut back = back;
    write(&mut d, &mut back, &label(3)).unwrap();
    assert_eq!(read(&mut d).unwrap().label, Some(label(3)));
}

#[test]
fn both_damaged_is_an_error_not_a_blank_disk() {
    let mut d = disk();
    let mut l = read(&mut d).unwrap();
    write(&mut d, &mut l, &label(1)).unwrap();
    write(&mut d, &mut l, &label(2)).unwrap();
    d.get_mut()[HEADER + 1] ^= 1;
    d.get_mut()[SLOT_BYTES as usize + HEADER + 1] ^= 1;
    assert!(matches!(read(&mut d), Err(LabelError::Corrupt(_))));
}

#[test]
fn a_newer_format_is_refused_and_untouched() {
    let mut d = disk();
    let mut l = read(&mut d).unwrap();
    write(&mut d, &mut l, &label(1)).unwrap();
    let mut h = d.get_ref()[0..HEADER].to_vec();
    h[8..12].copy_from_slice(&9u32.to_le_bytes());
    h[32..36].fill(0);
    let crc = crc32c::crc32c(&h);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    d.get_mut()[0..HEADER].copy_from_slice(&h);
    let before = d.get_ref().clone();
    let e = read(&mut d).unwrap_err().to_string();
    assert!(e.contains("version 9"), "{e}");
    assert_eq!(d.get_ref(), &before);
}

#[test]
fn too_many_extents_is_a_clear_error() {
    let mut d = disk();
    let mut l = read(&mut d).unwrap();
    let mut big = label(1);
    for i in 0..20_000 {
        big.extents.push(Extent {
            volume: format!("volume-{i}"),
            leg: 0,
            role: Role::Meta,
            start: Sectors(i),
            len: Sectors(1),
            offset: Sectors(0),
            state: ExtentState::Active,
        });
    }
    let before = d.get_ref().clone();
    let e = write(&mut d, &mut l, &big).unwrap_err();
    assert!(
        matches!(
            e,
            LabelError::TooBig {
                extents: 20_001,
                ..
            }
        ),
        "{e}"
    );
    let text = e.to_string();
    assert!(text.contains("20001 extents"), "{text}");
    assert!(text.contains("over its 524288-byte slot"), "{text}");
    assert!(text.contains("put new volumes on other disks"), "{text}");
    assert!(d.get_ref() == &before, "nothing written");
}

#[test]
fn a_second_writer_from_a_stale_view_is_refused() {
    let mut d = disk();
    let mut first = read(&mut d).unwrap();
    let mut second = read(&mut d).unwrap();
    write(&mut d, &mut first, &label(1)).unwrap();
    let before = d.get_ref().clone();
    let e = write(&mut d, &mut second, &label(2)).unwrap_err();
    assert!(
        matches!(
            e,
            LabelError::Stale {
                expected: 0,
                found: 1
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("another dmraid-csi process"), "{e}");
    assert_eq!(d.get_ref(), &before, "nothing was written");
    assert_eq!(read(&mut d).unwrap().label, Some(label(1)));
    // Once it has re-read the disk, the second writer builds on the first's label.
    let mut second = read(&mut d).unwrap();
    write(&mut d, &mut second, &label(2)).unwrap();
    assert_eq!(read(&mut d).unwrap().seq, 2);
    assert!(matches!(
        write(&mut d, &mut first, &label(3)),
        Err(LabelError::Stale {
            expected: 1,
            found: 2
        })
    ));
}

#[test]
fn extents_in_the_label_area_past_the_end_or_overlapping_fall_back_to_the_other_copy() {
    for bad in [
        with_extent(LABEL_AREA.0 - 1, 10),
        with_extent(0, 1),
        with_extent(DISK - 10, 11),
        with_extent(DISK, 1),
        with_extent(u64::MAX - 5, 10),
        with_extent(2048 + 2 + 99, 5),
        with_extent(2048, 3),
    ] {
        let mut d = good_a_then_bad_b(&bad);
        let mut back = read(&mut d).unwrap();
        assert_eq!(back.label, Some(label(1)), "{:?}", bad.extents);
        assert_eq!(back.seq, 1);
        // The next write goes over the bad copy.
        write(&mut d, &mut back, &label(3)).unwrap();
        assert_eq!(&d.get_ref()[0..8], MAGIC);
        assert_eq!(read(&mut d).unwrap().label, Some(label(3)));
    }
    // Touching the label area's end or the disk's end is fine.
    let mut edges = label(2);
    edges.extents = vec![
        with_extent(LABEL_AREA.0, 10).extents[1].clone(),
        with_extent(DISK - 10, 10).extents[1].clone(),
    ];
    let mut d = good_a_then_bad_b(&edges);
    assert_eq!(read(&mut d).unwrap().label, Some(edges));
}

#[test]
fn a_checksummed_body_that_does_not_parse_falls_back_to_the_other_copy() {
    let mut d = disk();
    let mut l = read(&mut d).unwrap();
    write(&mut d, &mut l, &label(1)).unwrap();
    put_slot(&mut d, 1, 2, b"{\"disk_uuid\": 42");
    let back = read(&mut d).unwrap();
    assert_eq!(back.label, Some(label(1)));
    assert_eq!(back.seq, 1);
}

#[test]
fn no_usable_copy_is_an_error_naming_why() {
    let mut d = disk();
    put_slot(&mut d, 0, 1, b"not json");
    put_slot(
        &mut d,
        1,
        2,
        &serde_json::to_vec(&with_extent(DISK, 1)).unwrap(),
    );
    let e = read(&mut d).unwrap_err().to_string();
    assert!(e.contains("does not parse"), "{e}");
    assert!(e.contains("past the disk's end"), "{e}");
}

/// A writer that stops (as a power cut would) after `limit` bytes.
struct Torn {
    inner: Cursor<Vec<u8>>,
    limit: usize,
}
impl Write for Torn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.limit);
        self.limit -= n;
        if n == 0 {
            return Err(std::io::Error::other("power cut"));
        }
        self.inner.write(&buf[..n])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl Read for Torn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}
impl Seek for Torn {
    fn seek(&mut self, p: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(p)
    }
}
impl SyncIo for Torn {
    fn sync_data(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

proptest! {
    #[test]
    fn a_torn_write_never_loses_the_previous_label(cut in 0usize..2000, gen in 1u64..4) {
        let mut d = disk();
        let mut l = read(&mut d).unwrap();
        for g in 1..=gen {
            write(&mut d, &mut l, &label(g)).unwrap();
        }
        let mut torn = Torn { inner: d, limit: cut };
        let _ = write(&mut torn, &mut l, &label(99));
        let mut d = torn.inner;
        let back = read(&mut d).unwrap();
        prop_assert!(back.label == Some(label(gen)) || back.label == Some(label(99)));
    }

    #[test]
    fn a_label_is_read_back_only_when_its_extents_are_disjoint_and_on_the_disk(
        extents in proptest::collection::vec(
            (prop_oneof![0u64..2 * DISK, Just(u64::MAX - 3)], prop_oneof![0u64..DISK, Just(u64::MAX)]),
            0..6,
        )
    ) {
        let mut b = label(2);
        b.extents = extents
            .iter()
            .enumerate()
            .map(|(i, &(start, len))| Extent {
                volume: format!("v{i}"),
                leg: 0,
                role: Role::Data,
                start: Sectors(start),
                len: Sectors(len),
                offset: Sectors(0),
                state: ExtentState::Active,
            })
            .collect();
        let ends: Vec<Option<u64>> = extents.iter().map(|&(s, l)| s.checked_add(l)).collect();
        let in_range = extents
            .iter()
            .zip(&ends)
            .all(|(&(s, _), e)| s >= LABEL_AREA.0 && e.is_some_and(|e| e <= DISK));
        let disjoint = (0..extents.len()).all(|i| {
            (0..i).all(|j| {
                let (a, b) = (extents[i], extents[j]);
                a.1 == 0 || b.1 == 0 || ends[i] <= Some(b.0) || ends[j] <= Some(a.0)
            })
        });
        let mut d = good_a_then_bad_b(&b);
        let back = read(&mut d).unwrap();
        if in_range && disjoint {
            prop_assert_eq!(back.label, Some(b));
        } else {
            prop_assert_eq!(back.label, Some(label(1)));
        }
    }

    #[test]
    fn read_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut v = vec![0u8; LABEL_AREA.bytes().0 as usize];
        v[..bytes.len()].copy_from_slice(&bytes);
        v[0..8].copy_from_slice(MAGIC);
        let _ = read(&mut Cursor::new(v));
    }
}
