#!/bin/bash
# Measure copy detection (docs/copy-sharing.md): the same workloads on two
# mounts of one build, copyshare=on and copyshare=off, alternating, and the
# median of RUNS runs of each.
#
#   scripts/bench-copyshare.sh [RUNS]      (root; default 7 runs)
#
# Workloads:
#   unique        dd of 256 MiB of random data (from /dev/shm) in 1 MiB writes
#                 into a new file: no source in the writer's process group
#   unique+src    the same with a 256 MiB file of the mount held open for
#                 reading by the writer's shell: every block is compared with
#                 it (the worst case for unique data)
#   cp sparse     cp of a 256 MiB sparse file holding 128 MiB of data
#                 (coreutils 9.1: SEEK_DATA + read/write)
# Figures are MB/s of data written (for cp: of data copied), wall clock,
# including an fsync at the end (which commits: the write-back of each
# workload is paid by that workload), and the daemon's CPU time per GiB.
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh
RUNS=${1:-7}
[ "$(id -u)" = 0 ] || die "run as root"
need_go
go build -o bin/reflinkfs ./cmd/reflinkfs
BIN=$PWD/bin/reflinkfs
WORK=$(mktemp -d /var/tmp/bench-copyshare.XXXXXX)
RAND=/dev/shm/bench-copyshare.rand   # the unique data written
SRC=/dev/shm/bench-copyshare.src     # other random data: the sources' contents
cleanup() {
	for m in on off; do "$BIN" umount "$WORK/mnt-$m" 2>/dev/null || true; done
	rm -rf "$WORK" "$RAND" "$SRC"
}
trap cleanup EXIT
head -c $((256 << 20)) /dev/urandom >"$RAND"
head -c $((256 << 20)) /dev/urandom >"$SRC"
for m in on off; do
	mkdir -p "$WORK/mnt-$m"
	"$BIN" mount -d --size 8G --cache-size 2G -o copyshare=$m "$WORK/img-$m" "$WORK/mnt-$m"
	# The source of the unique+src and cp workloads.
	dd if="$SRC" of="$WORK/mnt-$m/src" bs=1M status=none
	dd if="$SRC" of="$WORK/mnt-$m/sparse" bs=1M count=64 status=none
	dd if="$SRC" of="$WORK/mnt-$m/sparse" bs=1M count=64 skip=64 seek=128 conv=notrunc status=none
	truncate -s 256M "$WORK/mnt-$m/sparse"
done

now() { date +%s%N; }
# The daemons' pids, for their CPU time (utime + stime, in clock ticks): a
# figure much less disturbed than wall clock by other load on the machine.
declare -A pid
for m in on off; do
	pid[$m]=$(pgrep -f -- "mount --ready-fd=3 .* -- $WORK/img-$m " | head -1)
	[ -n "${pid[$m]}" ] || die "no daemon for $WORK/img-$m"
done
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
# cpums TICKS0 TICKS1 MiB: daemon CPU milliseconds per GiB
cpums() { awk -v a="$1" -v b="$2" -v mib="$3" -v t="$TICK" 'BEGIN { printf "%.0f", (b - a) * 1000 / t * 1024 / mib }'; }
# mbps BYTES START END
mbps() { echo "$1 $2 $3" | awk '{ printf "%.0f", $1 / (($3 - $2) / 1e9) / 1e6 }'; }

declare -A res cpu_
for run in $(seq "$RUNS"); do
	for m in on off; do
		mp=$WORK/mnt-$m
		rm -f "$mp/u" "$mp/v" "$mp/c"
		# Each workload in a process group of its own (setsid --wait): the
		# script's other commands are no sources for it.
		c0=$(cpu "${pid[$m]}")
		t0=$(now); setsid --wait dd if="$RAND" of="$mp/u" bs=1M conv=fsync status=none; t1=$(now)
		res[unique-$m]+="$(mbps $((256 << 20)) "$t0" "$t1") "
		cpu_[unique-$m]+="$(cpums "$c0" "$(cpu "${pid[$m]}")" 256) "
		c0=$(cpu "${pid[$m]}")
		t0=$(now); setsid --wait bash -c "exec 3<'$mp/src'; dd if='$RAND' of='$mp/v' bs=1M conv=fsync status=none; exec 3<&-" ; t1=$(now)
		res[src-$m]+="$(mbps $((256 << 20)) "$t0" "$t1") "
		cpu_[src-$m]+="$(cpums "$c0" "$(cpu "${pid[$m]}")" 256) "
		c0=$(cpu "${pid[$m]}")
		t0=$(now); setsid --wait cp "$mp/sparse" "$mp/c"; dd if=/dev/null of="$mp/c" conv=notrunc,fsync status=none; t1=$(now)
		res[cp-$m]+="$(mbps $((128 << 20)) "$t0" "$t1") "
		cpu_[cp-$m]+="$(cpums "$c0" "$(cpu "${pid[$m]}")" 128) "
		rm -f "$mp/u" "$mp/v" "$mp/c"
	done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
printf "%-12s %14s %14s %8s   runs (MB/s, on | off)\n" workload "copyshare=on" "copyshare=off" "on/off"
for w in unique src cp; do
	on=$(echo "${res[$w-on]}" | median)
	off=$(echo "${res[$w-off]}" | median)
	name=$w
	[ "$w" = src ] && name=unique+src
	[ "$w" = cp ] && name="cp sparse"
	printf "%-12s %14s %14s %8s   %s| %s\n" "$name" "$on" "$off" "$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.2f", a / b }')" "${res[$w-on]}" "${res[$w-off]}"
done
echo
printf "%-12s %14s %14s %8s   runs (daemon CPU ms per GiB written, on | off)\n" workload "copyshare=on" "copyshare=off" "on/off"
for w in unique src cp; do
	on=$(echo "${cpu_[$w-on]}" | median)
	off=$(echo "${cpu_[$w-off]}" | median)
	name=$w
	[ "$w" = src ] && name=unique+src
	[ "$w" = cp ] && name="cp sparse"
	printf "%-12s %14s %14s %8s   %s| %s\n" "$name" "$on" "$off" "$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.2f", a / b }')" "${cpu_[$w-on]}" "${cpu_[$w-off]}"
done
for m in on off; do
	echo "copyshare=$m: $("$BIN" stats --json "$WORK/mnt-$m" | grep -E '"(used_bytes|copy_shared_blocks|copy_hole_blocks)"' | tr -d ' \n')"
done
