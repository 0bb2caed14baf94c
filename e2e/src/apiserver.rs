//! A real Kubernetes API server for tests: etcd and kube-apiserver (built by
//! `scripts/k8s-tools.sh` from the Go module proxy) started on loopback with
//! fresh certificates, a service-account key and a static admin token; the
//! whole thing lives in a temporary directory and is killed on drop. Each
//! test gets its own, so tests never see each other's objects.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The address a QEMU guest (user networking) uses for the host's loopback.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";
/// The Service range: inside QEMU's user network, so a guest can reach the
/// `kubernetes` Service's address through a forward ([`crate::VmBuilder::forward`]).
pub const SERVICE_RANGE: &str = "10.0.2.240/28";
/// The `kubernetes` Service's cluster IP (the range's first address), where
/// pods find the API server.
pub const SERVICE_IP: &str = "10.0.2.241";

/// A running etcd + kube-apiserver.
pub struct ApiServer {
    dir: tempfile::TempDir,
    etcd: Child,
    apiserver: Child,
    /// HTTPS port on 127.0.0.1.
    pub port: u16,
    token: String,
}

/// Where scripts/k8s-tools.sh puts the Go-built tools.
pub fn tools_dir() -> PathBuf {
    let cache = std::env::var_os("DMRAID_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/dmraid-csi")
        });
    cache.join("bin")
}

