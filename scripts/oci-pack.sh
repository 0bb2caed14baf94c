#!/usr/bin/env bash
# Packs a root filesystem as a one-layer OCI image layout archive, without a
# container engine: reproducible (sorted, owned by root, timestamps at the
# epoch), accepted by `ctr images import` and `skopeo copy oci-archive:`.
#
#   scripts/oci-pack.sh ROOTFS NAME ENTRYPOINT_JSON OUT.tar [TITLE] [VERSION]
#   e.g. scripts/oci-pack.sh /tmp/root registry.k8s.io/pause:3.10 '["/catatonit","-P"]' pause.oci.tar
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 ROOTFS NAME ENTRYPOINT_JSON OUT.tar [TITLE] [VERSION]" >&2; exit 2; }
rootfs="$1" name="$2" entrypoint="$3" out="$4" title="${5:-${2%%:*}}" version="${6:-${2##*:}}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 "$work/layer.tar"
layout="$work/oci"
mkdir -p "$layout/blobs/sha256"
blob() { # FILE -> digest (moves the file into the layout)
  local d; d=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$layout/blobs/sha256/$d"
  echo "$d"
}
size() { stat -c %s "$layout/blobs/sha256/$1"; }
layer=$(blob "$work/layer.tar.gz")
cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Entrypoint":$entrypoint,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Labels":{"org.opencontainers.image.title":"$title","org.opencontainers.image.version":"$version"}},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created_by":"scripts/oci-pack.sh"}]}
JSON
config=$(blob "$work/config.json")
cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$(size "$config")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer","size":$(size "$layer")}]}
JSON
manifest=$(blob "$work/manifest.json")
cat >"$layout/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest","size":$(size "$manifest"),"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"$name","org.opencontainers.image.ref.name":"${name##*:}"}}]}
JSON
echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
mkdir -p "$(dirname "$out")"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$out" .
echo "image: $name, $(du -h "$out" | cut -f1), manifest sha256:$manifest" >&2
