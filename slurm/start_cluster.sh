#!/usr/bin/env bash
# Start (or reconfigure, or confirm) a real one-node SLURM cluster on this machine,
# with fake GPUs, for tests and demos of t2i-batch. Needs root. Debian/Ubuntu (apt).
#
#   sudo slurm/start_cluster.sh            # idempotent: a rerun on a running cluster is a no-op
#   T2I_SLURM_MAX_ARRAY=4 slurm/start_cluster.sh   # reconfigures a running cluster
#
# Knobs (environment variables, defaults in brackets):
#   T2I_SLURM_DIR        state dir: fake GPU devices, spool, saved state, logs, pid files [/var/tmp/t2i-slurm]
#   T2I_SLURM_GPUS       number of fake GPUs on the node                          [8]
#   T2I_SLURM_CPUS       CPUs the node declares (need not match the real core count) [16]
#   T2I_SLURM_MEM_MB     RealMemory of the node in MB                             [16000]
#   T2I_SLURM_MAX_ARRAY  MaxArraySize (largest array index + 1)                   [1001]
#   T2I_SLURM_MAX_TIME   partition MaxTime                                        [7-00:00:00]
#   T2I_SLURM_DEF_TIME   partition DefaultTime                                    [1-00:00:00]
#   T2I_SLURM_CRED_EXPIRE  AuthInfo cred_expire: also how long a requeued job waits before
#                        it may start again (SLURM's default is 120)               [10]
#   T2I_SLURM_ACCOUNTING 1: also run slurmdbd + a private MariaDB (127.0.0.1:3307, data in
#                        DIR/mysql) so that `sacct` works -- submitit needs it to notice jobs
#                        that end without a result (scancel, kill). Installs slurmdbd and
#                        mariadb-server. 0: no accounting, sacct fails                 [0]
#   T2I_SLURM_WAIT       seconds to wait for the node to become idle              [60]
#
# Files written outside the state dir:
#   /etc/slurm/slurm.conf, /etc/slurm/gres.conf  -- Debian's SLURM (22.05) reads its config from
#       /etc/slurm, so every client command (sbatch, squeue, sinfo, submitit) finds it without
#       SLURM_CONF. Both files carry a "managed by t2i-batch" header; stop_cluster.sh --purge
#       removes them.
#   /etc/munge/munge.key -- created only if missing (the munge package usually creates it).
#
# Fake GPUs: SLURM only accepts character or block devices in gres.conf File=, so we mknod
# DIR/dev/nvidiaN (major 195, minor N). Nothing ever opens them; SLURM just uses the indexes
# to set CUDA_VISIBLE_DEVICES for each job/step.
set -euo pipefail

T0=$(date +%s.%N)
DIR=${T2I_SLURM_DIR:-/var/tmp/t2i-slurm}
GPUS=${T2I_SLURM_GPUS:-8}
CPUS=${T2I_SLURM_CPUS:-16}
MEM_MB=${T2I_SLURM_MEM_MB:-16000}
MAX_ARRAY=${T2I_SLURM_MAX_ARRAY:-1001}
MAX_TIME=${T2I_SLURM_MAX_TIME:-7-00:00:00}
DEF_TIME=${T2I_SLURM_DEF_TIME:-1-00:00:00}
WAIT_S=${T2I_SLURM_WAIT:-60}
CRED_EXPIRE=${T2I_SLURM_CRED_EXPIRE:-10}
ACCOUNTING=${T2I_SLURM_ACCOUNTING:-0}
CONF_DIR=/etc/slurm
# The tests submit only to a cluster of this name (tests/conftest.py): another SLURM cluster that
# happens to answer on the machine is never used by mistake. Keep the two in step.
CLUSTER_NAME=t2i_batch_test
NODE=$(hostname -s)
PKGS=(slurmctld slurmd slurm-client munge)
MARK="# managed by t2i-batch slurm/start_cluster.sh -- rewritten on every start, do not edit"

