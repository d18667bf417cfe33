package reflinkfs

import (
	"syscall"
	"time"

	"github.com/reflinkfs/reflinkfs/internal/meta"
)

// Inode flags, as chattr(1) sets them, with the kernel's semantics. The
// engine enforces them for every caller (library and mount); who may change
// them (CAP_LINUX_IMMUTABLE) is the frontend's check, as the engine knows no
// credentials.
const (
	// FlagImmutable (FS_IMMUTABLE_FL): no change to data, attributes,
	// xattrs or names; no write opens; no entries added to or removed
	// from an immutable directory.
	FlagImmutable = meta.InodeImmutable
	// FlagAppend (FS_APPEND_FL): data may only grow at the end (writable
	// opens need O_APPEND; allocation is allowed); no truncate, no
	// attribute, xattr or name change; no entries removed from an
	// append-only directory.
	FlagAppend = meta.InodeAppend
)

// SetFlags sets the flags of a regular file or directory (FlagImmutable,
// FlagAppend); other bits are EOPNOTSUPP, other file types ENOTTY.
func (fsys *FS) SetFlags(ino uint64, flags uint32) (Attr, error) {
	var a Attr
	err := fsys.withMeta(func(op *opState) error {
		if flags&^(FlagImmutable|FlagAppend) != 0 {
			return syscall.EOPNOTSUPP
		}
		in, err := fsys.getInode(ino)
		if err != nil {
			return err
		}
		defer fsys.putInode(in)
		if !isReg(in.rec.Mode) && !isDir(in.rec.Mode) {
			return syscall.ENOTTY
		}
		in.rec.Flags = flags
		in.rec.Ctime = time.Now().UnixNano()
		a = fsys.attrOf(in)
		return fsys.saveInode(in)
	})
	return a, pathErr("setflags", inoName(ino), err)
}

// checkModify refuses a change to in that its flags forbid: any change of
// an immutable inode; of an append-only one, any but an append (a write at
// the end of file, an allocation). Unlink, rename and link of the inode
// count as changes. Called with fs.mu held.
func checkModify(in *inode, isAppend bool) error {
	switch {
	case in.rec.Flags&FlagImmutable != 0:
		return syscall.EPERM
	case in.rec.Flags&FlagAppend != 0 && !isAppend:
		return syscall.EPERM
	}
	return nil
}

// checkEntries refuses an entry added to (removing false) or removed from
// directory dir if its flags forbid it: an immutable directory takes
// neither, an append-only one only additions. Called with fs.mu held.
func checkEntries(dir *inode, removing bool) error {
	return checkModify(dir, !removing)
}

// checkOpenFlags refuses opens the flags forbid: writable opens of an
// immutable file; of an append-only one, writable opens without O_APPEND
// and any open with O_TRUNC. Called with fs.mu held.
func checkOpenFlags(in *inode, flag int) error {
	writable := flag&syscall.O_ACCMODE != syscall.O_RDONLY
	switch {
	case in.rec.Flags&FlagImmutable != 0 && (writable || flag&syscall.O_TRUNC != 0):
		return syscall.EPERM
	case in.rec.Flags&FlagAppend != 0 && (writable && flag&syscall.O_APPEND == 0 || flag&syscall.O_TRUNC != 0):
		return syscall.EPERM
	}
	return nil
}
