package fusefs

import (
	"errors"
	"io"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/internal/fusereply"
)

// openFlags are the FOPEN_* flags of a regular file opened with flags: no
// kernel page cache for file data, and writes to one file may run in
// parallel. A read-only open also skips FLUSH at close (one round trip
// less per close): our Flush does nothing, and the kernel's flush only
// writes back MAP_SHARED pages, which a read-only descriptor cannot dirty.
func openFlags(flags uint32) uint32 {
	f := uint32(fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES)
	if flags&syscall.O_ACCMODE == syscall.O_RDONLY {
		f |= fuse.FOPEN_NOFLUSH
	}
	return f
}

// engineFlags keeps the open flags the engine should see: the access mode,
// O_APPEND (an append-only file takes only appending writers) and O_NOATIME
// (the kernel checked the caller may use it). The kernel computes positions
// and handles O_TRUNC with a setattr; O_DIRECT, O_SYNC and friends mean
// nothing to the engine.
func engineFlags(flags uint32) int {
	return int(flags & (syscall.O_ACCMODE | syscall.O_APPEND | syscall.O_NOATIME))
}

func (fs *fileSystem) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if fs.readOnly() && in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return fuse.EROFS
	}
	f, err := fs.fsys.OpenIno(in.NodeId, engineFlags(in.Flags))
	if err != nil {
		return fs.status(err)
	}
	return fs.openHandle(&fileHandle{f: f, ino: in.NodeId, flags: in.Flags}, out, &in.Caller)
}

// openHandle decides how an opened file is served (passthrough.go),
// registers its handle and fills the reply; on failure it closes h.f. A
// read open by caller (nil for a new file) is remembered as a copy source
// (copyshare.go).
func (fs *fileSystem) openHandle(h *fileHandle, out *fuse.OpenOut, caller *fuse.Caller) fuse.Status {
	st := fs.lockIO(h.ino)
	b, status := fs.chooseIO(st, h)
	h.backing = b
	fs.unlockIO(h.ino, st)
	if !status.Ok() {
		_ = h.f.Close()
		return status
	}
	if caller != nil {
		fs.trackSource(caller, h)
	}
	out.Fh = fs.addFile(h)
	out.OpenFlags = openFlags(h.flags)
	if b != nil {
		// The kernel serves read, splice and mmap from the backing file;
		// those reads never reach us, so the open counts as the access.
		out.OpenFlags = fuse.FOPEN_PASSTHROUGH | fuse.FOPEN_NOFLUSH
		out.BackingID = b.ID()
		h.f.Accessed()
	}
	return fuse.OK
}

func (fs *fileSystem) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if fs.readOnly() {
		return fuse.EROFS
	}
	n, st := fs.prepareNew(in.NodeId, in.Caller, in.Mode&07777|syscall.S_IFREG, in.Umask)
	if !st.Ok() {
		return st
	}
	flag := engineFlags(in.Flags) | syscall.O_CREAT | int(in.Flags&(syscall.O_EXCL|syscall.O_TRUNC))
	// CREATE of an existing name is rare (the kernel looks names up first
	// and sends OPEN), but with O_TRUNC it would truncate under
	// passthrough readers: refuse as an open for writing would be.
	if in.Flags&syscall.O_TRUNC != 0 && fs.passthroughOpen(in.NodeId, name) {
		return fuse.Status(syscall.ETXTBSY)
	}
	f, a, err := fs.fsys.CreateAt(in.NodeId, name, n.mode&07777, n.owner, flag)
	if err != nil {
		return fs.status(err)
	}
	if st := fs.finishNew(a.Ino, n); !st.Ok() {
		_ = f.Close()
		return st
	}
	fs.fillEntry(&out.EntryOut, &a)
	// An existing file (no O_EXCL) may be open for passthrough.
	return fs.openHandle(&fileHandle{f: f, ino: a.Ino, flags: in.Flags}, &out.OpenOut, nil)
}

