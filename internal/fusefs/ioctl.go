package fusefs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/ioctl"
)

// Ioctl serves the custom ioctls of package ioctl on regular files. The
// kernel copies in and out exactly the size encoded in the number.
func (fs *fileSystem) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	if in.Flags&fuse.IOCTL_DIR != 0 {
		return fuse.Status(syscall.ENOTTY)
	}
	h := fs.file(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	switch in.Cmd {
	case ioctl.IocFiemap:
		var args ioctl.FiemapArgs
		if err := ioctl.Decode(inbuf, &args); err != nil {
			return fuse.EINVAL
		}
		if st := fs.fiemap(h, &args); !st.Ok() {
			return st
		}
		return encodeOut(outbuf, &args)
	case ioctl.IocClone, ioctl.IocCloneRange, ioctl.IocDedupeRange, ioctl.IocUnshare:
	default:
		return fuse.Status(syscall.ENOTTY)
	}

	if fs.readOnly() {
		return fuse.EROFS
	}
	if !h.writable() {
		return fuse.EBADF
	}
	switch in.Cmd {
	case ioctl.IocClone:
		var args ioctl.CloneArgs
		if err := ioctl.Decode(inbuf, &args); err != nil {
			return fuse.EINVAL
		}
		return fs.withSource(in.Caller.Pid, args.SrcFd, func(src *reflinkfs.File, srcIno uint64) fuse.Status {
			if err := fs.dropPrivileges(h.ino, &in.Caller, unprivileged(&in.InHeader)); err != nil {
				return fs.status(err)
			}
			return fs.cloneWhole(h, src, srcIno)
		})
	case ioctl.IocCloneRange:
		var args ioctl.CloneRangeArgs
		if err := ioctl.Decode(inbuf, &args); err != nil {
			return fuse.EINVAL
		}
		return fs.withSource(in.Caller.Pid, args.SrcFd, func(src *reflinkfs.File, srcIno uint64) fuse.Status {
			if err := fs.dropPrivileges(h.ino, &in.Caller, unprivileged(&in.InHeader)); err != nil {
				return fs.status(err)
			}
			return fs.cloneRange(h, src, srcIno, &args)
		})
	case ioctl.IocDedupeRange:
		var args ioctl.DedupeRangeArgs
		if err := ioctl.Decode(inbuf, &args); err != nil {
			return fuse.EINVAL
		}
		st := fs.withSource(in.Caller.Pid, args.SrcFd, func(src *reflinkfs.File, srcIno uint64) fuse.Status {
			return fs.dedupe(h, src, srcIno, &args)
		})
		if !st.Ok() {
			return st
		}
		return encodeOut(outbuf, &args)
	case ioctl.IocUnshare:
		var args ioctl.UnshareArgs
		if err := ioctl.Decode(inbuf, &args); err != nil {
			return fuse.EINVAL
		}
		if args.Offset > 1<<63-1 || args.Length > 1<<63-1 {
			return fuse.EINVAL
		}
		st := fs.status(h.f.UnshareRange(int64(args.Offset), int64(args.Length)))
		fs.invalidate(h.ino, false)
		return st
	}
	return fuse.Status(syscall.ENOTTY)
}

func encodeOut(outbuf []byte, args any) fuse.Status {
	b := ioctl.Encode(args)
	if len(outbuf) < len(b) {
		return fuse.EINVAL
	}
	copy(outbuf, b)
	return fuse.OK
}

// withSource fetches the caller's descriptor srcFd, checks it is a regular
// file of this mount open for reading, and runs fn with an engine handle on
// its inode.
func (fs *fileSystem) withSource(pid uint32, srcFd int64, fn func(src *reflinkfs.File, srcIno uint64) fuse.Status) fuse.Status {
	if srcFd < 0 || srcFd > 1<<31-1 {
		return fuse.EBADF
	}
	fd, err := callerFd(pid, int(srcFd))
	if err != nil {
		fs.log.Debug("reflinkfs: ioctl source descriptor", "pid", pid, "fd", srcFd, "err", err)
		switch {
		case errors.Is(err, unix.EBADF), errors.Is(err, unix.ESRCH):
			return fs.status(err)
		}
		return fuse.EPERM
	}
	var stx unix.Statx_t
	// DONT_SYNC: device and inode number never change, so do not ask
	// ourselves for attributes while serving this request.
	err = unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE|unix.STATX_INO, &stx)
	var accmode int
	if err == nil {
		accmode, err = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	}
	// Closing our copy sends a FLUSH, served by another goroutine.
	unix.Close(fd)
	if err != nil {
		return fs.status(err)
	}
	if unix.Mkdev(stx.Dev_major, stx.Dev_minor) != fs.mountDev.Load() {
		return fuse.EXDEV
	}
	switch uint32(stx.Mode) & syscall.S_IFMT {
	case syscall.S_IFREG:
	case syscall.S_IFDIR:
		return fuse.EISDIR
	default:
		return fuse.EINVAL
	}
	if accmode&syscall.O_ACCMODE == syscall.O_WRONLY {
		return fuse.EBADF
	}
	src, err := fs.fsys.OpenIno(stx.Ino, syscall.O_RDONLY)
	if err != nil {
		return fs.status(err)
	}
	defer src.Close()
	return fn(src, stx.Ino)
}

