//! The `dmraid-csi` command line: the node plugin, the standalone driver and
//! the operator's commands. `--help` on each subcommand is its documentation.

pub mod csi_client;
pub mod describe;
pub mod engine;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// dmraid-csi: local disks as device-mapper RAID volumes, for Kubernetes and standalone.
#[derive(Debug, Parser)]
#[command(name = "dmraid-csi", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node plugin (CSI Identity + Node) for a cluster.
    Node(ServeArgs),
    /// Run the whole driver on this machine (CSI Identity + Controller + Node on one socket),
    /// keeping volume specs as YAML files in the state directory.
    Standalone(ServeArgs),
    /// Ask a running driver who it is: plugin info, capabilities, readiness.
    Identity(ClientArgs),
    /// Call the running driver's CSI services (a plain CSI client for people and tests).
    Csi(CsiArgs),
    /// List the running driver's volumes with their health.
    Volumes(VolumesArgs),
    /// One volume of the running driver in detail: layout, size, condition, progress and ETA.
    Describe {
        /// Volume id.
        id: String,
        /// Where the running driver is.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the disks the globs match and what their labels say (reads only).
    Disks(DisksArgs),
    /// Ask the running driver to rebuild a volume's leg now (for
    /// `--auto-rebuild false`, or to choose the leg and the disk).
    Rebuild {
        /// Volume id.
        id: String,
        /// The leg (default: the first failed or missing one).
        #[arg(long)]
        leg: Option<u32>,
        /// The disk to rebuild onto (default: the roomiest one the volume does not use).
        #[arg(long)]
        disk: Option<std::path::PathBuf>,
        /// The running driver's state directory.
        #[arg(long, env = "DMRAID_STATE_DIR", default_value = "/var/lib/dmraid-csi")]
        state_dir: std::path::PathBuf,
    },
    /// Start a check (scrub) of a volume's legs on this machine; the
    /// mismatch count shows in `volumes` and the events when it ends.
    Check {
        /// Volume id.
        id: String,
        /// Rewrite mismatched stripes too (dm-raid `repair`).
        #[arg(long)]
        repair: bool,
    },
    /// Drive the array engine directly on this machine's disks, without a
    /// server (for tests and for recovery by hand).
    #[command(hide = true)]
    Engine(EngineArgs),
    /// Hold the kernel's device-mapper to the contract the engine relies on
    /// (the same checks the tests run on the fake), on scratch extents of
    /// DISK, whose first sectors it maps and overwrites (for tests).
    #[command(hide = true)]
    DmContract {
        /// A scratch block device: its first 61 MiB are used.
        #[arg(long)]
        disk: PathBuf,
    },
}

/// Flags of `dmraid-csi engine`.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Disks the engine may claim: device paths or globs (repeat the flag).
    #[arg(long = "disks", value_name = "GLOB", required = true)]
    pub disks: Vec<String>,
    /// This node's name, as written in the labels.
    #[arg(long)]
    pub node_id: String,
    /// The driver's state directory: its lock keeps this command from
    /// acting beside a running driver.
    #[arg(long, env = "DMRAID_STATE_DIR", default_value = "/var/lib/dmraid-csi")]
    pub state_dir: std::path::PathBuf,
    /// Overwrite disks that carry a foreign signature.
    #[arg(long)]
    pub wipe_disks: bool,
    /// The operation.
    #[command(subcommand)]
    pub op: EngineOp,
}

/// Engine operations.
#[derive(Debug, Subcommand)]
pub enum EngineOp {
    /// Create a volume (idempotent for the same request).
    Create {
        /// Volume id.
        id: String,
        /// StorageClass parameter `key=value` (repeat).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Size: bytes or a quantity such as 64Mi.
        #[arg(long)]
        size: String,
    },
    /// Delete a volume and free its extents.
    Delete {
        /// Volume id.
        id: String,
    },
    /// Replace a failed or missing leg on a spare disk and start its rebuild.
    Rebuild {
        /// Volume id.
        id: String,
        /// The leg (default: the first failed one).
        #[arg(long)]
        leg: Option<u32>,
        /// The disk to rebuild onto (default: the one with most room not used by the volume).
        #[arg(long)]
        disk: Option<std::path::PathBuf>,
    },
    /// Re-create every array from the disk labels (start-up).
    Activate,
    /// Stop every unused array and mark it cleanly shut down.
    Deactivate,
    /// Print a volume as JSON.
    Show {
        /// Volume id.
        id: String,
    },
    /// Print the claimed disks.
    Disks,
}

