//! Recording in the labels: every edit of the engine's records goes
//! through `edit_labels_where`, which checks each new label against its
//! slot before writing any, writes the disks in parallel, and re-reads a
//! label another process changed.

use super::*;

impl Engine {
    /// Rewrite the label of every claimed disk for which `f` changes it.
    pub(super) fn edit_labels(&self, f: impl FnMut(&mut DiskLabel)) -> Result<(), Error> {
        self.edit_labels_with(f, |_, _| Ok(()))
    }

    /// [`Self::edit_labels`], and on each disk whose label changes,
    /// `before(disk uuid, disk)` writes there once the label on it is known
    /// to be the one this process read (the space the new label hands out
    /// is ours), before the new label goes down; the label's sync makes
    /// those writes durable too. Every new label is checked against its
    /// slot before any is written, and the disks are written in parallel.
    pub(super) fn edit_labels_with(
        &self,
        f: impl FnMut(&mut DiskLabel),
        before: impl Fn(&str, &mut Box<dyn crate::kernel::disks::BlockIo>) -> std::io::Result<()> + Sync,
    ) -> Result<(), Error> {
        self.edit_labels_where(|_| true, f, before)
    }

    /// [`Self::edit_labels`] for an edit that touches only `id`: the labels
    /// that do not mention it are not even copied (a node with hundreds of
    /// volumes edits one volume's record many times a round).
    pub(super) fn edit_volume_labels(
        &self,
        id: &str,
        f: impl FnMut(&mut DiskLabel),
    ) -> Result<(), Error> {
        self.edit_labels_where(
            |l| l.volumes.contains_key(id) || l.extents.iter().any(|e| e.volume == id),
            f,
            |_, _| Ok(()),
        )
    }

    pub(super) fn edit_labels_where(
        &self,
        only: impl Fn(&DiskLabel) -> bool,
        mut f: impl FnMut(&mut DiskLabel),
        before: impl Fn(&str, &mut Box<dyn crate::kernel::disks::BlockIo>) -> std::io::Result<()> + Sync,
    ) -> Result<(), Error> {
        let mut claimed = lock(&self.claimed);
        let mut edits = BTreeMap::new();
        for (i, c) in claimed.iter().enumerate() {
            if !self.disks.present(&c.info) || !only(c.label()) {
                continue;
            }
            let mut label = c.label().clone();
            f(&mut label);
            if &label == c.label() {
                continue;
            }
            labels::check(&label, c.loaded.disk()).map_err(|source| Error::Label {
                path: c.info.path.display().to_string(),
                source,
            })?;
            edits.insert(i, label);
        }
        let write = |c: &mut Claimed, label: DiskLabel| -> Result<(), Error> {
            let path = c.info.path.clone();
            let _disk_lock = self.disks.lock_label(&path).map_err(Self::io_err(&path))?;
            let mut dev = self.disks.open(&path).map_err(Self::io_err(&path))?;
            let uuid = label.disk_uuid.to_string();
            let written = labels::write_with(&mut dev, &mut c.loaded, &label, |d| before(&uuid, d));
            if let Err(labels::LabelError::Stale { .. }) = &written {
                Self::reload_label(&mut dev, c);
            }
            written.map_err(|source| Error::Label {
                path: path.display().to_string(),
                source,
            })
        };
        let mut work: Vec<(&mut Claimed, DiskLabel)> = claimed
            .iter_mut()
            .enumerate()
            .filter_map(|(i, c)| edits.remove(&i).map(|l| (c, l)))
            .collect();
        if work.len() <= 1 {
            return work.pop().map_or(Ok(()), |(c, l)| write(c, l));
        }
        // One disk's sync need not wait for another's.
        std::thread::scope(|s| {
            let handles: Vec<_> = work
                .into_iter()
                .map(|(c, l)| s.spawn(|| write(c, l)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Precondition("a label writer panicked".into()))
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .collect::<Result<(), Error>>()
        })
    }

    /// After another process wrote `c`'s label: cache what is on the disk
    /// now, so the caller's next attempt builds on it. The cache is kept as
    /// it was (and every write stays refused) when the disk no longer holds
    /// this node's label of this disk.
    pub(super) fn reload_label(dev: &mut Box<dyn crate::kernel::disks::BlockIo>, c: &mut Claimed) {
        let path = c.info.path.display().to_string();
        match labels::read_within(dev, Bytes(c.info.size).sectors()) {
            Ok(labels::Loaded {
                label: Some(fresh), ..
            }) if fresh.disk_uuid != c.label().disk_uuid || fresh.node != c.label().node => {
                tracing::warn!(disk = %path, node = %fresh.node, uuid = %fresh.disk_uuid, "this disk was relabelled by another process; not adopting its label")
            }
            Ok(fresh) if fresh.label.is_some() => {
                tracing::warn!(disk = %path, seq = fresh.seq, "another process wrote this disk's label; re-read it");
                c.loaded = fresh;
            }
            Ok(_) => {
                tracing::warn!(disk = %path, "this disk's label was erased by another process")
            }
            Err(error) => tracing::warn!(disk = %path, %error, "cannot re-read this disk's label"),
        }
    }
}
