# shellcheck shell=bash
# Sourced by every script: where reusable build outputs live (outside the clone).
# DMRAID_CACHE holds cargo's target dir, the kernel package, the initramfs
# pieces and the Go-built tools; delete it and every script rebuilds what it needs.
export DMRAID_CACHE="${DMRAID_CACHE:-$HOME/.cache/dmraid-csi}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DMRAID_CACHE/target}"
mkdir -p "$DMRAID_CACHE"
