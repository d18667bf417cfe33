package fusefs

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/internal/backing"
)

// Timeouts the kernel may cache entries and attributes for; see the package
// doc for why long ones are exact.
const (
	entryTimeout = time.Hour
	attrTimeout  = time.Hour
)

// preferredIOSize is reported as st_blksize of regular files so tools issue
// I/O in units of the largest FUSE request.
const preferredIOSize = maxIO

// fileSystem implements fuse.RawFileSystem on top of a reflinkfs.FS.
type fileSystem struct {
	fuse.RawFileSystem // answers ENOSYS for what is not implemented here

	fsys *reflinkfs.FS
	opt  Options
	log  *slog.Logger

	server   *fuse.Server  // set by Init; used for invalidations
	mountDev atomic.Uint64 // st_dev of the mount, set once mounted

	// Negotiated with the kernel at Init.
	acl      bool // FUSE_POSIX_ACL: we keep mode and ACLs in step
	dontMask bool // CAP_DONT_MASK: we apply the umask

	nodesMu sync.Mutex
	nodes   map[uint64]*node

	// Passthrough (passthrough.go): the backing store (nil until started
	// and when off), why it is off, each open inode's I/O mode, counters.
	storeMu     sync.Mutex
	store       *backing.Store
	storeClosed bool // the mount has ended: no store may start
	passOff     string
	ioMu        sync.Mutex
	io          map[uint64]*ioState
	passCount   passCounters

	// copy remembers recent read opens for copy detection (copyshare.go);
	// nil with copyshare=off.
	copy *copySources

	handlesMu sync.RWMutex
	files     map[uint64]*fileHandle
	dirs      map[uint64]*dirHandle
	lastFh    atomic.Uint64
}

// node is the adapter's state for an inode the kernel knows.
type node struct {
	lookups uint64 // kernel references (entry replies minus forgets)

	// xattrGen counts xattr changes; noXattrs is set only by a reader that
	// saw no xattrs at generation xattrGen, so a racing change clears it.
	xattrGen     uint64
	noXattrs     bool
	noCapability bool // no security.capability (same rule as noXattrs)
}

// fileHandle is an open regular file.
type fileHandle struct {
	f     *reflinkfs.File
	ino   uint64
	flags uint32 // open(2) flags from the kernel

	// backing is set when the open is passed through to it.
	backing *backing.Backing
	// src is this open as a copy source (copyshare.go), or nil.
	src *sourceEntry

	fiemapMu  sync.Mutex
	fiemap    []reflinkfs.Extent // snapshot taken by a fiemap batch at start 0
	fiemapEnd uint64             // where the last batch ended
}

func (h *fileHandle) writable() bool {
	acc := h.flags & syscall.O_ACCMODE
	return acc == syscall.O_WRONLY || acc == syscall.O_RDWR
}

// dirHandle is an open directory; entries is the listing taken when reading
// starts at offset 0, so offsets stay stable while the directory changes.
type dirHandle struct {
	ino     uint64
	f       *reflinkfs.File // holds the inode open (see OpenDir)
	mu      sync.Mutex
	entries []reflinkfs.DirEntry
}

func newFileSystem(fsys *reflinkfs.FS, opt Options) *fileSystem {
	fs := &fileSystem{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		fsys:          fsys,
		opt:           opt,
		log:           opt.Logger,
		nodes:         make(map[uint64]*node),
		io:            make(map[uint64]*ioState),
		files:         make(map[uint64]*fileHandle),
		dirs:          make(map[uint64]*dirHandle),
		copy:          newCopySources(),
	}
	if opt.NoCopyShare {
		fs.copy = nil
	}
	return fs
}

func (fs *fileSystem) String() string { return "reflinkfs" }

func (fs *fileSystem) Init(s *fuse.Server) {
	fs.server = s
	flags := s.KernelSettings().Flags64()
	fs.acl = fs.opt.DefaultPermissions && flags&fuse.CAP_POSIX_ACL != 0
	fs.dontMask = fs.opt.DefaultPermissions && flags&fuse.CAP_DONT_MASK != 0
}

// OnUnmount closes files the kernel did not release (an aborted connection).
func (fs *fileSystem) OnUnmount() {
	fs.handlesMu.Lock()
	files, dirs := fs.files, fs.dirs
	fs.files = make(map[uint64]*fileHandle)
	fs.dirs = make(map[uint64]*dirHandle)
	fs.handlesMu.Unlock()
	for _, h := range files {
		if err := h.f.Close(); err != nil {
			fs.log.Warn("reflinkfs: close at unmount", "ino", h.ino, "err", err)
		}
	}
	for _, h := range dirs {
		if err := h.f.Close(); err != nil {
			fs.log.Warn("reflinkfs: close at unmount", "ino", h.ino, "err", err)
		}
	}
}

// status converts an engine error to a FUSE status.
func (fs *fileSystem) status(err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if errno == syscall.ENOSYS {
			// ENOSYS would switch the operation off for the whole mount.
			return fuse.ENOTSUP
		}
		return fuse.Status(errno)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fuse.EIO
	}
	fs.log.Warn("reflinkfs: engine error without errno", "err", err)
	return fuse.EIO
}

