#!/usr/bin/env bash
# A real one-node SLURM cluster on this Debian machine, for CI and for trying the profile
# without a cluster: munged, MariaDB, slurmdbd (so `sacct`, the plugin's status command,
# works), slurmctld and slurmd, started by hand (no systemd), as root.
#
#   slurm/local-cluster.sh start    install what is missing, write the config, start the daemons
#   slurm/local-cluster.sh status   which daemons run, the partition and the node state
#   slurm/local-cluster.sh stop     stop the daemons this script started, and only those
#   slurm/local-cluster.sh profile DIR
#                                   write DIR/config.yaml: the profile slurm/config.yaml for
#                                   this cluster (its account and partition for every job;
#                                   no conda here, so the venvs instead of --sdm conda)
#
# Idempotent: `start` on a running cluster starts nothing twice. It refuses to overwrite a
# slurm.conf it did not write. Facts and pitfalls: ../shared/notes/slurm-local.md.
set -euo pipefail

CLUSTER=synthllm
ACCOUNT=synthllm
PARTITION=main
STATE_DIR=/run/synthllm-slurm          # which daemons this script started
LOG_DIR=/var/log/slurm
MARKER="# written by synthllm slurm/local-cluster.sh"
NODE=$(hostname -s)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

log() { echo "local-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

pid_of() {  # pid of a running daemon, empty if none
    pgrep -x "$1" | head -n1 || true
}

install_packages() {
    local missing=()
    for bin in slurmctld slurmd sinfo munged slurmdbd mariadbd; do
        command -v "$bin" >/dev/null || missing+=("$bin")
    done
    [ ${#missing[@]} -eq 0 ] && return
    log "installing SLURM, munge and MariaDB from Debian (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
}

write_slurm_conf() {
    local conf=/etc/slurm/slurm.conf
    if [ -f "$conf" ] && ! grep -qF "$MARKER" "$conf"; then
        die "$conf exists and was not written by this script; not overwriting it"
    fi
    local cpus mem_mb
    cpus=$(nproc)
    # RealMemory above what the node has drains it: leave 1 GiB to the system
    mem_mb=$(( $(free -m | awk '/^Mem:/ {print $2}') - 1024 ))
    mkdir -p /etc/slurm "$LOG_DIR" /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
    chown slurm:slurm "$LOG_DIR" /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
    cat > "$conf.tmp" <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=slurm
AuthType=auth/munge
# no cgroups on this machine: track processes by their parent, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# memory is enforced by polling: a job above its --mem is killed, as on a real cluster
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# finished jobs stay visible to squeue for an hour (the plugin's fallback status command)
MinJobAge=3600
ReturnToService=2
SchedulerParameters=sched_interval=2
NodeName=$NODE CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
# DefMemPerCPU: without it a job that names no memory takes the whole node
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=1024
EOF
    mv "$conf.tmp" "$conf"
}

write_slurmdbd_conf() {
    local conf=/etc/slurm/slurmdbd.conf
    if [ -f "$conf" ] && ! grep -qF "$MARKER" "$conf"; then
        die "$conf exists and was not written by this script; not overwriting it"
    fi
    # keep the database password across restarts: MariaDB already has it
    local pass
    pass=$(sed -n 's/^StoragePass=//p' "$conf" 2>/dev/null || true)
    [ -n "$pass" ] || pass=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    (umask 077; cat > "$conf.tmp" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
LogFile=$LOG_DIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
EOF
    )
    chown slurm:slurm "$conf.tmp"
    mv "$conf.tmp" "$conf"
}

started() {  # remember that this script started a daemon, so that stop ends only those
    mkdir -p "$STATE_DIR"
    echo "$1" >> "$STATE_DIR/started"
}

wait_for() {  # wait_for <what> <seconds> <command...>
    local what=$1 seconds=$2; shift 2
    for _ in $(seq "$seconds"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "$what did not come up within ${seconds}s (logs: $LOG_DIR)"
}

start_munge() {
    [ -n "$(pid_of munged)" ] && return
    if [ ! -s /etc/munge/munge.key ]; then
        runuser -u munge -- mungekey --create
    fi
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
    started munged
    wait_for munged 20 munge -n
}

start_mariadb() {
    if [ -z "$(pid_of mariadbd)" ]; then
        [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        (setsid /usr/sbin/mariadbd --user=mysql >>"$LOG_DIR/mariadb.log" 2>&1 &)
        started mariadbd
        wait_for MariaDB 60 mariadb -e "SELECT 1"
    fi
    # slurmdbd's database, and its user with the password of slurmdbd.conf
    local pass
    pass=$(sed -n 's/^StoragePass=//p' /etc/slurm/slurmdbd.conf)
    mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
                CREATE USER IF NOT EXISTS 'slurm'@'localhost';
                ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
                GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start_slurmdbd() {
    [ -n "$(pid_of slurmdbd)" ] && return
    slurmdbd
    started slurmdbd
    wait_for slurmdbd 60 sacctmgr -n show cluster
}

register_accounts() {
    # an account the profile names must exist, or the whole run fails at once
    sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -n show account "$ACCOUNT" | grep -q . \
        || sacctmgr -i -Q add account "$ACCOUNT" Cluster="$CLUSTER" Description="synthllm" Organization="synthllm"
    sacctmgr -n show assoc user=root account="$ACCOUNT" | grep -q . \
        || sacctmgr -i -Q add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" Cluster="$CLUSTER"
}

start_slurmctld() {
    [ -n "$(pid_of slurmctld)" ] && return
    slurmctld
    started slurmctld
    wait_for slurmctld 60 scontrol ping
}

start_slurmd() {
    if [ -z "$(pid_of slurmd)" ]; then
        slurmd
        started slurmd
    fi
    # a node that was down when the daemons last stopped comes back on its own
    # (ReturnToService=2); wait until it takes jobs
    for _ in $(seq 60); do
        case "$(sinfo -h -n "$NODE" -o %t 2>/dev/null)" in
            idle|mix|alloc|comp) return 0 ;;
            drain*|down*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    die "node $NODE did not become idle (sinfo: $(sinfo -h -n "$NODE" -o '%t %E' 2>&1); logs: $LOG_DIR)"
}

cmd_start() {
    [ "$(id -u)" -eq 0 ] || die "run as root (the daemons and /etc/slurm need it)"
    install_packages
    mkdir -p "$LOG_DIR"
    write_slurm_conf
    write_slurmdbd_conf
    start_munge
    start_mariadb
    start_slurmdbd
    register_accounts
    start_slurmctld
    start_slurmd
    cmd_status
}

cmd_status() {
    local state=0
    for d in "${DAEMONS[@]}"; do
        if [ -n "$(pid_of "$d")" ]; then
            echo "$d: running (pid $(pid_of "$d"))"
        else
            echo "$d: not running"; state=3
        fi
    done
    if [ "$state" -eq 0 ]; then
        sinfo -o "%P %a %D %t %c %m" || state=3
        echo "account: $ACCOUNT (sacct: $(command -v sacct))"
    fi
    return "$state"
}

cmd_stop() {
    if [ ! -f "$STATE_DIR/started" ]; then
        log "this script started no daemon: nothing to stop"
        return 0
    fi
    # reverse start order: the node first, the database last
    for d in slurmd slurmctld slurmdbd mariadbd munged; do
        grep -qx "$d" "$STATE_DIR/started" || continue
        local pid; pid=$(pid_of "$d")
        [ -n "$pid" ] || continue
        kill "$pid"
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -0 "$pid" 2>/dev/null && die "$d (pid $pid) did not stop within 30 s"
        log "stopped $d"
    done
    rm -f "$STATE_DIR/started"
}

cmd_profile() {
    local dir=${1:?usage: $0 profile DIR}
    local profile
    profile="$(dirname "$0")/config.yaml"
    mkdir -p "$dir"
    {
        grep -v '^software-deployment-method:' "$profile"
        printf 'default-resources:\n  slurm_account: %s\n  slurm_partition: %s\n' "$ACCOUNT" "$PARTITION"
    } > "$dir/config.yaml.tmp"
    mv "$dir/config.yaml.tmp" "$dir/config.yaml"
    log "wrote $dir/config.yaml (run: snakemake --profile $dir ...)"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    profile) cmd_profile "${2:-}" ;;
    *) echo "usage: $0 start|stop|status|profile DIR" >&2; exit 2 ;;
esac
