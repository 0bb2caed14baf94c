//! The standalone driver in the VM, started and stopped the same way by
//! every suite and by the bench.

use crate::Vm;
use std::time::{Duration, Instant};

/// The CSI client command for the driver [`start`] runs.
pub const CSI: &str = "dmraid-csi csi --endpoint /run/csi.sock";

/// Run `dmraid-csi standalone` on /run/csi.sock over every virtio disk
/// (node id `vm`, a health round each second unless `extra` sets
/// `--monitor-interval`), with `extra` flags and `env`
/// (`VAR=value ...`, or empty) set; stderr goes to /tmp/driver.log. Waits
/// until the driver says it is ready and returns its pid.
pub fn start(vm: &mut Vm, env: &str, extra: &str) -> Result<u32, String> {
    start_on(vm, "'/dev/vd*'", env, extra)
}

/// [`start`] over the disks `globs` match (shell words, e.g.
/// `/dev/vda --disks /dev/vdb`) instead of every virtio disk.
pub fn start_on(vm: &mut Vm, globs: &str, env: &str, extra: &str) -> Result<u32, String> {
    let interval = if extra.contains("--monitor-interval") {
        ""
    } else {
        "--monitor-interval 1"
    };
    let pid = vm.spawn(&format!(
        "exec env {env} dmraid-csi standalone --endpoint /run/csi.sock --disks {globs} --node-id vm {interval} {extra} 2>>/tmp/driver.log"
    ))?;
    vm.wait_until(
        "dmraid-csi identity --endpoint /run/csi.sock | grep -q 'ready: *true'",
        Instant::now() + Duration::from_secs(600),
    )?;
    Ok(pid)
}

/// Wait until process `pid` is gone. The agent is PID 1 and does not reap
/// orphans: a zombie counts as gone.
pub fn wait_gone(vm: &mut Vm, pid: u32) -> Result<(), String> {
    vm.wait_until(
        &format!("[ ! -e /proc/{pid} ] || grep -q '^State:.*Z' /proc/{pid}/status"),
        Instant::now() + Duration::from_secs(120),
    )
}

/// Stop the driver the orderly way (SIGTERM: arrays not in use are stopped
/// and marked clean) and wait until it is gone.
pub fn stop(vm: &mut Vm, pid: u32) -> Result<(), String> {
    vm.run_ok(&format!("kill -TERM {pid}"))?;
    wait_gone(vm, pid)
}
