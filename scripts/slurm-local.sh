#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests and for trying the slurm profile:
#   sudo scripts/slurm-local.sh start    write /etc/slurm/slurm.conf + gres.conf, start munged,
#                                        slurmctld and slurmd, wait until the node is idle
#   sudo scripts/slurm-local.sh stop     stop the daemons this script started, by their PIDs
#   scripts/slurm-local.sh status        sinfo
# Needs root and Debian's slurmctld, slurmd, slurm-client and munge packages.
#
# The config must be /etc/slurm/slurm.conf: the Snakemake SLURM plugin drops SLURM_CONF from a
# job's environment, so the job step would not find a config anywhere else. No cgroups
# (proctrack/linuxproc, task/none) and no accounting database: run Snakemake with
# `--slurm-status-command squeue`; MinJobAge keeps finished jobs visible to squeue meanwhile.
#
# Settings (environment):
#   SLURM_LOCAL_DIR   state, spool, logs and PID files (default /tmp/clipbench-slurm)
#   SLURM_LOCAL_GPUS  GPUs the node offers as GRES (default 1; on a machine without GPUs
#                     they are placeholders, so the GPU request path of sbatch is exercised)
#   SLURM_LOCAL_CPUS, SLURM_LOCAL_MEM_MB
#                     what the node advertises, at least (default 16 cores, 65536 MB): enough
#                     for the profile's requests; jobs share this machine's real cores
#   SLURM_LOCAL_WAIT  seconds to wait for the node to become idle (default 60)
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/clipbench-slurm}
GPUS=${SLURM_LOCAL_GPUS:-1}
WAIT=${SLURM_LOCAL_WAIT:-60}
CPUS=${SLURM_LOCAL_CPUS:-16}
MEM_MB=${SLURM_LOCAL_MEM_MB:-65536}
CONF=/etc/slurm/slurm.conf
MARK="# written by clipbench scripts/slurm-local.sh"

die() { echo "slurm-local: $*" >&2; exit 1; }

need() {
    for cmd in munged slurmctld slurmd sinfo sbatch; do
        command -v "$cmd" >/dev/null || PATH=$PATH:/usr/sbin command -v "$cmd" >/dev/null \
            || die "$cmd not found; install it: apt-get install -y slurmctld slurmd slurm-client munge"
    done
    [ "$(id -u)" = 0 ] || die "must run as root (it writes $CONF and starts the daemons)"
}

# Poll until "$@" succeeds, at most $1 seconds (short sleeps between tries, not a blind wait);
# exit status 99 from "$@" gives up at once.
wait_for() {
    local limit=$1; shift
    local deadline=$((SECONDS + limit))
    local rc
    while true; do
        rc=0
        "$@" >/dev/null 2>&1 || rc=$?
        [ "$rc" != 0 ] || return 0
        [ "$rc" != 99 ] || return 99  # the condition says it can no longer become true
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

node_line() {
    # Loopback addresses: no dependence on the host name resolving. The node advertises at
    # least CPUS cores and MEM_MB of memory whatever this machine has (SlurmdParameters=
    # config_overrides), so the profile's real requests fit on a small CI machine; the jobs
    # then share the real cores.
    local cpus
    cpus=$(nproc)
    [ "$cpus" -ge "$CPUS" ] || cpus=$CPUS
    echo "NodeName=$1 NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$MEM_MB Gres=gpu:$GPUS State=UNKNOWN"
}

write_conf() {
    local node=$1
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; move it away first"
    fi
    mkdir -p /etc/slurm "$DIR/state" "$DIR/spool"
    local tmp
    tmp=$(mktemp /etc/slurm/.slurm.conf.XXXXXX)
    cat >"$tmp" <<EOF
$MARK
ClusterName=clipbench
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
GresTypes=gpu
MinJobAge=600
ReturnToService=2
SlurmdParameters=config_overrides
$(node_line "$node")
PartitionName=cpu Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$node MaxTime=INFINITE State=UP
EOF
    chmod 644 "$tmp"
    mv "$tmp" "$CONF"
    tmp=$(mktemp /etc/slurm/.gres.conf.XXXXXX)
    # slurmd counts GPUs by their device files; without GPUs, distinct placeholder devices.
    local devices=(/dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty /dev/ptmx /dev/console) i
    [ "$GPUS" -le "${#devices[@]}" ] || die "SLURM_LOCAL_GPUS=$GPUS: at most ${#devices[@]} placeholder GPUs"
    : >"$tmp"
    for ((i = 0; i < GPUS; i++)); do
        echo "NodeName=$node Name=gpu File=${devices[i]}" >>"$tmp"
    done
    chmod 644 "$tmp"
    mv "$tmp" /etc/slurm/gres.conf
}

munge_ok() { munge -n </dev/null | unmunge >/dev/null; }

start_munged() {
    if munge_ok 2>/dev/null; then
        return  # a munged is already running (the system's): use it, and leave it running
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; }
    # munged runs as its own user and daemonizes; its PID file is written where it may write.
    runuser -u munge -- munged --pid-file=/run/munge/clipbench-munged.pid
    wait_for 10 munge_ok || die "munged did not start (see /var/log/munge/munged.log)"
    wait_for 5 test -s /run/munge/clipbench-munged.pid
    cp /run/munge/clipbench-munged.pid "$DIR/munged.started"
}

node_idle() {
    local state
    state=$(sinfo -h -N -n "$1" -o %T 2>/dev/null | sort -u)
    case "$state" in
        # A node the controller refused (e.g. fewer GPUs than configured) never becomes idle.
        inval* | drain*) echo "node $1 is $state" >&2; return 99 ;;
    esac
    [ "$state" = idle ]
}

start() {
    need
    export PATH=$PATH:/usr/sbin
    local node
    node=$(hostname -s)
    [ ! -s "$DIR/slurmctld.started" ] || die "already started (PIDs in $DIR); run '$0 stop' first"
    if [ -e "$CONF" ] && scontrol ping 2>/dev/null | grep -q UP; then
        die "a slurmctld already answers for $CONF; stop it first"
    fi
    write_conf "$node"
    start_munged
    # -D: stay in the foreground, so $! is the daemon's own PID; setsid: outlive this shell.
    # -c: a fresh cluster, no jobs or state from an earlier start.
    setsid slurmctld -D -c >>"$DIR/slurmctld.out" 2>&1 </dev/null &
    echo $! >"$DIR/slurmctld.started"
    wait_for 30 scontrol ping || die "slurmctld did not answer (see $DIR/slurmctld.log)"
    setsid slurmd -D -N "$node" >>"$DIR/slurmd.out" 2>&1 </dev/null &
    echo $! >"$DIR/slurmd.started"
    if ! wait_for "$WAIT" node_idle "$node"; then
        sinfo -N -l >&2 || true
        tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
        die "node $node not idle (see the state and logs above)"
    fi
    echo "slurm-local: node $node idle (partitions cpu, gpu; gres gpu:$GPUS); logs in $DIR"
}

stop_pid() {
    local file=$DIR/$1.started pid
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    if kill "$pid" 2>/dev/null; then
        # Poll until it is gone; SIGKILL if it lingers.
        wait_for 20 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop() {
    stop_pid slurmd
    stop_pid slurmctld
    stop_pid munged
    echo "slurm-local: stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo -N -l ;;
    *) die "usage: $0 start|stop|status" ;;
esac
