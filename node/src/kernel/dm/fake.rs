//! `FakeDm`: an in-memory device-mapper for the engine's unit tests (the
//! module is compiled for tests only).

use super::{DeviceMapper, DmError, DmInfo, Target};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// An in-memory device-mapper for unit tests of the engine's decisions
/// (not in the binary). Raid targets report the status a test sets with
/// [`FakeDm::set_status`], or all legs in sync when none was set.
#[derive(Default)]
pub struct FakeDm {
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    devices: BTreeMap<String, FakeDevice>,
    next_minor: u32,
    statuses: BTreeMap<String, String>,
    io: BTreeMap<String, (u64, u64)>,
    /// Operations in order, for tests that check what the engine did.
    log: Vec<String>,
    /// Fail the next operation whose log entry is exactly this line.
    fail_next: Option<String>,
    /// Every table loaded, with the device's name, in order.
    loads: Vec<(String, Vec<Target>)>,
    /// Events raised so far (table swaps, [`FakeDm::raise_event`]), and
    /// their number at the last `arm_events`: the kernel's global event
    /// counter and a control fd's armed value.
    events: u64,
    armed: u64,
    /// A status change that happens just after the device's status is next
    /// read: (device, new status).
    change_after_read: Option<(String, String)>,
    /// The status the next table swapped in reads with, by device.
    after_swap: BTreeMap<String, String>,
}

struct FakeDevice {
    info: DmInfo,
    live: Vec<Target>,
    inactive: Option<Vec<Target>>,
}

impl FakeDm {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set a device's I/O counters (I/Os, milliseconds) as io_stats reports them.
    pub fn set_io_stats(&self, name: &str, ios: u64, ms: u64) {
        self.lock().io.insert(name.to_string(), (ios, ms));
    }

    /// Make `status` report `params` (the words after `raid`) for device
    /// `name`, until its next table swap.
    pub fn set_status(&self, name: &str, params: &str) {
        self.lock()
            .statuses
            .insert(name.to_string(), params.to_string());
    }

    /// Raise a device-mapper event, as the kernel does when a leg fails.
    pub fn raise_event(&self) {
        self.lock().events += 1;
    }

    /// Right after device `name`'s status is next read, make it report
    /// `params` and raise an event: a leg failing while a round looks.
    pub fn change_after_read(&self, name: &str, params: &str) {
        self.lock().change_after_read = Some((name.to_string(), params.to_string()));
    }

    /// The status the next table swapped into `name` reads (instead of the
    /// default one of a table in sync).
    pub fn status_after_swap(&self, name: &str, params: &str) {
        self.lock()
            .after_swap
            .insert(name.to_string(), params.to_string());
    }

    /// Make the next operation whose log line is `line` fail (e.g. `"load vol-x"`).
    pub fn fail_next(&self, line: &str) {
        self.lock().fail_next = Some(line.to_string());
    }

    /// Every operation so far, as `"<op> <name>"` lines.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// The tables loaded into device `name` so far, oldest first, one line
    /// per table (its targets' `dmsetup table` lines joined by `; `).
    pub fn loads(&self, name: &str) -> Vec<String> {
        self.lock()
            .loads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| t.iter().map(Target::line).collect::<Vec<_>>().join("; "))
            .collect()
    }

    /// Names of the devices that exist.
    pub fn names(&self) -> Vec<String> {
        self.lock().devices.keys().cloned().collect()
    }

    /// Open the device as a mount would (open count + 1).
    pub fn set_open(&self, name: &str, open: bool) {
        if let Some(d) = self.lock().devices.get_mut(name) {
            d.info.open_count = i32::from(open);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A panic in another test thread must not hide this test's result.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(
        &self,
        op: &'static str,
        name: &str,
    ) -> Result<std::sync::MutexGuard<'_, FakeState>, DmError> {
        let mut st = self.lock();
        let line = format!("{op} {name}");
        if st.fail_next.as_deref() == Some(line.as_str()) {
            st.fail_next = None;
            return Err(DmError::Kernel {
                op,
                name: name.to_string(),
                reason: "injected failure".into(),
            });
        }
        st.log.push(line);
        Ok(st)
    }

    fn default_raid_status(target: &Target) -> String {
        // params: <type> <#params> <params...> <#devs> <devs...>
        let words: Vec<&str> = target.params.split_whitespace().collect();
        let kind = words.first().copied().unwrap_or("raid1");
        let nparams: usize = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(0);
        let ndevs: usize = words
            .get(2 + nparams)
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        let health = "A".repeat(ndevs);
        // md counts sync progress in sectors of one leg, as the kernel's
        // status does (`--test dm_contract`).
        let copies: u64 = words
            .iter()
            .position(|w| *w == "raid10_copies")
            .and_then(|i| words.get(i + 1)?.parse().ok())
            .unwrap_or(2);
        let per_leg = match dmraid_api::RaidType::parse(kind) {
            Ok(dmraid_api::RaidType::Raid10) => target.length * copies / (ndevs as u64).max(1),
            Ok(t) => {
                target.length
                    / u64::from(dmraid_api::capacity::data_stripes(t, ndevs as u32)).max(1)
            }
            Err(_) => target.length,
        };
        format!("{kind} {ndevs} {health} {per_leg}/{per_leg} idle 0 0 -")
    }
}

impl DeviceMapper for FakeDm {
    fn list(&self) -> Result<Vec<DmInfo>, DmError> {
        Ok(self
            .lock()
            .devices
            .values()
            .map(|d| d.info.clone())
            .collect())
    }

