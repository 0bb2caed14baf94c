#!/usr/bin/env bash
# Every test binary `cargo test --workspace` builds, run side by side:
# the crates' unit and integration tests as whole binaries (libtest runs
# their tests on every core), and the VM suites (e2e/tests) on 6.1, and the
# kernel-facing ones again on 6.12, each test in its own process, as many at
# once as the machine has cores. A VM under TCG keeps one core busy, and
# `cargo test` ran one suite after the other, so a suite of one test (most
# of them) left the other core idle. The longest start first (their times
# from the last run, $DMRAID_CACHE/e2e-times.tsv, else e2e/test-times.tsv);
# a test that boots two VMs at once takes two places, a unit-test binary
# all of them. The first failure stops the rest (DMRAID_E2E_KEEP_GOING=1
# runs on) and prints its output; DMRAID_E2E_LIST=1 prints the order and
# runs nothing. Doc tests are `cargo test --doc`'s.
#   scripts/suites.sh [FILTER]   FILTER: run only the jobs whose key
#                                ("two_nodes::two_nodes_…", "unit node/lib dmraid_node")
#                                contains it
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
source scripts/env.sh

filter="${1:-}"
slots="${DMRAID_E2E_SLOTS:-$(nproc)}"
times="$DMRAID_CACHE/e2e-times.tsv"
seed="e2e/test-times.tsv"
work="$(mktemp -d)"

# Places a job takes: the VMs it runs at the same time; a whole unit-test
# binary all (libtest's threads).
weight() {
  case "$1" in
    unit\ *) echo "$slots" ;;
    two_nodes::*) echo 2 ;;
    *) echo 1 ;;
  esac
}

# Every test binary, built as `cargo test --workspace` builds them (the same
# packages, so the same features): "package-dir kind name source executable".
cargo test --workspace --no-run --message-format=json-render-diagnostics >"$work/build.json"
grep '"reason":"compiler-artifact"' "$work/build.json" | grep '"profile":{[^}]*"test":true}' |
  grep '"executable":"' |
  sed -n 's/.*"manifest_path":"\([^"]*\)\/Cargo.toml".*"target":{"kind":\["\([^"]*\)"\][^}]*"name":"\([^"]*\)"[^}]*"src_path":"\([^"]*\)".*"executable":"\([^"]*\)".*/\1 \2 \3 \4 \5/p' \
  >"$work/binaries"
grep -q '/e2e/tests/' "$work/binaries" || { echo "suites.sh: no VM suite in cargo's output" >&2; exit 1; }

# Jobs: "key|environment|directory|executable|test" (no test: the whole
# binary; not tabs, which `read` folds together when a field is empty). On 6.12 run the
# suites that touch kernel behaviour: the model against dm-raid, power cuts
# and the crash fix (4 power cuts per RAID type at the kernel level and 2
# through the driver, against 6 and 3 on 6.1: the bug and the fix show on
# either count), the driver's crash points, and the catch-up of a returned
# disk (how the kernel revives a leg and loads a degraded array's bitmap).
: >"$work/jobs"
while read -r dir kind name src exe; do
  case "$src" in
    */e2e/tests/*) ;;
    *)
      printf 'unit %s/%s %s||%s|%s|\n' "${dir##*/}" "$kind" "$name" "$dir" "$exe"
      continue
      ;;
  esac
  suite="$name"
  env612=""
  case "$suite" in
    kernel | power_cut | dm_contract) env612="DMRAID_KERNEL=6.12 DMRAID_POWER_CUTS=4" ;;
    crash | catch_up) env612="DMRAID_KERNEL=6.12 DMRAID_POWER_CUTS=2" ;;
  esac
  "$exe" --list --format terse | sed -n 's/: test$//p' | while read -r t; do
    printf '%s::%s|%s|%s|%s|%s\n' "$suite" "$t" "" "$dir" "$exe" "$t"
    [ -z "$env612" ] || printf '6.12 %s::%s|%s|%s|%s|%s\n' "$suite" "$t" "$env612" "$dir" "$exe" "$t"
  done
done <"$work/binaries" >>"$work/jobs"
if [ -n "$filter" ]; then
  awk -F'|' -v f="$filter" 'index($1, f)' "$work/jobs" >"$work/jobs.f" && mv "$work/jobs.f" "$work/jobs"
fi
[ -s "$work/jobs" ] || { echo "suites.sh: no test matches ${filter:-anything}" >&2; exit 1; }
if grep -q '^6.12 ' "$work/jobs"; then
  DMRAID_KERNEL=6.12 bash e2e/scripts/provision.sh
fi

# The jobs that take more than one place first, while every place is free
# (a job waits for the places it needs, and those after it wait with it),
# then the longest first: the last run's seconds, else the seed's, else 60 s.
known="$work/known"
cat "$seed" 2>/dev/null >"$known" || true
cat "$times" 2>/dev/null >>"$known" || true
awk -F'\t' 'FILENAME == ARGV[1] { s[$1] = $2; next }
  { split($0, f, "|"); print ((f[1] in s) ? s[f[1]] : 60) "\t" $0 }' \
  "$known" "$work/jobs" | while IFS=$'\t' read -r secs job; do
  printf '%s\t%s\t%s\n' "$(weight "${job%%|*}")" "$secs" "$job"
