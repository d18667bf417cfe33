package fusefs

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// What the caller of a request may do, for the requests where the daemon
// (running as root) must decide as the kernel would: the kernel checks
// capabilities, not uid 0, so root without CAP_MKNOD may not make device
// nodes and a user with CAP_CHOWN may give files away.

// capSet is a thread's effective capability set: bit n is capability n
// (unix.CAP_*), as in the CapEff line of /proc/<tid>/status.
type capSet uint64

func (s capSet) has(c int) bool { return c >= 0 && c < 64 && s&(1<<c) != 0 }

// callerStatus is what the daemon knows of a calling thread beyond the
// request header: its supplementary groups and the capabilities that count
// on this mount.
type callerStatus struct {
	groups map[uint32]bool // nil when unknown
	caps   capSet
	// foreignNS: the thread lives in another user namespace (its
	// capabilities there are not in caps).
	foreignNS bool
}

// readCaller reads /proc/<tid>/status of the calling thread (a FUSE request
// carries its thread id). Capabilities count only when the thread lives in
// the daemon's user namespace: root of a child namespace (unshare -r) has
// them in its namespace only, and the kernel checks them in the namespace
// the mount belongs to (the daemon's). The thread is pinned with a pidfd
// while its status is read, so a thread id reused by another process after
// the caller died lends nothing. Anything unreadable counts as no groups
// and no capabilities, which can only refuse more.
func readCaller(tid uint32) callerStatus {
	if tid == 0 {
		return callerStatus{} // made by the kernel itself
	}
	pidfd, err := unix.PidfdOpen(int(tid), unix.PIDFD_THREAD)
	if errors.Is(err, unix.EINVAL) {
		// Before Linux 6.9 only a thread-group leader has a pidfd.
		pidfd, err = unix.PidfdOpen(int(tid), 0)
	}
	if err != nil {
		return callerStatus{}
	}
	defer unix.Close(pidfd)
	dir := "/proc/" + strconv.FormatUint(uint64(tid), 10)
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return callerStatus{}
	}
	var s callerStatus
	for line := range strings.Lines(string(status)) {
		if list, ok := strings.CutPrefix(line, "Groups:"); ok {
			s.groups = map[uint32]bool{}
			for _, g := range strings.Fields(list) {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					s.groups[uint32(n)] = true
				}
			}
		}
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			if n, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64); err == nil {
				s.caps = capSet(n)
			}
		}
	}
	theirs, err := os.Readlink(dir + "/ns/user")
	ours, oerr := os.Readlink("/proc/self/ns/user")
	if err != nil || oerr != nil || theirs != ours {
		s.caps = 0
		s.foreignNS = true
	}
	// Signal 0 only checks that the thread still exists: if it does, the
	// status read was its own.
	if unix.PidfdSendSignal(pidfd, 0, nil, 0) != nil {
		return callerStatus{}
	}
	return s
}
