//! `KernelDm`, the real implementation: ioctls on /dev/mapper/control.

use super::settle::{self, Settle};
use super::uevents::{drain_block_uevents, uevent_socket};
use super::{DeviceMapper, DmError, DmInfo, Target, Wake};
use devicemapper::{DevId, DmFlags, DmName, DmOptions, DmUuid, DM};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Device-mapper through the kernel's ioctl interface.
pub struct KernelDm {
    dm: DM,
    /// The kernel's block device uevents (a disk pulled or plugged in),
    /// where the system lets this process listen.
    uevents: Option<std::os::fd::OwnedFd>,
    /// Raid devices md may still be starting a sync on ([`settle`]).
    settle: Settle,
}

impl KernelDm {
    /// Open /dev/mapper/control.
    pub fn open() -> Result<Self, DmError> {
        let dm = DM::new().map_err(|e| DmError::Kernel {
            op: "open /dev/mapper/control",
            name: String::new(),
            reason: e.to_string(),
        })?;
        let uevents = uevent_socket()
            .map_err(|e| tracing::warn!(error = %e, "cannot listen for disks added or removed (netlink uevents); they are seen at the next health round"))
            .ok();
        Ok(KernelDm {
            dm,
            uevents,
            settle: Settle::default(),
        })
    }
}

fn dm_name(name: &str) -> Result<&DmName, DmError> {
    DmName::new(name).map_err(|_| DmError::BadName(name.to_string()))
}

/// The error of an ioctl on device `name`: `NotFound` when the kernel
/// says there is no such device (ENXIO), as the fake does and the engine
/// expects (`--test dm_contract`), else the kernel's words.
fn kernel_err(op: &'static str, name: &str) -> impl FnOnce(devicemapper::DmError) -> DmError {
    let name = name.to_string();
    move |e| {
        if !name.is_empty() && op != "create" && is_enxio(&e) {
            return DmError::NotFound(name);
        }
        DmError::Kernel {
            op,
            name,
            reason: super::ioctl_words(&e.to_string()),
        }
    }
}

fn to_info(info: &devicemapper::DeviceInfo, fallback_name: &str) -> DmInfo {
    let flags = info.flags();
    let dev = info.device();
    DmInfo {
        name: info
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|| fallback_name.to_string()),
        uuid: info.uuid().map(|u| u.to_string()).filter(|u| !u.is_empty()),
        major: dev.major,
        minor: dev.minor,
        event_nr: info.event_nr(),
        open_count: info.open_count(),
        suspended: flags.contains(DmFlags::DM_SUSPEND),
        live_table: flags.contains(DmFlags::DM_ACTIVE_PRESENT),
        inactive_table: flags.contains(DmFlags::DM_INACTIVE_PRESENT),
    }
}

fn to_targets(lines: Vec<(u64, u64, String, String)>) -> Vec<Target> {
    lines
        .into_iter()
        .map(|(start, length, kind, params)| Target {
            start,
            length,
            kind,
            params: params.trim().to_string(),
        })
        .collect()
}

/// True when the device-mapper ioctl failed because the device is absent.
fn is_enxio(e: &devicemapper::DmError) -> bool {
    let text = e.to_string();
    text.contains("ENXIO") || text.contains("No such device")
}

impl DeviceMapper for KernelDm {
    fn list(&self) -> Result<Vec<DmInfo>, DmError> {
        let devices = self.dm.list_devices().map_err(kernel_err("list", ""))?;
        let mut out = Vec::with_capacity(devices.len());
        for (name, _, _) in devices {
            if let Some(info) = self.info(&name.to_string())? {
                out.push(info);
            }
        }
        Ok(out)
    }

    fn names(&self) -> Result<Vec<String>, DmError> {
        let devices = self.dm.list_devices().map_err(kernel_err("list", ""))?;
        Ok(devices
            .into_iter()
            .map(|(name, _, _)| name.to_string())
            .collect())
    }

