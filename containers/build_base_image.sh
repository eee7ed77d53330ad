#!/usr/bin/env bash
# Build a minimal Debian bookworm image with python3 (+venv, pip) from a debootstrap rootfs and
# import it into podman as localhost/t2i-base:bookworm.  Used as BASE_IMAGE for the local CPU test
# build when no container registry is reachable (see containers/README.md).
#
#   containers/build_base_image.sh            # build once; later calls reuse the cached image
#   containers/build_base_image.sh --force    # rebuild even if the image exists
#
# Env: T2I_BASE_TAG (default localhost/t2i-base:bookworm), DEBIAN_MIRROR (default: the first
#      http(s) Debian mirror in the host's apt sources, else http://deb.debian.org/debian),
#      T2I_SKIP_HOST_SETUP=1 to skip installing podman/runc/debootstrap and containers.conf.
set -euo pipefail

TAG=${T2I_BASE_TAG:-localhost/t2i-base:bookworm}
SUITE=bookworm
FORCE=0
for a in "$@"; do
    case $a in
        -f|--force) FORCE=1 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done

log() { echo "[build_base_image] $*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || { log "needs root (apt-get/debootstrap): $*"; exit 1; }; }

# --- host setup (idempotent) ------------------------------------------------------------------
if [ "${T2I_SKIP_HOST_SETUP:-0}" != 1 ]; then
    missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
    command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        need_root "apt-get install ${missing[*]}"
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # This sandbox: crun/systemd cgroups and default rlimits fail, so pin runc + cgroupfs and no
    # default ulimits.  Only written when the file does not exist (never overwrites a host config).
    CONF=/etc/containers/containers.conf
    if [ "$(id -u)" = 0 ] && [ ! -e "$CONF" ]; then
        log "writing $CONF (runtime=runc, cgroup_manager=cgroupfs, default_ulimits=[])"
        mkdir -p /etc/containers
        cat > "$CONF" <<'CONF_EOF'
# Written by t2i-batch containers/build_base_image.sh for sandboxes without systemd/cgroup v2.
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
CONF_EOF
    fi
fi

# --- cached? ----------------------------------------------------------------------------------
if [ "$FORCE" = 0 ] && podman image exists "$TAG" 2>/dev/null; then
    log "$TAG exists (use --force to rebuild)"
    exit 0
fi

need_root debootstrap
if [ -z "${DEBIAN_MIRROR:-}" ]; then
    DEBIAN_MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE 'https?://[^ ]*/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
    DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
fi

start=$(date +%s)
ROOTFS=$(mktemp -d /var/tmp/t2i-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
log "debootstrap $SUITE from $DEBIAN_MIRROR into $ROOTFS"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
    "$SUITE" "$ROOTFS" "$DEBIAN_MIRROR" >"$ROOTFS.log" 2>&1 || { tail -n 30 "$ROOTFS.log" >&2; exit 1; }
rm -f "$ROOTFS.log"
# slim: apt lists/caches, docs, man pages, locales
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
log "importing into podman as $TAG"
tar -C "$ROOTFS" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $SUITE + python3" - "$TAG" >/dev/null
log "done: $TAG in $(( $(date +%s) - start )) s ($(podman image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
