#!/usr/bin/env bash
# Builds the lab's base images, local/debian-systemd:<suite>, from the Debian archive with
# debootstrap and `docker import` (no image registry is reachable). An image that already exists
# is left alone, so this is cheap to call before every lab run.
#
#   scripts/lab_images.sh [SUITE...]        default: bookworm trixie
#
# Environment:
#   LAB_MIRROR      Debian mirror (plain http); default: the first http Debian mirror the host's
#                   own apt sources name, else http://deb.debian.org/debian
#   LAB_CACHE_DIR   where downloaded .debs are kept between builds (default /var/cache/auditlog-lab)
#   LAB_REBUILD=1   build even when the image exists
#
# Needs root (debootstrap), debootstrap and a running Docker Engine.
set -euo pipefail

IMAGE_REPO=local/debian-systemd
# What the images hold beyond minbase: systemd as PID 1, what Ansible needs on a target
# (python3, python3-apt for the apt module, sudo for become), and small tools the roles,
# tests and runbooks use (ps/pgrep, ip/ss, ping, curl, TLS roots).
INCLUDE=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,ca-certificates,procps,iproute2,iputils-ping,curl,netbase,less

log() { printf '[lab-images %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
docker info >/dev/null 2>&1 || die "no Docker Engine answers (playbooks/lab.yml installs and starts one)"

host_mirror() {
    # deb822 (.sources) and one-line (.list) formats; take the first plain-http Debian mirror.
    local m
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -v '^\s*#' | grep -oE 'http://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ') || true
    echo "${m%/}"
}
MIRROR=${LAB_MIRROR:-$(host_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# The security archive sits beside the main one on the official mirrors (…/debian-security).
SECURITY_MIRROR=${LAB_SECURITY_MIRROR:-${MIRROR}-security}
CACHE_DIR=${LAB_CACHE_DIR:-/var/cache/auditlog-lab}

# The root file system being built; removed on any exit, failures included (the .deb cache stays).
ROOT=
trap '[ -z "$ROOT" ] || rm -rf "$ROOT"' EXIT

build() {
    local suite=$1 image="$IMAGE_REPO:$1"
    if [ "${LAB_REBUILD:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
        log "$image exists, nothing to do"
        return
    fi
    [ -e "/usr/share/debootstrap/scripts/$suite" ] || die "debootstrap does not know suite '$suite'"
    local started=$SECONDS debs="$CACHE_DIR/debs/$suite" root
    mkdir -p "$debs"
    root=$(mktemp -d "/var/tmp/lab-rootfs-$suite.XXXXXX")
    ROOT=$root

    log "$image: debootstrap $suite from $MIRROR (packages cached in $debs)"
    # Two stages so that dpkg can be told, between them, to skip its fsync()s: a throw-away
    # root file system needs no crash safety, and the install goes markedly faster.
    debootstrap --foreign --variant=minbase --include="$INCLUDE" --cache-dir="$debs" \
        "$suite" "$root" "$MIRROR" > "$root.log" 2>&1 \
        || { tail -n 30 "$root.log" >&2; die "debootstrap $suite failed (log: $root.log)"; }
    echo force-unsafe-io > "$root/etc/dpkg/dpkg.cfg.d/lab-build-unsafe-io"
    log "$image: debootstrap second stage (installing)"
    chroot "$root" /debootstrap/debootstrap --second-stage >> "$root.log" 2>&1 \
        || { tail -n 30 "$root.log" >&2; die "debootstrap $suite second stage failed (log: $root.log)"; }
    rm -f "$root.log" "$root/etc/dpkg/dpkg.cfg.d/lab-build-unsafe-io"

    log "$image: configuring the root file system"
    # Updates and security, so that hosts built from the image get current packages.
    cat > "$root/etc/apt/sources.list" <<EOF
deb $MIRROR $suite main
deb $MIRROR $suite-updates main
deb $SECURITY_MIRROR $suite-security main
EOF
    # No recommends on the lab hosts (smaller, faster installs), as on a minimal server.
    echo 'APT::Install-Recommends "false";' > "$root/etc/apt/apt.conf.d/90lab-no-recommends"
    # An empty machine-id makes systemd generate a fresh one per container at boot.
    : > "$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id"
    # Units that touch the kernel or hardware and only fail or wait inside a container.
    local unit
    for unit in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
        systemd-udev-trigger.service systemd-udev-settle.service systemd-modules-load.service \
        systemd-remount-fs.service systemd-firstboot.service getty.target console-getty.service \
        sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
        sys-fs-fuse-connections.mount dev-hugepages.mount; do
        ln -sf /dev/null "$root/etc/systemd/system/$unit"
    done
    # Package caches and lists make no sense in an image: roles run `apt-get update` anyway.
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log \
        "$root"/var/log/apt/* "$root"/tmp/* "$root"/var/tmp/*

    log "$image: docker import"
    # ENV container=docker: systemd learns it runs in a container. (docker import takes no
    # STOPSIGNAL: the lab creates containers with stop_signal SIGRTMIN+3, systemd's clean halt.)
    tar -C "$root" -c . | docker import \
        --change 'ENV container=docker' \
        --change 'CMD ["/lib/systemd/systemd"]' \
        --message "debootstrap $suite minbase + systemd ($MIRROR)" \
        - "$image" >/dev/null
    rm -rf "$root"
    ROOT=
    log "$image: built in $((SECONDS - started)) s"
}

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)
for s in "${suites[@]}"; do build "$s"; done
