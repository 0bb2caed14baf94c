#!/usr/bin/env bash
# Builds the Kubernetes tools the tests run for real: kube-apiserver and etcd
# (the API server the cluster-side tests talk to), kube-controller-manager,
# kube-scheduler and kubectl (the whole-cluster test), the kubelet (in the
# VM), csi-sanity (the CSI conformance suite) and helm. Everything comes from the Go module proxy at
# pinned versions and lands in $DMRAID_CACHE/bin; a tool already built at the
# pinned version is kept, so a warm cache passes through in a second.
#
#   scripts/k8s-tools.sh            build what is missing
#   scripts/k8s-tools.sh --print    print the bin dir (for scripts and tests)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

KUBERNETES_VERSION=v1.36.3 # kube-apiserver (k8s.io/kubernetes), built with its version stamped
STAGING_VERSION=v0.36.3    # the k8s.io/* staging modules of that release
ETCD_VERSION=v3.6.7
CSI_TEST_VERSION=v5.4.0
HELM_VERSION=v3.21.4
# The upstream CSI sidecars the chart runs by default, at the tags
# charts/dmraid-csi/values.yaml pins (e2e/tests/chart.rs checks they agree).
PROVISIONER_VERSION=v6.4.0
RESIZER_VERSION=v2.3.0

# The commands built from k8s.io/kubernetes.
K8S_CMDS=(kube-apiserver kubelet kube-controller-manager kube-scheduler kubectl)

