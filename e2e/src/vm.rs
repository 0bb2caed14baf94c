//! A QEMU VM with a real kernel and real (virtual) disks, for the tests that
//! need device-mapper. Software emulation (`-accel tcg`; the host has no
//! usable KVM), one vCPU (6.12 panicked once with `-smp 2` under
//! TCG), virtio disks on sparse files (fully written ones for benches) with
//! `cache=none` so a power cut keeps exactly what the guest wrote. Commands
//! run through the guest agent on a virtio-serial port; every wait has a
//! deadline; QEMU is killed when the `Vm` is dropped, whatever happened.

use crate::initramfs;
use crate::qmp::Qmp;
use base64::Engine as _;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One mebibyte, for disk sizes.
pub const MIB: u64 = 1 << 20;

/// What a guest command returned.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (128+N for a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Standard output as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// How to boot a VM.
pub struct VmBuilder {
    disks: Vec<u64>,
    memory_mb: u32,
    files: Vec<(PathBuf, String)>,
    boot_timeout: Duration,
    command_timeout: Duration,
    network: bool,
    host_cache: bool,
    preallocated: bool,
    event_idx: bool,
    forwards: Vec<(String, u16)>,
}

/// Where the workspace's binaries are (`$CARGO_TARGET_DIR/{debug,release}`).
fn target_dir() -> PathBuf {
    // Test executables live in <target>/<profile>/deps/, binaries in <target>/<profile>/.
    std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.ancestors()
                .find(|a| {
                    matches!(
                        a.file_name().and_then(|n| n.to_str()),
                        Some("debug" | "release")
                    )
                })
                .and_then(Path::parent)
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// The release build of a driver binary, if it was built.
pub fn release_binary(name: &str) -> Option<PathBuf> {
    let p = target_dir().join("release").join(name);
    p.exists().then_some(p)
}

impl Default for VmBuilder {
    fn default() -> Self {
        VmBuilder {
            disks: Vec::new(),
            memory_mb: 512,
            files: Vec::new(),
            boot_timeout: Duration::from_secs(90),
            command_timeout: Duration::from_secs(300),
            network: false,
            host_cache: false,
            preallocated: false,
            event_idx: true,
            forwards: Vec::new(),
        }
    }
}

impl VmBuilder {
    /// Virtio disks of these sizes in bytes (sparse files unless
    /// [`VmBuilder::preallocated`]), serials `d0`, `d1`, ...
    pub fn disks(mut self, sizes: &[u64]) -> Self {
        self.disks = sizes.to_vec();
        self
    }

    /// Guest memory.
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// Put a host file into the guest at `guest_path` (its shared libraries come along).
    pub fn file(mut self, host: impl Into<PathBuf>, guest_path: &str) -> Self {
        self.files.push((host.into(), guest_path.to_string()));
        self
    }

    /// Include the release build of `dmraid-csi` as `/bin/dmraid-csi`; an error if not built.
    pub fn with_driver(self) -> Result<Self, String> {
        let bin = release_binary("dmraid-csi").ok_or_else(|| {
            "the release dmraid-csi is not built: run `cargo build --release --workspace --bins` \
             (scripts/test.sh does)"
                .to_string()
        })?;
        Ok(self.file(bin, "/bin/dmraid-csi"))
    }

    /// A virtio NIC on QEMU user networking, configured as 10.0.2.15 with
    /// the host reachable at 10.0.2.2 (its loopback services included).
    pub fn network(mut self) -> Self {
        self.network = true;
        self
    }

    /// With [`VmBuilder::network`]: the guest's TCP connections to
    /// `guest_addr` ("10.0.2.x:port", inside QEMU's user network) reach
    /// port `host_port` on the host's loopback, one `socat` per connection.
    /// What kube-proxy does for a Service's cluster IP, for the API server.
    pub fn forward(mut self, guest_addr: &str, host_port: u16) -> Self {
        self.forwards.push((guest_addr.to_string(), host_port));
        self
    }

    /// Let the disk images go through the host's page cache (`cache=writeback`)
    /// instead of O_DIRECT (`cache=none`, the default). On this host QEMU 7.2
    /// with `cache=none` now and then fails valid guest writes (1 KiB-aligned
    /// 1 MiB zero-page writes, as mkfs.ext4 issues through dm-raid) with an
    /// I/O error, and dm-raid rightly fails the leg; tests that are not about
    /// leg failures opt out of that noise here. A QEMU kill still keeps every
    /// completed write (the host kernel holds them), but not a host crash.
    pub fn host_page_cache(mut self) -> Self {
        self.host_cache = true;
        self
    }

    /// Write every byte of each disk image before boot (zeroes) instead of
    /// leaving it sparse, for benchmarks of the data path: a guest write
    /// to a hole makes the host filesystem allocate blocks, and a read of a
    /// hole (or of fallocate's unwritten extents, measured at 45 GB/s here
    /// against 2 GB/s for written blocks) never reaches the disk, so sparse
    /// images made the LVM reference vary 2×. Costs about 0.6 s per GiB on
    /// this host.
    pub fn preallocated(mut self) -> Self {
        self.preallocated = true;
        self
    }

    /// Virtio disks without the EVENT_IDX feature (`event_idx=off`: the
    /// guest notifies QEMU of every request, QEMU interrupts for every
    /// completion). Under sustained queue-depth-16 4k I/O (fio), QEMU 7.2
    /// under TCG here stopped serving a disk's queue now and then: 16
    /// requests in flight for ever, and a new request as well, on a bare
    /// disk as on dm-raid (2 runs of 30 short fio jobs out of 2, at the 8th
    /// and the 15th job); with the feature off, none did.
    pub fn without_event_idx(mut self) -> Self {
        self.event_idx = false;
        self
    }

    /// Include the host's `fio` (Debian package fio) as `/usr/bin/fio`,
    /// with its libraries; an error if it is not installed. Opt-in, not in
    /// the provisioned base: Debian's fio links its rbd, gluster, rdma and
    /// nbd engines, about 75 MB of libraries that every other VM would
    /// otherwise unpack into its memory.
    pub fn with_fio(self) -> Result<Self, String> {
        let fio = ["/usr/bin/fio", "/usr/local/bin/fio"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or("fio is not installed: run scripts/install.sh (Debian package fio)")?;
        Ok(self.file(fio, "/usr/bin/fio"))
    }

    /// Longest a single guest command may take.
    pub fn command_timeout(mut self, t: Duration) -> Self {
        self.command_timeout = t;
        self
    }

    /// Boot and wait for the agent.
    pub fn boot(self) -> Result<Vm, String> {
        let dir = tempfile::Builder::new()
            .prefix("dmraid-vm-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let agent = target_dir().join(if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        });
        let agent = agent.join("dmraid-e2e-agent");
        if !agent.exists() {
            return Err(format!(
                "{} is missing: build it with `cargo build -p e2e --bins`",
                agent.display()
            ));
        }
        let mut files = self.files.clone();
        files.push((agent, "/bin/dmraid-e2e-agent".into()));
        let initrd = initramfs::build(dir.path(), &files)?;
        let mut disks = Vec::new();
        for size in &self.disks {
            disks.push(new_disk(dir.path(), disks.len(), *size, self.preallocated)?);
        }
        let mut vm = Vm {
            dir,
            initrd,
            disks,
            memory_mb: self.memory_mb,
            host_cache: self.host_cache,
            preallocated: self.preallocated,
            event_idx: self.event_idx,
            boot_timeout: self.boot_timeout,
            command_timeout: self.command_timeout,
            qemu: None,
            qmp: None,
            agent: None,
            next_id: 1,
            boots: 0,
            network: self.network,
            forwards: self.forwards,
            plugs: 0,
        };
        vm.start()?;
        Ok(vm)
    }
}

/// One disk image and whether it is plugged in.
struct Disk {
    path: PathBuf,
    attached: bool,
}

/// A disk image of `size` bytes: sparse, or with every byte written
/// (`preallocated`).
fn new_disk(dir: &Path, index: usize, size: u64, preallocated: bool) -> Result<Disk, String> {
    let path = dir.join(format!("d{index}.img"));
    let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    if preallocated {
        let zeroes = vec![0u8; MIB as usize];
        let mut left = size;
        while left > 0 {
            let n = left.min(MIB) as usize;
            f.write_all(&zeroes[..n])
                .map_err(|e| format!("{}: {e}", path.display()))?;
            left -= n as u64;
        }
        f.sync_all().map_err(|e| e.to_string())?;
    }
    f.set_len(size).map_err(|e| e.to_string())?;
    Ok(Disk {
        path,
        attached: true,
    })
}

struct Agent {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// A running VM.
pub struct Vm {
    dir: tempfile::TempDir,
    initrd: PathBuf,
    disks: Vec<Disk>,
    memory_mb: u32,
    host_cache: bool,
    preallocated: bool,
    event_idx: bool,
    boot_timeout: Duration,
    command_timeout: Duration,
    qemu: Option<Child>,
    qmp: Option<Qmp>,
    agent: Option<Agent>,
    next_id: u64,
    boots: u32,
    network: bool,
    forwards: Vec<(String, u16)>,
    /// Disks plugged in while running, for unique QEMU block node names.
    plugs: u32,
}

impl Vm {
    /// A builder.
    pub fn builder() -> VmBuilder {
        VmBuilder::default()
    }

    fn console_path(&self) -> PathBuf {
        self.dir.path().join(format!("console-{}.log", self.boots))
    }

    /// The last lines of the serial console, for error messages.
    pub fn console_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.console_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn start(&mut self) -> Result<(), String> {
        self.boots += 1;
        let kernel = initramfs::kernel()?;
        let qmp_path = self.dir.path().join("qmp.sock");
        let agent_path = self.dir.path().join("agent.sock");
        let _ = std::fs::remove_file(&qmp_path);
        let _ = std::fs::remove_file(&agent_path);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-smp", "1", "-m"])
            .arg(self.memory_mb.to_string())
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .args([
                "-append",
                "console=ttyS0 panic=-1 rdinit=/init loglevel=4 sysrq_always_enabled",
            ])
            .arg("-serial")
            .arg(format!("file:{}", self.console_path().display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .args(["-device", "virtio-serial-pci,id=vser"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=agent,path={},server=on,wait=off",
                agent_path.display()
            ))
            .args(["-device", "virtserialport,chardev=agent,name=agent"]);
        if self.network {
            let mut nic = "user,model=virtio-net-pci".to_string();
            for (guest, port) in &self.forwards {
                nic += &format!(",guestfwd=tcp:{guest}-cmd:socat STDIO TCP:127.0.0.1:{port}");
            }
            cmd.args(["-nic", &nic]);
        }
        let cache = if self.host_cache { "writeback" } else { "none" };
        for (i, disk) in self.disks.iter().enumerate() {
            if !disk.attached {
                continue;
            }
            cmd.arg("-drive")
                .arg(format!(
                    "file={},format=raw,if=none,id=d{i},cache={cache},aio=threads",
                    disk.path.display()
                ))
                .arg("-device")
                .arg(format!(
                    "virtio-blk-pci,drive=d{i},id=vd{i},serial=d{i}{}",
                    if self.event_idx { "" } else { ",event_idx=off" }
                ));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| {
            format!("cannot start qemu-system-x86_64: {e} (run scripts/install.sh: Debian package qemu-system-x86)")
        })?;
        self.qemu = Some(child);
        let deadline = Instant::now() + self.boot_timeout;
        let result = self.connect(&qmp_path, &agent_path, deadline);
        if let Err(e) = result {
            let tail = self.console_tail(40);
            self.kill();
            let stderr = self.qemu_stderr();
            return Err(format!(
                "VM did not boot: {e}\nqemu stderr: {stderr}\n--- console ---\n{tail}"
            ));
        }
        if self.network {
            // QEMU's user network: the guest is 10.0.2.15, the host 10.0.2.2.
            self.run_ok(
                "ifconfig lo 127.0.0.1 up && ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up && route add default gw 10.0.2.2",
            )
            .map_err(|e| format!("guest network: {e}"))?;
        }
        Ok(())
    }

    fn qemu_stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(child) = self.qemu.as_mut() {
            if let Some(mut err) = child.stderr.take() {
                use std::io::Read;
                let _ = err.read_to_string(&mut s);
            }
        }
        s
    }

    fn connect(&mut self, qmp: &Path, agent: &Path, deadline: Instant) -> Result<(), String> {
        self.qmp = Some(Qmp::connect(qmp, deadline)?);
        let stream = loop {
            match UnixStream::connect(agent) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => return Err(format!("agent socket: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
            self.check_alive()?;
        };
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        self.agent = Some(Agent {
            reader: BufReader::new(stream),
            writer,
        });
        // The request waits in the port until the agent starts reading: its
        // answer is the sign the guest is up.
        let out = self.request("echo up", &[], deadline)?;
        if out.text().trim() != "up" {
            return Err(format!("agent answered {:?}", out.text()));
        }
        Ok(())
    }

    fn check_alive(&mut self) -> Result<(), String> {
        if let Some(child) = self.qemu.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("QEMU exited: {status}"));
            }
        }
        Ok(())
    }

    fn request(&mut self, cmd: &str, stdin: &[u8], deadline: Instant) -> Result<Output, String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let id = self.next_id;
        self.next_id += 1;
        let agent = self.agent.as_mut().ok_or("the VM is not running")?;
        let mut line = json!({ "id": id, "cmd": cmd, "stdin": b64.encode(stdin) }).to_string();
        line.push('\n');
        agent
            .writer
            .write_all(line.as_bytes())
            .map_err(|e| format!("agent write: {e}"))?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // A command that never returns is a guest stuck (a hung
                // device, a blocked kernel task): say what it was doing.
                return Err(format!(
                    "guest command timed out: {cmd}\n{}",
                    self.stuck_report()
                ));
            }
            // Wake up now and then to notice a dead QEMU instead of waiting out the deadline.
            agent
                .reader
                .get_ref()
                .set_read_timeout(Some(left.min(Duration::from_secs(2))))
                .map_err(|e| e.to_string())?;
            let mut text = String::new();
            match agent.reader.read_line(&mut text) {
                Ok(0) => return Err("the agent closed its port (guest gone?)".into()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if let Some(child) = self.qemu.as_mut() {
                        if let Ok(Some(status)) = child.try_wait() {
                            return Err(format!("QEMU exited ({status}) while running: {cmd}"));
                        }
                    }
                    continue;
                }
                Err(e) => return Err(format!("agent read: {e}")),
            }
            let v: Value =
                serde_json::from_str(&text).map_err(|e| format!("agent: {e}: {text:?}"))?;
            if v["id"].as_u64() != Some(id) {
                continue;
            }
            let dec = |k: &str| b64.decode(v[k].as_str().unwrap_or("")).unwrap_or_default();
            return Ok(Output {
                code: v["code"].as_i64().unwrap_or(-1) as i32,
                stdout: dec("stdout"),
                stderr: dec("stderr"),
            });
        }
    }

    /// Run `cmd` with `/bin/sh -c` in the guest.
    pub fn run(&mut self, cmd: &str) -> Result<Output, String> {
        let deadline = Instant::now() + self.command_timeout;
        self.request(cmd, &[], deadline)
    }

    /// Run `cmd`; a non-zero exit is an error carrying its output, the guest's dmesg and the console tail.
    pub fn run_ok(&mut self, cmd: &str) -> Result<String, String> {
        let out = self.run(cmd)?;
        if out.code == 0 {
            return Ok(out.text());
        }
        let dmesg = self.dmesg().unwrap_or_default();
        let dmesg: Vec<&str> = dmesg.lines().collect();
        Err(format!(
            "guest command failed (exit {}): {cmd}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- dmesg (tail) ---\n{}",
            out.code,
            out.text(),
            String::from_utf8_lossy(&out.stderr),
            dmesg[dmesg.len().saturating_sub(30)..].join("\n")
        ))
    }

    /// The guest kernel's log.
    pub fn dmesg(&mut self) -> Result<String, String> {
        Ok(self.run("dmesg")?.text())
    }

    /// Write `data` to `guest_path`.
    pub fn write_file(&mut self, guest_path: &str, data: &[u8]) -> Result<(), String> {
        let deadline = Instant::now() + self.command_timeout;
        let out = self.request(&format!("cat > '{guest_path}'"), data, deadline)?;
        if out.code != 0 {
            return Err(format!(
                "writing {guest_path}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Copy a host file into the guest.
    pub fn copy_in(&mut self, host: &Path, guest_path: &str) -> Result<(), String> {
        let data = std::fs::read(host).map_err(|e| format!("{}: {e}", host.display()))?;
        self.write_file(guest_path, &data)
    }

    /// Copy a guest file out to the host.
    pub fn copy_out(&mut self, guest_path: &str, host: &Path) -> Result<(), String> {
        let out = self.run(&format!("cat '{guest_path}'"))?;
        if out.code != 0 {
            return Err(format!(
                "reading {guest_path}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::write(host, &out.stdout).map_err(|e| e.to_string())
    }

    /// Start `cmd` in the background in the guest; returns its pid (stop it with `kill`).
    /// Its output goes to `/tmp/bg-<pid>.log`.
    pub fn spawn(&mut self, cmd: &str) -> Result<u32, String> {
        let escaped = cmd.replace('\'', "'\\''");
        let out = self.run_ok(&format!(
            "sh -c '{escaped}' > /tmp/bg.log.tmp 2>&1 & pid=$!; mv /tmp/bg.log.tmp /tmp/bg-$pid.log; echo $pid"
        ))?;
        out.trim()
            .parse()
            .map_err(|_| format!("spawn: no pid in {out:?}"))
    }

    /// Guest device path (`/dev/vdX`) of disk `index` (serial `d<index>`).
    pub fn disk_dev(&mut self, index: usize) -> Result<String, String> {
        let out = self.run_ok(&format!(
            "for s in /sys/block/vd*/serial; do [ \"$(cat $s)\" = d{index} ] && basename $(dirname $s); done; true"
        ))?;
        let name = out.trim();
        if name.is_empty() {
            return Err(format!("no guest disk with serial d{index}"));
        }
        Ok(format!("/dev/{name}"))
    }

    /// Number of disks known (attached or not); indexes are stable.
    pub fn disk_count(&self) -> usize {
        self.disks.len()
    }

    /// Hot-remove disk `index` (QMP `device_del`) and wait until the guest has lost it.
    pub fn hot_remove_disk(&mut self, index: usize) -> Result<(), String> {
        let dev = self.disk_dev(index)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let qmp = self.qmp.as_mut().ok_or("the VM is not running")?;
        let id = format!("vd{index}");
        qmp.execute("device_del", json!({ "id": id }), deadline)?;
        qmp.wait_event("DEVICE_DELETED", |d| d["device"] == id.as_str(), deadline)?;
        let sys = format!("/sys/block/{}", dev.trim_start_matches("/dev/"));
        self.wait_until(&format!("[ ! -e {sys} ]"), deadline)?;
        self.disks[index].attached = false;
        Ok(())
    }

    /// Hot-add a new blank disk of `size` bytes; returns its index (serial `d<index>`).
    pub fn hot_add_disk(&mut self, size: u64) -> Result<usize, String> {
        let index = self.disks.len();
        let mut disk = new_disk(self.dir.path(), index, size, self.preallocated)?;
        disk.attached = false;
        self.disks.push(disk);
        self.plug(index)?;
        Ok(index)
    }

    /// Plug a hot-removed disk back in, with everything it held (a disk
    /// pulled and pushed back, or a cable that came loose).
    pub fn replug_disk(&mut self, index: usize) -> Result<(), String> {
        match self.disks.get(index) {
            Some(d) if !d.attached => self.plug(index),
            Some(_) => Err(format!("disk {index} is plugged in")),
            None => Err(format!("there is no disk {index}")),
        }
    }

    fn plug(&mut self, index: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let direct = !self.host_cache;
        self.plugs += 1;
        // A fresh block node each time: an unplugged disk's node may linger.
        let node = format!("d{index}p{}", self.plugs);
        let path = self.disks[index].path.display().to_string();
        let qmp = self.qmp.as_mut().ok_or("the VM is not running")?;
        qmp.execute(
            "blockdev-add",
            json!({
                "node-name": node,
                "driver": "raw",
                "file": { "driver": "file", "filename": path,
                          "aio": "threads", "cache": { "direct": direct } },
                "cache": { "direct": direct },
            }),
            deadline,
        )?;
        let mut device = json!({ "driver": "virtio-blk-pci", "drive": node,
                                 "id": format!("vd{index}"), "serial": format!("d{index}") });
        if !self.event_idx {
            device["event_idx"] = json!(false);
        }
        qmp.execute("device_add", device, deadline)?;
        self.disks[index].attached = true;
        self.wait_until(
            &format!("grep -qx d{index} /sys/block/vd*/serial"),
            deadline,
        )
    }

    /// What a guest that stopped answering was doing: QEMU's run state, the
    /// vCPU's registers (a kernel spinning shows its RIP there) and the
    /// console's last lines (the kernel's hung-task and lockup reports).
    fn stuck_report(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut report = String::new();
        if let Some(qmp) = self.qmp.as_mut() {
            let status = qmp
                .execute("query-status", json!({}), deadline)
                .map(|v| v.to_string())
                .unwrap_or_else(|e| e);
            let registers = qmp
                .execute(
                    "human-monitor-command",
                    json!({ "command-line": "info registers" }),
                    deadline,
                )
                .map(|v| {
                    v.as_str()
                        .unwrap_or_default()
                        .lines()
                        .take(12)
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_else(|e| e);
            report.push_str(&format!("--- QEMU: {status} ---\n{registers}\n"));
            // The kernel's own account, on the console: magic SysRq through
            // the PS/2 keyboard (the command line enables every function).
            // `9` lets the dumps (KERN_INFO) past loglevel=4; `w` lists the
            // tasks blocked in D state with their stacks, `l` the stack the
            // vCPU is running.
            for key in ["9", "w", "l"] {
                let _ = qmp.execute(
                    "human-monitor-command",
                    json!({ "command-line": format!("sendkey alt-sysrq-{key}") }),
                    deadline,
                );
                std::thread::sleep(Duration::from_millis(300));
            }
            // Under emulation the dumps take a moment to reach the console.
            std::thread::sleep(Duration::from_secs(3));
        }
        report.push_str(&format!(
            "--- the guest's console, last lines ---\n{}",
            self.console_tail(200)
        ));
        report
    }

    /// Poll a guest shell condition until it succeeds or `deadline` passes.
    pub fn wait_until(&mut self, condition: &str, deadline: Instant) -> Result<(), String> {
        loop {
            if self.request(condition, &[], deadline)?.code == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for: {condition}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Cut the power: kill QEMU at once. The disk images keep what the guest had written.
    pub fn power_cut(&mut self) {
        self.kill();
    }

    /// Boot again on the same disk images (after `power_cut` or `shutdown`).
    pub fn boot_again(&mut self) -> Result<(), String> {
        self.kill();
        self.start()
    }

    /// Orderly power-off: sync, then poweroff, and wait for QEMU to exit.
    pub fn shutdown(&mut self) -> Result<(), String> {
        let _ = self.run("sync");
        if let Some(agent) = self.agent.as_mut() {
            let _ = agent
                .writer
                .write_all(b"{\"id\":0,\"cmd\":\"poweroff -f\",\"stdin\":\"\"}\n");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(child) = self.qemu.as_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                self.qemu = None;
                break;
            }
            if Instant::now() > deadline {
                self.kill();
                return Err("the guest did not power off in 30 s; killed".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.agent = None;
        self.qmp = None;
        Ok(())
    }

    fn kill(&mut self) {
        self.agent = None;
        self.qmp = None;
        if let Some(mut child) = self.qemu.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The host path of disk `index`'s image.
    pub fn disk_image(&self, index: usize) -> &Path {
        &self.disks[index].path
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Guest-side fault helpers: swap a device-mapper device's table for an
/// `error` target (I/O errors without removal) or a `delay` target (a slow
/// disk) over the same sectors, and back.
pub mod faults {
    use super::Vm;

    /// Replace `name`'s table with an `error` target of the same length.
    pub fn make_failing(vm: &mut Vm, name: &str) -> Result<(), String> {
        vm.run_ok(&format!(
            "len=$(blockdev --getsz /dev/mapper/{name}) && \
             echo \"0 $len error\" | dmsetup reload {name} && dmsetup suspend --noflush {name} && dmsetup resume {name}"
        ))
        .map(|_| ())
    }

    /// Put a `delay` target of `ms` milliseconds in front of `name`'s current table.
    /// Only for single-target linear devices (a leg's meta or data device).
    pub fn make_slow(vm: &mut Vm, name: &str, ms: u32) -> Result<(), String> {
        vm.run_ok(&format!(
            "set -- $(dmsetup table {name}) && [ \"$3\" = linear ] && \
             echo \"$1 $2 delay $4 $5 {ms}\" | dmsetup reload {name} && dmsetup suspend {name} && dmsetup resume {name}"
        ))
        .map(|_| ())
    }
}
