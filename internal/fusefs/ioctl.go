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

// Ioctl serves the custom ioctls of package ioctl: the tree clone on
// directories, the others on regular files. The kernel copies in and out
// exactly the size encoded in the number.
func (fs *fileSystem) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	if isFileattrIoctl(in.Cmd) {
		return fs.fileattr(in, inbuf, outbuf) // chattr, lsattr: fileattr.go
	}
	if in.Flags&fuse.IOCTL_DIR != 0 {
		if in.Cmd != ioctl.IocCloneTree {
			return fuse.Status(syscall.ENOTTY)
		}
		return fs.cloneTree(cancel, in, inbuf)
	}
	if in.Cmd == ioctl.IocCloneTree {
		return fuse.ENOTDIR
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
	ino, typ, st := fs.callerSource(pid, srcFd)
	if !st.Ok() {
		return st
	}
	switch typ {
	case syscall.S_IFREG:
	case syscall.S_IFDIR:
		return fuse.EISDIR
	default:
		return fuse.EINVAL
	}
	src, err := fs.fsys.OpenIno(ino, syscall.O_RDONLY)
	if err != nil {
		return fs.status(err)
	}
	defer src.Close()
	return fn(src, ino)
}

// callerSource fetches the caller's descriptor srcFd and returns the inode
// number (= node id = engine inode) and file type of what it refers to,
// after checking that it is on this mount and open for reading: not
// write-only, and not O_PATH, which is opened without read permission.
func (fs *fileSystem) callerSource(pid uint32, srcFd int64) (ino uint64, typ uint32, st fuse.Status) {
	if srcFd < 0 || srcFd > 1<<31-1 {
		return 0, 0, fuse.EBADF
	}
	fd, err := callerFd(pid, int(srcFd))
	if err != nil {
		fs.log.Debug("reflinkfs: ioctl source descriptor", "pid", pid, "fd", srcFd, "err", err)
		switch {
		case errors.Is(err, unix.EBADF), errors.Is(err, unix.ESRCH):
			return 0, 0, fs.status(err)
		}
		return 0, 0, fuse.EPERM
	}
	var stx unix.Statx_t
	// DONT_SYNC: device and inode number never change, so do not ask
	// ourselves for attributes while serving this request.
	err = unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE|unix.STATX_INO, &stx)
	var flags int
	if err == nil {
		flags, err = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	}
	// Closing our copy sends a FLUSH (regular files), served by another
	// goroutine.
	unix.Close(fd)
	if err != nil {
		return 0, 0, fs.status(err)
	}
	if unix.Mkdev(stx.Dev_major, stx.Dev_minor) != fs.mountDev.Load() {
		return 0, 0, fuse.EXDEV
	}
	if flags&unix.O_PATH != 0 || flags&syscall.O_ACCMODE == syscall.O_WRONLY {
		return 0, 0, fuse.EBADF
	}
	return stx.Ino, uint32(stx.Mode) & syscall.S_IFMT, fuse.OK
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

// ---- tree clone ----

