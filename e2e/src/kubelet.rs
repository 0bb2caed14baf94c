//! A real kubelet in the VM: containerd, runc and the CNI plugins from
//! Debian's packages and the kubelet built from the Go module proxy (both
//! by `scripts/k8s-tools.sh`), registered as a node with the host's API
//! server through QEMU user networking. The kernel's overlay, bridge and
//! veth modules come from the same cached kernel package.

use crate::apiserver::{tool, ApiServer};
use crate::initramfs::vm_dir;
use crate::{Vm, VmBuilder};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The node name the kubelet registers.
pub const NODE: &str = "vm";
/// The workload image every test pod can run (busybox; `/bin/sh` and its applets).
pub const BUSYBOX: &str = "dmraid-csi.local/busybox:e2e";

/// `$DMRAID_CACHE/node-runtime/root`: Debian's containerd, runc and CNI plugins, unpacked.
pub fn runtime_root() -> Result<PathBuf, String> {
    let root = tool("kubelet")?
        .parent()
        .and_then(|b| b.parent())
        .map(|c| c.join("node-runtime/root"))
        .ok_or("no cache dir")?;
    if root.join("usr/bin/containerd").exists() {
        Ok(root)
    } else {
        Err(format!(
            "{} has no containerd: run scripts/k8s-tools.sh",
            root.display()
        ))
    }
}

fn kernel_modules() -> Result<PathBuf, String> {
    let base = vm_dir().join("kernel/root/lib/modules");
    let kver = std::fs::read_dir(&base)
        .map_err(|e| format!("{}: {e}: run scripts/install.sh", base.display()))?
        .flatten()
        .next()
        .ok_or_else(|| format!("no kernel modules under {}", base.display()))?;
    Ok(kver.path().join("kernel"))
}

/// Add the kubelet, the runtime, the kernel modules they need and an admin
/// kubeconfig for `server` to a VM being built (give it networking and
/// at least 1.5 GiB of memory).
pub fn with_kubelet(builder: VmBuilder, server: &ApiServer) -> Result<VmBuilder, String> {
    let rt = runtime_root()?;
    let k = kernel_modules()?;
    let mut b = builder
        .file(tool("kubelet")?, "/usr/bin/kubelet")
        .file(
            server.guest_kubeconfig_path(),
            "/etc/kubernetes/kubelet.conf",
        )
        .file(
            "/lib/x86_64-linux-gnu/libseccomp.so.2",
            "/lib/x86_64-linux-gnu/libseccomp.so.2",
        );
    for bin in ["containerd", "containerd-shim-runc-v2", "ctr"] {
        b = b.file(rt.join("usr/bin").join(bin), &format!("/usr/bin/{bin}"));
    }
    b = b.file(rt.join("usr/sbin/runc"), "/usr/bin/runc");
    // The pod sandbox and the workload image (scripts/k8s-tools.sh packs both).
    b = packed_images(b, &["pause", "busybox"])?;
    for plugin in ["bridge", "host-local", "loopback", "portmap"] {
        b = b.file(
            rt.join("usr/lib/cni").join(plugin),
            &format!("/opt/cni/bin/{plugin}"),
        );
    }
    for (m, rel) in [
        ("llc", "net/llc/llc.ko"),
        ("stp", "net/802/stp.ko"),
        ("bridge", "net/bridge/bridge.ko"),
        ("veth", "drivers/net/veth.ko"),
        ("overlay", "fs/overlayfs/overlay.ko"),
    ] {
        b = b.file(k.join(rel), &format!("/lib/modules/node/{m}.ko"));
    }
    Ok(b)
}

/// Where containerd and the kubelet see their root: a tmpfs with the
/// initramfs's directories bound in. The initramfs root itself will not do:
/// pivot_root(2) refuses it (runc needs it), and it cannot be made a shared
/// mount for Bidirectional propagation. The agent (outside) sees the
/// kubelet's paths under this prefix.
pub const ROOT: &str = "/node";