    fn info(&self, name: &str) -> Result<Option<DmInfo>, DmError> {
        Ok(self.lock().devices.get(name).map(|d| d.info.clone()))
    }

    fn create(&self, name: &str, uuid: Option<&str>) -> Result<DmInfo, DmError> {
        if name.is_empty() || name.len() > 127 || name.contains('/') {
            return Err(DmError::BadName(name.to_string()));
        }
        let mut st = self.record("create", name)?;
        if st.devices.contains_key(name) {
            return Err(DmError::Kernel {
                op: "create",
                name: name.to_string(),
                reason: "EBUSY: device exists".into(),
            });
        }
        st.next_minor += 1;
        let info = DmInfo {
            name: name.to_string(),
            uuid: uuid.map(str::to_string),
            major: 253,
            minor: st.next_minor,
            event_nr: 0,
            open_count: 0,
            suspended: false,
            live_table: false,
            inactive_table: false,
        };
        st.devices.insert(
            name.to_string(),
            FakeDevice {
                info: info.clone(),
                live: Vec::new(),
                inactive: None,
            },
        );
        Ok(info)
    }

    fn load(&self, name: &str, targets: &[Target]) -> Result<(), DmError> {
        let mut st = self.record("load", name)?;
        let dev = st
            .devices
            .get_mut(name)
            .ok_or_else(|| DmError::NotFound(name.to_string()))?;
        dev.inactive = Some(targets.to_vec());
        dev.info.inactive_table = true;
        st.loads.push((name.to_string(), targets.to_vec()));
        Ok(())
    }

    fn suspend(&self, name: &str) -> Result<(), DmError> {
        let mut st = self.record("suspend", name)?;
        let dev = st
            .devices
            .get_mut(name)
            .ok_or_else(|| DmError::NotFound(name.to_string()))?;
        dev.info.suspended = true;
        Ok(())
    }

    fn resume(&self, name: &str) -> Result<DmInfo, DmError> {
        let mut st = self.record("resume", name)?;
        // A new table gets a fresh status: what a test set described the old one.
        if st.devices.get(name).is_some_and(|d| d.inactive.is_some()) {
            match st.after_swap.remove(name) {
                Some(params) => st.statuses.insert(name.to_string(), params),
                None => st.statuses.remove(name),
            };
        }
        let dev = st
            .devices
            .get_mut(name)
            .ok_or_else(|| DmError::NotFound(name.to_string()))?;
        let swapped = if let Some(table) = dev.inactive.take() {
            dev.live = table;
            dev.info.live_table = true;
            dev.info.inactive_table = false;
            dev.info.event_nr += 1;
            true
        } else {
            false
        };
        dev.info.suspended = false;
        let info = dev.info.clone();
        st.events += u64::from(swapped);
        Ok(info)
    }

    fn remove(&self, name: &str) -> Result<(), DmError> {
        let mut st = self.record("remove", name)?;
        match st.devices.get(name) {
            None => Err(DmError::NotFound(name.to_string())),
            Some(d) if d.info.open_count > 0 => Err(DmError::Kernel {
                op: "remove",
                name: name.to_string(),
                reason: "EBUSY: device is open".into(),
            }),
            Some(_) => {
                st.devices.remove(name);
                st.statuses.remove(name);
                Ok(())
            }
        }
    }

    fn table(&self, name: &str) -> Result<Vec<Target>, DmError> {
        self.lock()
            .devices
            .get(name)
            .map(|d| d.live.clone())
            .ok_or_else(|| DmError::NotFound(name.to_string()))
    }

    fn status(&self, name: &str) -> Result<Vec<Target>, DmError> {
        let mut st = self.lock();
        let dev = st
            .devices
            .get(name)
            .ok_or_else(|| DmError::NotFound(name.to_string()))?;
        let now: Vec<Target> = dev
            .live
            .iter()
            .map(|t| {
                let params = if t.kind == "raid" {
                    st.statuses
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| Self::default_raid_status(t))
                } else {
                    String::new()
                };
                Target::new(t.start, t.length, &t.kind, params)
            })
            .collect();
        if let Some((dev, params)) = st.change_after_read.take_if(|(dev, _)| dev == name) {
            st.statuses.insert(dev, params);
            st.events += 1;
        }
        Ok(now)
    }

    fn message(&self, name: &str, msg: &str) -> Result<Option<String>, DmError> {
        let mut st = self.record("message", name)?;
        let line = format!("message {name} {msg}");
        if let Some(last) = st.log.last_mut() {
            *last = line;
        }
        Ok(None)
    }

    fn arm_events(&self) -> Result<(), DmError> {
        let mut st = self.lock();
        st.armed = st.events;
        Ok(())
    }

    fn wait_for_event(&self, timeout: Duration) -> Result<super::Wake, DmError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            {
                let st = self.lock();
                if st.events != st.armed {
                    return Ok(super::Wake::Device);
                }
            }
            if std::time::Instant::now() >= deadline {
                return Ok(super::Wake::Timeout);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn device_path(&self, name: &str) -> Result<PathBuf, DmError> {
        if self.lock().devices.contains_key(name) {
            Ok(PathBuf::from("/dev/mapper").join(name))
        } else {
            Err(DmError::NotFound(name.to_string()))
        }
    }

    fn io_stats(&self, name: &str) -> Result<Option<(u64, u64)>, DmError> {
        Ok(self.lock().io.get(name).copied())
    }
}