// cloneTree serves IocCloneTree on directory in.NodeId: the caller's
// directory descriptor SrcFd is cloned as the new entry Name.
//
// The kernel checks no permissions for ioctls, so the daemon decides for
// the caller, from its capabilities (caller.go) as the kernel would. On
// mounts with DefaultPermissions (without it the mount checks nothing
// anywhere) the caller needs write and search permission on the
// destination directory (mode bits and access ACL) and read permission on
// every source entry it copies (read and search on directories, read on
// regular files), as copying the tree itself would need, unless
// CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH lift them. Whatever the mount
// options, the copy is the one cp -a run by the caller would make (see
// copyAs): device nodes need CAP_MKNOD (else EPERM stops the clone),
// owners are kept only with CAP_CHOWN, set-ID bits only where the owner is
// kept, and trusted.* and security.* xattrs are copied only with
// CAP_SYS_ADMIN.
func (fs *fileSystem) cloneTree(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte) fuse.Status {
	if fs.readOnly() {
		return fuse.EROFS
	}
	var args ioctl.CloneTreeArgs
	if err := ioctl.Decode(inbuf, &args); err != nil {
		return fuse.EINVAL
	}
	name, err := args.EntryName()
	if err != nil {
		return fs.status(err)
	}
	dst := in.NodeId
	c := callerCreds(&in.Caller)
	dstAttr, err := fs.fsys.GetAttr(dst)
	if err != nil {
		return fs.status(err)
	}
	check := fs.opt.DefaultPermissions
	if check {
		if st := fs.permitsAttr(dstAttr, c, accessWrite|accessExec); !st.Ok() {
			return st
		}
	}
	// The group of what the caller creates in dst (a setgid directory
	// passes its own down, to every directory below too).
	newGid := c.gid
	if dstAttr.Mode&syscall.S_ISGID != 0 {
		newGid = dstAttr.Gid
	}
	srcIno, typ, st := fs.callerSource(in.Caller.Pid, args.SrcFd)
	if !st.Ok() {
		return st
	}
	if typ != syscall.S_IFDIR {
		return fuse.ENOTDIR
	}
	opt := reflinkfs.CloneTreeOptions{
		// Stop when the caller is interrupted (the kernel sends INTERRUPT).
		ProgressEvery: 256,
		Progress: func(int64) error {
			select {
			case <-cancel:
				return syscall.EINTR
			default:
				return nil
			}
		},
		CopyAs: func(src reflinkfs.Attr) (reflinkfs.Owner, uint32) { return copyAs(src, c, newGid) },
		Check: func(a reflinkfs.Attr) error {
			want := uint32(0)
			switch a.Mode & syscall.S_IFMT {
			case syscall.S_IFDIR:
				want = accessRead | accessExec
			case syscall.S_IFREG:
				want = accessRead
			case syscall.S_IFCHR, syscall.S_IFBLK:
				if !c.can(unix.CAP_MKNOD) {
					return syscall.EPERM // as mknod(2) answers
				}
			}
			if check && want != 0 {
				if st := fs.permitsAttr(a, c, want); !st.Ok() {
					return syscall.Errno(st)
				}
			}
			return nil
		},
	}
	if !c.can(unix.CAP_SYS_ADMIN) {
		opt.SkipXattr = privilegedXattr
	}
	fs.flushAllMapped()
	_, err = fs.fsys.CloneTreeIno(srcIno, dst, name, opt)
	// Even a failed clone may have left a partial tree: drop the kernel's
	// cached negative entry for the name and the directory's attributes.
	if fs.server != nil {
		_ = fs.server.EntryNotify(dst, name)
	}
	fs.invalidate(dst, false)
	return fs.status(err)
}

// copyAs returns the owner and permission bits (07777) that the copy of
// src gets in a tree clone by c: those cp -a run by c gives it (coreutils
// 9.1; TestIoctlCloneTreeLikeCp compares the two). newGid is the group
// c's new files get in the destination.
//   - Owner: with CAP_CHOWN the source's; else c's uid, and the source's
//     group if c is in it, else newGid.
//   - When the owner or group differs from the source's, the set-user-ID
//     and set-group-ID bits are dropped, and so is the sticky bit of a
//     non-directory (cp keeps a directory's).
//   - Without CAP_FSETID, set-group-ID is dropped where c is not in the
//     copy's group, as chmod(2) does.
func copyAs(src reflinkfs.Attr, c creds, newGid uint32) (reflinkfs.Owner, uint32) {
	own := reflinkfs.Owner{Uid: src.Uid, Gid: src.Gid}
	if !c.can(unix.CAP_CHOWN) {
		own.Uid = c.uid
		if !c.inGroup(own.Gid) {
			own.Gid = newGid
		}
	}
	perm := src.Mode & 07777
	if own.Uid != src.Uid || own.Gid != src.Gid {
		perm &^= syscall.S_ISUID | syscall.S_ISGID
		if src.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			perm &^= syscall.S_ISVTX
		}
	}
	if !c.can(unix.CAP_FSETID) && !c.inGroup(own.Gid) {
		perm &^= syscall.S_ISGID
	}
	return own, perm
}

// flushAllMapped writes back dirty MAP_SHARED pages of every file open for
// writing (only those can have any: a mapping keeps its file open), so a
// tree clone copies what the processes mapping them wrote.
func (fs *fileSystem) flushAllMapped() {
	fs.handlesMu.RLock()
	var inos []uint64
	for _, h := range fs.files {
		if h.writable() {
			inos = append(inos, h.ino)
		}
	}
	fs.handlesMu.RUnlock()
	for _, ino := range inos {
		fs.flushMapped(ino)
	}
}