/// Flags of the serving subcommands.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// CSI endpoint: unix:///path/to/csi.sock or a plain path.
    #[arg(
        long,
        env = "CSI_ENDPOINT",
        default_value = "unix:///run/dmraid-csi/csi.sock"
    )]
    pub endpoint: String,
    /// This node's name (the topology value volumes are pinned to). Defaults to the host name.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// Directory for the driver's own state (volume specs in standalone mode).
    #[arg(long, env = "DMRAID_STATE_DIR", default_value = "/var/lib/dmraid-csi")]
    pub state_dir: PathBuf,
    /// Disks the driver may claim: device paths or globs (repeat the flag).
    #[arg(long = "disks", value_name = "GLOB")]
    pub disks: Vec<String>,
    /// Overwrite disks that carry a partition table, filesystem or RAID signature.
    #[arg(long)]
    pub wipe_disks: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Rebuild onto a spare or newly added disk by itself when a leg is lost
    /// (`--auto-rebuild false` leaves it to `dmraid-csi engine rebuild`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_rebuild: bool,
    /// How long a lost leg waits for its disk to come back (a cable, an HBA
    /// reset) before it is rebuilt onto a spare, e.g. 60s, 5m; 0 rebuilds
    /// at once. A disk back in time is re-added and catches up from the
    /// write-intent bitmap. A volume with no redundancy left never waits.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_delay)]
    pub rebuild_delay: std::time::Duration,
    /// While the application does I/O on a volume, its resync, rebuild or
    /// check keeps this percent of the speed it reached while the volume
    /// was idle (100: never held back). Idle, a sync runs as fast as the
    /// disks go; a class's maxRecoveryRate overrides both.
    #[arg(long, value_name = "PERCENT", default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub rebuild_busy_share: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9808); off when unset.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Seconds between health rounds when no device-mapper event comes.
    /// A disk added or removed wakes a round at once (the kernel's
    /// uevent); where no uevent reaches the driver, a new disk is found by
    /// the round at most this long after it appeared.
    #[arg(long, default_value_t = 10)]
    pub monitor_interval: u64,
    /// `node` only: kubeconfig for the API server; without it the pod's
    /// service account (or $KUBECONFIG) is used, and with none the node
    /// serves CSI Node calls only, reconciling no RaidVolumes.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Check (scrub) every healthy volume this often after its last check,
    /// e.g. 30d, 7d, 12h; never while a resync or rebuild runs (it waits).
    /// `off` disables it. Monthly by default, as Debian's mdadm does.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_interval)]
    pub scrub_interval: Interval,
    /// Staging, target and volume paths must lie under this directory,
    /// symlinks resolved (a symlink out of it is refused). Keep it narrow:
    /// under `/`, a request could mount a volume over any directory.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kubelet")]
    pub paths_under: PathBuf,
    /// `node` only: register with the kubelet ourselves (instead of the
    /// node-driver-registrar sidecar) by serving the registration socket in
    /// this directory, the kubelet's `plugins_registry` as mounted here.
    #[arg(long, value_name = "DIR")]
    pub kubelet_registration_dir: Option<PathBuf>,
    /// With --kubelet-registration-dir: the CSI socket's path as the
    /// kubelet sees it on the node (default: the --endpoint path).
    #[arg(long, value_name = "PATH")]
    pub kubelet_endpoint: Option<PathBuf>,
    /// Answer liveness probes at http://ADDR/healthz (e.g. 0.0.0.0:9810):
    /// 200 once the arrays are back from the labels, 503 with the reason
    /// before that or without device-mapper. Off when unset.
    #[arg(long, value_name = "ADDR")]
    pub healthz_addr: Option<String>,
}

/// Flags of the client subcommands.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// CSI endpoint of the running driver.
    #[arg(
        long,
        env = "CSI_ENDPOINT",
        default_value = "unix:///run/dmraid-csi/csi.sock"
    )]
    pub endpoint: String,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `dmraid-csi csi`.
#[derive(Debug, Args)]
pub struct CsiArgs {
    /// Where the running driver is.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The call.
    #[command(subcommand)]
    pub call: CsiCall,
}

