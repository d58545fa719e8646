#!/usr/bin/env bash
# A real SLURM cluster on this Debian machine, for CI and for trying the profile without a
# cluster: munged, MariaDB, slurmdbd (so `sacct`, the plugin's status command, works),
# slurmctld and one slurmd per node, started by hand (no systemd), as root.
#
#   slurm/local-cluster.sh start    install what is missing, write the config, start the daemons:
#                                   one node (this machine's name), partition `main`
#   slurm/local-cluster.sh start --nodes N [--gpus G] [--cpus C]
#                                   N >= 2 nodes node1..nodeN, each a slurmd in a network
#                                   namespace of its own (own hostname and address on a private
#                                   bridge), declaring G GPUs (default 8, count only: no GPU
#                                   needed), C CPUs (default: this machine's cores) and its
#                                   share of the memory; partitions `cpu` (default) and `gpu`,
#                                   both over all nodes
#   slurm/local-cluster.sh status   which daemons run, the partitions and the node states
#   slurm/local-cluster.sh stop     stop the daemons this script started, and only those; for
#                                   several nodes also remove the namespaces, bridge, spool
#                                   dirs and config it made
#   slurm/local-cluster.sh profile DIR
#                                   write DIR/config.yaml: the profile slurm/config.yaml for
#                                   the running cluster (its account and default partition for
#                                   every job; no conda here, so the venvs instead of --sdm conda)
#
# Idempotent: `start` on a running cluster of the same shape starts nothing twice; one of
# another shape (other N, G or C) is stopped first and started again as asked. It refuses to
# overwrite a slurm.conf it did not write. Facts and pitfalls: ../shared/notes/slurm-local.md
# and ../shared/notes/slurm-multinode.md.
set -euo pipefail

CLUSTER=synthllm
ACCOUNT=synthllm
PARTITION=main
STATE_DIR=/run/synthllm-slurm          # which daemons this script started
LOG_DIR=/var/log/slurm
MARKER="# written by synthllm slurm/local-cluster.sh"
NODE=$(hostname -s)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

# several nodes: what start made, so that stop removes exactly that
MULTI_STATE=$STATE_DIR/multinode       # the running shape: nodes=N gpus=G cpus=C net=...
MULTI_PARTITIONS=(cpu gpu)             # the first is the default one
# a /24 that exists only on this machine, between the bridge and the node namespaces; no
# route leads anywhere else (override if it collides with a network here)
NET=${SYNTHLLM_SLURM_NET:-10.231.0}
BRIDGE=synthllm-br                     # interface names: 15 characters at most
NETNS_PREFIX=synthllm-                 # namespace synthllm-node<i>, veth synthllm-v<i>
SPOOL_ROOT=/var/lib/slurm/synthllm-nodes
GPU_DIR=$STATE_DIR/gpus                # the GPUs the nodes declare: links to /dev/null
HOSTS_FILE=$STATE_DIR/hosts            # /etc/hosts inside the nodes: their names, nothing else
FIRST_PORT=6821                        # node i's slurmd listens on FIRST_PORT + i - 1

