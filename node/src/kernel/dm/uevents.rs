//! The kernel's block device uevents on a netlink socket: how `KernelDm`
//! hears of a disk pulled or plugged in, whether or not udev runs.

use std::os::unix::io::AsRawFd;

/// A netlink socket on the kernel's uevent multicast group: the kernel
/// sends there whether or not udev runs.
pub(super) fn uevent_socket() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscalls; the fd is owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_KOBJECT_UEVENT,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a socket this function just opened.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_nl is valid; the fields set are plain integers.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = 1;
    // SAFETY: addr is a sockaddr_nl of the size passed.
    let rc = unsafe {
        libc::bind(
            fd,
            &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(owned)
}

/// Read every queued uevent; whether one was a block device added or
/// removed.
pub(super) fn drain_block_uevents(fd: &std::os::fd::OwnedFd) -> bool {
    let mut buf = vec![0u8; 8192];
    let mut block = false;
    loop {
        // SAFETY: buf is valid for its length; the socket is non-blocking.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n <= 0 {
            return block;
        }
        block |= is_block_add_or_remove(&buf[..n as usize]);
    }
}

/// A kernel uevent (`ACTION@DEVPATH\0KEY=VALUE\0...`) for a disk or
/// partition added or removed; device-mapper's own devices (which the
/// driver makes and removes itself) do not count.
fn is_block_add_or_remove(msg: &[u8]) -> bool {
    let mut fields = msg.split(|b| *b == 0);
    let head = fields.next().unwrap_or_default();
    let action_ok = head.starts_with(b"add@") || head.starts_with(b"remove@");
    let fields: Vec<&[u8]> = fields.collect();
    action_ok
        && fields.contains(&&b"SUBSYSTEM=block"[..])
        && !fields.iter().any(|f| f.starts_with(b"DEVNAME=dm-"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn block_uevents_are_told_from_others() {
        let pulled = b"remove@/devices/pci0000:00/0000:00:05.0/virtio3/block/vdc\0ACTION=remove\0DEVPATH=/devices/pci0000:00/0000:00:05.0/virtio3/block/vdc\0SUBSYSTEM=block\0DEVNAME=vdc\0DEVTYPE=disk\0DISKSEQ=9\0";
        assert!(super::is_block_add_or_remove(pulled));
        let plugged = b"add@/devices/pci0000:00/0000:00:06.0/virtio4/block/vdd\0ACTION=add\0SUBSYSTEM=block\0DEVNAME=vdd\0";
        assert!(super::is_block_add_or_remove(plugged));
        let ours = b"add@/devices/virtual/block/dm-3\0ACTION=add\0SUBSYSTEM=block\0DEVNAME=dm-3\0";
        assert!(!super::is_block_add_or_remove(ours));
        let changed = b"change@/devices/virtual/block/dm-3\0ACTION=change\0SUBSYSTEM=block\0";
        assert!(!super::is_block_add_or_remove(changed));
        let other =
            b"remove@/devices/pci0000:00/0000:00:05.0/virtio3\0ACTION=remove\0SUBSYSTEM=virtio\0";
        assert!(!super::is_block_add_or_remove(other));
    }
}