// Tmpfile serves open(2) with O_TMPFILE: an unnamed open file in directory
// in.NodeId that linkat(2) may name later (a LINK request of its node).
func (fs *fileSystem) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	if fs.readOnly() {
		return fuse.EROFS
	}
	n, st := fs.prepareNew(in.NodeId, in.Caller, in.Mode&07777|syscall.S_IFREG, in.Umask)
	if !st.Ok() {
		return st
	}
	flag := engineFlags(in.Flags) | int(in.Flags&syscall.O_EXCL)
	f, a, err := fs.fsys.TmpfileAt(in.NodeId, n.mode&07777, n.owner, flag)
	if err != nil {
		return fs.status(err)
	}
	if st := fs.finishNew(a.Ino, n); !st.Ok() {
		_ = f.Close()
		return st
	}
	fs.fillEntry(&out.EntryOut, &a)
	out.Fh = fs.addFile(&fileHandle{f: f, ino: a.Ino, flags: in.Flags})
	out.OpenFlags = openFlags(in.Flags)
	return fuse.OK
}

func (fs *fileSystem) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	fs.handlesMu.Lock()
	h := fs.files[in.Fh]
	delete(fs.files, in.Fh)
	fs.handlesMu.Unlock()
	if h == nil {
		return
	}
	fs.releaseIO(h)
	if h.src != nil {
		fs.copy.released(h.src)
	}
	if err := h.f.Close(); err != nil {
		fs.log.Warn("reflinkfs: close", "ino", h.ino, "err", err)
	}
}

func (fs *fileSystem) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h := fs.file(in.Fh)
	if h == nil {
		return nil, fuse.EBADF
	}
	if in.Offset > 1<<63-1 {
		return nil, fuse.EINVAL
	}
	v, err := h.f.ReadView(int64(in.Offset), int(in.Size))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fs.status(err)
	}
	if v.Len() == 0 {
		v.Release()
		return fuse.ReadResultData(nil), fuse.OK
	}
	return fusereply.View(v), fuse.OK
}

func (fs *fileSystem) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	h := fs.file(in.Fh)
	if h == nil {
		return 0, fuse.EBADF
	}
	if fs.readOnly() {
		return 0, fuse.EROFS
	}
	if err := fs.dropPrivileges(h.ino, &in.Caller, in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0); err != nil {
		return 0, fs.status(err)
	}
	n, shared, err := fs.writeSharing(&in.Caller, h, data, int64(in.Offset))
	if !shared {
		n, err = h.f.WriteAt(data, int64(in.Offset))
	}
	if err != nil && n == 0 {
		return 0, fs.status(err)
	}
	return uint32(n), fuse.OK
}

// writeBufs holds buffers for joining a write that arrived in pieces.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, maxIO); return &b }}

// Writev joins a write that arrived in several pieces so the engine sees
// one write (one copy-on-write decision per block, not per piece).
func (fs *fileSystem) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if len(data) == 1 {
		return fs.Write(cancel, in, data[0])
	}
	total := 0
	for _, d := range data {
		total += len(d)
	}
	var buf []byte
	if total <= maxIO {
		bp := writeBufs.Get().(*[]byte)
		defer writeBufs.Put(bp)
		buf = (*bp)[:0]
	} else {
		buf = make([]byte, 0, total)
	}
	for _, d := range data {
		buf = append(buf, d...)
	}
	return fs.Write(cancel, in, buf)
}

// Flush answers ENOSYS: the engine has nothing to do at close (data is in
// its cache either way, and we keep no POSIX locks), and ENOSYS makes the
// kernel stop sending FLUSH for good, one round trip less per close. The
// kernel still writes back a file's dirty mapped pages at close before it
// would have sent FLUSH.
func (fs *fileSystem) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return fuse.ENOSYS
}

// Fsync serves fsync and fdatasync alike: File.Sync makes the file's data
// and metadata durable.
func (fs *fileSystem) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h := fs.file(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	if fs.readOnly() {
		return fuse.OK
	}
	return fs.status(h.f.Sync())
}