/// A Go-built tool, built now by scripts/k8s-tools.sh if the cache lacks it.
pub fn tool(name: &str) -> Result<PathBuf, String> {
    let p = tools_dir().join(name);
    if p.exists() {
        return Ok(p);
    }
    let script = crate::repo_root().join("scripts/k8s-tools.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() || !p.exists() {
        return Err(format!(
            "{name} is not built and {} failed:\n{}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(p)
}

/// Whether `cmd` runs and exits 0 (its output discarded): a readiness probe.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run openssl (Debian package openssl): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A CA, a serving certificate for 127.0.0.1, localhost and the guest's
/// view of the host, and a service-account key pair.
fn make_pki(dir: &Path) -> Result<(), String> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=dmraid-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    )?;
    std::fs::write(
        dir.join("san.cnf"),
        format!(
            "subjectAltName=IP:127.0.0.1,IP:{HOST_FROM_GUEST},IP:{SERVICE_IP},DNS:localhost,DNS:kubernetes.default.svc,DNS:kubernetes.default\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=kube-apiserver",
            "-keyout",
            "apiserver.key",
            "-out",
            "apiserver.csr",
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            "apiserver.crt",
        ],
    )?;
    openssl(dir, &["genrsa", "-out", "sa.key", "2048"])?;
    openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    Ok(())
}

impl ApiServer {
    /// Start etcd and kube-apiserver and wait until the API answers.
    pub fn start() -> Result<ApiServer, String> {
        let etcd_bin = tool("etcd")?;
        let apiserver_bin = tool("kube-apiserver")?;
        let dir = tempfile::Builder::new()
            .prefix("dmraid-apiserver-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        make_pki(dir.path())?;
        let token = format!(
            "dmraid-test-{:x}",
            std::process::id() as u64 * 7919 + free_port()? as u64
        );
        std::fs::write(
            dir.path().join("tokens.csv"),
            format!("{token},admin,admin-uid,\"system:masters\"\n"),
        )
        .map_err(|e| e.to_string())?;
        let (client_port, peer_port, port) = (free_port()?, free_port()?, free_port()?);
        let log = |name: &str| {
            std::fs::File::create(dir.path().join(name))
                .map(Stdio::from)
                .map_err(|e| e.to_string())
        };
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let etcd = Command::new(&etcd_bin)
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &etcd_url])
            .args(["--advertise-client-urls", &etcd_url])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args([
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer_port}"),
            ])
            .args(["--unsafe-no-fsync", "--log-level", "warn"])
            .stdout(log("etcd.log")?)
            .stderr(log("etcd.err")?)
            .spawn()
            .map_err(|e| format!("cannot start etcd: {e}"))?;
        let p = |f: &str| dir.path().join(f).display().to_string();
        let apiserver = Command::new(&apiserver_bin)
            .args(["--etcd-servers", &etcd_url])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &port.to_string(),
            ])
            .args(["--cert-dir", &p("certs")])
            .args(["--tls-cert-file", &p("apiserver.crt")])
            .args(["--tls-private-key-file", &p("apiserver.key")])
            .args(["--token-auth-file", &p("tokens.csv")])
            .args(["--authorization-mode", "RBAC"])
            .args(["--service-account-issuer", "https://kubernetes.default.svc"])
            .args(["--service-account-key-file", &p("sa.pub")])
            .args(["--service-account-signing-key-file", &p("sa.key")])
            .args(["--service-cluster-ip-range", SERVICE_RANGE])
            .args(["--allow-privileged=true", "--v=1"])
            .stdout(log("apiserver.log")?)
            .stderr(log("apiserver.err")?)
            .spawn()
            .map_err(|e| format!("cannot start kube-apiserver: {e}"))?;
        let mut s = ApiServer {
            dir,
            etcd,
            apiserver,
            port,
            token,
        };
        s.write_kubeconfig("127.0.0.1", &s.kubeconfig_path())?;
        s.write_kubeconfig(HOST_FROM_GUEST, &s.guest_kubeconfig_path())?;
        s.wait_ready(Duration::from_secs(90))?;
        Ok(s)
    }

    /// A kubeconfig authenticating with `token` (e.g. a service account's),
    /// for this machine or (`guest`) for a QEMU guest.
    pub fn kubeconfig_with_token(
        &self,
        token: &str,
        guest: bool,
        name: &str,
    ) -> Result<PathBuf, String> {
        let path = self.dir.path().join(format!("kubeconfig.{name}"));
        let host = if guest { HOST_FROM_GUEST } else { "127.0.0.1" };
        self.write_kubeconfig_as(host, token, &path)?;
        Ok(path)
    }

    fn write_kubeconfig(&self, host: &str, path: &Path) -> Result<(), String> {
        self.write_kubeconfig_as(host, &self.token, path)
    }

    fn write_kubeconfig_as(&self, host: &str, token: &str, path: &Path) -> Result<(), String> {
        use base64::Engine as _;
        let ca = std::fs::read(self.dir.path().join("ca.crt")).map_err(|e| e.to_string())?;
        let ca = base64::engine::general_purpose::STANDARD.encode(ca);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://{host}:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\ncurrent-context: test\n",
            port = self.port,
        );
        std::fs::write(path, text).map_err(|e| e.to_string())
    }

    /// A kubeconfig for processes on this machine.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A kubeconfig for a QEMU guest (server at 10.0.2.2).
    pub fn guest_kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.guest")
    }

    /// A file of this server's directory: `ca.crt`, `ca.key`, `sa.key`,
    /// `kubeconfig`, ... (for the control plane's other components).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The API server's own log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("apiserver.err")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let url = format!("https://127.0.0.1:{}/readyz", self.port);
        let ca = self.dir.path().join("ca.crt");
        loop {
            if let Ok(Some(status)) = self.apiserver.try_wait() {
                return Err(format!(
                    "kube-apiserver exited ({status}):\n{}",
                    self.log_tail(30)
                ));
            }
            let ok = succeeds(
                Command::new("curl")
                    .args(["-sf", "--max-time", "2", "--cacert"])
                    .arg(&ca)
                    .args(["-H", &format!("Authorization: Bearer {}", self.token), &url]),
            );
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "kube-apiserver not ready within {within:?}:\n{}",
                    self.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stop the API server (etcd keeps running), to test what clients do without it.
    pub fn stop_apiserver(&mut self) {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}