log() { echo "[start_cluster] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons)"
for v in GPUS CPUS MEM_MB MAX_ARRAY WAIT_S CRED_EXPIRE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "T2I_SLURM_$v must be a non-negative integer, got '${!v}'"
done
(( GPUS >= 1 )) || die "T2I_SLURM_GPUS must be >= 1"
(( MAX_ARRAY >= 1 )) || die "T2I_SLURM_MAX_ARRAY must be >= 1"
[[ $ACCOUNTING == 0 || $ACCOUNTING == 1 ]] || die "T2I_SLURM_ACCOUNTING must be 0 or 1"
(( ACCOUNTING )) && PKGS+=(slurmdbd mariadb-server)

# ---------------------------------------------------------------- packages
pkgs_missing() {
    local p missing=()
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    echo "${missing[@]:-}"
}
PKG_NOTE="packages already installed"
missing=$(pkgs_missing)
if [[ -n $missing ]]; then
    log "installing: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt_install() { apt-get install -y -q --no-install-recommends $missing >"$1" 2>&1; }
    mkdir -p "$DIR/log"
    # Only refresh the package lists if installing from the current ones fails.
    if ! apt_install "$DIR/log/apt.log"; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update -q >>"$DIR/log/apt.log" 2>&1 || true
        apt_install "$DIR/log/apt.log" || { tail -n 20 "$DIR/log/apt.log" >&2; die "apt-get install $missing failed (log: $DIR/log/apt.log)"; }
    fi
    PKG_NOTE="installed $missing"
fi

# ---------------------------------------------------------------- state dir + fake GPUs
mkdir -p "$DIR"/{dev,spool,state,log,run}
chmod 755 "$DIR" "$DIR/dev"
for ((i = 0; i < GPUS; i++)); do
    f=$DIR/dev/nvidia$i
    if [[ ! -c $f ]]; then
        rm -f "$f"
        mknod -m 666 "$f" c 195 "$i" || die "mknod $f failed (need CAP_MKNOD; plain files are rejected by SLURM)"
    fi
done

# ---------------------------------------------------------------- config
if (( GPUS == 1 )); then gpu_files=$DIR/dev/nvidia0; else gpu_files="$DIR/dev/nvidia[0-$((GPUS - 1))]"; fi

if (( ACCOUNTING )); then
    acct_conf="# slurmdbd (T2I_SLURM_ACCOUNTING=1): sacct works.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1"
else
    acct_conf="# No slurmdbd (T2I_SLURM_ACCOUNTING=0): sacct fails with \"Slurm accounting storage is
# disabled\"; submitit then logs warnings and reports job state UNKNOWN.
AccountingStorageType=accounting_storage/none"
fi

# Everything talks over 127.0.0.1: it is a one-node cluster and this avoids depending on how
# (or whether) the host name resolves.
slurm_conf="$MARK
ClusterName=$CLUSTER_NAME
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job becomes eligible again only after cred_expire seconds (default 120).
AuthInfo=cred_expire=$CRED_EXPIRE
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818

StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups: plain process tracking, no CPU/device confinement. GPU \"binding\" is only the
# CUDA_VISIBLE_DEVICES that SLURM computes from gres.conf.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
# Lets the node declare more CPUs/memory than the machine has (CPUs=16 on a 2-core box).
SlurmdParameters=config_overrides

SchedulerType=sched/backfill
# Tiny cluster: scan the queue often, so requeued jobs (BeginTime) and freed GPUs are picked up
# within seconds instead of the default 60 s / 30 s loops.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu

$acct_conf
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none

JobRequeue=1
ReturnToService=2
MaxArraySize=$MAX_ARRAY
MaxJobCount=$(( MAX_ARRAY > 10000 ? MAX_ARRAY * 2 : 10000 ))
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60

NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:$GPUS State=UNKNOWN
PartitionName=gpu Nodes=$NODE Default=YES MaxTime=$MAX_TIME DefaultTime=$DEF_TIME OverSubscribe=FORCE:8 State=UP
"
gres_conf="$MARK
NodeName=$NODE Name=gpu File=$gpu_files
"

mkdir -p "$CONF_DIR"
CHANGED=0
write_if_changed() {  # file content
    if [[ ! -f $1 ]] || [[ "$(cat "$1")"$'\n' != "$2" ]]; then
        if [[ -f $1 ]] && ! head -n 1 "$1" | grep -qF "$MARK"; then
            cp -p "$1" "$1.bak-t2i.$(date +%s)"
            log "existing $1 was not ours; backed it up"
        fi
        printf '%s' "$2" >"$1.tmp" && mv "$1.tmp" "$1"
        CHANGED=1
    fi
}
write_if_changed "$CONF_DIR/slurm.conf" "$slurm_conf"
write_if_changed "$CONF_DIR/gres.conf" "$gres_conf"
chmod 644 "$CONF_DIR/slurm.conf" "$CONF_DIR/gres.conf"

# ---------------------------------------------------------------- helpers
pid_alive() {  # pidfile name
    local pid
    [[ -s $1 ]] && pid=$(cat "$1") && [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$2"
}
stop_pid() {  # pidfile name
    local pid
    pid_alive "$1" "$2" || return 0
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    log "$2 (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
}
dump_logs() {
    local f
    for f in "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" /var/log/munge/munged.log \
        "$DIR/log/slurmdbd.log" "$DIR/log/mariadbd.log"; do
        [[ -f $f ]] && { echo "----- tail $f" >&2; tail -n 25 "$f" >&2; }
    done
    return 0
}

# ---------------------------------------------------------------- munge
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 700 /etc/munge
chmod 400 /etc/munge/munge.key
if ! munge_ok; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    log "starting munged"
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged || die "munged failed to start (see /var/log/munge/munged.log)"
    touch "$DIR/run/munged.started-by-t2i"   # stop_cluster.sh only stops a munged we started
    for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || { tail -n 20 /var/log/munge/munged.log >&2 || true; die "munge -n | unmunge fails"; }
fi

# ---------------------------------------------------------------- accounting (optional)
DBD_PID=$DIR/run/slurmdbd.pid
MYSQL_RUN=$DIR/mysql-run
MYSQL_PID=$MYSQL_RUN/mariadbd.pid
sql() { mariadb --no-defaults --socket="$MYSQL_RUN/mysql.sock" -uroot -e "$1"; }
if (( ACCOUNTING )); then
    # A private MariaDB instance (own datadir, socket and port): a system MariaDB, if any, is
    # left alone.
    if ! pid_alive "$MYSQL_PID" mariadbd; then
        mkdir -p "$MYSQL_RUN" "$DIR/mysql"
        chown mysql:mysql "$MYSQL_RUN" "$DIR/mysql"
        touch "$DIR/log/mariadbd.log" && chown mysql "$DIR/log/mariadbd.log"
        if [[ ! -d $DIR/mysql/mysql ]]; then
            log "initialising MariaDB in $DIR/mysql"
            mariadb-install-db --user=mysql --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
                --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 ||
                { tail -n 20 "$DIR/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
        fi
        log "starting mariadbd (127.0.0.1:3307)"
        setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql" \
            --socket="$MYSQL_RUN/mysql.sock" --pid-file="$MYSQL_PID" --bind-address=127.0.0.1 \
            --port=3307 --log-error="$DIR/log/mariadbd.log" --innodb-buffer-pool-size=64M \
            --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
        for _ in $(seq 150); do sql 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
        sql 'SELECT 1' >/dev/null 2>&1 || { dump_logs; die "mariadbd did not come up"; }
    fi
    if [[ ! -s $DIR/run/dbpass ]]; then
        (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DIR/run/dbpass")
    fi
    dbpass=$(cat "$DIR/run/dbpass")
    sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$dbpass';
         ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$dbpass';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || die "could not create the MariaDB user for slurmdbd"
    dbd_conf="$MARK
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$DBD_PID
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=$dbpass
StorageLoc=slurm_acct_db
"
    changed_before=$CHANGED; CHANGED=0
    write_if_changed "$CONF_DIR/slurmdbd.conf" "$dbd_conf"
    chmod 600 "$CONF_DIR/slurmdbd.conf"   # slurmdbd insists: it holds the DB password
    if (( CHANGED )) && pid_alive "$DBD_PID" slurmdbd; then
        log "slurmdbd.conf changed; restarting slurmdbd"
        stop_pid "$DBD_PID" slurmdbd
    fi
    CHANGED=$changed_before
    if ! pid_alive "$DBD_PID" slurmdbd; then
        log "starting slurmdbd"
        slurmdbd || { dump_logs; die "slurmdbd failed to start"; }
    fi
    for _ in $(seq 150); do sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1 && break; sleep 0.2; done
    clusters=$(sacctmgr -n -P list cluster format=cluster 2>/dev/null) || { dump_logs; die "slurmdbd does not answer"; }
    if ! grep -qx "$CLUSTER_NAME" <<<"$clusters"; then
        sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null || die "sacctmgr add cluster $CLUSTER_NAME failed"
    fi
else
    # Accounting off: stop what an earlier T2I_SLURM_ACCOUNTING=1 run started.
    if pid_alive "$DBD_PID" slurmdbd; then log "stopping slurmdbd (accounting off)"; stop_pid "$DBD_PID" slurmdbd; fi
    if pid_alive "$MYSQL_PID" mariadbd; then log "stopping mariadbd (accounting off)"; stop_pid "$MYSQL_PID" mariadbd; fi
fi

# ---------------------------------------------------------------- slurm daemons
CTLD_PID=$DIR/run/slurmctld.pid
SLURMD_PID=$DIR/run/slurmd.pid
ACTION="already running"
if (( CHANGED )) && { pid_alive "$CTLD_PID" slurmctld || pid_alive "$SLURMD_PID" slurmd; }; then
    # Node/GRES changes need a restart anyway; a restart keeps queued and running jobs
    # (state is saved in $DIR/state, job steps live in slurmstepd processes).
    log "config changed; restarting slurmctld and slurmd"
    stop_pid "$SLURMD_PID" slurmd
    stop_pid "$CTLD_PID" slurmctld
    ACTION="restarted (config changed)"
fi
# slurmctld refuses to start when StateSaveLocation was written under another ClusterName (a state
# dir from before the rename of "t2i"): this dir is ours, so drop the old name and keep the jobs.
if [[ -s $DIR/state/clustername ]] && [[ $(cat "$DIR/state/clustername") != "$CLUSTER_NAME" ]]; then
    log "state dir was written by cluster '$(cat "$DIR/state/clustername")'; renaming it to $CLUSTER_NAME"
    stop_pid "$CTLD_PID" slurmctld
    rm -f "$DIR/state/clustername"
fi
for d in slurmctld slurmd; do
    if pgrep -x "$d" >/dev/null && ! pid_alive "$DIR/run/$d.pid" "$d"; then
        die "a $d not started by this script is running (pid $(pgrep -x "$d" | tr '\n' ' ')); stop it first (e.g. systemctl stop $d)"
    fi
done
if ! pid_alive "$CTLD_PID" slurmctld; then
    [[ $ACTION == "already running" ]] && ACTION="started"
    log "starting slurmctld"
    slurmctld || { dump_logs; die "slurmctld failed to start"; }
fi
SLURMD_LAUNCH=0
if ! pid_alive "$SLURMD_PID" slurmd; then
    [[ $ACTION == "already running" ]] && ACTION="started"
    log "starting slurmd"
    SLURMD_LAUNCH=$(date +%s)
    slurmd || { dump_logs; die "slurmd failed to start"; }
fi

# ---------------------------------------------------------------- wait for the node
resumed=0
deadline=$(( $(date +%s) + WAIT_S ))
state=""
while :; do
    state=$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1 || true)
    case $state in
        idle | mixed | allocated | completing)   # no '*' suffix: slurmd is responding
            # slurmctld restores the saved node state, so right after a restart "idle" may be
            # stale: also require that the slurmd we just launched has registered.
            (( SLURMD_LAUNCH == 0 )) && break
            reg=$(scontrol show node "$NODE" 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
            reg=$(date -d "$reg" +%s 2>/dev/null || echo 0)
            (( reg >= SLURMD_LAUNCH )) && break ;;
        down | drained | draining)
            if (( ! resumed )) && pid_alive "$SLURMD_PID" slurmd; then
                log "node is $state; resuming it"
                scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
                resumed=1
            fi ;;
    esac
    if (( $(date +%s) >= deadline )); then
        dump_logs
        sinfo -N -l >&2 2>&1 || true
        die "node $NODE not idle after ${WAIT_S}s (last state: '${state:-no answer from slurmctld}'); logs above, all logs in $DIR/log"
    fi
    sleep 0.2
done

T1=$(date +%s.%N)
log "cluster $CLUSTER_NAME $ACTION; node $NODE is $state (${GPUS} GPUs, ${CPUS} CPUs, MaxArraySize=$MAX_ARRAY, accounting=$ACCOUNTING); $PKG_NOTE"
awk -v a="$T0" -v b="$T1" 'BEGIN { printf "[start_cluster] ready in %.1fs\n", b - a }' >&2