// callerFd duplicates descriptor fd of the thread tid (the FUSE request
// carries the caller's thread id) into this process.
func callerFd(tid uint32, fd int) (int, error) {
	if tid == 0 {
		return -1, errors.New("request made by the kernel, no caller")
	}
	pidfd, err := unix.PidfdOpen(int(tid), 0)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		// Not a thread group leader (EINVAL, or ENOENT on newer kernels):
		// ask for a thread pidfd (Linux 6.9+), else use the leader.
		pidfd, err = unix.PidfdOpen(int(tid), unix.PIDFD_THREAD)
		if err != nil && !errors.Is(err, unix.ESRCH) {
			if tgid, ok := threadGroup(tid); ok {
				pidfd, err = unix.PidfdOpen(tgid, 0)
			}
		}
	}
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", tid, err)
	}
	defer unix.Close(pidfd)
	newFd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd %d of %d: %w", fd, tid, err)
	}
	return newFd, nil
}

// threadGroup returns the process id of thread tid from /proc.
func threadGroup(tid uint32) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			return n, err == nil
		}
	}
	return 0, false
}

// flushMapped writes back dirty mmap pages of ino and drops its page cache,
// so an engine-side change neither misses nor is overwritten by them.
func (fs *fileSystem) flushMapped(ino uint64) { fs.invalidate(ino, true) }

func (fs *fileSystem) cloneWhole(dst *fileHandle, src *reflinkfs.File, srcIno uint64) fuse.Status {
	fs.flushMapped(srcIno)
	fs.flushMapped(dst.ino)
	defer fs.invalidate(dst.ino, true)
	sa, err := fs.fsys.GetAttr(srcIno)
	if err != nil {
		return fs.status(err)
	}
	if srcIno == dst.ino {
		return fuse.OK // already a copy of itself
	}
	if err := dst.f.Truncate(0); err != nil {
		return fs.status(err)
	}
	if sa.Size == 0 {
		return fuse.OK
	}
	return fs.status(dst.f.CloneRange(src, 0, sa.Size, 0))
}

func (fs *fileSystem) cloneRange(dst *fileHandle, src *reflinkfs.File, srcIno uint64, args *ioctl.CloneRangeArgs) fuse.Status {
	if args.SrcOffset > 1<<62 || args.Length > 1<<62 || args.DstOffset > 1<<62 {
		return fuse.EINVAL
	}
	fs.flushMapped(srcIno)
	fs.flushMapped(dst.ino)
	defer fs.invalidate(dst.ino, true)
	// Length 0 means "to the source's end of file", as the engine takes it.
	return fs.status(dst.f.CloneRange(src, int64(args.SrcOffset), int64(args.Length), int64(args.DstOffset)))
}

func (fs *fileSystem) dedupe(dst *fileHandle, src *reflinkfs.File, srcIno uint64, args *ioctl.DedupeRangeArgs) fuse.Status {
	if args.SrcOffset > 1<<62 || args.Length > 1<<62 || args.DstOffset > 1<<62 {
		return fuse.EINVAL
	}
	fs.flushMapped(srcIno)
	fs.flushMapped(dst.ino)
	defer fs.invalidate(dst.ino, true)
	n, err := dst.f.DedupeRange(src, int64(args.SrcOffset), int64(args.Length), int64(args.DstOffset))
	args.BytesDeduped, args.Status = 0, ioctl.DedupeSame
	switch {
	case errors.Is(err, reflinkfs.ErrRangesDiffer):
		args.Status = ioctl.DedupeDiffers
		return fuse.OK
	case err != nil:
		return fs.status(err)
	}
	args.BytesDeduped = uint64(n)
	return fuse.OK
}

// fiemap answers one batch. A batch starting at 0 takes a new snapshot of
// the extent map; later batches continue from the handle's snapshot, so a
// large map costs one engine call rather than one per batch.
func (fs *fileSystem) fiemap(h *fileHandle, args *ioctl.FiemapArgs) fuse.Status {
	h.fiemapMu.Lock()
	defer h.fiemapMu.Unlock()
	if args.Start == 0 || h.fiemap == nil || args.Start != h.fiemapEnd {
		exts, err := h.f.Fiemap()
		if err != nil {
			return fs.status(err)
		}
		h.fiemap = exts
	}
	exts := h.fiemap
	// First extent ending after Start.
	lo, hi := 0, len(exts)
	for lo < hi {
		mid := (lo + hi) / 2
		if uint64(exts[mid].Logical+exts[mid].Length) <= args.Start {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	args.Count, args.Flags, args.Next = 0, 0, args.Start
	for i := lo; i < len(exts) && args.Count < ioctl.FiemapBatch; i++ {
		e := exts[i]
		var flags uint32
		if e.Shared {
			flags |= ioctl.ExtentShared
		}
		if e.Unwritten {
			flags |= ioctl.ExtentUnwritten
		}
		args.Extents[args.Count] = ioctl.FiemapExtent{
			Logical: uint64(e.Logical), Physical: uint64(e.Physical), Length: uint64(e.Length), Flags: flags,
		}
		args.Count++
		args.Next = uint64(e.Logical + e.Length)
	}
	if lo+int(args.Count) >= len(exts) {
		args.Flags |= ioctl.FiemapLast
		h.fiemap = nil
	}
	h.fiemapEnd = args.Next
	return fuse.OK
}
