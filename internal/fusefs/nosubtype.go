package fusefs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// A mount without a subtype has the kernel type "fuse" exactly (libfuse's
// empty subtype; some tools look for it). go-fuse always mounts as
// "fuse.NAME", and the kernel refuses the type "fuse." with an empty name,
// so such a mount is made here with mount(2) and its /dev/fuse descriptor
// handed to go-fuse as the mount point /dev/fd/N. go-fuse then does not
// know the real mount point: unmounting, and the first-open poll hack it
// does for its own mounts, are done here.

// newFUSEServer mounts and returns go-fuse's server; ownMount reports
// that the mount was made here (noSubtype) rather than by go-fuse.
func newFUSEServer(fs fuse.RawFileSystem, mountpoint string, mo *fuse.MountOptions, noSubtype bool) (srv *fuse.Server, ownMount bool, err error) {
	if !noSubtype {
		srv, err = fuse.NewServer(fs, mountpoint, mo)
		return srv, false, err
	}
	fd, err := mountNoSubtype(mountpoint, mo)
	if err != nil {
		return nil, false, err
	}
	magic := *mo
	magic.DirectMount = false // the /dev/fd/N path is not a directory to mount on
	srv, err = fuse.NewServer(fs, fmt.Sprintf("/dev/fd/%d", fd), &magic)
	if err != nil {
		unix.Unmount(mountpoint, unix.MNT_DETACH)
		unix.Close(fd)
		return nil, false, err
	}
	return srv, true, nil
}

// mountNoSubtype opens /dev/fuse and mounts it at mountpoint with type
// "fuse", with the options go-fuse's direct mount would give.
func mountNoSubtype(mountpoint string, mo *fuse.MountOptions) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return -1, err
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	data := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", st.Mode&unix.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", mo.MaxWrite),
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if mo.DirectMountFlags != 0 {
		flags = mo.DirectMountFlags
	}
	for _, o := range mo.Options {
		// mount(2) takes these as flags, not in the option string.
		if f, ok := ApplyVFSFlag(flags, o); ok {
			flags = f
		} else {
			data = append(data, o)
		}
	}
	if mo.AllowOther {
		data = append(data, "allow_other")
	}
	if err := syscall.Mount(mo.FsName, mountpoint, "fuse", flags, strings.Join(data, ",")); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("mount(2) type fuse: %w", err)
	}
	return fd, nil
}

// unmountKernel unmounts; go-fuse cannot for a mount made here.
func (s *Server) unmountKernel() error {
	if !s.ownMount {
		return s.srv.Unmount()
	}
	return unix.Unmount(s.mountpoint, 0)
}

// pollHack makes the kernel learn at once that POLL is not implemented, as
// go-fuse does for its own mounts: a later POLL, sent when the Go runtime
// registers a file of this mount with epoll, could otherwise find every
// serving thread busy.
func (s *Server) pollHack() {
	if !s.ownMount {
		return
	}
	fd, err := unix.Open(filepath.Join(s.mountpoint, ".go-fuse-epoll-hack"), unix.O_RDONLY, 0)
	if err != nil {
		return
	}
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLOUT}}, 0)
	unix.Close(fd)
}

// ApplyVFSFlag applies a mount option that mount(2) takes as a flag
// (suid/nosuid, dev/nodev, exec/noexec) to flags; ok is false for any
// other option.
func ApplyVFSFlag(flags uintptr, option string) (_ uintptr, ok bool) {
	switch option {
	case "nosuid":
		return flags | unix.MS_NOSUID, true
	case "suid":
		return flags &^ unix.MS_NOSUID, true
	case "nodev":
		return flags | unix.MS_NODEV, true
	case "dev":
		return flags &^ unix.MS_NODEV, true
	case "noexec":
		return flags | unix.MS_NOEXEC, true
	case "exec":
		return flags &^ unix.MS_NOEXEC, true
	}
	return flags, false
}
