#!/usr/bin/env bash
# Try dmraid-csi on a laptop with Docker and kind (https://kind.sigs.k8s.io):
# a kind cluster whose worker nodes get loop-backed "disks", the driver image
# built from the Dockerfile and loaded into the nodes, the chart installed,
# a raid5 StorageClass, and a PVC + pod writing to it; ends with
# `kubectl describe pvc` showing the array's health.
#
# Needs: docker, kind, kubectl, helm, and a host kernel with device-mapper
# raid (modules dm-raid, raid456, raid1, raid10; loaded here with sudo).
# The project's CI cannot run this (no container engine there); it checks
# this script with shellcheck and the chart it installs with helm and a real
# API server (e2e/tests/chart.rs).
#
#   scripts/kind.sh            create cluster "dmraid", install, run the demo
#   scripts/kind.sh --delete   delete the cluster and the loop devices
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cluster="${KIND_CLUSTER:-dmraid}"
disks_per_node="${DISKS_PER_NODE:-4}"
disk_size="${DISK_SIZE:-2G}"
image="dmraid-csi:kind"

need() { command -v "$1" >/dev/null 2>&1 || { echo "kind.sh: $1 is required" >&2; exit 1; }; }
for t in docker kind kubectl helm; do need "$t"; done

workers() { kind get nodes --name "$cluster" | grep -v control-plane; }

if [ "${1:-}" = "--delete" ]; then
  for node in $(workers 2>/dev/null || true); do
    docker exec "$node" sh -c 'for l in /dev/dmraid-disk-*; do [ -L "$l" ] && losetup -d "$(readlink -f "$l")"; done; true' || true
  done
  kind delete cluster --name "$cluster"
  exit 0
fi

echo "== kernel modules (host)"
for m in dm-mod dm-raid raid456 raid1 raid10; do sudo modprobe "$m"; done

echo "== cluster $cluster"
if ! kind get clusters | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --config - <<'YAML'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
YAML
fi

echo "== $disks_per_node loop-backed disks of $disk_size in each worker"
for node in $(workers); do
  docker exec "$node" sh -c "
    set -e
    mkdir -p /var/lib/dmraid-disks
    for i in \$(seq 0 $((disks_per_node - 1))); do
      link=/dev/dmraid-disk-\$i
      [ -e \"\$link\" ] && continue
      img=/var/lib/dmraid-disks/d\$i.img
      truncate -s $disk_size \"\$img\"
      ln -s \"\$(losetup -f --show \"\$img\")\" \"\$link\"
    done"
done

echo "== image $image"
docker build -t "$image" "$here/.."
kind load docker-image "$image" --name "$cluster"

echo "== helm install"
helm upgrade --install dmraid-csi "$here/../charts/dmraid-csi" \
  --namespace dmraid-csi --create-namespace \
  --set image.repository="${image%%:*}" --set image.tag="${image##*:}" \
  --set image.pullPolicy=Never \
  --set 'node.disks={/dev/dmraid-disk-*}' \
  --set storageClasses.raid5.enabled=true \
  --wait --timeout 5m

echo "== a PVC and a pod writing to it"
kubectl apply -f - <<'YAML'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: { name: data }
spec:
  storageClassName: dmraid-raid5
  accessModes: [ReadWriteOnce]
  resources: { requests: { storage: 1Gi } }
---
apiVersion: v1
kind: Pod
metadata: { name: writer }
spec:
  containers:
    - name: writer
      image: busybox:1.36
      command: [sh, -c, "dd if=/dev/urandom of=/data/pattern bs=1M count=64 && md5sum /data/pattern && sleep 3600"]
      volumeMounts: [{ name: data, mountPath: /data }]
  volumes:
    - name: data
      persistentVolumeClaim: { claimName: data }
YAML
kubectl wait --for=condition=Ready pod/writer --timeout=5m
kubectl get raidvolumes
kubectl describe pvc data
echo "kind.sh: done. Pull a leg: docker exec <worker> losetup -d <loop of a disk>; then kubectl describe pvc data"
