#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by slurm/start_cluster.sh. Idempotent: fine when
# nothing is running.
#
#   slurm/stop_cluster.sh              # cancel all jobs, stop slurmd, slurmctld, slurmdbd + its
#                                      # MariaDB if running, and munged if start_cluster.sh started it
#   slurm/stop_cluster.sh --keep-jobs  # do not cancel jobs: queued jobs come back on the next start
#   slurm/stop_cluster.sh --purge      # also delete the state dir (incl. accounting DB) and our
#                                      # /etc/slurm/{slurm,gres,slurmdbd}.conf
#
# Only daemons recorded in the pid files of $T2I_SLURM_DIR (default /var/tmp/t2i-slurm) are
# stopped; munged only if start_cluster.sh started it. Packages and the munge key stay.
set -euo pipefail

DIR=${T2I_SLURM_DIR:-/var/tmp/t2i-slurm}
CONF_DIR=/etc/slurm
MARK="# managed by t2i-batch slurm/start_cluster.sh"
PURGE=0
KEEP_JOBS=0
for a in "$@"; do
    case $a in
        --purge) PURGE=1 ;;
        --keep-jobs) KEEP_JOBS=1 ;;
        -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a (use --purge, --keep-jobs)" >&2; exit 2 ;;
    esac
done

log() { echo "[stop_cluster] $*" >&2; }
[[ $(id -u) -eq 0 ]] || { log "ERROR: must run as root"; exit 1; }

pid_of() {  # pidfile name -> prints pid if that process is alive and is `name`
    local pid
    [[ -s $1 ]] && pid=$(cat "$1") && [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$2" && echo "$pid"
}
stop_pid() {  # pidfile name
    local pid
    pid=$(pid_of "$1" "$2") || { rm -f "$1"; return 0; }
    log "stopping $2 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }; sleep 0.1; done
    log "$2 (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$1"
}

if (( ! KEEP_JOBS )) && pid_of "$DIR/run/slurmctld.pid" slurmctld >/dev/null; then
    jobs=$(squeue -h -r -o '%A' 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [[ -n ${jobs// /} ]]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        # Let slurmd kill the job steps before it goes away itself (KillWait=5).
        for _ in $(seq 150); do
            [[ -z $(squeue -h -o '%A' 2>/dev/null) ]] && break
            sleep 0.1
        done
    fi
fi

stop_pid "$DIR/run/slurmd.pid" slurmd
stop_pid "$DIR/run/slurmctld.pid" slurmctld
stop_pid "$DIR/run/slurmdbd.pid" slurmdbd            # only with T2I_SLURM_ACCOUNTING=1
stop_pid "$DIR/mysql-run/mariadbd.pid" mariadbd      # idem

if [[ -f $DIR/run/munged.started-by-t2i ]]; then
    if pid=$(pid_of /run/munge/munged.pid munged); then
        log "stopping munged (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$DIR/run/munged.started-by-t2i"
fi

if (( PURGE )); then
    log "purging $DIR and our files in $CONF_DIR"
    rm -rf "$DIR"
    for f in "$CONF_DIR/slurm.conf" "$CONF_DIR/gres.conf" "$CONF_DIR/slurmdbd.conf"; do
        if [[ -f $f ]] && head -n 1 "$f" | grep -qF "$MARK"; then rm -f "$f"; fi
    done
fi
log "stopped"
