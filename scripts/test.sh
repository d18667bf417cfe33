#!/bin/sh
# Run the whole test suite: go vet, then go test -race over every package.
#
#   scripts/test.sh [go test flags...] [packages...]
#
# Extra arguments go to 'go test'; if none of them is a package, ./... is
# tested. Mount tests need root and /dev/fuse; they skip without them unless
# REFLINKFS_REQUIRE_FUSE=1 (as .ci/run sets), where they fail.
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh

need_go
# -race needs cgo (gcc, libc headers); the tests drive xfs_io, setfattr/getfattr,
# setfacl/getfacl, setcap/getcap, fio, fincore, chattr/lsattr and setpriv
# against real mounts, and python3 (/usr/bin/python3: tests run it as
# another user) for ioctls made from a separate process.
need gcc:gcc /usr/include/stdio.h:libc6-dev xfs_io:xfsprogs setfattr:attr fio:fio fincore:util-linux \
	setfacl:acl setcap:libcap2-bin /usr/bin/python3:python3 chattr:e2fsprogs setpriv:util-linux \
	rsync:rsync
if [ "$(id -u)" = 0 ] && [ ! -e /dev/fuse ] && command -v modprobe >/dev/null 2>&1; then
	modprobe fuse || true
fi

pkgs=./...
for a in "$@"; do
	case $a in
	./* | github.com/*) pkgs= ;;
	esac
done

set -x
go vet ./...
# shellcheck disable=SC2086 # $pkgs is empty or one pattern
go test -race -timeout 45m $pkgs "$@"