// ---- node bookkeeping ----

// nodeFor returns the state of ino, creating it if the kernel has not
// referenced it yet (a node with zero lookups is dropped by the next forget
// of it or never; either way only caches are lost).
func (fs *fileSystem) nodeFor(ino uint64) *node {
	fs.nodesMu.Lock()
	n := fs.nodes[ino]
	if n == nil {
		n = &node{}
		fs.nodes[ino] = n
	}
	fs.nodesMu.Unlock()
	return n
}

// looked records one kernel reference to ino (a successful entry reply).
func (fs *fileSystem) looked(ino uint64) {
	fs.nodesMu.Lock()
	n := fs.nodes[ino]
	if n == nil {
		n = &node{}
		fs.nodes[ino] = n
	}
	n.lookups++
	fs.nodesMu.Unlock()
}

func (fs *fileSystem) Forget(ino, nlookup uint64) {
	fs.nodesMu.Lock()
	defer fs.nodesMu.Unlock()
	n := fs.nodes[ino]
	if n == nil {
		return
	}
	if nlookup >= n.lookups {
		delete(fs.nodes, ino)
		return
	}
	n.lookups -= nlookup
}

// ---- handles ----

func (fs *fileSystem) addFile(h *fileHandle) uint64 {
	fh := fs.lastFh.Add(1)
	fs.handlesMu.Lock()
	fs.files[fh] = h
	fs.handlesMu.Unlock()
	return fh
}

func (fs *fileSystem) file(fh uint64) *fileHandle {
	fs.handlesMu.RLock()
	h := fs.files[fh]
	fs.handlesMu.RUnlock()
	return h
}

func (fs *fileSystem) addDir(h *dirHandle) uint64 {
	fh := fs.lastFh.Add(1)
	fs.handlesMu.Lock()
	fs.dirs[fh] = h
	fs.handlesMu.Unlock()
	return fh
}

func (fs *fileSystem) dir(fh uint64) *dirHandle {
	fs.handlesMu.RLock()
	h := fs.dirs[fh]
	fs.handlesMu.RUnlock()
	return h
}

// ---- attributes ----

func timeParts(t time.Time) (uint64, uint32) {
	return uint64(t.Unix()), uint32(t.Nanosecond())
}

func fillAttr(out *fuse.Attr, a *reflinkfs.Attr) {
	out.Ino = a.Ino
	out.Size = uint64(a.Size)
	out.Blocks = uint64(a.Blocks)
	out.Atime, out.Atimensec = timeParts(a.Atime)
	out.Mtime, out.Mtimensec = timeParts(a.Mtime)
	out.Ctime, out.Ctimensec = timeParts(a.Ctime)
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Uid = a.Uid
	out.Gid = a.Gid
	out.Rdev = a.Rdev
	out.Blksize = reflinkfs.BlockSize
	if a.Mode&syscall.S_IFMT == syscall.S_IFREG {
		out.Blksize = preferredIOSize
	}
}

// fillEntry answers an entry request and records the kernel's new
// reference to the node.
func (fs *fileSystem) fillEntry(out *fuse.EntryOut, a *reflinkfs.Attr) {
	out.NodeId = a.Ino
	out.Generation = a.Gen
	out.SetEntryTimeout(entryTimeout)
	out.SetAttrTimeout(attrTimeout)
	fillAttr(&out.Attr, a)
	fs.looked(a.Ino)
}

func (fs *fileSystem) fillAttrOut(out *fuse.AttrOut, a *reflinkfs.Attr) {
	out.SetTimeout(attrTimeout)
	fillAttr(&out.Attr, a)
}

// invalidate drops the kernel's cached attributes of ino and, with
// pages, its page cache (mapped pages); dirty mapped pages are written back
// first. Used after changes the kernel did not make itself.
func (fs *fileSystem) invalidate(ino uint64, pages bool) {
	if fs.server == nil {
		return
	}
	off := int64(-1)
	if pages {
		off = 0
	}
	// ENOENT means the kernel has no such inode cached: nothing to drop.
	_ = fs.server.InodeNotify(ino, off, 0)
}

func (fs *fileSystem) readOnly() bool { return fs.opt.ReadOnly }

func (fs *fileSystem) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	a, err := fs.attrOf(in.NodeId, in.Flags()&fuse.FUSE_GETATTR_FH != 0, in.Fh())
	if err != nil {
		return fs.status(err)
	}
	fs.fillAttrOut(out, &a)
	return fuse.OK
}

// attrOf returns the attributes of ino, through an open handle when the
// kernel names one (the inode may be unlinked and only open).
func (fs *fileSystem) attrOf(ino uint64, haveFh bool, fh uint64) (reflinkfs.Attr, error) {
	if haveFh {
		if h := fs.file(fh); h != nil {
			return h.f.Attr()
		}
	}
	return fs.fsys.GetAttr(ino)
}

