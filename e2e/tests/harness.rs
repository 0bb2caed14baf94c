//! The harness itself, proven on the real kernel: boot, commands, files,
//! dm-raid built by hand, disk hot-remove/add, power cut, in-guest faults.

use e2e::vm::faults;
use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

#[test]
fn boots_and_runs_commands_with_exit_codes() {
    let mut vm = Vm::builder().boot().unwrap();
    assert_eq!(vm.run_ok("echo hello").unwrap(), "hello\n");
    let out = vm.run("echo oops >&2; exit 3").unwrap();
    assert_eq!(out.code, 3);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let err = vm.run_ok("false").unwrap_err();
    assert!(err.contains("exit 1"), "{err}");
    assert!(vm.dmesg().unwrap().contains("Linux version"));
    assert!(vm.run_ok("cat /proc/modules").unwrap().contains("dm_raid"));
    vm.shutdown().unwrap();
}
