//! What the whole-cluster tests share: the real kubectl and helm against the
//! test API server, polling with a deadline.

use crate::apiserver::{tool, ApiServer};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The real kubectl against the test API server.
pub struct Kubectl {
    pub bin: std::path::PathBuf,
    pub kubeconfig: std::path::PathBuf,
}

impl Kubectl {
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut child = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("kubectl: {e}"))?;
        if let Some(text) = stdin {
            let _ = child.stdin.take().map(|mut i| i.write_all(text.as_bytes()));
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `kubectl apply -f -`, retried while the namespace's default service
    /// account is still being made by the controller-manager.
    pub fn apply(&self, yaml: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.run(&["apply", "-f", "-"], Some(yaml)) {
                Ok(out) => {
                    print!("{out}");
                    return;
                }
                Err(e) if e.contains("serviceaccount") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(500))
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}

/// Poll `f` every 500 ms until it gives Some, or fail naming `what`.
pub fn wait_for<T>(what: &str, within: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_or(what, within, f, String::new)
}

/// [`wait_for`], failing with what `context` gathers (logs, objects).
pub fn wait_or<T>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {within:?}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Kubectl {
    /// kubectl for the test API server's admin.
    pub fn for_server(server: &ApiServer) -> Kubectl {
        Kubectl {
            bin: tool("kubectl").expect("kubectl"),
            kubeconfig: server.kubeconfig_path(),
        }
    }
}

/// `helm` against the test API server; its stdout, or a panic with both streams.
pub fn helm(server: &ApiServer, args: &[&str]) -> String {
    let out = Command::new(tool("helm").unwrap())
        .args(args)
        .arg("--kubeconfig")
        .arg(server.kubeconfig_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm install` of the chart as release `dmraid-csi` in namespace
/// `dmraid-csi`, as a user would, with the values a node of this harness
/// needs: the driver's `image` imported into the node (nothing is pulled),
/// the upstream provisioner and resizer (the registrar and livenessprobe
/// cannot be built here: the driver does their work itself), host networking
/// (the pods reach the API server through the VM's forward), the VM's disks,
/// and `extra` `--set` pairs. Returns helm's output.
pub fn install_driver(server: &ApiServer, image: &str, extra: &[&str]) -> String {
    let (repo, tag) = image.rsplit_once(':').expect("image name:tag");
    let (repo, tag) = (
        format!("image.repository={repo}"),
        format!("image.tag={tag}"),
    );
    let chart = crate::chart::dir();
    let mut args = vec![
        "install",
        "dmraid-csi",
        chart.to_str().expect("chart path"),
        "-n",
        "dmraid-csi",
        "--create-namespace",
    ];
    for set in [
        repo.as_str(),
        tag.as_str(),
        "image.pullPolicy=Never",
        "sidecars.nodeDriverRegistrar.enabled=false",
        "sidecars.livenessProbe.enabled=false",
        "controller.hostNetwork=true",
        "node.hostNetwork=true",
        "metrics.controllerPort=9811",
        "node.disks={/dev/vd*}",
        "node.monitorInterval=2",
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        args.extend(["--set", set]);
    }
    helm(server, &args)
}

/// `helm upgrade` of the release [`install_driver`] made, keeping its
/// values (`--reuse-values`) but for the `--set` pairs in `sets`.
pub fn upgrade_driver(server: &ApiServer, sets: &[&str]) -> String {
    let chart = crate::chart::dir();
    let mut args = vec![
        "upgrade",
        "dmraid-csi",
        chart.to_str().expect("chart path"),
        "-n",
        "dmraid-csi",
        "--reuse-values",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    helm(server, &args)
}

/// How long a claim took to be Bound and its pod to run, from now: polls
/// both every 250 ms until the pod runs or `within` passes (then `None`
/// for what did not happen). Printed by the tests beside each other, never
/// asserted: timings under emulation vary.
pub fn bound_then_running(
    rt: &tokio::runtime::Runtime,
    c: &kube::Client,
    ns: &str,
    claim: &str,
    pod: &str,
    within: Duration,
) -> (Option<Duration>, Option<Duration>) {
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
    let pvcs: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(c.clone(), ns);
    let pods: kube::Api<Pod> = kube::Api::namespaced(c.clone(), ns);
    let start = Instant::now();
    let mut bound = None;
    while start.elapsed() < within {
        if bound.is_none() {
            let phase = rt
                .block_on(pvcs.get_opt(claim))
                .ok()
                .flatten()
                .and_then(|p| p.status?.phase);
            if phase.as_deref() == Some("Bound") {
                bound = Some(start.elapsed());
            }
        }
        let phase = rt
            .block_on(pods.get_opt(pod))
            .ok()
            .flatten()
            .and_then(|p| p.status?.phase);
        if phase.as_deref() == Some("Running") {
            return (bound.or(Some(start.elapsed())), Some(start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    (bound, None)
}

/// The md5 of `yes WORD | head -c BYTES`: the pattern the tests' pods write.
pub fn yes_md5(word: &str, bytes: usize) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("yes {word} | head -c {bytes} | md5sum"))
        .output()
        .expect("sh");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A claim of `class` and `size` in namespace `app` and pod `pod` (busybox,
/// imported into the node) running `script` with `sh -c`, the claim
/// mounted at /data.
pub fn claim_and_pod(claim: &str, class: &str, size: &str, pod: &str, script: &str) -> String {
    let script = serde_json::to_string(script).expect("a string");
    let busybox = crate::kubelet::BUSYBOX;
    format!(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {claim}, namespace: app}}
spec:
  storageClassName: {class}
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: {size}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: app}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: {busybox}
      imagePullPolicy: Never
      command: [sh, -c, {script}]
      volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
    - name: data
      persistentVolumeClaim: {{claimName: {claim}}}
"#
    )
}

/// Some when the release runs exactly one controller pod, alone in it (the
/// in-process provisioner and resizer, no sidecar), ready and not
/// terminating: the state after switching a release to the in-process work.
pub fn one_in_process_controller(rt: &tokio::runtime::Runtime, c: &kube::Client) -> Option<()> {
    use k8s_openapi::api::core::v1::Pod;
    let pods: kube::Api<Pod> = kube::Api::namespaced(c.clone(), "dmraid-csi");
    let l = rt
        .block_on(pods.list(
            &kube::api::ListParams::default().labels("app.kubernetes.io/component=controller"),
        ))
        .ok()?
        .items;
    let only = l.first().filter(|_| l.len() == 1)?;
    let st = only.status.as_ref()?.container_statuses.clone()?;
    (only.metadata.deletion_timestamp.is_none() && st.len() == 1 && st[0].ready).then_some(())
}