// privilegedXattr reports xattrs only a privileged caller may set.
func privilegedXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.") || strings.HasPrefix(name, "security.")
}

// Access bits, as in mode permission triplets.
const (
	accessRead  = 4
	accessWrite = 2
	accessExec  = 1
)

// creds is who made a request: uid, primary gid, supplementary groups and
// the capabilities that count on this mount (caller.go).
type creds struct {
	uid, gid uint32
	groups   map[uint32]bool // supplementary groups; nil when unknown
	caps     capSet
}

func (c creds) can(capability int) bool { return c.caps.has(capability) }

func (c creds) inGroup(gid uint32) bool { return c.gid == gid || c.groups[gid] }

// overrides reports whether c's capabilities grant want whatever the mode,
// as the kernel's generic_permission does: CAP_DAC_OVERRIDE anything asked
// here, CAP_DAC_READ_SEARCH reading and searching.
func (c creds) overrides(want uint32) bool {
	return c.can(unix.CAP_DAC_OVERRIDE) || want&accessWrite == 0 && c.can(unix.CAP_DAC_READ_SEARCH)
}

// callerCreds reads the caller's supplementary groups and capabilities
// once (a request carries only uid and primary gid).
func callerCreds(caller *fuse.Caller) creds {
	s := readCaller(caller.Pid)
	return creds{uid: caller.Uid, gid: caller.Gid, groups: s.groups, caps: s.caps}
}

// permits checks that c may access inode ino as want asks.
func (fs *fileSystem) permits(ino uint64, c creds, want uint32) fuse.Status {
	a, err := fs.fsys.GetAttr(ino)
	if err != nil {
		return fs.status(err)
	}
	return fs.permitsAttr(a, c, want)
}

// permitsAttr checks access as the kernel's generic_permission does: the
// caller's capabilities, then the access ACL if the mount enforces ACLs and
// the inode has one, else the mode bits.
func (fs *fileSystem) permitsAttr(a reflinkfs.Attr, c creds, want uint32) fuse.Status {
	if c.overrides(want) {
		return fuse.OK
	}
	if fs.acl {
		v, err := fs.fsys.GetXattr(a.Ino, aclAccessName)
		switch {
		case err == nil:
			acl, perr := parseACL(v)
			if perr != nil {
				return fuse.EIO
			}
			if acl.permits(a.Uid, a.Gid, c, uint16(want)) {
				return fuse.OK
			}
			return fuse.EACCES
		case fs.status(err) != fuse.ENODATA:
			return fs.status(err)
		}
	}
	bits := a.Mode
	switch {
	case a.Uid == c.uid:
		bits >>= 6
	case c.inGroup(a.Gid):
		bits >>= 3
	}
	if bits&want == want {
		return fuse.OK
	}
	return fuse.EACCES
}

// permits applies the POSIX ACL check (the kernel's posix_acl_permission)
// to an inode owned by uid:gid: the owner entry for the owner, else a named
// user entry, else the group entries (any that matches and grants), else
// other; named users and groups are limited by the mask.
func (acl posixACL) permits(uid, gid uint32, c creds, want uint16) bool {
	mask := uint16(7)
	for _, e := range acl {
		if e.tag == aclMask {
			mask = e.perm
		}
	}
	for _, e := range acl {
		if e.tag == aclUserObj && uid == c.uid {
			return e.perm&want == want
		}
	}
	for _, e := range acl {
		if e.tag == aclUser && e.id == c.uid {
			return e.perm&mask&want == want
		}
	}
	inAGroup := false
	for _, e := range acl {
		var member bool
		switch e.tag {
		case aclGroupObj:
			member = c.inGroup(gid)
		case aclGroup:
			member = c.inGroup(e.id)
		}
		if member {
			inAGroup = true
			if e.perm&mask&want == want {
				return true
			}
		}
	}
	if inAGroup {
		return false
	}
	for _, e := range acl {
		if e.tag == aclOther {
			return e.perm&want == want
		}
	}
	return false
}
