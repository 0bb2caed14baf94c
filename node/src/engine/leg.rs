//! Where a leg lives: its disk, its metadata extent and its data segments,
//! the devices they make, and the volume's whole stack of devices.

use super::stack::{Device, Layer, LinearSegment, LinearTable, Stack};
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
    /// The leg's data device: one linear segment per data segment.
    pub fn data_table(&self) -> LinearTable {
        LinearTable {
            segments: self
                .data
                .iter()
                .map(|s| LinearSegment {
                    dev: self.disk.devno.clone(),
                    offset: s.start,
                    len: s.len,
                })
                .collect(),
        }
    }

    /// The leg's metadata device.
    pub fn meta_table(&self) -> LinearTable {
        LinearTable::one(self.disk.devno.clone(), self.meta, META_EXTENT)
    }

    /// Sectors of data the segments map.
    pub fn data_len(&self) -> Sectors {
        self.data.iter().map(|s| s.len).sum()
    }
}

impl Engine {
    /// The volume's devices as a stack: the meta and data linears of every
    /// leg whose disk is here, then the array over them (`new_array`: its
    /// first activation). The array's table names the legs' devices by
    /// name; [`stack::activate`] puts in their numbers.
    pub(super) fn volume_stack(
        &self,
        id: &str,
        vs: &VolumeSpec,
        legs: &BTreeMap<u32, LegPlace>,
        new_array: bool,
    ) -> Result<Stack, Error> {
        let mut linears = Vec::new();
        let mut refs = Vec::new();
        for leg in 0..vs.spec.legs {
            let Some(place) = legs.get(&leg) else {
                refs.push(None);
                continue;
            };
            let (meta, data) = (leg_name(id, leg, Role::Meta), leg_name(id, leg, Role::Data));
            refs.push(Some(LegDevs {
                meta: meta.clone(),
                data: data.clone(),
            }));
            linears.push(Device {
                name: meta,
                uuid: None,
                layer: Layer::Linear(place.meta_table()),
            });
            linears.push(Device {
                name: data,
                uuid: None,
                layer: Layer::Linear(place.data_table()),
            });
        }
        let table = self.with_rate(
            id,
            vs,
            RaidTable::build(&vs.spec, Sectors(vs.leg_data), refs, new_array, &[])?,
        );
        let array = Device {
            name: array_name(id),
            uuid: Some(format!("DMRAID-{id}")),
            layer: Layer::Raid(table),
        };
        Ok(Stack {
            layers: vec![linears, vec![array]],
        })
    }
}
