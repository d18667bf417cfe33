package fusefs

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/reflinkfs/reflinkfs"
)

// Inode flags (chattr/lsattr). The kernel serves FS_IOC_GETFLAGS,
// FS_IOC_SETFLAGS, FS_IOC_FSGETXATTR and FS_IOC_FSSETXATTR itself
// (fileattr_get/set) and asks the daemon with a FUSE_IOCTL of the same
// command on a private read-only open, with an inline 4-byte flags word or
// 28-byte struct fsxattr. It checks ownership and, for a change of the
// immutable or append-only flag, CAP_LINUX_IMMUTABLE against the flags we
// report; we check the capability again from the caller's thread, so a
// request that skipped the kernel's check is refused too. The engine
// enforces what the flags mean.

// ioctl numbers (linux/fs.h) and flag values.
const (
	iocGetFlags       = 0x80086601
	iocSetFlags       = 0x40086602
	iocFsGetXattr     = 0x801c581f
	iocFsSetXattr     = 0x401c5820
	fsxattrSize       = 28
	xflagImmutable    = 0x00000008 // FS_XFLAG_IMMUTABLE
	xflagAppend       = 0x00000010 // FS_XFLAG_APPEND
	capLinuxImmutable = 9
)

func isFileattrIoctl(cmd uint32) bool {
	switch cmd {
	case iocGetFlags, iocSetFlags, iocFsGetXattr, iocFsSetXattr:
		return true
	}
	return false
}

// fileattr serves the four fileattr ioctls on the node in.NodeId (file or
// directory).
func (fs *fileSystem) fileattr(in *fuse.IoctlIn, inbuf, outbuf []byte) fuse.Status {
	a, err := fs.fsys.GetAttr(in.NodeId)
	if err != nil {
		return fs.status(err)
	}
	switch in.Cmd {
	case iocGetFlags:
		if len(outbuf) < 4 {
			return fuse.EINVAL
		}
		binary.NativeEndian.PutUint32(outbuf, a.Flags)
		return fuse.OK
	case iocFsGetXattr:
		if len(outbuf) < fsxattrSize {
			return fuse.EINVAL
		}
		clear(outbuf[:fsxattrSize])
		binary.NativeEndian.PutUint32(outbuf, flagsToX(a.Flags))
		return fuse.OK
	}
	var flags uint32
	switch in.Cmd {
	case iocSetFlags:
		if len(inbuf) < 4 {
			return fuse.EINVAL
		}
		flags = binary.NativeEndian.Uint32(inbuf)
	case iocFsSetXattr:
		if len(inbuf) < fsxattrSize {
			return fuse.EINVAL
		}
		x := binary.NativeEndian.Uint32(inbuf)
		// Extent size hints, project ids and other xflags: not supported.
		for off := 4; off < fsxattrSize; off += 4 {
			if off != 8 && binary.NativeEndian.Uint32(inbuf[off:]) != 0 { // 8: fsx_nextents, output only
				return fuse.Status(syscall.EOPNOTSUPP)
			}
		}
		if x&^(xflagImmutable|xflagAppend) != 0 {
			return fuse.Status(syscall.EOPNOTSUPP)
		}
		flags = xToFlags(x)
	}
	if fs.readOnly() {
		return fuse.EROFS
	}
	const guarded = reflinkfs.FlagImmutable | reflinkfs.FlagAppend
	if (flags^a.Flags)&guarded != 0 && !hasCapability(in.Caller.Pid, capLinuxImmutable) {
		return fuse.EPERM
	}
	if _, err := fs.fsys.SetFlags(in.NodeId, flags); err != nil {
		return fs.status(err)
	}
	fs.invalidate(in.NodeId, false) // ctime changed
	return fuse.OK
}

func flagsToX(f uint32) uint32 {
	var x uint32
	if f&reflinkfs.FlagImmutable != 0 {
		x |= xflagImmutable
	}
	if f&reflinkfs.FlagAppend != 0 {
		x |= xflagAppend
	}
	return x
}

func xToFlags(x uint32) uint32 {
	var f uint32
	if x&xflagImmutable != 0 {
		f |= reflinkfs.FlagImmutable
	}
	if x&xflagAppend != 0 {
		f |= reflinkfs.FlagAppend
	}
	return f
}

// hasCapability reports whether thread tid has capability c in its
// effective set (/proc/TID/status CapEff) in the daemon's user namespace:
// root of a child namespace has it only there, and the kernel checks it
// in the mount's. Unknown means no.
func hasCapability(tid uint32, c uint) bool {
	if tid == 0 {
		return false
	}
	dir := "/proc/" + strconv.FormatUint(uint64(tid), 10)
	theirs, err := os.Readlink(dir + "/ns/user")
	ours, oerr := os.Readlink("/proc/self/ns/user")
	if err != nil || oerr != nil || theirs != ours {
		return false
	}
	b, err := os.ReadFile(dir + "/status")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			eff, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && eff&(1<<c) != 0
		}
	}
	return false
}
