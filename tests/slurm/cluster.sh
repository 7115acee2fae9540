#!/usr/bin/env bash
# A real single-node SLURM cluster on 127.0.0.1, for testing the workflow's SLURM profile.
#
#   bash tests/slurm/cluster.sh install   # Debian packages munge slurmctld slurmd slurm-client
#   bash tests/slurm/cluster.sh start     # configure and start munged, slurmctld, slurmd; wait for an idle node
#   bash tests/slurm/cluster.sh status    # daemons and node state; exit 0 only when the node accepts jobs
#   bash tests/slurm/cluster.sh stop      # stop only the daemons that `start` started
#
# Needs root. No systemd is assumed: the daemons are started directly and the pids of those this
# script started are recorded under $STATE_DIR, so `stop` never touches daemons someone else runs.
# There is no accounting database: job status comes from `squeue`, which keeps finished jobs for
# MinJobAge seconds (the SLURM executor plugin needs MinJobAge >= 3 x its first status-check delay).
# The node advertises two fake GPUs (symlinks to /dev/null) so that `--gpus=1` requests can be tested.
set -euo pipefail

PACKAGES=(munge slurmctld slurmd slurm-client)
CONF_DIR=/etc/slurm
SLURM_CONF_FILE=$CONF_DIR/slurm.conf
GRES_CONF_FILE=$CONF_DIR/gres.conf
STATE_DIR=${GPTLAB_SLURM_STATE_DIR:-/run/gptlab-slurm}
SLURM_LIB=/var/lib/slurm
SLURM_LOG=/var/log/slurm
FAKE_GPU_DIR=$SLURM_LIB/fakegpu
N_FAKE_GPUS=2
MIN_JOB_AGE=600
MARKER="# Written by gptlab tests/slurm/cluster.sh; rewritten on every start."
WAIT_SECONDS=${GPTLAB_SLURM_WAIT_SECONDS:-90}

log() { echo "cluster.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts system daemons); try: sudo bash $0 $1"
}

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
    done
}

