#!/usr/bin/env bash
# A single-node Slurm cluster on this machine (controller and node daemon on localhost), for testing the runner's
# --slurm path for real. Debian/Ubuntu, as root:
#   benchmark/slurm/local_cluster.sh install     # apt-get install slurmctld slurmd slurm-client munge
#   eval "$(benchmark/slurm/local_cluster.sh start)"   # starts munged, slurmctld, slurmd; prints `export SLURM_CONF=...`
#   benchmark/slurm/local_cluster.sh stop
set -euo pipefail
dir=${SLURM_LOCAL_DIR:-/tmp/lightworld-slurm}
conf=$dir/slurm.conf

case "${1:-}" in
install)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq slurmctld slurmd slurm-client munge >&2
  ;;
start)
  mkdir -p "$dir"/state "$dir"/spool /run/munge
  node=$(hostname -s)
  cpus=$(nproc)
  cat > "$conf" <<CONF
ClusterName=lightworld
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=$node CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    chmod 400 /etc/munge/munge.key
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  pgrep -x munged >/dev/null || sudo -u munge /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
  pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld -f "$conf"
  pgrep -x slurmd >/dev/null || /usr/sbin/slurmd -f "$conf"
  export SLURM_CONF=$conf
  for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
      echo "export SLURM_CONF=$conf"
      exit 0
    fi
    sleep 1
  done
  echo "local_cluster.sh: the node did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
  sinfo >&2 || true
  exit 1
  ;;
stop)
  pkill -x slurmd || true
  pkill -x slurmctld || true
  ;;
*)
  echo "usage: $0 install|start|stop" >&2
  exit 2
  ;;
esac