    fn info(&self, name: &str) -> Result<Option<DmInfo>, DmError> {
        match self.dm.device_info(&DevId::Name(dm_name(name)?)) {
            Ok(info) => Ok(Some(to_info(&info, name))),
            Err(e) if is_enxio(&e) => Ok(None),
            Err(e) => Err(kernel_err("info", name)(e)),
        }
    }

    fn create(&self, name: &str, uuid: Option<&str>) -> Result<DmInfo, DmError> {
        let uuid = uuid
            .map(|u| DmUuid::new(u).map_err(|_| DmError::BadName(u.to_string())))
            .transpose()?;
        let info = self
            .dm
            .device_create(dm_name(name)?, uuid, DmOptions::default())
            .map_err(kernel_err("create", name))?;
        Ok(to_info(&info, name))
    }

    fn load(&self, name: &str, targets: &[Target]) -> Result<(), DmError> {
        let lines: Vec<(u64, u64, String, String)> = targets
            .iter()
            .map(|t| (t.start, t.length, t.kind.clone(), t.params.clone()))
            .collect();
        self.dm
            .table_load(&DevId::Name(dm_name(name)?), &lines, DmOptions::default())
            .map_err(kernel_err(
                "table load (see dmesg for the kernel's reason)",
                name,
            ))?;
        self.settle
            .loaded(name, targets.first().is_some_and(|t| t.kind == "raid"));
        Ok(())
    }

    fn suspend(&self, name: &str) -> Result<(), DmError> {
        self.settle_sync(name);
        self.dm
            .device_suspend(
                &DevId::Name(dm_name(name)?),
                DmOptions::default().set_flags(DmFlags::DM_SUSPEND),
            )
            .map_err(kernel_err("suspend", name))?;
        Ok(())
    }

    fn resume(&self, name: &str) -> Result<DmInfo, DmError> {
        let info = self
            .dm
            .device_suspend(&DevId::Name(dm_name(name)?), DmOptions::default())
            .map_err(kernel_err(
                "resume (see dmesg for the kernel's reason)",
                name,
            ))?;
        self.settle.started(name, None, Instant::now());
        let info = to_info(&info, name);
        self.ensure_node(&info)?;
        Ok(info)
    }

    fn remove(&self, name: &str) -> Result<(), DmError> {
        self.settle_sync(name);
        self.dm
            .device_remove(&DevId::Name(dm_name(name)?), DmOptions::default())
            .map_err(kernel_err("remove", name))?;
        self.settle.removed(name);
        let node = Path::new("/dev/mapper").join(name);
        if !udev_running() && node.exists() {
            let _ = std::fs::remove_file(node);
        }
        Ok(())
    }

