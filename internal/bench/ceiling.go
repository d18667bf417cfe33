package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The FUSE ceiling: what a FUSE file system can deliver at most on this
// machine, measured in the same run as reflinkfs. A minimal FUSE server,
// served by the harness itself, exposes one read-only regular file whose
// bytes already sit in memory; a read is answered with a slice of that
// memory and nothing else, so what the reader sees is the cost of FUSE
// alone: the request round trip through /dev/fuse and the kernel's copy
// into the reader's buffer. It is mounted the way internal/fusefs mounts
// reflinkfs (1 MiB requests, FOPEN_DIRECT_IO, direct mount, no splice).

// fsFUSECeiling is the file system key of the ceiling's metrics.
const fsFUSECeiling = "fuse_ceiling"

const (
	ceilingFileName = "file"
	ceilingFileIno  = 2 // the root is fuse.FUSE_ROOT_ID (1)
	// ceilingMaxIO matches internal/fusefs's maxIO: the largest READ the
	// kernel sends (max_read and max_pages).
	ceilingMaxIO = 1 << 20
	// ceilingPattern is the period of the file's contents.
	ceilingPattern = 1 << 20
	// ceilingMaxBuffer bounds the memory the file's bytes take. Up to it
	// the buffer is as large as the file, so the copy reads from main
	// memory as reflinkfs's copy from its cache does, not from a CPU
	// cache small enough to hold a repeated short buffer.
	ceilingMaxBuffer = 1 << 30
	ceilingSeed      = 405
)

// ceilingFS is the server's file system: a root directory holding
// ceilingFileName, read-only. Every method is safe for concurrent use
// (nothing changes after construction).
type ceilingFS struct {
	fuse.RawFileSystem // ENOSYS for everything not below
	size               int64
	// data holds the file's bytes periodically: byte o of the file is
	// data[o % len(data)]. len(data) is a multiple of ceilingPattern and
	// at least ceilingMaxIO, so one request touches at most two pieces.
	data    []byte
	pattern []byte // data's first ceilingPattern bytes
	mtime   time.Time
}

// newCeilingFS makes the file system of a size-byte file backed by a
// buffer of bufLen bytes (rounded up to a multiple of ceilingPattern).
// It fills the buffer now, so that reads never fault in fresh pages.
func newCeilingFS(size, bufLen int64) *ceilingFS {
	bufLen = max(ceilingMaxIO, (bufLen+ceilingPattern-1)/ceilingPattern*ceilingPattern)
	data := make([]byte, bufLen)
	pattern := randomBytes(ceilingPattern, ceilingSeed)
	for off := 0; off < len(data); off += ceilingPattern {
		copy(data[off:], pattern)
	}
	return &ceilingFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), size: size, data: data,
		pattern: data[:ceilingPattern], mtime: time.Now()}
}

// ceilingBufferLen is the buffer size used for a file of size bytes.
func ceilingBufferLen(size int64) int64 { return min(size, ceilingMaxBuffer) }

// byteAt is the file's byte at offset off (for checks).
func (fs *ceilingFS) byteAt(off int64) byte { return fs.pattern[off%ceilingPattern] }

func (fs *ceilingFS) String() string { return "reflinkfs-bench-fuse-ceiling" }

func (fs *ceilingFS) fillAttr(ino uint64, a *fuse.Attr) bool {
	a.Ino = ino
	a.Nlink = 1
	a.Blksize = 4096
	a.SetTimes(&fs.mtime, &fs.mtime, &fs.mtime)
	switch ino {
	case fuse.FUSE_ROOT_ID:
		a.Mode = syscall.S_IFDIR | 0o555
		a.Nlink = 2
	case ceilingFileIno:
		a.Mode = syscall.S_IFREG | 0o444
		a.Size = uint64(fs.size)
		a.Blocks = (uint64(fs.size) + 511) / 512
	default:
		return false
	}
	return true
}