bin="$DMRAID_CACHE/bin"
if [ "${1:-}" = "--print" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
need() { command -v "$1" >/dev/null 2>&1 || { echo "k8s-tools: $1 not found: $2" >&2; exit 1; }; }
need go "the Go toolchain (1.26 or newer) builds these tools; this machine kind ships it in /usr/local/go/bin"
need curl "run scripts/install.sh (Debian package curl)"
build="$DMRAID_CACHE/go-build"
mkdir -p "$build"
export GOFLAGS="-trimpath -mod=mod"
export CGO_ENABLED=0

# up_to_date NAME VERSION: the binary exists and was built at VERSION.
up_to_date() { [ -x "$bin/$1" ] && [ "$(cat "$bin/$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" >"$bin/$1.version"; echo "k8s-tools: $1 $2 ready"; }

# k8s.io/kubernetes replaces its staging modules with ./staging paths, which
# `go install pkg@version` refuses. A throwaway module requires it and points
# every staging module at its published version; kube-apiserver and kubelet
# are built from it with their version stamped.
k8s_module() {
  dir="$build/kubernetes-$KUBERNETES_VERSION"
  # The stamp names the commands tools.go imports, so adding one re-tidies.
  [ -f "$dir/go.mod" ] && [ "$(cat "$dir/cmds" 2>/dev/null)" = "${K8S_CMDS[*]}" ] && return 0
  mkdir -p "$dir"
  mod="$(curl -fsSL "${GOPROXY_URL:-https://proxy.golang.org}/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.mod")"
  {
    echo "module dmraid-csi.local/k8s-tools"
    echo
    echo "go $(awk '/^go /{print $2; exit}' <<<"$mod")"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$STAGING_VERSION"'#p' <<<"$mod"
    echo ")"
  } >"$dir/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in "${K8S_CMDS[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
    printf ')\n'
  } >"$dir/tools.go"
  (cd "$dir" && go mod tidy >/dev/null 2>&1 || true)
  echo "${K8S_CMDS[*]}" >"$dir/cmds"
}
build_k8s() {
  local name="$1" extra="${2:-}"
  k8s_module
  (cd "$build/kubernetes-$KUBERNETES_VERSION" && go build -o "$bin/$name" \
     -ldflags "$extra -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION") -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION" \
     "k8s.io/kubernetes/cmd/$name")
  stamp "$name" "$KUBERNETES_VERSION"
}

if ! up_to_date kube-apiserver "$KUBERNETES_VERSION"; then
  echo "k8s-tools: building kube-apiserver $KUBERNETES_VERSION (several minutes on a cold cache)"
  build_k8s kube-apiserver
fi

# kubelet: runs in the test VM (static, stripped: it goes into the initramfs).
if ! up_to_date kubelet "$KUBERNETES_VERSION"; then
  echo "k8s-tools: building kubelet $KUBERNETES_VERSION (a few minutes on a cold cache)"
  build_k8s kubelet "-s -w"
fi

# The control plane of the whole-cluster test (PVC -> pod on a real kubelet)
# and the kubectl its assertions read through.
for name in kube-controller-manager kube-scheduler kubectl; do
  if ! up_to_date "$name" "$KUBERNETES_VERSION"; then
    echo "k8s-tools: building $name $KUBERNETES_VERSION"
    build_k8s "$name" "-s -w"
  fi
done

if ! up_to_date etcd "$ETCD_VERSION"; then
  echo "k8s-tools: building etcd $ETCD_VERSION"
  GOBIN="$bin" go install "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>/dev/null \
    && mv -f "$bin/v3" "$bin/etcd" 2>/dev/null || {
    # server/v3 carries replace directives in some releases; build it from a module that requires it.
    dir="$build/etcd-$ETCD_VERSION"
    mkdir -p "$dir"
    cat >"$dir/go.mod" <<EOF
module dmraid-csi.local/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
    cat >"$dir/tools.go" <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
    (cd "$dir" && go mod tidy >/dev/null && go build -o "$bin/etcd" go.etcd.io/etcd/server/v3)
  }
  stamp etcd "$ETCD_VERSION"
fi

if ! up_to_date csi-sanity "$CSI_TEST_VERSION"; then
  echo "k8s-tools: building csi-sanity $CSI_TEST_VERSION"
  GOBIN="$bin" go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_TEST_VERSION"
  stamp csi-sanity "$CSI_TEST_VERSION"
fi

if ! up_to_date helm "$HELM_VERSION"; then
  echo "k8s-tools: building helm $HELM_VERSION"
  GOBIN="$bin" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  stamp helm "$HELM_VERSION"
fi
# An upstream sidecar, from its module at a pinned tag. Their go.mod files
# carry replace directives, which `go install pkg@version` refuses: the
# module is downloaded, copied somewhere writable and built inside, with the
# version stamped the way their Makefile does (-X main.version).
build_sidecar() { # NAME MODULE VERSION
  local name="$1" module="$2" version="$3" src dir
  src="$(go mod download -json "$module@$version" | awk -F'"' '/"Dir":/ {print $4}')"
  [ -d "$src" ] || { echo "k8s-tools: go mod download $module@$version gave no directory" >&2; exit 1; }
  dir="$build/$name-$version"
  rm -rf "$dir" && cp -r "$src" "$dir" && chmod -R u+w "$dir"
  (cd "$dir" && go build -o "$bin/$name" -ldflags "-s -w -X main.version=$version" "./cmd/$name")
  rm -rf "$dir"
  stamp "$name" "$version"
}
# Each sidecar as an image holding the static binary alone, under the name
# the chart gives it, for the VM's containerd to import.
sidecar_image() { # NAME VERSION
  local name="$1" version="$2" out="$DMRAID_CACHE/node-runtime/$1.oci.tar" root
  [ -f "$out" ] && [ "$(cat "$out.version" 2>/dev/null)" = "$version" ] && return 0
  root="$(mktemp -d)"
  cp "$bin/$name" "$root/$name"
  "$here/oci-pack.sh" "$root" "registry.k8s.io/sig-storage/$name:$version" "[\"/$name\"]" "$out"
  echo "$version" >"$out.version"
  rm -rf "$root"
}
if ! up_to_date csi-provisioner "$PROVISIONER_VERSION"; then
  echo "k8s-tools: building csi-provisioner $PROVISIONER_VERSION (a few minutes on a cold cache)"
  build_sidecar csi-provisioner github.com/kubernetes-csi/external-provisioner/v6 "$PROVISIONER_VERSION"
fi
if ! up_to_date csi-resizer "$RESIZER_VERSION"; then
  echo "k8s-tools: building csi-resizer $RESIZER_VERSION"
  build_sidecar csi-resizer github.com/kubernetes-csi/external-resizer/v2 "$RESIZER_VERSION"
fi

# The container runtime the VM's kubelet uses: containerd, runc and the CNI
# plugins from Debian's packages (whatever version the mirror has; recorded
# in the stamp), unpacked, never installed on this host.
node_rt="$DMRAID_CACHE/node-runtime"
candidates() { apt-cache policy containerd runc containernetworking-plugins 2>/dev/null | awk '/Candidate/ && $2 != "(none)" {printf "%s ", $2}'; }
want="$(candidates)"
if [ "$(wc -w <<<"$want")" -ne 3 ]; then
  # A fresh machine may have no package lists yet.
  ${SUDO:-} apt-get update -qq >/dev/null 2>&1 || true
  want="$(candidates)"
fi
if [ ! -x "$node_rt/root/usr/bin/containerd" ] || [ "$(cat "$node_rt/stamp" 2>/dev/null)" != "$want" ]; then
  echo "k8s-tools: unpacking containerd, runc and CNI plugins from Debian ($want)"
  rm -rf "$node_rt" && mkdir -p "$node_rt/debs"
  (cd "$node_rt/debs" && apt-get download containerd runc containernetworking-plugins >/dev/null 2>&1) \
    || { echo "k8s-tools: apt-get download failed (run scripts/install.sh for the package lists)" >&2; exit 1; }
  for deb in "$node_rt"/debs/*.deb; do dpkg -x "$deb" "$node_rt/root"; done
  echo "$want" >"$node_rt/stamp"
fi
# The pod sandbox ("pause") image: Debian's static catatonit in pause mode.
if [ ! -f "$node_rt/pause.oci.tar" ]; then
  echo "k8s-tools: packing the pause image from Debian's catatonit"
  pause="$(mktemp -d)"
  (cd "$pause" && apt-get download catatonit >/dev/null 2>&1 && dpkg -x catatonit_*.deb x) \
    || { echo "k8s-tools: cannot download catatonit" >&2; exit 1; }
  mkdir -p "$pause/rootfs"
  cp "$pause/x/usr/bin/catatonit" "$pause/rootfs/catatonit"
  "$here/oci-pack.sh" "$pause/rootfs" registry.k8s.io/pause:3.10 '["/catatonit","-P"]' "$node_rt/pause.oci.tar"
  rm -rf "$pause"
fi
# A workload image for the whole-cluster test: Debian's static busybox.
if [ ! -f "$node_rt/busybox.oci.tar" ]; then
  echo "k8s-tools: packing the busybox workload image"
  bb="$(mktemp -d)"
  mkdir -p "$bb/bin" "$bb/tmp"
  cp /bin/busybox "$bb/bin/busybox" || { echo "k8s-tools: /bin/busybox missing: run scripts/install.sh (busybox-static)" >&2; exit 1; }
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$bb/bin/$applet"
  done
  "$here/oci-pack.sh" "$bb" dmraid-csi.local/busybox:e2e '["/bin/sh"]' "$node_rt/busybox.oci.tar"
  rm -rf "$bb"
fi
sidecar_image csi-provisioner "$PROVISIONER_VERSION"
sidecar_image csi-resizer "$RESIZER_VERSION"
echo "k8s-tools: ok ($bin, $node_rt)"