// fallocate(2) mode bits (linux/falloc.h).
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
	fallocZeroRange = 0x10
)

func (fs *fileSystem) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	h := fs.file(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	if fs.readOnly() {
		return fuse.EROFS
	}
	if in.Offset > 1<<63-1 || in.Length > 1<<63-1 || in.Offset+in.Length > 1<<63-1 {
		return fuse.Status(syscall.EFBIG)
	}
	if err := fs.dropPrivileges(h.ino, &in.Caller, unprivileged(&in.InHeader)); err != nil {
		return fs.status(err)
	}
	off, length := int64(in.Offset), int64(in.Length)
	keepSize := in.Mode&fallocKeepSize != 0
	switch in.Mode &^ fallocKeepSize {
	case 0:
		return fs.status(allocate(h.f, off, length, keepSize))
	case fallocPunchHole:
		if !keepSize {
			return fuse.ENOTSUP // the kernel requires KEEP_SIZE with PUNCH_HOLE
		}
		st := fs.status(h.f.PunchHole(off, length))
		fs.invalidate(h.ino, false)
		return st
	case fallocZeroRange:
		st := fs.status(zeroRange(h.f, off, length, keepSize))
		fs.invalidate(h.ino, false)
		return st
	default:
		// COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE (never forwarded by
		// the kernel anyway), NO_HIDE_STALE, WRITE_ZEROES.
		return fuse.ENOTSUP
	}
}

func allocate(f *reflinkfs.File, off, length int64, keepSize bool) error {
	if keepSize {
		return f.AllocateKeepSize(off, length)
	}
	return f.Allocate(off, length)
}

func zeroRange(f *reflinkfs.File, off, length int64, keepSize bool) error {
	if keepSize {
		return f.ZeroRangeKeepSize(off, length)
	}
	return f.ZeroRange(off, length)
}

// lseek(2) whence values the kernel forwards.
const (
	seekData = 3
	seekHole = 4
)

func (fs *fileSystem) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	h := fs.file(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	var pos int64
	var err error
	switch in.Whence {
	case seekData:
		pos, err = h.f.SeekData(int64(in.Offset))
	case seekHole:
		pos, err = h.f.SeekHole(int64(in.Offset))
	default:
		return fuse.EINVAL // SEEK_SET/CUR/END are done by the kernel
	}
	if err != nil {
		return fs.status(err)
	}
	out.Offset = uint64(pos)
	return fuse.OK
}

// maxCopyChunk is the most one COPY_FILE_RANGE reply can report (a 32-bit
// count), rounded down to whole blocks so a reflink stays aligned; callers
// such as cp loop for the rest.
const maxCopyChunk = (1<<32 - 1) &^ (reflinkfs.BlockSize - 1)

func (fs *fileSystem) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	src, dst := fs.file(in.FhIn), fs.file(in.FhOut)
	if src == nil || dst == nil {
		return 0, fuse.EBADF
	}
	if fs.readOnly() {
		return 0, fuse.EROFS
	}
	if in.Flags != 0 {
		return 0, fuse.EINVAL
	}
	if in.OffIn > 1<<63-1 || in.OffOut > 1<<63-1 {
		return 0, fuse.EINVAL
	}
	if err := fs.dropPrivileges(dst.ino, &in.Caller, unprivileged(&in.InHeader)); err != nil {
		return 0, fs.status(err)
	}
	length := in.Len
	if length > maxCopyChunk {
		// End this call at a source block boundary: the next call then
		// starts block aligned, so from an unaligned offset too every
		// whole block of a long copy stays shared.
		length = (in.OffIn+maxCopyChunk)&^(reflinkfs.BlockSize-1) - in.OffIn
	}
	n, err := dst.f.CopyRange(src.f, int64(in.OffIn), int64(length), int64(in.OffOut))
	if err != nil && n == 0 {
		return 0, fs.status(err)
	}
	return uint32(n), fuse.OK
}
