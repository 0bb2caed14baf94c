//! The Helm chart rendered by the real `helm` (built by scripts/k8s-tools.sh),
//! for the tests that apply it or read what it renders.

use crate::apiserver::tool;
use std::path::PathBuf;
use std::process::Command;

/// The Kubernetes version the chart is rendered for (the tests' API server).
pub const KUBE_VERSION: &str = "1.36.3";

/// The chart's directory in this checkout.
pub fn dir() -> PathBuf {
    crate::repo_root().join("charts/dmraid-csi")
}

/// `helm template` into namespace `dmraid`, with `--set` pairs and
/// `--show-only` templates (none: every template); Err(stderr) when helm
/// refuses.
pub fn render_only(sets: &[&str], only: &[&str]) -> Result<String, String> {
    let helm = tool("helm")?;
    let mut cmd = Command::new(helm);
    cmd.args(["template", "t"]).arg(dir()).args([
        "--namespace",
        "dmraid",
        "--kube-version",
        KUBE_VERSION,
    ]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    for t in only {
        cmd.args(["--show-only", t]);
    }
    let out = cmd.output().map_err(|e| format!("run helm: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every template, with `--set` pairs.
pub fn render(sets: &[&str]) -> Result<String, String> {
    render_only(sets, &[])
}
