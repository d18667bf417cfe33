package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/reflinkfs/reflinkfs/internal/control"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func newUmountCommand() *cobra.Command {
	var lazy bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:     "umount [flags] MOUNTPOINT",
		Aliases: []string{"unmount"},
		Short:   "Unmount and wait until the daemon has written everything back and exited",
		Long: `Unmount a reflinkfs mount. The daemon then writes back all cached data,
closes the image and exits; umount returns only after the daemon has exited,
so the image can be copied, checked or mounted again right away.

The daemon is found through the control socket of the image the mount was made
from. If files on the mount are open the unmount fails (device busy); --lazy
detaches the mount at once and the daemon exits when the last file is closed
(umount then waits for that, up to --timeout).`,
		Example: `  reflinkfs umount /mnt/reflinkfs
  reflinkfs umount --lazy --timeout 30s /mnt/reflinkfs`,
		Args: exactArgs("MOUNTPOINT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return unmount(args[0], lazy, timeout)
		},
	}
	cmd.Flags().BoolVarP(&lazy, "lazy", "l", false, "detach now even if files are open (MNT_DETACH)")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long to wait for the daemon to exit")
	return cmd
}

func unmount(arg string, lazy bool, timeout time.Duration) error {
	m, mp, err := lookupMount(arg)
	if errors.Is(err, errNotMounted) {
		return fmt.Errorf("%s: not mounted", mp)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", arg, err)
	}
	if !isFuseMount(m) {
		return fmt.Errorf("%s: not a reflinkfs mount (type %s, source %s)", mp, m.FsType, m.Source)
	}

	// Learn the daemon's pid before unmounting: afterwards it stops answering.
	// No answer (a crashed daemon leaves a stale socket) means nothing to
	// wait for.
	pid := 0
	if filepath.IsAbs(m.Source) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err := control.NewClient(filepath.Join(m.Source, control.SocketName)).Info(ctx)
		cancel()
		if err == nil {
			pid = info.Pid
		}
	}
	pidfd := -1
	if pid > 0 {
		// A pidfd pins the process identity: no confusion with a reused pid.
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			pidfd = fd
			defer unix.Close(pidfd)
		}
	}

	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	if err := unix.Unmount(mp, flags); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%s: busy (files are open or a process has its working directory there); close them or use --lazy", mp)
		}
		return fmt.Errorf("%s: unmount: %w", mp, err)
	}

	switch {
	case pidfd >= 0:
		err = waitPidfd(pidfd, timeout)
	case pid > 0: // no pidfd_open (kernel before 5.3)
		err = waitExit(pid, timeout)
	}
	if err != nil {
		return fmt.Errorf("%s: unmounted, but the daemon (pid %d) %w", mp, pid, err)
	}
	return nil
}

// waitPidfd waits until the process behind pidfd has exited.
func waitPidfd(pidfd int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms <= 0 {
			return fmt.Errorf("is still running after %v", timeout)
		}
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("could not be waited for: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}

// waitExit polls until process pid has exited (or is a zombie nobody
// reaps): the fallback without pidfd.
func waitExit(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) || isZombie(pid) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("is still running after %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// isZombie reports whether pid has exited but was not reaped (possible when
// the daemon's parent is a container init that does not reap).
func isZombie(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// isFuseMount reports whether m is a FUSE mount (type fuse or fuse.SUBTYPE);
// the subtype is configurable, so it is not checked.
func isFuseMount(m mountEntry) bool {
	return m.FsType == "fuse" || strings.HasPrefix(m.FsType, "fuse.")
}