/// CSI calls.
#[derive(Debug, Subcommand)]
pub enum CsiCall {
    /// CreateVolume.
    Create {
        /// Volume name.
        name: String,
        /// StorageClass parameter KEY=VALUE (repeat).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Required bytes (a quantity such as 64Mi).
        #[arg(long)]
        size: String,
        /// Ask for a raw block volume.
        #[arg(long)]
        block: bool,
    },
    /// DeleteVolume.
    Delete {
        /// Volume id.
        id: String,
    },
    /// NodeStageVolume.
    Stage {
        /// Volume id.
        id: String,
        /// Staging path.
        #[arg(long)]
        staging: String,
        /// Block volume.
        #[arg(long)]
        block: bool,
        /// Filesystem (ext4 or xfs; default: the StorageClass's).
        #[arg(long, default_value = "")]
        fs: String,
        /// A mount option, as in a StorageClass's mountOptions (repeat).
        #[arg(long)]
        mount_flag: Vec<String>,
    },
    /// NodeUnstageVolume.
    Unstage {
        /// Volume id.
        id: String,
        /// Staging path.
        #[arg(long)]
        staging: String,
    },
    /// NodePublishVolume.
    Publish {
        /// Volume id.
        id: String,
        /// Staging path.
        #[arg(long, default_value = "")]
        staging: String,
        /// Target path.
        #[arg(long)]
        target: String,
        /// Block volume.
        #[arg(long)]
        block: bool,
        /// Read-only.
        #[arg(long)]
        readonly: bool,
    },
    /// NodeUnpublishVolume.
    Unpublish {
        /// Volume id.
        id: String,
        /// Target path.
        #[arg(long)]
        target: String,
    },
    /// NodeGetVolumeStats.
    Stats {
        /// Volume id.
        id: String,
        /// Published path.
        #[arg(long)]
        path: String,
    },
    /// ControllerExpandVolume, then NodeExpandVolume on `--path` when given.
    Expand {
        /// Volume id.
        id: String,
        /// New size (a quantity such as 128Mi).
        #[arg(long)]
        size: String,
        /// A path the volume is published or staged at (grows the filesystem).
        #[arg(long)]
        path: Option<String>,
    },
    /// ControllerGetVolume.
    Get {
        /// Volume id.
        id: String,
    },
    /// GetCapacity for StorageClass parameters.
    Capacity {
        /// StorageClass parameter KEY=VALUE (repeat).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
}

/// Flags of `dmraid-csi volumes`.
#[derive(Debug, Args)]
pub struct VolumesArgs {
    /// Where the running driver is.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Keep watching, with progress bars, until no resync or rebuild runs.
    #[arg(long)]
    pub wait: bool,
}

/// Flags of `dmraid-csi disks`.
#[derive(Debug, Args)]
pub struct DisksArgs {
    /// Device paths or globs (repeat), as given to the driver.
    #[arg(long = "disks", value_name = "GLOB", required = true)]
    pub disks: Vec<String>,
}

/// A duration, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Option<std::time::Duration>);

/// A delay: `0`, or a duration as [`parse_duration`] reads it.
pub fn parse_delay(text: &str) -> Result<std::time::Duration, String> {
    if text.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    parse_duration(text).map_err(|e| format!("{e}; a delay is 0 or a duration such as 30s, 5m"))
}

/// `off`, or a duration as [`parse_duration`] reads it.
pub fn parse_interval(text: &str) -> Result<Interval, String> {
    if text.trim() == "off" {
        return Ok(Interval(None));
    }
    parse_duration(text).map(|d| Interval(Some(d)))
}

/// A duration such as `7d`, `12h`, `30m` or `90s`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("{text:?} is not a duration: use a number and s, m, h or d (e.g. 7d)")
    })?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use s, m, h or d")),
    };
    if secs == 0 {
        return Err(format!("{text:?}: the interval must be above zero"));
    }
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;

    #[test]
    fn a_delay_is_zero_or_a_duration() {
        use super::parse_delay;
        use std::time::Duration;
        assert_eq!(parse_delay("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_delay("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_delay("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_delay("off").unwrap_err().contains("30s, 5m"));
        assert!(parse_delay("soon").is_err());
    }

    #[test]
    fn an_interval_is_a_duration_or_off() {
        use super::{parse_interval, Interval};
        assert_eq!(parse_interval("off").unwrap(), Interval(None));
        assert_eq!(
            parse_interval("30d").unwrap(),
            Interval(Some(std::time::Duration::from_secs(30 * 86_400)))
        );
        assert!(parse_interval("never").is_err());
    }

    #[test]
    fn durations_with_units_and_clear_refusals() {
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 604_800);
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("12h").unwrap().as_secs(), 43_200);
        assert!(parse_duration("1w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("0m").unwrap_err().contains("above zero"));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
    }
}