cmd_install() {
    require_root install
    command -v dpkg-query >/dev/null && command -v apt-get >/dev/null ||
        die "apt-get/dpkg not found: install ${PACKAGES[*]} with your system's package manager"
    local missing
    mapfile -t missing < <(missing_packages)
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "already installed: ${PACKAGES[*]}"
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when apt does not know a candidate version yet.
    local p needs_update=0
    for p in "${missing[@]}"; do
        apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]' || needs_update=1
    done
    if [[ $needs_update -eq 1 ]]; then
        log "apt-get update (no candidate for some of: ${missing[*]})"
        apt-get update -qq
    fi
    log "apt-get install ${missing[*]}"
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
        # Stale lists (a mirror that has moved on) make the download fail: refresh once and retry.
        log "install failed; refreshing the package lists and retrying once"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    mapfile -t missing < <(missing_packages)
    [[ ${#missing[@]} -eq 0 ]] || die "still not installed: ${missing[*]}"
}

# --- pid bookkeeping ---------------------------------------------------------------------------

# The 22nd field of /proc/PID/stat is the start time; together with the pid it identifies a process
# even after pid reuse.
proc_start() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

pid_alive() { [[ -n ${1:-} && -d /proc/$1 ]]; }

pid_from_file() { [[ -s $1 ]] && tr -dc '0-9' <"$1" || true; }

# The daemon's own pid file, if the process it names is alive and is that daemon.
running_pid() {
    local name=$1 pidfile=$2 pid
    pid=$(pid_from_file "$pidfile")
    if pid_alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name"* ]]; then
        echo "$pid"
    fi
}

record() {
    local name=$1 pid=$2
    mkdir -p "$STATE_DIR"
    echo "$pid $(proc_start "$pid")" >"$STATE_DIR/$name.pid"
}

# The pid of a daemon this script started, if that very process is still alive.
recorded_pid() {
    local name=$1 f=$STATE_DIR/$1.pid pid start
    [[ -s $f ]] || return 0
    read -r pid start <"$f"
    if pid_alive "$pid" && [[ $(proc_start "$pid") == "$start" ]]; then
        echo "$pid"
    else
        rm -f "$f" # stale: that process is gone
    fi
}

wait_for_pidfile() {
    local name=$1 pidfile=$2 i pid
    for ((i = 0; i < 100; i++)); do
        pid=$(running_pid "$name" "$pidfile")
        [[ -n $pid ]] && {
            echo "$pid"
            return 0
        }
        sleep 0.1
    done
    return 1
}

stop_pid() {
    local name=$1 pid=$2 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        pid_alive "$pid" || {
            log "stopped $name (pid $pid)"
            return 0
        }
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

# --- configuration -----------------------------------------------------------------------------

node_name() { hostname -s; }

# `slurmd -C` prints the hardware as slurm.conf wants it; keep the topology and claim ~95% of the
# memory (claiming more than slurmd detects marks the node INVAL).
node_line() {
    local host=$1 hw mem
    hw=$(slurmd -C | head -n1)
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    [[ -n $mem ]] || die "could not read RealMemory from 'slurmd -C': $hw"
    hw=$(sed -e 's/^NodeName=[^ ]* //' -e 's/ *RealMemory=[0-9]*//' <<<"$hw")
    echo "NodeName=$host NodeAddr=127.0.0.1 $hw RealMemory=$((mem * 95 / 100)) Gres=gpu:$N_FAKE_GPUS State=UNKNOWN"
}

write_slurm_conf() {
    local host=$1 node=$2
    cat <<EOF
$MARKER
ClusterName=localcluster
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job may start again cred_expire + 1 s after the requeue (default 120 s).
AuthInfo=cred_expire=30
StateSaveLocation=$SLURM_LIB/slurmctld
SlurmdSpoolDir=$SLURM_LIB/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$SLURM_LOG/slurmctld.log
SlurmdLogFile=$SLURM_LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol this long (no accounting database here).
MinJobAge=$MIN_JOB_AGE
DefMemPerCPU=1024
GresTypes=gpu
$node
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

write_gres_conf() {
    local host=$1
    cat <<EOF
$MARKER
AutoDetect=off
NodeName=$host Name=gpu File=$FAKE_GPU_DIR/gpu[0-$((N_FAKE_GPUS - 1))]
EOF
}

# Write CONTENT to DEST atomically; refuses to overwrite a configuration this script did not write.
# Sets CONF_CHANGED=1 when the file changed.
CONF_CHANGED=0
install_conf() {
    local dest=$1 content=$2 tmp
    if [[ -e $dest ]] && ! head -n1 "$dest" | grep -qF "$MARKER"; then
        die "$dest exists and was not written by this script; move it away to use the test cluster"
    fi
    if [[ -e $dest && $(cat "$dest") == "$content" ]]; then
        return 0
    fi
    tmp=$(mktemp "$dest.XXXXXX")
    printf '%s\n' "$content" >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$dest"
    CONF_CHANGED=1
}

prepare_host() {
    local host=$1 i
    # slurmctld and slurmd resolve the node's name; keep it on loopback.
    getent hosts "$host" >/dev/null || {
        log "adding '127.0.0.1 $host' to /etc/hosts"
        echo "127.0.0.1 $host" >>/etc/hosts
    }
    # Runtime directories that systemd units would otherwise create.
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o slurm -g slurm -m 0755 "$SLURM_LIB" "$SLURM_LIB/slurmctld" "$SLURM_LOG"
    install -d -m 0755 "$SLURM_LIB/slurmd" "$FAKE_GPU_DIR" "$CONF_DIR"
    for ((i = 0; i < N_FAKE_GPUS; i++)); do
        ln -sfn /dev/null "$FAKE_GPU_DIR/gpu$i"
    done
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
}

# --- commands ----------------------------------------------------------------------------------

node_state() { sinfo -h -N -n "$1" -o '%t' 2>/dev/null | head -n1; }

node_usable() {
    case $(node_state "$1") in
    idle | mix | alloc | comp) return 0 ;;
    *) return 1 ;;
    esac
}

start_munged() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0 # a working munged is already there (ours or the system's)
    fi
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    local pid
    pid=$(wait_for_pidfile munged /run/munge/munged.pid) || die "munged did not start"
    record munged "$pid"
}

start_daemon() {
    local name=$1 pidfile=$2 logfile=$3 pid
    pid=$(running_pid "$name" "$pidfile")
    [[ -n $pid ]] && return 0
    log "starting $name"
    "/usr/sbin/$name" || die "$name failed to start; see $logfile"
    pid=$(wait_for_pidfile "$name" "$pidfile") || {
        tail -n 20 "$logfile" >&2 || true
        die "$name did not write $pidfile; see $logfile"
    }
    record "$name" "$pid"
}

cmd_start() {
    require_root start
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null ||
        die "SLURM is not installed; run: bash $0 install"
    local host node slurm_conf gres_conf
    host=$(node_name)
    prepare_host "$host"
    node=$(node_line "$host")
    slurm_conf=$(write_slurm_conf "$host" "$node")
    gres_conf=$(write_gres_conf "$host")
    install_conf "$SLURM_CONF_FILE" "$slurm_conf"
    install_conf "$GRES_CONF_FILE" "$gres_conf"

    if [[ $CONF_CHANGED -eq 1 ]]; then
        # A new node definition needs fresh daemons; only ours may be restarted.
        local name
        for name in slurmd slurmctld; do
            local pid ours
            pid=$(running_pid "$name" "/run/$name.pid")
            [[ -n $pid ]] || continue
            ours=$(recorded_pid "$name")
            [[ $ours == "$pid" ]] || die "$name (pid $pid) runs with another configuration and was not started by this script"
            log "configuration changed: restarting $name"
            stop_pid "$name" "$pid"
            rm -f "$STATE_DIR/$name.pid"
        done
    fi

    start_munged
    start_daemon slurmctld /run/slurmctld.pid "$SLURM_LOG/slurmctld.log"
    start_daemon slurmd /run/slurmd.pid "$SLURM_LOG/slurmd.log"

    local i state resumed=0
    for ((i = 0; i < WAIT_SECONDS * 2; i++)); do
        node_usable "$host" && {
            log "node $host is $(node_state "$host"); partition 'debug' accepts jobs"
            return 0
        }
        state=$(node_state "$host")
        # A node left drained or down by an earlier run comes back once its daemons are healthy.
        if [[ $resumed -eq 0 && $i -ge 6 && $state =~ ^(drain|drng|down)$ ]]; then
            log "node $host is '$state'; resuming it"
            scontrol update NodeName="$host" State=RESUME || true
            resumed=1
        fi
        sleep 0.5
    done
    tail -n 20 "$SLURM_LOG/slurmctld.log" "$SLURM_LOG/slurmd.log" >&2 || true
    scontrol show node "$host" >&2 || true
    die "node $host did not become idle within ${WAIT_SECONDS}s (state: '$(node_state "$host")')"
}

cmd_stop() {
    require_root stop
    local name pid any=0
    for name in slurmd slurmctld munged; do
        pid=$(recorded_pid "$name")
        [[ -n $pid ]] || continue
        stop_pid "$name" "$pid"
        rm -f "$STATE_DIR/$name.pid"
        any=1
    done
    [[ $any -eq 1 ]] || log "no daemon started by this script is running"
}

cmd_status() {
    local host name pid ours rc=0
    host=$(node_name)
    for name in munged slurmctld slurmd; do
        case $name in
        munged) pid=$(running_pid munged /run/munge/munged.pid) ;;
        *) pid=$(running_pid "$name" "/run/$name.pid") ;;
        esac
        ours=$(recorded_pid "$name" 2>/dev/null || true)
        if [[ -z $pid ]]; then
            echo "$name: not running"
            rc=1
        elif [[ $ours == "$pid" ]]; then
            echo "$name: running (pid $pid, started by this script)"
        else
            echo "$name: running (pid $pid, not started by this script)"
        fi
    done
    if command -v sinfo >/dev/null && node_usable "$host"; then
        echo "node $host: $(node_state "$host")"
    else
        echo "node $host: not accepting jobs (state: '$(node_state "$host" || true)')"
        rc=1
    fi
    return $rc
}

case ${1:-} in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: bash $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