log() { echo "local-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

pid_of() {  # pid of a running daemon, empty if none
    # zombies do not count: a stopped daemon stays listed until its parent reaps it
    local pid
    for pid in $(pgrep -x "$1" || true); do
        if alive "$pid"; then echo "$pid"; return; fi
    done
}

alive() {  # alive <pid>: running and not a zombie (an unreaped daemon still answers kill -0)
    local state
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

stop_pid() {  # stop_pid <what> <pid>: SIGTERM, then wait up to 30 s
    # children under the same name go with it, and are waited for: slurmctld's slurmscriptd
    # outlives it by a moment, and a start right after would take it for a running slurmctld
    local pids comm pid
    comm=$(cat "/proc/$2/comm" 2>/dev/null || true)
    pids="$2 $(pgrep -P "$2" -x "${comm:-none}" | tr '\n' ' ' || true)"
    kill "$2" 2>/dev/null || true
    for _ in $(seq 60); do
        local left=""
        for pid in $pids; do alive "$pid" && left="$left $pid"; done
        [ -n "$left" ] || { log "stopped $1"; return 0; }
        sleep 0.5
    done
    die "$1 (pid $2) did not stop within 30 s"
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

install_packages() {  # install_packages [extra packages]: what the extras are needed for
    local missing=()
    for bin in slurmctld slurmd sinfo munged slurmdbd mariadbd; do
        command -v "$bin" >/dev/null || missing+=("$bin")
    done
    [ ${#missing[@]} -eq 0 ] && [ $# -eq 0 ] && return
    log "installing SLURM, munge and MariaDB from Debian (missing: ${missing[*]} $*)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client slurmdbd munge mariadb-server "$@" >/dev/null
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

# ---- several nodes --------------------------------------------------------------------------
# Each node is a slurmd in a network namespace of its own (its own hostname and address, as on
# a real cluster: a job's `srun hostname` names both nodes, and torch's rendezvous resolves the
# first node's name), joined by a bridge that holds the controller's address. Only the
# namespaces, the bridge and loopback carry traffic: no default route, forwarding untouched.

node_name() { echo "node$1"; }
node_addr() { echo "$NET.$((10 + $1))"; }
node_pid_file() { echo "$STATE_DIR/slurmd-$(node_name "$1").pid"; }
multi_nodes() { sed -n 's/.*nodes=\([0-9]*\).*/\1/p' "$MULTI_STATE" 2>/dev/null || true; }

node_pid() {  # pid of node i's slurmd, empty when it is not running
    local pid
    pid=$(cat "$(node_pid_file "$1")" 2>/dev/null || true)
    # a stale pid file may name a pid that another process has taken since
    if [ -n "$pid" ] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmd ]; then
        echo "$pid"
    fi
}

our_namespaces() {  # the node namespaces that exist now (of this or an earlier, killed run)
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${NETNS_PREFIX}node[0-9]+$" || true
}

kill_namespace_processes() {  # whatever still runs in our namespaces: job steps, their tasks
    local ns pids pid
    for ns in $(our_namespaces); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] || continue
        # shellcheck disable=SC2086
        kill $pids 2>/dev/null || true
        for _ in $(seq 20); do
            local left=""
            for pid in $pids; do alive "$pid" && left="$left $pid"; done
            [ -n "$left" ] || break
            sleep 0.5
        done
        # shellcheck disable=SC2086
        [ -z "${left:-}" ] || kill -KILL $left 2>/dev/null || true
    done
}

net_down() {
    kill_namespace_processes
    # veths before namespaces: deleting a namespace removes its end asynchronously, and a
    # quick restart would then find the name still taken
    local link ns
    for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' \
                  | grep -E "^${NETNS_PREFIX}v[0-9]+$" || true); do
        ip link delete "$link" 2>/dev/null || true
    done
    for ns in $(our_namespaces); do ip netns delete "$ns" 2>/dev/null || true; done
    if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE"; fi
}

net_up() {  # net_up <nodes>
    local n=$1 i ns
    # the private /24 must not be a network this machine already has
    if ip -4 -o addr show | grep -q " ${NET//./\\.}\."; then
        die "addresses in $NET.0/24 exist here already; set SYNTHLLM_SLURM_NET to another /24 (e.g. 10.232.0)"
    fi
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for i in $(seq "$n"); do
        ns=${NETNS_PREFIX}$(node_name "$i")
        ip netns add "$ns"
        ip link add "${NETNS_PREFIX}v$i" type veth peer name "${NETNS_PREFIX}p$i"
        ip link set "${NETNS_PREFIX}p$i" netns "$ns"
        ip link set "${NETNS_PREFIX}v$i" master "$BRIDGE"
        ip link set "${NETNS_PREFIX}v$i" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$(node_addr "$i")/24" dev "${NETNS_PREFIX}p$i"
        ip -n "$ns" link set "${NETNS_PREFIX}p$i" up
    done
}

write_node_files() {  # write_node_files <nodes> <gpus>: hosts file, GPU devices, spool dirs
    local n=$1 gpus=$2 i
    mkdir -p "$STATE_DIR" "$GPU_DIR"
    # inside the nodes no name lookup leaves the machine, and the real /etc/hosts is untouched
    {
        printf '127.0.0.1 localhost\n::1 localhost\n%s.1 %s\n' "$NET" "$NODE"
        for i in $(seq "$n"); do printf '%s %s\n' "$(node_addr "$i")" "$(node_name "$i")"; done
    } > "$HOSTS_FILE"
    # SLURM 22.05 needs a device file per GPU (without File= the node reports 0 GPUs and goes
    # INVAL; regular files are refused): /dev/null stands in, jobs see CUDA_VISIBLE_DEVICES
    for i in $(seq 0 $((gpus - 1))); do ln -sfn /dev/null "$GPU_DIR/gpu$i"; done
    for i in $(seq "$n"); do mkdir -p "$SPOOL_ROOT/$(node_name "$i")"; done
}

write_multi_slurm_conf() {  # write_multi_slurm_conf <nodes> <gpus> <cpus>
    local n=$1 gpus=$2 cpus=$3 conf=/etc/slurm/slurm.conf mem_mb i nodes
    if [ -f "$conf" ] && ! grep -qF "$MARKER" "$conf"; then
        die "$conf exists and was not written by this script; not overwriting it"
    fi
    # the nodes share this machine's memory (less 1 GiB): each declares its share, so that the
    # jobs SLURM places on them together never ask for more than there is
    mem_mb=$(( ($(free -m | awk '/^Mem:/ {print $2}') - 1024) / n ))
    nodes="node[1-$n]"
    mkdir -p /etc/slurm "$LOG_DIR" /var/lib/slurm/slurmctld
    chown slurm:slurm "$LOG_DIR" /var/lib/slurm/slurmctld
    {
        cat <<EOF
$MARKER
# $n nodes: $(cat "$MULTI_STATE")
ClusterName=$CLUSTER
# the controller's address on the bridge: the nodes reach it there, and so does this host
SlurmctldHost=$NODE($NET.1)
SlurmUser=slurm
AuthType=auth/munge
# no cgroups on this machine: track processes by their parent, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# the CPUs, memory and GPUs declared below, not what slurmd finds (2 cores, no GPU here)
SlurmdParameters=config_overrides
GresTypes=gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/slurmdbd
# on the bridge, so that sacct works inside a job too (its node has no route to localhost here)
AccountingStorageHost=$NET.1
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
# without it sacct's AllocTRES leaves the GPUs out
AccountingStorageTRES=gres/gpu
StateSaveLocation=/var/lib/slurm/slurmctld
# one spool dir, pid file and log per node: the nodes share this machine's file system
SlurmdSpoolDir=$SPOOL_ROOT/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
MinJobAge=3600
ReturnToService=2
SchedulerParameters=sched_interval=2
# a job that asks for more nodes than its partition has is refused at submission instead of
# pending forever (a layout bug then fails the run rather than hanging it)
EnforcePartLimits=ALL
EOF
        for i in $(seq "$n"); do
            echo "NodeName=$(node_name "$i") NodeHostname=$(node_name "$i") NodeAddr=$(node_addr "$i")" \
                 "Port=$((FIRST_PORT + i - 1)) CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1" \
                 "RealMemory=$mem_mb Gres=gpu:$gpus State=UNKNOWN"
        done
        # both partitions span all nodes: what differs per job kind is the partition it asks for
        echo "PartitionName=${MULTI_PARTITIONS[0]} Nodes=$nodes Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=1024"
        echo "PartitionName=${MULTI_PARTITIONS[1]} Nodes=$nodes MaxTime=INFINITE State=UP DefMemPerCPU=1024"
    } > "$conf.tmp"
    mv "$conf.tmp" "$conf"
    local gpu_files="$GPU_DIR/gpu0"
    [ "$gpus" -eq 1 ] || gpu_files="$GPU_DIR/gpu[0-$((gpus - 1))]"
    cat > /etc/slurm/gres.conf.tmp <<EOF
$MARKER
AutoDetect=off
NodeName=$nodes Name=gpu File=$gpu_files
EOF
    mv /etc/slurm/gres.conf.tmp /etc/slurm/gres.conf
}

start_node() {  # start_node <i>: its slurmd, in its namespace with its hostname and hosts file
    local i=$1 name ns
    name=$(node_name "$i")
    ns=${NETNS_PREFIX}$name
    [ -n "$(node_pid "$i")" ] && return
    # not `ip netns exec`: it remounts /sys, and slurmd then fails to set up its cgroup plugin;
    # a private mount namespace carries the hosts file, a UTS namespace the hostname
    nsenter --net="/run/netns/$ns" -- unshare --uts --mount --propagation private -- \
        sh -c 'hostname "$1" && mount --bind "$2" /etc/hosts && exec slurmd -N "$1"' \
        sh "$name" "$HOSTS_FILE" >>"$LOG_DIR/slurmd-$name.log" 2>&1 \
        || die "slurmd of $name did not start (log: $LOG_DIR/slurmd-$name.log)"
}

wait_nodes() {  # wait_nodes <nodes>: until every node takes jobs
    local n=$1 i states
    for _ in $(seq 120); do
        states=$(sinfo -h -N -o '%N %t' 2>/dev/null | sort -u || true)
        local ready=0
        for i in $(seq "$n"); do
            case "$(awk -v n="$(node_name "$i")" '$1 == n {print $2; exit}' <<<"$states")" in
                idle|mix|alloc|comp) ready=$((ready + 1)) ;;
                drain*|down*) scontrol update NodeName="$(node_name "$i")" State=RESUME >/dev/null 2>&1 || true ;;
            esac
        done
        [ "$ready" -eq "$n" ] && return 0
        sleep 0.5
    done
    die "not all $n nodes became idle (sinfo: $(sinfo -h -N -o '%N %t %E' 2>&1 | tr '\n' ';'); logs: $LOG_DIR)"
}

multi_healthy() {  # multi_healthy <shape>: that cluster runs, every node up
    local shape=$1 n i
    [ "$(cat "$MULTI_STATE" 2>/dev/null || true)" = "$shape" ] || return 1
    grep -qF "# $(multi_nodes) nodes: $shape" /etc/slurm/slurm.conf 2>/dev/null || return 1
    [ -n "$(pid_of slurmctld)" ] && scontrol ping >/dev/null 2>&1 || return 1
    n=$(multi_nodes)
    for i in $(seq "$n"); do [ -n "$(node_pid "$i")" ] || return 1; done
    [ "$(sinfo -h -N -t idle,mix,alloc,comp -o %N 2>/dev/null | sort -u | wc -l)" -eq "$n" ]
}

forget() {  # forget <daemon>: no longer ours to stop
    [ -f "$STATE_DIR/started" ] || return 0
    grep -vx "$1" "$STATE_DIR/started" > "$STATE_DIR/started.tmp" || true
    mv "$STATE_DIR/started.tmp" "$STATE_DIR/started"
}

stop_multi() {  # end the nodes and the controller of a multi-node cluster; remove what it made
    local n i pid
    n=$(multi_nodes)
    # jobs first, while the controller answers (scancel retries for 18 s without one): their
    # records then end CANCELLED instead of RUNNING forever in the accounting
    if [ -n "$(pid_of slurmctld)" ] && scontrol ping >/dev/null 2>&1; then
        local jobs
        jobs=$(squeue -h -t PD,R,CG,S -o %A 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 20); do
                [ -z "$(squeue -h -t R,CG -o %A 2>/dev/null || true)" ] && break
                sleep 0.5
            done
        fi
    fi
    for i in $(seq "${n:-0}"); do
        pid=$(node_pid "$i")
        [ -z "$pid" ] || stop_pid "slurmd of $(node_name "$i")" "$pid"
    done
    if grep -qx slurmctld "$STATE_DIR/started" 2>/dev/null; then
        pid=$(pid_of slurmctld)
        [ -z "$pid" ] || stop_pid slurmctld "$pid"
        forget slurmctld
    fi
    net_down
    rm -rf "$SPOOL_ROOT" "$GPU_DIR" "$HOSTS_FILE" "$STATE_DIR"/slurmd-node*.pid
    local f
    for f in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do
        if [ -f "$f" ] && grep -qF "$MARKER" "$f"; then rm -f "$f"; fi
    done
    rm -f "$MULTI_STATE"
}

stop_single_nodes() {  # this script's one-node slurmd and slurmctld, before several nodes start
    local d pid
    for d in slurmd slurmctld; do
        grep -qx "$d" "$STATE_DIR/started" 2>/dev/null || continue
        pid=$(pid_of "$d")
        [ -z "$pid" ] || stop_pid "$d" "$pid"
        forget "$d"
    done
}

cmd_start_multi() {  # cmd_start_multi <nodes> <gpus> <cpus>
    local n=$1 gpus=$2 cpus=$3 t0 shape i
    t0=$(now)
    shape="nodes=$n gpus=$gpus cpus=$cpus net=$NET"
    local extra=()
    command -v ip >/dev/null || extra+=(iproute2)
    command -v nsenter >/dev/null && command -v unshare >/dev/null || extra+=(util-linux)
    install_packages "${extra[@]}"
    if multi_healthy "$shape"; then
        log "a cluster of this shape runs already ($shape): nothing to do"
        cmd_status
        return
    fi
    if [ "$(cat "$MULTI_STATE" 2>/dev/null || true)" = "$shape" ]; then
        log "restarting: a cluster of this shape was started but not all of it runs ($shape)"
        stop_multi
    elif [ -f "$MULTI_STATE" ]; then
        log "restarting: the running cluster is '$(cat "$MULTI_STATE")', asked for '$shape'"
        stop_multi
    else
        stop_single_nodes
    fi
    local pid
    pid=$(pid_of slurmctld); [ -z "$pid" ] || die "slurmctld (pid $pid) runs and this script did not start it; stop it first"
    pid=$(pid_of slurmd); [ -z "$pid" ] || die "slurmd (pid $pid) runs and this script did not start it; stop it first"
    # leftovers of a run that was killed before its stop
    net_down
    rm -rf "$SPOOL_ROOT" "$STATE_DIR"/slurmd-node*.pid
    mkdir -p "$STATE_DIR" "$LOG_DIR"
    # recorded before anything is made, so that stop removes a half-started cluster too
    echo "$shape" > "$MULTI_STATE"
    net_up "$n"
    write_node_files "$n" "$gpus"
    write_multi_slurm_conf "$n" "$gpus" "$cpus"
    write_slurmdbd_conf
    start_munge
    start_mariadb
    start_slurmdbd
    register_accounts
    start_slurmctld
    for i in $(seq "$n"); do start_node "$i"; done
    wait_nodes "$n"
    log "$n nodes up in $(since "$t0") s ($shape)"
    cmd_status
}

cmd_start() {
    [ "$(id -u)" -eq 0 ] || die "run as root (the daemons and /etc/slurm need it)"
    local t0; t0=$(now)
    install_packages
    mkdir -p "$LOG_DIR"
    # a multi-node cluster of this script runs: one node was asked for, so that one goes
    if [ -f "$MULTI_STATE" ]; then
        log "restarting: the running cluster is '$(cat "$MULTI_STATE")', asked for one node"
        stop_multi
    fi
    write_slurm_conf
    write_slurmdbd_conf
    start_munge
    start_mariadb
    start_slurmdbd
    register_accounts
    start_slurmctld
    start_slurmd
    log "up in $(since "$t0") s (one node)"
    cmd_status
}

cmd_status() {
    local state=0 d n i pid
    for d in "${DAEMONS[@]}"; do
        if [ "$d" = slurmd ] && [ -f "$MULTI_STATE" ]; then
            n=$(multi_nodes)
            for i in $(seq "$n"); do
                pid=$(node_pid "$i")
                if [ -n "$pid" ]; then
                    echo "slurmd $(node_name "$i"): running (pid $pid, address $(node_addr "$i"))"
                else
                    echo "slurmd $(node_name "$i"): not running"; state=3
                fi
            done
            continue
        fi
        if [ -n "$(pid_of "$d")" ]; then
            echo "$d: running (pid $(pid_of "$d"))"
        else
            echo "$d: not running"; state=3
        fi
    done
    if [ "$state" -eq 0 ]; then
        if [ -f "$MULTI_STATE" ]; then
            sinfo -o "%P %a %D %t %c %m %G" || state=3
        else
            sinfo -o "%P %a %D %t %c %m" || state=3
        fi
        echo "account: $ACCOUNT (sacct: $(command -v sacct))"
    fi
    return "$state"
}

cmd_stop() {
    # several nodes: their daemons, namespaces, bridge, spool dirs and config first
    if [ -f "$MULTI_STATE" ]; then
        stop_multi
    fi
    if [ ! -f "$STATE_DIR/started" ]; then
        log "this script started no daemon: nothing to stop"
        rmdir "$STATE_DIR" 2>/dev/null || true
        return 0
    fi
    # reverse start order: the node first, the database last
    for d in slurmd slurmctld slurmdbd mariadbd munged; do
        grep -qx "$d" "$STATE_DIR/started" || continue
        local pid; pid=$(pid_of "$d")
        [ -n "$pid" ] || continue
        stop_pid "$d" "$pid"
    done
    rm -f "$STATE_DIR/started"
    rmdir "$STATE_DIR" 2>/dev/null || true
}

cmd_profile() {
    local dir=${1:?usage: $0 profile DIR}
    local profile partition=$PARTITION
    profile="$(dirname "$0")/config.yaml"
    # several nodes: jobs whose config names no partition go to that cluster's default one
    [ ! -f "$MULTI_STATE" ] || partition=${MULTI_PARTITIONS[0]}
    mkdir -p "$dir"
    {
        grep -v '^software-deployment-method:' "$profile"
        printf 'default-resources:\n  slurm_account: %s\n  slurm_partition: %s\n' "$ACCOUNT" "$partition"
    } > "$dir/config.yaml.tmp"
    mv "$dir/config.yaml.tmp" "$dir/config.yaml"
    log "wrote $dir/config.yaml (run: snakemake --profile $dir ...)"
}

start_args() {  # start [--nodes N] [--gpus G] [--cpus C]
    local nodes=1 gpus="" cpus=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --nodes) nodes=${2:-} ; shift 2 || die "--nodes needs a number" ;;
            --nodes=*) nodes=${1#--nodes=}; shift ;;
            --gpus) gpus=${2:-} ; shift 2 || die "--gpus needs a number" ;;
            --gpus=*) gpus=${1#--gpus=}; shift ;;
            --cpus) cpus=${2:-} ; shift 2 || die "--cpus needs a number" ;;
            --cpus=*) cpus=${1#--cpus=}; shift ;;
            *) die "start: unknown argument '$1' (usage: start [--nodes N] [--gpus G] [--cpus C])" ;;
        esac
    done
    for v in "$nodes" "${gpus:-1}" "${cpus:-1}"; do
        [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "start: '$v' is not a positive whole number"
    done
    if [ "$nodes" -eq 1 ]; then
        # the one-node cluster declares what this machine has: nothing to choose
        [ -z "$gpus$cpus" ] || die "start: --gpus and --cpus are for --nodes 2 or more"
        cmd_start
        return
    fi
    [ "$nodes" -le 200 ] || die "start: at most 200 nodes (addresses $NET.11-$NET.210)"
    [ "$(id -u)" -eq 0 ] || die "run as root (the daemons, namespaces and /etc/slurm need it)"
    # each node declares this machine's real cores by default: N nodes run at most N times the
    # jobs at once that the one-node cluster would
    cmd_start_multi "$nodes" "${gpus:-8}" "${cpus:-$(nproc)}"
}

case "${1:-}" in
    start) shift; start_args "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    profile) cmd_profile "${2:-}" ;;
    *) echo "usage: $0 start [--nodes N [--gpus G] [--cpus C]]|stop|status|profile DIR" >&2; exit 2 ;;
esac