func (fs *ceilingFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if h.NodeId != fuse.FUSE_ROOT_ID || name != ceilingFileName {
		return fuse.ENOENT
	}
	out.NodeId = ceilingFileIno
	out.Generation = 1
	fs.fillAttr(ceilingFileIno, &out.Attr)
	out.SetEntryTimeout(time.Hour)
	out.SetAttrTimeout(time.Hour)
	return fuse.OK
}

func (fs *ceilingFS) Forget(nodeid, nlookup uint64) {}

func (fs *ceilingFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if !fs.fillAttr(in.NodeId, &out.Attr) {
		return fuse.ENOENT
	}
	out.SetTimeout(time.Hour)
	return fuse.OK
}

// Open gives the flags internal/fusefs gives a read-only open: no page
// cache (every read(2) becomes READ requests) and no FLUSH at close.
func (fs *ceilingFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.NodeId != ceilingFileIno {
		return fuse.EISDIR
	}
	if in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return fuse.EROFS
	}
	out.Fh = 1
	out.OpenFlags = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NOFLUSH
	return fuse.OK
}

func (fs *ceilingFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {}

// Read hands over the requested bytes where they lie in the buffer: one
// slice (fuse.ReadResultData, written without a copy: splice is off), or
// two where the request wraps around the buffer's end.
func (fs *ceilingFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if in.NodeId != ceilingFileIno {
		return nil, fuse.EISDIR
	}
	if in.Offset >= uint64(fs.size) {
		return fuse.ReadResultData(nil), fuse.OK
	}
	n := min(int64(in.Size), fs.size-int64(in.Offset), int64(len(fs.data)))
	start := int64(in.Offset % uint64(len(fs.data)))
	if end := start + n; end <= int64(len(fs.data)) {
		return fuse.ReadResultData(fs.data[start:end]), fuse.OK
	}
	return fuse.ReadResultVector([][]byte{fs.data[start:], fs.data[:start+n-int64(len(fs.data))]}), fuse.OK
}

func (fs *ceilingFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.NodeId != fuse.FUSE_ROOT_ID {
		return fuse.ENOTDIR
	}
	return fuse.OK
}

func (fs *ceilingFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	entries := []fuse.DirEntry{
		{Name: ".", Mode: syscall.S_IFDIR, Ino: fuse.FUSE_ROOT_ID, Off: 1},
		{Name: "..", Mode: syscall.S_IFDIR, Ino: fuse.FUSE_ROOT_ID, Off: 2},
		{Name: ceilingFileName, Mode: syscall.S_IFREG, Ino: ceilingFileIno, Off: 3},
	}
	for _, e := range entries[min(in.Offset, uint64(len(entries))):] {
		if !out.AddDirEntry(e) {
			break
		}
	}
	return fuse.OK
}

func (fs *ceilingFS) ReleaseDir(in *fuse.ReleaseIn) {}

func (fs *ceilingFS) StatFs(cancel <-chan struct{}, in *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	out.Bsize = 4096
	out.Frsize = 4096
	out.Blocks = (uint64(fs.size) + 4095) / 4096
	out.Files = 2
	out.NameLen = 255
	return fuse.OK
}

// ceilingServer is a mounted ceilingFS served by goroutines of this
// process.
type ceilingServer struct {
	fs         *ceilingFS
	srv        *fuse.Server
	mountpoint string
	conn       uint32        // the mount's /sys/fs/fuse/connections entry
	served     chan struct{} // closed when the serve loop has exited

	mu      sync.Mutex
	stopped bool
}

// File is the path of the served file.
func (s *ceilingServer) File() string { return filepath.Join(s.mountpoint, ceilingFileName) }

// mountCeiling creates mountpoint and mounts a ceiling file system of one
// size-byte file on it with internal/fusefs's mount options. It returns
// once the mount is usable. Needs root (a direct mount).
func mountCeiling(mountpoint string, size, bufLen int64) (_ *ceilingServer, err error) {
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		return nil, err
	}
	fs := newCeilingFS(size, bufLen)
	mo := &fuse.MountOptions{
		FsName:        "reflinkfs-bench",
		Name:          "fuseceiling",
		MaxWrite:      ceilingMaxIO,
		MaxReadAhead:  ceilingMaxIO,
		MaxBackground: 64,
		DirectMount:   true,
		// A memory reply would otherwise first try splice, which for data
		// that is not in a file only adds work (pipe set-up, then a
		// fallback to write). reflinkfs's replies never splice either:
		// they are one writev of slices of its cache.
		DisableSplice:     true,
		ExtraCapabilities: fuse.CAP_DIRECT_IO_ALLOW_MMAP | fuse.CAP_ASYNC_DIO,
		// Plain READDIR is enough for a directory of one file.
		DisabledCapabilities: fuse.CAP_PASSTHROUGH | fuse.CAP_READDIRPLUS | fuse.CAP_READDIRPLUS_AUTO,
		// Teardown retries and the like would interleave with the
		// progress lines; a failing read shows in the reader's error.
		Logger: log.New(io.Discard, "", 0),
	}
	srv, err := fuse.NewServer(fs, mountpoint, mo)
	if err != nil {
		return nil, fmt.Errorf("FUSE ceiling: mount %s: %w", mountpoint, err)
	}
	s := &ceilingServer{fs: fs, srv: srv, mountpoint: mountpoint, served: make(chan struct{})}
	go func() {
		srv.Serve()
		close(s.served)
	}()
	defer func() {
		if err != nil {
			s.Stop(context.Background())
		}
	}()
	if err := srv.WaitMount(); err != nil {
		return nil, fmt.Errorf("FUSE ceiling: mount %s: %w", mountpoint, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return nil, fmt.Errorf("FUSE ceiling: stat %s: %w", mountpoint, err)
	}
	if unix.Major(st.Dev) == 0 {
		s.conn = unix.Minor(st.Dev)
	}
	return s, nil
}

// Stop unmounts and waits for the serve loop to end; it is safe to call
// more than once. If the mount is busy it is detached and its connection
// aborted, so the serve loop ends anyway. The buffer is released.
func (s *ceilingServer) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	defer func() { s.fs.data, s.fs.pattern = nil, nil }()
	// unmount(2) directly: go-fuse's Unmount falls back to fusermount,
	// which a machine mounting as root need not have.
	err := unix.Unmount(s.mountpoint, 0)
	if err == nil {
		<-s.served
		return nil
	}
	// Busy: detach it from the tree and cut the connection; open files
	// then fail with ENOTCONN and the serve loop returns.
	errs := []error{fmt.Errorf("FUSE ceiling: unmount %s: %w", s.mountpoint, err)}
	if err := unix.Unmount(s.mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		errs = append(errs, fmt.Errorf("lazy unmount: %w", err))
	}
	if s.conn != 0 {
		if err := abortConnection(s.conn); err != nil {
			errs = append(errs, err)
		}
	}
	select {
	case <-s.served:
		return nil // detached and finished: nothing is left behind
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("serve loop did not end: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

// fusectlDir is where systemd and most distributions mount fusectl.
const fusectlDir = "/sys/fs/fuse/connections"

// abortConnection aborts FUSE connection conn through fusectl's abort file:
// pending and future requests fail with ENOTCONN and the serve loop's reads
// return. fusectl is used where it is mounted; a fresh machine often has it
// nowhere, so it is then mounted on a temporary directory for the write
// (fusectl is one instance showing every connection, wherever mounted).
func abortConnection(conn uint32) error {
	abort := func(dir string) error {
		return os.WriteFile(filepath.Join(dir, fmt.Sprint(conn), "abort"), []byte("1"), 0o200)
	}
	err := abort(fusectlDir)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return err
	}
	dir, err := os.MkdirTemp("", "reflinkfs-fusectl-")
	if err != nil {
		return fmt.Errorf("abort FUSE connection %d: %w", conn, err)
	}
	defer os.Remove(dir)
	if err := unix.Mount("fusectl", dir, "fusectl", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("abort FUSE connection %d: mount fusectl: %w", conn, err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	if err := abort(dir); err != nil {
		return fmt.Errorf("abort FUSE connection %d: %w", conn, err)
	}
	return nil
}