    fn table(&self, name: &str) -> Result<Vec<Target>, DmError> {
        let (_, lines) = self
            .dm
            .table_status(
                &DevId::Name(dm_name(name)?),
                DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE),
            )
            .map_err(kernel_err("table", name))?;
        Ok(to_targets(lines))
    }

    fn status(&self, name: &str) -> Result<Vec<Target>, DmError> {
        let (_, lines) = self
            .dm
            .table_status(&DevId::Name(dm_name(name)?), DmOptions::default())
            .map_err(kernel_err("status", name))?;
        Ok(to_targets(lines))
    }

    fn message(&self, name: &str, msg: &str) -> Result<Option<String>, DmError> {
        self.settle_sync(name);
        let (_, out) = self
            .dm
            .target_msg(&DevId::Name(dm_name(name)?), None, msg)
            .map_err(kernel_err("message", name))?;
        self.settle.started(name, Some(msg), Instant::now());
        Ok(out)
    }

    fn arm_events(&self) -> Result<(), DmError> {
        // DM_DEV_ARM_POLL: this fd polls readable once the global event
        // counter moves past its value now.
        self.dm.arm_poll().map_err(kernel_err("arm poll", ""))?;
        Ok(())
    }

    fn wait_for_event(&self, timeout: Duration) -> Result<Wake, DmError> {
        let mut fds = vec![libc::pollfd {
            fd: self.dm.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(u) = &self.uevents {
            fds.push(libc::pollfd {
                fd: u.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: fds is a valid array of pollfds for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                return Ok(Wake::Timeout);
            }
            return Err(DmError::Kernel {
                op: "poll",
                name: String::new(),
                reason: err.to_string(),
            });
        }
        let dm_event = n > 0 && fds[0].revents & libc::POLLIN != 0;
        let disk_event = match (&self.uevents, fds.get(1)) {
            (Some(u), Some(p)) if n > 0 && p.revents & libc::POLLIN != 0 => {
                let block = drain_block_uevents(u);
                if block {
                    // A pulled disk sends its uevent while the kernel
                    // still takes it apart (its sysfs entry, which says
                    // whether it is present, goes after); and one pull
                    // is several uevents. Let both settle.
                    std::thread::sleep(Duration::from_millis(200));
                    drain_block_uevents(u);
                }
                block
            }
            _ => false,
        };
        Ok(if disk_event {
            Wake::Disk
        } else if dm_event {
            Wake::Device
        } else {
            Wake::Timeout
        })
    }

    fn device_path(&self, name: &str) -> Result<PathBuf, DmError> {
        let info = self
            .info(name)?
            .ok_or_else(|| DmError::NotFound(name.to_string()))?;
        self.ensure_node(&info)
    }

    fn io_stats(&self, name: &str) -> Result<Option<(u64, u64)>, DmError> {
        let Some(info) = self.info(name)? else {
            return Ok(None);
        };
        // Documentation/block/stat.rst: reads, merges, sectors, ms; writes, merges, sectors, ms; ...
        let path = format!("/sys/dev/block/{}:{}/stat", info.major, info.minor);
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(None);
        };
        let f: Vec<u64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if f.len() < 8 {
            return Ok(None);
        }
        Ok(Some((f[0] + f[4], f[3] + f[7])))
    }
}

fn udev_running() -> bool {
    Path::new("/run/udev/control").exists()
}

impl KernelDm {
    /// Before a suspend, a remove or a message: give a raid device md may
    /// still be starting a sync on the rest of [`settle::SETTLE`] (see
    /// there why: on 6.1 a suspend in that window hangs the kernel).
    fn settle_sync(&self, name: &str) {
        let Some(left) = self.settle.left(name, Instant::now()) else {
            return;
        };
        let syncing = self
            .status(name)
            .ok()
            .and_then(|t| t.into_iter().next())
            .is_some_and(|t| t.kind == "raid" && !settle::idle(&t.params));
        if syncing {
            tracing::debug!(
                device = name,
                wait_ms = left.as_millis() as u64,
                "raid device resumed moments ago and syncing: md may still be starting its sync thread; waiting before suspending it"
            );
            std::thread::sleep(left);
        }
    }

    /// Make `/dev/mapper/<name>` when no udev will: the guest VM and
    /// minimal hosts have none. With udev, wait for it instead.
    fn ensure_node(&self, info: &DmInfo) -> Result<PathBuf, DmError> {
        let path = Path::new("/dev/mapper").join(&info.name);
        if udev_running() {
            return Ok(path);
        }
        let want = libc::makedev(info.major, info.minor);
        if let Ok(meta) = std::fs::metadata(&path) {
            use std::os::unix::fs::MetadataExt;
            if meta.file_type().is_block_device() && meta.rdev() == want {
                return Ok(path);
            }
            let _ = std::fs::remove_file(&path);
        }
        let node_err = |reason: String| DmError::Kernel {
            op: "mknod",
            name: info.name.clone(),
            reason,
        };
        std::fs::create_dir_all("/dev/mapper").map_err(|e| node_err(e.to_string()))?;
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| node_err(e.to_string()))?;
        // SAFETY: c_path is a valid NUL-terminated path.
        let rc = unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFBLK | 0o600, want) };
        if rc != 0 {
            return Err(node_err(std::io::Error::last_os_error().to_string()));
        }
        Ok(path)
    }
}
