package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	pid := 0
	sock := filepath.Join(m.Source, control.SocketName)
	if filepath.IsAbs(m.Source) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err := control.NewClient(sock).Info(ctx)
		cancel()
		if err == nil {
			pid = info.Pid
		}
	}
	var pidfd int = -1
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
		if err := waitPidfd(pidfd, timeout); err != nil {
			return fmt.Errorf("%s: unmounted, but the daemon (pid %d) %w", mp, pid, err)
		}
	case filepath.IsAbs(m.Source):
		// No pid (an older daemon, or the socket did not answer): wait for
		// the control socket to go, which the daemon removes on exit.
		if err := waitGone(sock, timeout); err != nil {
			return fmt.Errorf("%s: unmounted, but the daemon's control socket %s %w", mp, sock, err)
		}
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

// waitGone waits until path no longer exists. It polls: the fallback when the
// daemon's pid is unknown.
func waitGone(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("is still present after %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// isFuseMount reports whether m is a FUSE mount (type fuse or fuse.SUBTYPE);
// the subtype is configurable, so it is not checked.
func isFuseMount(m mountEntry) bool {
	return m.FsType == "fuse" || strings.HasPrefix(m.FsType, "fuse.")
}