func (fs *fileSystem) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	a, err := fs.attrOf(in.NodeId, in.GetattrFlags&fuse.FUSE_GETATTR_FH != 0, in.Fh)
	if err != nil {
		return fs.status(err)
	}
	out.SetTimeout(attrTimeout)
	sx := &out.Statx
	sx.Mask = statxBasic | statxBtime
	sx.Blksize = reflinkfs.BlockSize
	if a.Mode&syscall.S_IFMT == syscall.S_IFREG {
		sx.Blksize = preferredIOSize
	}
	sx.Nlink = a.Nlink
	sx.Uid = a.Uid
	sx.Gid = a.Gid
	sx.Mode = uint16(a.Mode)
	sx.Ino = a.Ino
	sx.Size = uint64(a.Size)
	sx.Blocks = uint64(a.Blocks)
	setSxTime(&sx.Atime, a.Atime)
	setSxTime(&sx.Btime, a.Btime)
	setSxTime(&sx.Ctime, a.Ctime)
	setSxTime(&sx.Mtime, a.Mtime)
	sx.RdevMajor = unix.Major(uint64(a.Rdev))
	sx.RdevMinor = unix.Minor(uint64(a.Rdev))
	return fuse.OK
}

// STATX_BASIC_STATS and STATX_BTIME (linux/stat.h).
const (
	statxBasic = 0x7ff
	statxBtime = 0x800
)

func setSxTime(t *fuse.SxTime, v time.Time) {
	t.Sec = uint64(v.Unix())
	t.Nsec = uint32(v.Nanosecond())
}

func (fs *fileSystem) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if fs.readOnly() {
		return fuse.EROFS
	}
	var set reflinkfs.SetAttr
	if m, ok := in.GetMode(); ok {
		set.Mode = &m
	}
	if uid, ok := in.GetUID(); ok {
		set.Uid = &uid
	}
	if gid, ok := in.GetGID(); ok {
		set.Gid = &gid
	}
	if sz, ok := in.GetSize(); ok {
		if sz > 1<<63-1 {
			return fuse.Status(syscall.EFBIG)
		}
		s := int64(sz)
		set.Size = &s
	}
	if t, ok := in.GetATime(); ok {
		set.Atime = &t
	}
	if t, ok := in.GetMTime(); ok {
		set.Mtime = &t
	}
	if t, ok := in.GetCTime(); ok {
		set.Ctime = &t
	}
	if set.Size != nil {
		// A truncate must not change what passthrough readers of a
		// snapshot do not see (passthrough.go); it waits for no open.
		st := fs.lockIO(in.NodeId)
		defer fs.unlockIO(in.NodeId, st)
		if !st.waitNoPassthrough() {
			fs.passCount.mu.Lock()
			fs.passCount.refused++
			fs.passCount.mu.Unlock()
			return fuse.Status(syscall.ETXTBSY)
		}
	}
	// utimes with no times (each *_NOW bit is its time's bit << 3): the
	// one attribute change an append-only file allows.
	times := in.Valid & (fuse.FATTR_ATIME | fuse.FATTR_MTIME)
	set.TimesNow = times != 0 && in.Valid&(fuse.FATTR_ATIME_NOW|fuse.FATTR_MTIME_NOW) == times<<3
	a, err := fs.fsys.SetAttrIno(in.NodeId, set)
	if err != nil {
		return fs.status(err)
	}
	if set.Size != nil || set.Uid != nil || set.Gid != nil {
		// A truncate or chown: see killpriv.go. An explicit new mode wins.
		kill := in.Valid&fuse.FATTR_KILL_SUIDGID != 0 && set.Mode == nil
		if err := fs.dropPrivileges(in.NodeId, &in.Caller, kill); err != nil {
			return fs.status(err)
		}
		if kill {
			if a, err = fs.fsys.GetAttr(in.NodeId); err != nil {
				return fs.status(err)
			}
		}
	}
	if set.Mode != nil && fs.acl {
		if st := fs.chmodACL(in.NodeId, a.Mode); !st.Ok() {
			return st
		}
	}
	fs.fillAttrOut(out, &a)
	return fuse.OK
}

func (fs *fileSystem) StatFs(cancel <-chan struct{}, in *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	st := fs.fsys.Stats()
	bs := st.BlockSize
	if bs <= 0 {
		bs = reflinkfs.BlockSize
	}
	out.Bsize = uint32(bs)
	out.Frsize = uint32(bs)
	out.Blocks = uint64(st.DeviceBytes / bs)
	out.Bfree = uint64(st.FreeBytes / bs)
	out.Bavail = out.Bfree
	// Inodes are records in the metadata store: no fixed table.
	const manyInodes = 1 << 32
	out.Files = uint64(st.Inodes) + manyInodes
	out.Ffree = manyInodes
	out.NameLen = 255
	return fuse.OK
}

// Access is only asked without default_permissions, where nothing is checked.
func (fs *fileSystem) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if in.Mask&fuse.W_OK != 0 && fs.readOnly() {
		return fuse.EROFS
	}
	_, err := fs.fsys.GetAttr(in.NodeId)
	return fs.status(err)
}
