//! The rest of a control plane beside an [`ApiServer`]: kube-controller-
//! manager (the PV binder, the expansion and attach/detach controllers,
//! Deployments, DaemonSets, service accounts and the root CA they mount)
//! and kube-scheduler (which picks the node of a WaitForFirstConsumer
//! claim), both built by `scripts/k8s-tools.sh`, on loopback, killed on drop.

use crate::apiserver::{succeeds, tool, ApiServer};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// kube-controller-manager and kube-scheduler, running.
pub struct ControlPlane {
    children: Vec<(String, Child)>,
    logs: std::path::PathBuf,
}

impl ControlPlane {
    /// Start both against `server` (its admin kubeconfig, CA and
    /// service-account key) and wait until the controller-manager has
    /// published the root CA a pod's service account mounts.
    pub fn start(server: &ApiServer) -> Result<ControlPlane, String> {
        let kubeconfig = server.kubeconfig_path();
        let logs = server.file("control-plane");
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        let log = |name: &str| {
            std::fs::File::create(logs.join(name))
                .map(Stdio::from)
                .map_err(|e| e.to_string())
        };
        let mut plane = ControlPlane {
            children: Vec::new(),
            logs: logs.clone(),
        };
        let kcm = Command::new(tool("kube-controller-manager")?)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--root-ca-file")
            .arg(server.file("ca.crt"))
            .arg("--service-account-private-key-file")
            .arg(server.file("sa.key"))
            .args([
                "--use-service-account-credentials=false",
                "--leader-elect=false",
            ])
            // No serving endpoint: nothing here scrapes it.
            .args(["--secure-port=0", "--controllers=*", "--v=1"])
            .stdout(Stdio::null())
            .stderr(log("kube-controller-manager.log")?)
            .spawn()
            .map_err(|e| format!("cannot start kube-controller-manager: {e}"))?;
        plane.children.push(("kube-controller-manager".into(), kcm));
        let sched = Command::new(tool("kube-scheduler")?)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--leader-elect=false", "--secure-port=0", "--v=1"])
            .stdout(Stdio::null())
            .stderr(log("kube-scheduler.log")?)
            .spawn()
            .map_err(|e| format!("cannot start kube-scheduler: {e}"))?;
        plane.children.push(("kube-scheduler".into(), sched));
        plane.wait_for_root_ca(server, Duration::from_secs(90))?;
        Ok(plane)
    }

    /// The last lines of a component's log.
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.logs.join(format!("{component}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn exited(&mut self) -> Option<String> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(format!("{name} exited ({status})"));
            }
        }
        None
    }

    /// The `kube-root-ca.crt` ConfigMap in `default`: the controller-manager
    /// runs its controllers once it exists.
    fn wait_for_root_ca(&mut self, server: &ApiServer, within: Duration) -> Result<(), String> {
        let kubectl = tool("kubectl")?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.exited() {
                let name = e.split(' ').next().unwrap_or_default().to_string();
                return Err(format!("{e}:\n{}", self.log_tail(&name, 30)));
            }
            let ok = succeeds(
                Command::new(&kubectl)
                    .arg("--kubeconfig")
                    .arg(server.kubeconfig_path())
                    .args(["get", "configmap", "kube-root-ca.crt", "-n", "default"]),
            );
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "kube-controller-manager published no root CA within {within:?}:\n{}",
                    self.log_tail("kube-controller-manager", 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
