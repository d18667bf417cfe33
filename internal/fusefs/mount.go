package fusefs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs"
)

// Options configure Mount.
type Options struct {
	// FsName and Subtype are shown in /proc/mounts ("FsName mountpoint
	// fuse.Subtype"). FsName should be the image path: the CLI finds the
	// image of a mountpoint through it. Subtype defaults to "reflinkfs".
	FsName, Subtype string
	// NoSubtype mounts with the type "fuse" alone (Subtype is ignored).
	NoSubtype bool
	// AllowOther lets users other than the mounting one access the mount.
	AllowOther bool
	// DefaultPermissions makes the kernel check permissions and enables
	// POSIX ACLs (FUSE_POSIX_ACL). Without it no permission checks are made.
	DefaultPermissions bool
	// ReadOnly mounts read-only (and refuses changes in the daemon too).
	ReadOnly bool
	// Debug logs every FUSE request and reply.
	Debug bool
	// MountFlags are suid/nosuid, dev/nodev, exec/noexec, applied to the
	// mount in order (default nosuid,nodev,exec).
	MountFlags []string
	// Share selects which opens share the kernel's page cache through FUSE
	// passthrough (passthrough.go); the zero value is ShareReadOnly.
	Share ShareMode
	// NoCopyShare turns copy detection off (copyshare=off): blocks written
	// equal to blocks the writer just read are then written, not shared.
	NoCopyShare bool
	// Logger receives warnings and debug output. Default slog.Default().
	Logger *slog.Logger
}

// maxIO is the largest read or write request the kernel sends.
const maxIO = 1 << 20

// Server is a mounted reflinkfs.
type Server struct {
	fs         *fileSystem
	srv        *fuse.Server
	mountpoint string
	served     chan struct{} // closed when the serve loop has exited
	ownMount   bool          // mounted by nosubtype.go, not by go-fuse

	unmountMu sync.Mutex
	unmounted bool
}

// Mount mounts fsys at mountpoint and serves it in the background. It
// returns once the mount is ready for use.
func Mount(fsys *reflinkfs.FS, mountpoint string, opt Options) (*Server, error) {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Subtype == "" {
		opt.Subtype = "reflinkfs"
	}
	fs := newFileSystem(fsys, opt)

	mo := &fuse.MountOptions{
		AllowOther:   opt.AllowOther,
		FsName:       opt.FsName,
		Name:         opt.Subtype,
		MaxWrite:     maxIO,
		MaxReadAhead: maxIO,
		// Direct writes and AIO reads are not "background" requests, but
		// mmap readahead and async direct I/O are; allow plenty in flight.
		MaxBackground: 64,
		DirectMount:   os.Geteuid() == 0,
		EnableAcl:     opt.DefaultPermissions,
		Debug:         opt.Debug,
		Logger:        slog.NewLogLogger(opt.Logger.Handler(), slog.LevelDebug),
		// HANDLE_KILLPRIV_V2: we remove privileges on changes ourselves
		// (killpriv.go), which spares a security.capability lookup per write.
		ExtraCapabilities: fuse.CAP_EXPORT_SUPPORT | fuse.CAP_DIRECT_IO_ALLOW_MMAP | fuse.CAP_IOCTL_DIR |
			fuse.CAP_ASYNC_DIO | fuse.CAP_SETXATTR_EXT | fuse.CAP_HANDLE_KILLPRIV_V2,
	}
	if opt.Share == ShareOff {
		// Negotiating passthrough raises the mount's stacking depth to 1,
		// which keeps overlayfs-on-overlayfs from stacking on top of us.
		mo.DisabledCapabilities = fuse.CAP_PASSTHROUGH
	}
	if opt.DefaultPermissions {
		mo.Options = append(mo.Options, "default_permissions")
		// We apply the umask ourselves so default ACLs can replace it.
		mo.ExtraCapabilities |= fuse.CAP_DONT_MASK
	}
	if opt.ReadOnly {
		mo.Options = append(mo.Options, "ro")
	}
	for _, f := range opt.MountFlags {
		switch f {
		case "suid", "nosuid", "dev", "nodev", "exec", "noexec":
			mo.Options = append(mo.Options, f)
		default:
			return nil, fmt.Errorf("mount flag %q: %w", f, syscall.EINVAL)
		}
	}

	srv, ownMount, err := newFUSEServer(fs, mountpoint, mo, opt.NoSubtype)
	if err != nil {
		return nil, fmt.Errorf("fusefs: mount %s: %w", mountpoint, err)
	}
	s := &Server{fs: fs, srv: srv, mountpoint: mountpoint, served: make(chan struct{}), ownMount: ownMount}
	go func() {
		srv.Serve()
		fs.closeStore()
		close(s.served)
	}()
	if err := srv.WaitMount(); err != nil {
		_ = s.unmountKernel()
		<-s.served
		return nil, fmt.Errorf("fusefs: mount %s: %w", mountpoint, err)
	}
	// The device number identifies files of this mount in ioctl arguments.
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		_ = s.unmountKernel()
		<-s.served
		return nil, fmt.Errorf("fusefs: stat mountpoint %s: %w", mountpoint, err)
	}
	fs.mountDev.Store(st.Dev)
	s.pollHack()
	fs.startPassthrough(srv)
	return s, nil
}

// Mountpoint returns the directory the filesystem is mounted on.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Wait blocks until the filesystem is unmounted (by Unmount or by umount).
func (s *Server) Wait() { <-s.served }

// Unmount flushes the filesystem (FS.Sync), unmounts it and waits for the
// serve loop to end; the FS stays open (closing it is the caller's job). It
// fails with EBUSY while files are open in the mount.
func (s *Server) Unmount() error {
	s.unmountMu.Lock()
	defer s.unmountMu.Unlock()
	if s.unmounted {
		return nil
	}
	syncErr := s.fs.fsys.Sync()
	select {
	case <-s.served:
		// Already unmounted from outside.
	default:
		if err := s.unmountKernel(); err != nil {
			return fmt.Errorf("fusefs: unmount %s: %w", s.mountpoint, err)
		}
		<-s.served
	}
	s.unmounted = true
	// Handles released during unmount may have changed more.
	return errors.Join(syncErr, s.fs.fsys.Sync())
}