done | sort -t$'\t' -k1,1nr -k2,2nr | cut -f3- >"$work/order"
if [ "${DMRAID_E2E_LIST:-}" = 1 ]; then
  cut -d'|' -f1 "$work/order"
  exit 0
fi

declare -A key_of log_of start_of weight_of
used=0
running=0
failed=""
started=$(date +%s)
: >"$work/done"
logs="$DMRAID_CACHE/suites-logs"
mkdir -p "$logs"

stop_all() {
  ((running)) || return 0
  for pid in "${!key_of[@]}"; do kill -- -"$pid" 2>/dev/null || true; done
}
trap 'stop_all; rm -rf "$work"' EXIT

# Waits for one job to end and reports it ("stopped": one that stop_all
# ended). Polls rather than `wait -n`: without job control bash may drop a
# job that ended during another command from the table `wait -n` reads,
# and then waits for ever; `wait PID` still has its status.
reap() {
  local pid rc
  while :; do
    for pid in "${!key_of[@]}"; do
      kill -0 "$pid" 2>/dev/null && continue
      rc=0
      wait "$pid" || rc=$?
      report "$pid" "$rc" "${1:-}"
      return 0
    done
    sleep 1
  done
}

report() {
  local pid="$1" rc="$2" how="$3"
  local key="${key_of[$pid]}" secs=$(($(date +%s) - ${start_of[$pid]}))
  used=$((used - ${weight_of[$pid]}))
  running=$((running - 1))
  if [ "$rc" -eq 0 ]; then
    printf '%s\t%s\n' "$key" "$secs" >>"$work/done"
    printf 'ok      %4d s  %s\n' "$secs" "$key"
    # libtest's own lines, as `cargo test` prints them: what a reader (or
    # a CI that counts tests) finds in any cargo test log.
    grep -E '^(running [0-9]+ tests?$|test .* \.\.\. |test result: )' "${log_of[$pid]}" || true
  elif [ "$how" = stopped ]; then
    printf 'stopped %4d s  %s\n' "$secs" "$key"
  else
    printf 'FAILED  %4d s  %s (exit %d); its output:\n' "$secs" "$key" "$rc"
    cat "${log_of[$pid]}"
    failed+="$key"$'\n'
  fi
  # Its log, named by its key, in place of its last one (a filtered run
  # leaves the others' as they were).
  cp "${log_of[$pid]}" "$logs/${key//[^A-Za-z0-9_.:-]/_}.log" 2>/dev/null || true
  unset "key_of[$pid]" "log_of[$pid]" "start_of[$pid]" "weight_of[$pid]"
}

n=0
while IFS='|' read -r key envs dir exe t; do
  [ -z "$failed" ] || [ "${DMRAID_E2E_KEEP_GOING:-}" = 1 ] || break
  w=$(weight "$key")
  ((w <= slots)) || w=$slots
  while ((used + w > slots)); do reap; done
  n=$((n + 1))
  log="$work/$n.log"
  # Its own session, so that a stop takes its QEMUs with it; cargo's
  # working directory and CARGO_MANIFEST_DIR (the package's: the target
  # dir is shared between checkouts, e2e::repo_root reads it at run time).
  # A VM test's own lines (its phases, with their times) go to its log
  # (--nocapture: one test a process, nothing interleaves), kept in
  # $DMRAID_CACHE/suites-logs after the run for the slow and the failed.
  args=()
  [ -z "$t" ] || args=(--exact "$t" --test-threads=1 --nocapture)
  # shellcheck disable=SC2086
  (cd "$dir" && exec setsid env CARGO_MANIFEST_DIR="$dir" $envs "$exe" "${args[@]}") </dev/null >"$log" 2>&1 &
  key_of[$!]="$key"
  log_of[$!]="$log"
  start_of[$!]=$(date +%s)
  weight_of[$!]=$w
  used=$((used + w))
  running=$((running + 1))
done <"$work/order"
while ((running)); do
  if [ -n "$failed" ] && [ "${DMRAID_E2E_KEEP_GOING:-}" != 1 ]; then
    stop_all
    reap stopped
  else
    reap
  fi
done

# This run's times, merged over the earlier ones.
mkdir -p "$DMRAID_CACHE"
awk -F'\t' '{ s[$1] = $2 } END { for (k in s) print k "\t" s[k] }' \
  <(cat "$times" 2>/dev/null || true) "$work/done" | sort >"$times.new" && mv "$times.new" "$times"
total=$(($(date +%s) - started))
busy=$(awk -F'\t' '{ s += $2 } END { print s + 0 }' "$work/done")
echo "suites: $(wc -l <"$work/done") jobs in ${total} s on $slots places (${busy} s of tests)"
if [ -n "$failed" ]; then
  printf 'suites: failed:\n%s' "$failed"
  exit 1
fi
if [ "$(wc -l <"$work/done")" -lt "$(wc -l <"$work/jobs")" ]; then
  echo "suites: not every test ran" >&2
  exit 1
fi
