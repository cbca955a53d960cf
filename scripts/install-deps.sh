#!/bin/sh
# Install what building, testing and the demo need on Debian 12, from
# Debian's own archive only.  Idempotent: it installs only what is
# missing, so `make` can call it every time.
#
# XenAPI.py (the XenServer Python SDK, used by the tests to prove the
# stand-in faithful) comes from python3-os-xenapi, which drags in ~70
# OpenStack packages; it needs only the standard library, so we unpack
# just that one .deb into build/xenapi instead of installing it.
#
# With the argument `deb`, it installs instead what `make deb` needs:
# debhelper, lintian and debian/control's Build-Depends (so that they
# are listed once), and nothing the tests need.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" = deb ]; then
    missing=
    for p in dpkg-dev debhelper lintian; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
            missing="$missing $p"
    done
    if [ -z "$missing" ] && (cd "$top" && dpkg-checkbuilddeps) 2>/dev/null; then
        exit 0
    fi
    [ "$(id -u)" = 0 ] || {
        echo "install-deps: missing what make deb needs (run as root)" >&2; exit 1; }
    echo "install-deps: installing$missing and debian/control's Build-Depends" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || true
    # shellcheck disable=SC2086
    [ -z "$missing" ] || apt-get install -y -qq --no-install-recommends $missing >&2
    (cd "$top" && apt-get build-dep -y -qq --no-install-recommends ./) >&2
    exit 0
fi

pkgs="build-essential pkg-config
      libfuse3-dev fuse3 libnbd-dev libcurl4-gnutls-dev libxml2-dev libxxhash-dev
      nbdkit libnbd-bin python3-libnbd qemu-utils curl
      openssl e2fsprogs util-linux kmod python3 ca-certificates
      valgrind clang fio eatmydata"
# cbtfs reads its configuration file (/etc/cbtfs/cbtfs.conf) with libinih.
pkgs="$pkgs libinih-dev"
# getfattr (test-images reads the images' extended attributes as users do)
pkgs="$pkgs attr"
# cbtfs serve: the nbdkit plugin builds against nbdkit-plugin.h.
pkgs="$pkgs nbdkit-plugin-dev"
# test-browse: a guest disk as users' are (GPT, ext4, LVM with XFS, NTFS),
# browsed by the README's recipe.
pkgs="$pkgs lvm2 xfsprogs ntfs-3g gdisk"
# test-units: systemd-analyze verify of the installed units.
pkgs="$pkgs systemd"
# test-s3-lease: a host whose clock is wrong (libfaketime).
pkgs="$pkgs faketime"
# Tests only: a real S3 endpoint (tests/lib/rgw.py starts a single-node
# Ceph RGW); cbtfs itself needs none of it.
pkgs="$pkgs ceph-mon ceph-osd radosgw ceph-common"
# test-s3-faults: cbtfs with a clock hours off the server's (libfaketime).
pkgs="$pkgs faketime"

missing=
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: missing Debian packages:$missing (run as root)" >&2
        exit 1
    fi
    echo "install-deps: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || true
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >&2
fi

x="$top/build/xenapi"
if [ ! -f "$x/XenAPI.py" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download python3-os-xenapi >/dev/null 2>&1) || {
        apt-get update -qq >&2 || true
        (cd "$tmp" && apt-get download python3-os-xenapi >&2)
    }
    dpkg-deb -x "$tmp"/python3-os-xenapi_*.deb "$tmp/root"
    f=$(find "$tmp/root" -name XenAPI.py | head -n 1)
    [ -n "$f" ] || { echo "install-deps: XenAPI.py not found in python3-os-xenapi" >&2; exit 1; }
    mkdir -p "$x"
    cp "$f" "$x/XenAPI.py"
fi
