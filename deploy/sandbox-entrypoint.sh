#!/bin/sh
# The entrypoint of the containers that run sandboxes (worker, trainer): a cgroup v2 subtree of their
# own, delegated, so that every box gets a control group with a memory limit for its whole tree.
#
# With `cgroup: private`, this container's cgroup is the root of its cgroup namespace; its processes
# move to a child ("init") so that the root may hand the memory, pids and cpu controllers down to the
# boxes' folder (cgroup v2 allows controllers only where no process sits). Where the mount is read-only
# or the controllers are not delegated, nothing is changed: the worker's /readyz and each run's
# isolation list then say "no cgroup", and memory is limited per process.
set -u
root=/sys/fs/cgroup
if [ -w "$root/cgroup.subtree_control" ] && [ -r "$root/cgroup.controllers" ]; then
  mkdir -p "$root/init"
  for pid in $(cat "$root/cgroup.procs"); do
    echo "$pid" > "$root/init/cgroup.procs" 2>/dev/null || true
  done
  echo "+memory +pids +cpu" > "$root/cgroup.subtree_control" 2>/dev/null \
    || echo "sandbox-entrypoint: the memory, pids and cpu controllers are not delegated to this container" >&2
fi
exec "$@"