/// What the guest needs before containerd and the kubelet start: the
/// modules, cgroup v2, the node's root ([`ROOT`]), writable state on tmpfs
/// (cAdvisor cannot size the initramfs root), the files a kubelet reads,
/// and the configs.
const SETUP: &str = r#"
for m in llc stp bridge veth overlay; do insmod /lib/modules/node/$m.ko 2>/dev/null || true; done
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
echo '+cpu +memory +pids' > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
mkdir -p /etc/containerd /etc/cni/net.d /run/containerd /root /opt
mkdir -p /node && mount -t tmpfs -o size=16m tmpfs /node
for d in /*; do
  n=${d#/}
  case "$n" in proc|sys|dev|run|tmp|var|node) continue ;; esac
  if [ -L "$d" ]; then cp -P "$d" /node/; elif [ -d "$d" ]; then mkdir -p "/node/$n" && mount -o rbind "$d" "/node/$n"; fi
done
for n in proc sys dev run tmp; do mkdir -p "/node/$n" && mount -o rbind "/$n" "/node/$n"; done
for n in var/lib/kubelet var/lib/containerd var/lib/dmraid-csi var/log; do mkdir -p "/node/$n" && mount -t tmpfs tmpfs "/node/$n"; done
# CSI mounts made in the node plugin's container (Bidirectional) must reach the kubelet's.
mount --make-rshared /node
mkdir -p /etc/containerd /etc/cni/net.d /run/containerd /root
hostname @NODE@
echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd
echo 'root:x:0:' > /etc/group
echo @NODE@ | md5sum | cut -c1-32 > /etc/machine-id
# QEMU's user network answers DNS here; the kubelet copies this into pods.
echo 'nameserver 10.0.2.3' > /etc/resolv.conf
printf '127.0.0.1 localhost\n10.0.2.15 @NODE@\n' > /etc/hosts
cat > /etc/containerd/config.toml <<'X'
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
X
cat > /etc/cni/net.d/10-pods.conflist <<'X'
{"cniVersion":"0.4.0","name":"pods","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/16"}]]}},{"type":"portmap","capabilities":{"portMappings":true}}]}
X
cat > /etc/kubernetes/kubelet.yaml <<'X'
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
X
"#;

/// The upstream csi-provisioner and csi-resizer images (scripts/k8s-tools.sh
/// builds and packs them under the names the chart's values give), added to
/// a VM being built so [`start`] imports them.
pub fn with_sidecar_images(builder: VmBuilder) -> Result<VmBuilder, String> {
    packed_images(builder, &["csi-provisioner", "csi-resizer"])
}

/// Images scripts/k8s-tools.sh packed beside the node runtime
/// (`$DMRAID_CACHE/node-runtime/NAME.oci.tar`), added under /images/.
fn packed_images(builder: VmBuilder, names: &[&str]) -> Result<VmBuilder, String> {
    let rt = runtime_root()?;
    let mut b = builder;
    for image in names {
        let archive = rt.with_file_name(format!("{image}.oci.tar"));
        if !archive.exists() {
            return Err(format!(
                "{} is missing: run scripts/k8s-tools.sh",
                archive.display()
            ));
        }
        b = b.file(archive, &format!("/images/{image}.oci.tar"));
    }
    Ok(b)
}

/// A booted VM shaped as one node of the test cluster: QEMU networking with
/// `server`'s Service address forwarded, 2.5 GiB, disks of `disks` bytes
/// (through the host page cache), the driver's image archives (`driver`:
/// archive and guest file name, from [`driver_image`]), the upstream
/// sidecars' images and the kubelet. [`start_as`] then makes it a node.
pub fn node_vm(
    server: &ApiServer,
    disks: &[u64],
    driver: &[(PathBuf, &str)],
) -> Result<Vm, String> {
    let mut b = Vm::builder()
        .network()
        .forward(
            &format!("{}:443", crate::apiserver::SERVICE_IP),
            server.port,
        )
        .memory_mb(2560)
        .disks(disks)
        .host_page_cache()
        .command_timeout(Duration::from_secs(600));
    for (archive, name) in driver {
        b = b.file(archive, &format!("/images/{name}.oci.tar"));
    }
    with_kubelet(with_sidecar_images(b)?, server)?.boot()
}

/// The driver's image as an OCI archive named `name` (scripts/image.sh from
/// the release binaries already built), to add to the VM under /images/ so
/// [`start`] imports it.
pub fn driver_image(name: &str) -> Result<PathBuf, String> {
    let script = crate::repo_root().join("scripts/image.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .args(["--no-build", name])
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/image.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // scripts/image.sh writes one archive path whatever the name: each name
    // gets its own copy, so a test can import two tags of the driver.
    let archive = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let tag: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let named = archive.with_file_name(format!("dmraid-csi-{tag}.oci.tar"));
    std::fs::copy(&archive, &named).map_err(|e| format!("{}: {e}", named.display()))?;
    Ok(named)
}

/// Start containerd and the kubelet in a VM built with [`with_kubelet`] and
/// wait until the kubelet has registered node [`NODE`]. Logs go to
/// /tmp/containerd.log and /tmp/kubelet.log in the guest.
pub fn start(vm: &mut Vm) -> Result<(), String> {
    start_as(vm, NODE)
}

/// [`start`] registering the node as `node`: one of several VMs, each a node
/// of the same cluster (all of them 10.0.2.15 in their own QEMU network:
/// nothing here talks from node to node). Also after a power cut: the node's
/// state is on tmpfs, and it registers again.
pub fn start_as(vm: &mut Vm, node: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    vm.run_ok(&SETUP.replace("@NODE@", node))?;
    vm.spawn("exec chroot /node containerd 2>/tmp/containerd.log")?;
    vm.wait_until("chroot /node ctr version >/dev/null 2>&1", deadline)?;
    // Nothing is pulled: every image the node runs is imported here.
    vm.run_ok(
        "for i in /images/*.tar; do chroot /node ctr -n k8s.io images import --snapshotter native \"$i\" >/dev/null || exit 1; done",
    )?;
    vm.spawn(&format!(
        "exec chroot /node kubelet --config /etc/kubernetes/kubelet.yaml --kubeconfig /etc/kubernetes/kubelet.conf \
         --hostname-override {node} --node-ip 10.0.2.15 -v 2 2>/tmp/kubelet.log"
    ))?;
    vm.wait_until(
        "grep -q 'Successfully registered node' /tmp/kubelet.log",
        deadline,
    )
    .map_err(|e| {
        let log = vm
            .run_ok("tail -40 /tmp/kubelet.log; tail -10 /tmp/containerd.log")
            .unwrap_or_default();
        format!("{e}\n{log}")
    })
}
