//! Where a leg lives: its disk, its metadata extent and its data segments,
//! and the data device they make.

use super::*;

/// Where one leg of a volume lives, from the labels: its disk, its
/// metadata extent and its data segments.
#[derive(Debug, Clone)]
pub struct LegPlace {
    /// The disk holding the leg.
    pub disk: DiskInfo,
    /// Start of the metadata extent (sectors).
    pub meta: Sectors,
    /// The data segments in leg order: one unless the leg grew where the
    /// space after it was taken.
    pub data: Vec<Segment>,
}

/// One data segment of a leg: `len` sectors at `start` on the disk,
/// mapped at `offset` of the leg's data device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Where it starts in the leg's data device.
    pub offset: Sectors,
    /// Where it starts on the disk.
    pub start: Sectors,
    /// Its length.
    pub len: Sectors,
}

impl LegPlace {
    /// The leg's data device: one linear target per segment.
    pub fn data_table(&self) -> Vec<Target> {
        self.data
            .iter()
            .map(|s| {
                Target::new(
                    s.offset.0,
                    s.len.0,
                    "linear",
                    format!("{} {}", self.disk.devno, s.start.0),
                )
            })
            .collect()
    }

    /// Sectors of data the segments map.
    pub fn data_len(&self) -> Sectors {
        self.data.iter().map(|s| s.len).sum()
    }
}
