#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the cluster tests and for trying the cluster path
# on a laptop (docs/distributed.md). Run as root.
#
#   scripts/slurm_cluster.sh install      apt-get install slurm-wlm and munge if sbatch is missing
#   scripts/slurm_cluster.sh start DIR    write DIR/slurm.conf and start munged, slurmctld, two slurmd
#   scripts/slurm_cluster.sh stop DIR     stop the daemons started from DIR
#
# Two nodes on this host, each a slurmd of its own: `gpu-node` advertises four GPUs that do not
# exist (character devices DIR/dev/nvidia0-3, made like /dev/null, so jobs asking for GPUs are
# scheduled and the code runs on the CPU) in partition `gpu` (the default); `cpu-node` has none,
# in partition `cpu`. Clients find the cluster through SLURM_CONF=DIR/slurm.conf; everything the
# daemons write stays in DIR. Ports come from the 17xxx range below (SLURM_CLUSTER_PORT moves them).
set -euo pipefail

action=${1:-}
dir=${2:-}

install() {
  if command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

start_munge() {
  if pgrep -x munged >/dev/null; then
    return
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  [ -f /etc/munge/munge.key ] || /usr/sbin/mungekey -c
  chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  su -s /bin/sh munge -c /usr/sbin/munged
}

write_config() {
  local port=${SLURM_CLUSTER_PORT:-17817}
  local host
  host=$(hostname)
  mkdir -p "$dir/state" "$dir/spool" "$dir/dev"
  for i in 0 1 2 3; do
    [ -e "$dir/dev/nvidia$i" ] || mknod "$dir/dev/nvidia$i" c 1 3
  done
  cat > "$dir/slurm.conf" <<EOF
ClusterName=catbench
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
SlurmUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
EnforcePartLimits=ALL
KillWait=5
MpiDefault=none
GresTypes=gpu
MinJobAge=600
NodeName=gpu-node NodeHostname=$host NodeAddr=127.0.0.1 Port=$((port + 2)) CPUs=2 RealMemory=8000 Gres=gpu:4
NodeName=cpu-node NodeHostname=$host NodeAddr=127.0.0.1 Port=$((port + 3)) CPUs=2 RealMemory=8000
PartitionName=gpu Nodes=gpu-node Default=YES MaxTime=INFINITE OverSubscribe=FORCE:4 State=UP
PartitionName=cpu Nodes=cpu-node MaxTime=INFINITE OverSubscribe=FORCE:4 State=UP
EOF
  cat > "$dir/gres.conf" <<EOF
NodeName=gpu-node Name=gpu File=$dir/dev/nvidia[0-3]
EOF
}

node_names() {
  # A job of several tasks finds its rank 0 by node name (MASTER_ADDR): the names must resolve.
  if ! getent hosts gpu-node >/dev/null || ! getent hosts cpu-node >/dev/null; then
    echo "127.0.0.1 gpu-node cpu-node  # scripts/slurm_cluster.sh" >> /etc/hosts
  fi
}

start() {
  [ -n "$dir" ] || { echo "usage: $0 start DIR" >&2; exit 2; }
  install
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  start_munge
  node_names
  write_config
  export SLURM_CONF="$dir/slurm.conf"
  /usr/sbin/slurmctld -f "$SLURM_CONF"
  /usr/sbin/slurmd -f "$SLURM_CONF" -N gpu-node
  /usr/sbin/slurmd -f "$SLURM_CONF" -N cpu-node
  for _ in $(seq 60); do
    if [ "$(sinfo -N -h -t idle -o %N 2>/dev/null | wc -l)" -ge 2 ]; then
      echo "cluster up: export SLURM_CONF=$SLURM_CONF"
      return
    fi
    sleep 1
  done
  echo "the cluster did not come up in 60 s; logs in $dir" >&2
  sinfo >&2 || true
  exit 1
}

stop() {
  [ -n "$dir" ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
  pids=()
  for pidfile in "$dir"/slurmd-*.pid "$dir"/slurmctld.pid; do
    [ -f "$pidfile" ] && pids+=("$(cat "$pidfile")")
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 30); do  # the daemons save their state as they exit: wait, so DIR can then be removed
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || return 0
    sleep 0.5
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
}

case "$action" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
