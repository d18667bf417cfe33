package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/reflinkfs/reflinkfs/internal/control"
	"golang.org/x/sys/unix"
)

// imageLockName is the image's lock file (the library's; docs/format.md).
const imageLockName = "lock"

// exitingDaemonWait bounds how long mount waits for a daemon that was
// unmounted (plain umount returns at once) to finish writing back.
const exitingDaemonWait = 2 * time.Minute

// imageLockHolder returns the pid recorded by the process that holds the
// image's lock, or 0 if nobody holds it (or there is no image yet).
func imageLockHolder(dir string) (int, error) {
	f, err := os.Open(filepath.Join(dir, imageLockName))
	if err != nil {
		return 0, nil // no image (yet); opening or creating it says what is wrong
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return 0, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return 0, fmt.Errorf("image %s: lock: %w", dir, err)
	}
	b, _ := io.ReadAll(f)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return -1, nil // held, by a process that has not written its pid yet
	}
	return pid, nil
}

// daemonServes reports whether the image's daemon still serves: its mount
// is listed, or its control socket answers. A daemon that holds the lock
// but does neither has been unmounted and is writing back before it exits.
func daemonServes(dir string) bool {
	if ents, err := readMountInfo(); err == nil {
		for _, m := range ents {
			if isFuseMount(m) && m.Source == dir {
				return true
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := control.NewClient(filepath.Join(dir, control.SocketName)).Info(ctx)
	return err == nil
}

// checkImageFree makes sure the image at dir can be opened now. An image
// whose daemon still serves is refused at once (before a new daemon is
// started, whose error would end up in the running daemon's log). A daemon
// that was just unmounted and is still writing back is waited for, up to
// exitingDaemonWait, with a message on msg.
func checkImageFree(dir string, msg io.Writer) error {
	pid, err := imageLockHolder(dir)
	if err != nil || pid == 0 {
		return err
	}
	inUse := func() error {
		if pid < 0 {
			return fmt.Errorf("image %s: in use by another process", dir)
		}
		return fmt.Errorf("image %s: in use by another process (pid %d)", dir, pid)
	}
	if pid < 0 || !isMountDaemon(pid) || daemonServes(dir) {
		return inUse()
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return inUse() // not ours to wait for (another pid namespace?)
	}
	defer unix.Close(pidfd)
	fmt.Fprintf(msg, "reflinkfs: waiting for the previous daemon of %s (pid %d) to finish writing back\n", dir, pid)
	if err := waitPidfd(pidfd, exitingDaemonWait); err != nil {
		return fmt.Errorf("image %s: the previous daemon (pid %d) %w", dir, pid, err)
	}
	return nil
}

// isMountDaemon reports whether pid runs `reflinkfs mount` (a daemon), not
// fsck or a program using the library, which are not waited for.
func isMountDaemon(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	return len(args) > 1 && args[1] == "mount"
}
