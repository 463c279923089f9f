#!/usr/bin/env bash
# Runs a command (the test suite) in a cgroup of its own and fails if any
# process it started is still alive when it returns: a daemon double-forked
# by a test (nginx workers, FRR, BIRD, iperf3 ...) escapes its parent but
# never its cgroup. Leftovers are listed, then killed, so the next run
# starts clean. Works with cgroup v2 (unified or hybrid) and v1 "pids".
set -uo pipefail

root=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
if [[ -z "$root" ]]; then
  root=$(awk '$3 == "cgroup" && $4 ~ /(^|,)pids(,|$)/ { print $2; exit }' /proc/mounts)
fi
if [[ -z "$root" || ! -w "$root" ]]; then
  echo "no-leftovers: no writable cgroup hierarchy (cgroup2 or v1 pids) found" >&2
  exit 2
fi
cg="$root/lbd-test-$$"
mkdir "$cg" || exit 2
echo $$ > "$cg/cgroup.procs"

"$@"
rc=$?

# Leave the cgroup ourselves, then see who is still in it.
echo $$ > "$root/cgroup.procs"
# A process that got its signal as the run ended may need a moment.
for _ in $(seq 20); do
  left=$(cat "$cg/cgroup.procs")
  [[ -z "$left" ]] && break
  sleep 0.1
done
if [[ -n "$left" ]]; then
  echo "no-leftovers: processes started by the run are still alive:" >&2
  for pid in $left; do
    ps -o pid=,ppid=,args= -p "$pid" >&2 || true
  done
  for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do [[ -z "$(cat "$cg/cgroup.procs")" ]] && break; sleep 0.1; done
  [[ $rc -eq 0 ]] && rc=1
fi
rmdir "$cg" 2>/dev/null || echo "no-leftovers: could not remove $cg" >&2
exit $rc
