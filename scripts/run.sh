#!/bin/sh
# Build reflinkfs and mount an image in the foreground (creating it on first use).
#
#   scripts/run.sh [IMAGE] [MOUNTPOINT] [extra 'reflinkfs mount' flags...]
#
# Defaults: IMAGE /var/tmp/reflinkfs.img, MOUNTPOINT /mnt/reflinkfs. Needs
# root (the mount is made directly, without fusermount). Ctrl-C unmounts,
# writes everything back and exits. 'reflinkfs' is put on PATH as a symlink
# to ./bin/reflinkfs in $REFLINKFS_BINDIR (default /usr/local/bin), unless a
# file that is not a symlink already has that name.
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh

IMAGE=${1:-/var/tmp/reflinkfs.img}
MOUNTPOINT=${2:-/mnt/reflinkfs}
[ $# -ge 2 ] && shift 2 || shift $#

need_go
# The metadata store's zstd binding uses cgo; gcc and the C headers build it.
need gcc:gcc /usr/include/stdio.h:libc6-dev
[ "$(id -u)" = 0 ] || die "run as root: reflinkfs mounts FUSE directly, which needs CAP_SYS_ADMIN"
if [ ! -e /dev/fuse ]; then
	need modprobe:kmod
	modprobe fuse || die "/dev/fuse is missing and 'modprobe fuse' failed"
fi

echo "building ./bin/reflinkfs" >&2
go build -o bin/reflinkfs ./cmd/reflinkfs
install_on_path "$PWD/bin/reflinkfs" "${REFLINKFS_BINDIR:-/usr/local/bin}"

if mountpoint -q "$MOUNTPOINT" 2>/dev/null; then
	die "$MOUNTPOINT is already mounted (./bin/reflinkfs umount $MOUNTPOINT)"
fi
if [ -d "$IMAGE" ] && [ -n "$(ls -A "$IMAGE" 2>/dev/null)" ]; then
	echo "mounting image $IMAGE at $MOUNTPOINT" >&2
else
	echo "creating image $IMAGE (sparse) and mounting it at $MOUNTPOINT" >&2
fi
echo "stop with Ctrl-C here, or from another shell: reflinkfs umount $MOUNTPOINT" >&2
echo "statistics: reflinkfs stats $MOUNTPOINT" >&2
exec ./bin/reflinkfs mount "$@" "$IMAGE" "$MOUNTPOINT"
