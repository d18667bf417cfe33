package reflinkfs

// Inodes and the namespace: the inode table, attributes, directory entries,
// links, rename, symlinks, xattrs and the unlink/orphan life cycle.

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reflinkfs/reflinkfs/internal/kv"
	"github.com/reflinkfs/reflinkfs/internal/meta"
)

const (
	maxNameLen   = 255
	maxXattrName = 255
	maxXattrSize = 64 << 10
	maxSymlink   = 4095
	// maxFileSize keeps every block number and byte offset in range.
	maxFileSize = 1 << 60
)

func inoName(ino uint64) string { return "inode " + strconv.FormatUint(ino, 10) }

// getInode returns the in-memory inode for ino with a reference held.
// Called with fs.mu held.
func (fsys *FS) getInode(ino uint64) (*inode, error) {
	if in, ok := fsys.inodes[ino]; ok {
		in.refs++
		return in, nil
	}
	v, err := fsys.txn.Get(meta.InodeKey(ino))
	if errors.Is(err, kv.ErrNotFound) {
		return nil, syscall.ENOENT
	}
	if err != nil {
		return nil, err
	}
	rec, err := meta.DecodeInode(ino, v)
	if err != nil {
		fsys.log.Error("inode record damaged", "inode", ino, "err", err)
		return nil, fmt.Errorf("%v: %w", err, syscall.EIO)
	}
	in := &inode{ino: ino, rec: rec, refs: 1}
	fsys.inodes[ino] = in
	return in, nil
}

// putInode drops a reference taken by getInode. Called with fs.mu held.
func (fsys *FS) putInode(in *inode) { in.refs-- }

// saveInode writes in's record to the running transaction.
func (fsys *FS) saveInode(in *inode) error {
	return fsys.txn.Set(meta.InodeKey(in.ino), in.rec.Encode(in.ino))
}

func (fsys *FS) attrOf(in *inode) Attr {
	r := &in.rec
	return Attr{
		Ino: in.ino, Gen: r.Gen, Mode: r.Mode, Nlink: r.Nlink, Uid: r.Uid, Gid: r.Gid, Rdev: r.Rdev,
		Size: r.Size, Blocks: int64(r.Blocks) * (BlockSize / 512),
		Atime: time.Unix(0, r.Atime), Mtime: time.Unix(0, r.Mtime), Ctime: time.Unix(0, r.Ctime), Btime: time.Unix(0, r.Btime),
		Flags: r.Flags,
	}
}

func isDir(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFDIR }
func isReg(mode uint32) bool { return mode&syscall.S_IFMT == syscall.S_IFREG }

func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return syscall.EINVAL
	case len(name) > maxNameLen:
		return syscall.ENAMETOOLONG
	case strings.ContainsAny(name, "/\x00"):
		return syscall.EINVAL
	}
	return nil
}

// withMeta runs fn under fs.mu with a mutating operation's gate held.
func (fsys *FS) withMeta(fn func(op *opState) error) error {
	if fsys.opt.ReadOnly {
		return syscall.EROFS
	}
	fsys.gate.RLock()
	op := &opState{}
	fsys.mu.Lock()
	var err error
	if fsys.closed {
		err = fs.ErrClosed
	} else {
		err = fn(op)
	}
	fsys.mu.Unlock()
	fsys.finish(op)
	fsys.gate.RUnlock()
	fsys.maybeCommit()
	return err
}

// readMeta runs fn under fs.mu for a read-only look at metadata.
func (fsys *FS) readMeta(fn func() error) error {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if fsys.closed {
		return fs.ErrClosed
	}
	return fn()
}

func (fsys *FS) lookupDirent(parent uint64, name string) (meta.Dirent, error) {
	k := meta.DirentKey(parent, name)
	v, err := fsys.txn.Get(k)
	if errors.Is(err, kv.ErrNotFound) {
		return meta.Dirent{}, syscall.ENOENT
	}
	if err != nil {
		return meta.Dirent{}, err
	}
	d, err := meta.DecodeDirent(k, v)
	if err != nil {
		return meta.Dirent{}, fmt.Errorf("%v: %w", err, syscall.EIO)
	}
	return d, nil
}

func (fsys *FS) putDirent(parent uint64, name string, d meta.Dirent) error {
	k := meta.DirentKey(parent, name)
	return fsys.txn.Set(k, d.Encode(k))
}

// getDir returns parent as a directory inode (reference held).
func (fsys *FS) getDir(parent uint64) (*inode, error) {
	dir, err := fsys.getInode(parent)
	if err != nil {
		return nil, err
	}
	if !isDir(dir.rec.Mode) {
		fsys.putInode(dir)
		return nil, syscall.ENOTDIR
	}
	return dir, nil
}

// Lookup returns the attributes of name in directory parent.
func (fsys *FS) Lookup(parent uint64, name string) (Attr, error) {
	var a Attr
	err := fsys.readMeta(func() error {
		dir, err := fsys.getDir(parent)
		if err != nil {
			return err
		}
		defer fsys.putInode(dir)
		if name == "." {
			a = fsys.attrOf(dir)
			return nil
		}
		if name == ".." {
			up, err := fsys.getInode(dir.rec.Parent)
			if err != nil {
				return err
			}
			a = fsys.attrOf(up)
			fsys.putInode(up)
			return nil
		}
		d, err := fsys.lookupDirent(parent, name)
		if err != nil {
			return err
		}
		in, err := fsys.getInode(d.Ino)
		if err != nil {
			fsys.log.Error("directory entry names a missing inode", "dir", parent, "name", name, "inode", d.Ino)
			return fmt.Errorf("entry %q points to missing inode %d: %w", name, d.Ino, syscall.EIO)
		}
		defer fsys.putInode(in)
		// An entry must agree with its inode, and a directory has exactly one
		// entry, in its recorded parent: otherwise the tree is damaged (a
		// cycle could make walks loop), so refuse with EIO until fsck runs.
		if in.rec.Mode&syscall.S_IFMT != d.Type || (isDir(in.rec.Mode) && in.rec.Parent != parent) {
			fsys.log.Error("directory entry disagrees with its inode (run fsck)", "dir", parent, "name", name, "inode", d.Ino)
			return fmt.Errorf("entry %q disagrees with inode %d: %w", name, d.Ino, syscall.EIO)
		}
		a = fsys.attrOf(in)
		return nil
	})
	return a, pathErr("lookup", name, err)
}

// GetAttr returns an inode's attributes.
func (fsys *FS) GetAttr(ino uint64) (Attr, error) {
	var a Attr
	err := fsys.readMeta(func() error {
		in, err := fsys.getInode(ino)
		if err != nil {
			return err
		}
		a = fsys.attrOf(in)
		fsys.putInode(in)
		return nil
	})
	return a, pathErr("getattr", inoName(ino), err)
}

// newInode creates an inode record (nlink 1, or 2 for directories) and
// enters it in directory dir under name. Called with fs.mu held.
func (fsys *FS) newInode(dir *inode, name string, mode, rdev uint32, o Owner) (*inode, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if _, err := fsys.lookupDirent(dir.ino, name); err == nil {
		return nil, syscall.EEXIST
	} else if !errors.Is(err, syscall.ENOENT) {
		return nil, err
	}
	if dir.rec.Nlink == 0 {
		return nil, syscall.ENOENT // directory was removed
	}
	if err := checkEntries(dir, false); err != nil {
		return nil, err
	}
	in := fsys.allocInode(mode, rdev, o, 1)
	if isDir(mode) {
		in.rec.Nlink = 2
		in.rec.Parent = dir.ino
		dir.rec.Nlink++
	}
	dir.rec.Mtime, dir.rec.Ctime = in.rec.Mtime, in.rec.Ctime
	err := errors.Join(
		fsys.saveInode(in),
		fsys.saveInode(dir),
		fsys.putDirent(dir.ino, name, meta.Dirent{Ino: in.ino, Type: mode & syscall.S_IFMT}),
	)
	return in, err
}

// allocInode makes a new in-memory inode (reference held) with a fresh
// number and generation and nlink links; the caller saves it. Called with
// fs.mu held.
func (fsys *FS) allocInode(mode, rdev uint32, o Owner, nlink uint32) *inode {
	now := time.Now().UnixNano()
	ino := fsys.sb.NextIno
	fsys.sb.NextIno++
	gen := fsys.sb.NextGen
	fsys.sb.NextGen++
	in := &inode{ino: ino, refs: 1, rec: meta.Inode{
		Gen: gen, Mode: mode, Nlink: nlink, Uid: o.Uid, Gid: o.Gid, Rdev: rdev,
		Atime: now, Mtime: now, Ctime: now, Btime: now,
	}}
	if isReg(mode) {
		// Inode numbers are never reused, so the store holds no extents
		// for ino: start with an empty map instead of searching the store
		// on first use (a cold iterator costs tens of µs).
		in.ext = newExtentTree()
	}
	fsys.inodes[ino] = in
	fsys.inodeCount++
	return in
}

// Mknod creates a regular file, FIFO, socket or device node.
func (fsys *FS) Mknod(parent uint64, name string, mode, rdev uint32, o Owner) (Attr, error) {
	switch mode & syscall.S_IFMT {
	case 0:
		mode |= syscall.S_IFREG
	case syscall.S_IFREG, syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
	default:
		return Attr{}, pathErr("mknod", name, syscall.EINVAL)
	}
	return fsys.create("mknod", parent, name, mode, rdev, o, nil)
}

// MkdirAt creates a directory.
func (fsys *FS) MkdirAt(parent uint64, name string, mode uint32, o Owner) (Attr, error) {
	return fsys.create("mkdir", parent, name, syscall.S_IFDIR|(mode&07777), 0, o, nil)
}

// SymlinkAt creates a symbolic link to target.
func (fsys *FS) SymlinkAt(parent uint64, name, target string, o Owner) (Attr, error) {
	if target == "" || len(target) > maxSymlink {
		return Attr{}, pathErr("symlink", name, syscall.ENAMETOOLONG)
	}
	return fsys.create("symlink", parent, name, syscall.S_IFLNK|0o777, 0, o, func(in *inode) error {
		in.rec.Size = int64(len(target))
		k := meta.SymlinkKey(in.ino)
		return errors.Join(fsys.txn.Set(k, meta.EncodeBytes(k, []byte(target))), fsys.saveInode(in))
	})
}

func (fsys *FS) create(opName string, parent uint64, name string, mode, rdev uint32, o Owner, init func(*inode) error) (Attr, error) {
	var a Attr
	err := fsys.withMeta(func(op *opState) error {
		dir, err := fsys.getDir(parent)
		if err != nil {
			return err
		}
		defer fsys.putInode(dir)
		in, err := fsys.newInode(dir, name, mode, rdev, o)
		if err != nil {
			return err
		}
		defer fsys.putInode(in)
		if init != nil {
			if err := init(in); err != nil {
				return err
			}
		}
		a = fsys.attrOf(in)
		return nil
	})
	return a, pathErr(opName, name, err)
}

// ReadlinkIno returns a symlink's target; reading it is an access (atime
// policy).
func (fsys *FS) ReadlinkIno(ino uint64) (string, error) { return fsys.readlink(ino, true) }

// readlink is ReadlinkIno; access says whether the read counts as an
// access (the tree clone's reads do not).
func (fsys *FS) readlink(ino uint64, access bool) (string, error) {
	var target string
	err := fsys.readMeta(func() error {
		in, err := fsys.getInode(ino)
		if err != nil {
			return err
		}
		defer fsys.putInode(in)
		if in.rec.Mode&syscall.S_IFMT != syscall.S_IFLNK {
			return syscall.EINVAL
		}
		k := meta.SymlinkKey(ino)
		v, err := fsys.txn.Get(k)
		if err != nil {
			return fmt.Errorf("symlink target: %v: %w", err, syscall.EIO)
		}
		b, err := meta.DecodeBytes(k, v)
		if err != nil {
			return fmt.Errorf("%v: %w", err, syscall.EIO)
		}
		target = string(b)
		if access {
			fsys.accessed(in)
		}
		return nil
	})
	return target, pathErr("readlink", inoName(ino), err)
}

// LinkAt makes newParent/newName another name of ino (not a directory).
func (fsys *FS) LinkAt(ino, newParent uint64, newName string) (Attr, error) {
	var a Attr
	err := fsys.withMeta(func(op *opState) error {
		if err := checkName(newName); err != nil {
			return err
		}
		dir, err := fsys.getDir(newParent)
		if err != nil {
			return err
		}
		defer fsys.putInode(dir)
		in, err := fsys.getInode(ino)
		if err != nil {
			return err
		}
		defer fsys.putInode(in)
		if isDir(in.rec.Mode) {
			return syscall.EPERM
		}
		if in.rec.Nlink == 0 && !in.linkable {
			return syscall.ENOENT
		}
		if err := errors.Join(checkModify(in, false), checkEntries(dir, false)); err != nil {
			return syscall.EPERM
		}
		if _, err := fsys.lookupDirent(newParent, newName); err == nil {
			return syscall.EEXIST
		}
		now := time.Now().UnixNano()
		in.rec.Nlink++
		in.linkable = false // as Linux: a tmpfile is linkable once
		in.rec.Ctime = now
		dir.rec.Mtime, dir.rec.Ctime = now, now
		if err := fsys.txn.Delete(meta.OrphanKey(ino)); err != nil {
			return err
		}
		a = fsys.attrOf(in)
		return errors.Join(fsys.saveInode(in), fsys.saveInode(dir),
			fsys.putDirent(newParent, newName, meta.Dirent{Ino: ino, Type: in.rec.Mode & syscall.S_IFMT}))
	})
	return a, pathErr("link", newName, err)
}

// dropLink removes one link of in (whose dirent the caller removed). When
// the last link goes, the inode is freed now, or at last close if open.
// Called with fs.mu held.
func (fsys *FS) dropLink(op *opState, in *inode, now int64) error {
	if isDir(in.rec.Mode) {
		in.rec.Nlink = 0
	} else if in.rec.Nlink > 0 {
		in.rec.Nlink--
	}
	in.rec.Ctime = now
	if in.rec.Nlink > 0 {
		return fsys.saveInode(in)
	}
	if in.opens > 0 {
		k := meta.OrphanKey(in.ino)
		return errors.Join(fsys.saveInode(in), fsys.txn.Set(k, meta.EncodeBytes(k, nil)))
	}
	return fsys.freeOrReap(op, in)
}

// freeInode releases every block and record of an unlinked, closed inode.
func (fsys *FS) freeInode(op *opState, in *inode) error {
	removed, err := fsys.unmapRange(in, 0, ^uint64(0))
	if err != nil {
		return err
	}
	if err := fsys.release(op, removed); err != nil {
		return err
	}
	// Point deletes, not a range deletion: every range tombstone in the
	// running transaction would slow down each later iterator over it.
	// Every key under the prefix goes, parsable or not.
	xp := meta.InodePrefix(meta.PrefixXattr, in.ino)
	var xkeys [][]byte
	if err := kv.Scan(fsys.txn, xp, meta.PrefixEnd(xp), func(k, _ []byte) error {
		xkeys = append(xkeys, append([]byte(nil), k...))
		return nil
	}); err != nil {
		return fmt.Errorf("%v: %w", err, syscall.EIO)
	}
	for _, k := range xkeys {
		if err := fsys.txn.Delete(k); err != nil {
			return err
		}
	}
	err = errors.Join(
		fsys.txn.Delete(meta.SymlinkKey(in.ino)),
		fsys.txn.Delete(meta.OrphanKey(in.ino)),
		fsys.txn.Delete(meta.InodeKey(in.ino)),
	)
	fsys.inodeCount--
	in.rec.Nlink = 0
	// Forget it: later lookups of the number find no record (ENOENT).
	delete(fsys.inodes, in.ino)
	return err
}

// freeInodeLocked frees orphan ino at open time (a large one in the
// background).
func (fsys *FS) freeInodeLocked(ino uint64) error {
	in, err := fsys.getInode(ino)
	if errors.Is(err, syscall.ENOENT) {
		return fsys.txn.Delete(meta.OrphanKey(ino))
	}
	if err != nil {
		return err
	}
	defer fsys.putInode(in)
	op := &opState{}
	if err := fsys.freeOrReap(op, in); err != nil {
		return err
	}
	fsys.mu.Unlock()
	fsys.finish(op)
	fsys.mu.Lock()
	return nil
}

// dirEmpty reports whether directory ino has no entries.
func (fsys *FS) dirEmpty(ino uint64) (bool, error) {
	p := meta.InodePrefix(meta.PrefixDirent, ino)
	it := fsys.txn.NewIter(p, meta.PrefixEnd(p))
	if it.First() {
		it.Close()
		return false, nil
	}
	// No entry, or none readable: only the first is an empty directory.
	if err := it.Close(); err != nil {
		return false, fmt.Errorf("%v: %w", err, syscall.EIO)
	}
	return true, nil
}

// Unlink removes a non-directory entry.
func (fsys *FS) Unlink(parent uint64, name string) error {
	return pathErr("unlink", name, fsys.remove(parent, name, false))
}

// Rmdir removes an empty directory.
func (fsys *FS) Rmdir(parent uint64, name string) error {
	return pathErr("rmdir", name, fsys.remove(parent, name, true))
}

func (fsys *FS) remove(parent uint64, name string, wantDir bool) error {
	return fsys.withMeta(func(op *opState) error {
		if name == "." {
			return syscall.EINVAL
		}
		if name == ".." {
			return syscall.ENOTEMPTY
		}
		dir, err := fsys.getDir(parent)
		if err != nil {
			return err
		}
		defer fsys.putInode(dir)
		d, err := fsys.lookupDirent(parent, name)
		if err != nil {
			return err
		}
		in, err := fsys.getInode(d.Ino)
		if err != nil {
			return err
		}
		defer fsys.putInode(in)
		if isDir(in.rec.Mode) != wantDir {
			if wantDir {
				return syscall.ENOTDIR
			}
			return syscall.EISDIR
		}
		if err := errors.Join(checkEntries(dir, true), checkModify(in, false)); err != nil {
			return syscall.EPERM
		}
		if wantDir {
			empty, err := fsys.dirEmpty(in.ino)
			if err != nil {
				return err
			}
			if !empty {
				return syscall.ENOTEMPTY
			}
			dir.rec.Nlink--
		}
		now := time.Now().UnixNano()
		dir.rec.Mtime, dir.rec.Ctime = now, now
		if err := fsys.txn.Delete(meta.DirentKey(parent, name)); err != nil {
			return err
		}
		return errors.Join(fsys.saveInode(dir), fsys.dropLink(op, in, now))
	})
}

// isAncestor reports whether a is dir or one of its ancestors.
func (fsys *FS) isAncestor(a, dir uint64) (bool, error) {
	for i := 0; i < 1<<16; i++ {
		if dir == a {
			return true, nil
		}
		if dir == RootIno {
			return false, nil
		}
		in, err := fsys.getInode(dir)
		if err != nil {
			return false, err
		}
		next := in.rec.Parent
		fsys.putInode(in)
		dir = next
	}
	return false, fmt.Errorf("directory parent chain does not reach the root: %w", syscall.EIO)
}

// RenameAt renames oldParent/oldName to newParent/newName, as renameat2(2)
// with flags RenameNoReplace and RenameExchange.
func (fsys *FS) RenameAt(oldParent uint64, oldName string, newParent uint64, newName string, flags int) error {
	err := fsys.withMeta(func(op *opState) error {
		if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
			return syscall.EINVAL
		}
		if err := checkName(oldName); err != nil {
			return err
		}
		if err := checkName(newName); err != nil {
			return err
		}
		odir, err := fsys.getDir(oldParent)
		if err != nil {
			return err
		}
		defer fsys.putInode(odir)
		ndir, err := fsys.getDir(newParent)
		if err != nil {
			return err
		}
		defer fsys.putInode(ndir)
		od, err := fsys.lookupDirent(oldParent, oldName)
		if err != nil {
			return err
		}
		src, err := fsys.getInode(od.Ino)
		if err != nil {
			return err
		}
		defer fsys.putInode(src)
		nd, err := fsys.lookupDirent(newParent, newName)
		exists := err == nil
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			return err
		}
		if exists && nd.Ino == od.Ino {
			if flags&RenameNoReplace != 0 {
				return syscall.EEXIST
			}
			return nil // same inode: nothing to do, as rename(2)
		}
		if flags&RenameNoReplace != 0 && exists {
			return syscall.EEXIST
		}
		if flags&RenameExchange != 0 && !exists {
			return syscall.ENOENT
		}
		if err := errors.Join(checkEntries(odir, true), checkEntries(ndir, false), checkModify(src, false)); err != nil {
			return syscall.EPERM
		}
		// A directory cannot move below itself.
		if isDir(src.rec.Mode) && oldParent != newParent {
			below, err := fsys.isAncestor(src.ino, newParent)
			if err != nil {
				return err
			}
			if below {
				return syscall.EINVAL
			}
		}
		now := time.Now().UnixNano()
		var dst *inode
		if exists {
			if dst, err = fsys.getInode(nd.Ino); err != nil {
				return err
			}
			defer fsys.putInode(dst)
			// The target is replaced (or moved, by an exchange).
			if err := errors.Join(checkEntries(ndir, true), checkModify(dst, false)); err != nil {
				return syscall.EPERM
			}
			if isDir(dst.rec.Mode) && oldParent != newParent && flags&RenameExchange != 0 {
				below, err := fsys.isAncestor(dst.ino, oldParent)
				if err != nil {
					return err
				}
				if below {
					return syscall.EINVAL
				}
			}
		}
		if flags&RenameExchange != 0 {
			// Swap the two entries.
			if err := errors.Join(
				fsys.putDirent(oldParent, oldName, meta.Dirent{Ino: dst.ino, Type: dst.rec.Mode & syscall.S_IFMT}),
				fsys.putDirent(newParent, newName, meta.Dirent{Ino: src.ino, Type: src.rec.Mode & syscall.S_IFMT}),
			); err != nil {
				return err
			}
			fsys.reparent(src, odir, ndir)
			fsys.reparent(dst, ndir, odir)
			src.rec.Ctime, dst.rec.Ctime = now, now
			odir.rec.Mtime, odir.rec.Ctime, ndir.rec.Mtime, ndir.rec.Ctime = now, now, now, now
			return errors.Join(fsys.saveInode(src), fsys.saveInode(dst), fsys.saveInode(odir), fsys.saveInode(ndir))
		}
		if exists {
			switch {
			case isDir(src.rec.Mode) && !isDir(dst.rec.Mode):
				return syscall.ENOTDIR
			case !isDir(src.rec.Mode) && isDir(dst.rec.Mode):
				return syscall.EISDIR
			case isDir(dst.rec.Mode):
				empty, err := fsys.dirEmpty(dst.ino)
				if err != nil {
					return err
				}
				if !empty {
					return syscall.ENOTEMPTY
				}
				ndir.rec.Nlink--
			}
			if err := fsys.dropLink(op, dst, now); err != nil {
				return err
			}
		}
		if err := errors.Join(
			fsys.txn.Delete(meta.DirentKey(oldParent, oldName)),
			fsys.putDirent(newParent, newName, meta.Dirent{Ino: src.ino, Type: src.rec.Mode & syscall.S_IFMT}),
		); err != nil {
			return err
		}
		fsys.reparent(src, odir, ndir)
		src.rec.Ctime = now
		odir.rec.Mtime, odir.rec.Ctime, ndir.rec.Mtime, ndir.rec.Ctime = now, now, now, now
		return errors.Join(fsys.saveInode(src), fsys.saveInode(odir), fsys.saveInode(ndir))
	})
	return pathErr("rename", oldName, err)
}

// reparent moves directory in from dir a to dir b (link counts of "..").
func (fsys *FS) reparent(in, a, b *inode) {
	if !isDir(in.rec.Mode) || a == b {
		return
	}
	in.rec.Parent = b.ino
	a.rec.Nlink--
	b.rec.Nlink++
}

// eachName calls fn, in name order, for every key of kind prefix (dirents,
// xattrs) belonging to ino, with the name part of the key. Called with
// fs.mu held; a key that does not parse is EIO.
func (fsys *FS) eachName(prefix byte, ino uint64, fn func(name string, k, v []byte) error) error {
	p := meta.InodePrefix(prefix, ino)
	var fnErr error
	err := kv.Scan(fsys.txn, p, meta.PrefixEnd(p), func(k, v []byte) error {
		_, name, err := meta.ParseKeyName(prefix, k)
		if err != nil {
			return fmt.Errorf("%v: %w", err, syscall.EIO)
		}
		fnErr = fn(name, k, v)
		return fnErr
	})
	if err != nil && fnErr == nil {
		// The store could not be read: EIO, never a short listing.
		return fmt.Errorf("%v: %w", err, syscall.EIO)
	}
	return err
}

// ReadDirIno lists a directory (without "." and "..") in name order; the
// listing is an access (atime policy).
func (fsys *FS) ReadDirIno(ino uint64) ([]DirEntry, error) { return fsys.readDir(ino, true) }

// readDir is ReadDirIno; access says whether the listing counts as an
// access (the tree clone's reads do not).
func (fsys *FS) readDir(ino uint64, access bool) ([]DirEntry, error) {
	var out []DirEntry
	err := fsys.readMeta(func() error {
		dir, err := fsys.getDir(ino)
		if err != nil {
			return err
		}
		if access {
			fsys.accessed(dir)
		}
		fsys.putInode(dir)
		return fsys.eachName(meta.PrefixDirent, ino, func(name string, k, v []byte) error {
			d, err := meta.DecodeDirent(k, v)
			if err != nil {
				return fmt.Errorf("%v: %w", err, syscall.EIO)
			}
			out = append(out, DirEntry{Name: name, Ino: d.Ino, Mode: d.Type})
			return nil
		})
	})
	return out, pathErr("readdir", inoName(ino), err)
}

// SetAttrIno changes attributes; a size change truncates the file.
func (fsys *FS) SetAttrIno(ino uint64, set SetAttr) (Attr, error) {
	if set.Size != nil {
		f, err := fsys.openIno(ino, syscall.O_WRONLY, false)
		if err != nil {
			return Attr{}, pathErr("truncate", inoName(ino), err)
		}
		err = f.Truncate(*set.Size)
		f.Close()
		if err != nil {
			return Attr{}, err
		}
	}
	var a Attr
	err := fsys.withMeta(func(op *opState) error {
		in, err := fsys.getInode(ino)
		if err != nil {
			return err
		}
		defer fsys.putInode(in)
		onlyTouch := set.TimesNow && set.Mode == nil && set.Uid == nil && set.Gid == nil && set.Ctime == nil
		if err := checkModify(in, onlyTouch); err != nil {
			return err
		}
		now := time.Now()
		if set.Mode != nil {
			in.rec.Mode = in.rec.Mode&syscall.S_IFMT | *set.Mode&07777
		}
		if set.Uid != nil {
			in.rec.Uid = *set.Uid
		}
		if set.Gid != nil {
			in.rec.Gid = *set.Gid
		}
		if set.Atime != nil {
			in.rec.Atime = set.Atime.UnixNano()
		}
		if set.Mtime != nil {
			in.rec.Mtime = set.Mtime.UnixNano()
		}
		in.rec.Ctime = now.UnixNano()
		if set.Ctime != nil {
			in.rec.Ctime = set.Ctime.UnixNano()
		}
		a = fsys.attrOf(in)
		return fsys.saveInode(in)
	})
	return a, pathErr("setattr", inoName(ino), err)
}

// setIDToDrop is the set-ID bits the kernel removes from a non-directory
// when an unprivileged caller changes its contents or owner: set-user-ID
// always; set-group-ID if the file is group-executable or the caller is not
// in the file's group. (A set-group-ID file without group execute marks
// mandatory locking for its group.)
func setIDToDrop(mode uint32, callerInGroup bool) uint32 {
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		return 0
	}
	drop := mode & syscall.S_ISUID
	if mode&syscall.S_ISGID != 0 && (mode&syscall.S_IXGRP != 0 || !callerInGroup) {
		drop |= syscall.S_ISGID
	}
	return drop
}

// DropSetID clears the set-ID bits a write, truncate or chown by an
// unprivileged caller removes (see setIDToDrop) and reports whether the mode
// changed. inGroup reports whether the caller is in a group (nil: always);
// it is asked only about a set-group-ID file without group execute. The
// common case, a file without set-ID bits, costs no transaction. The
// engine's own File methods never call it: a library caller has no
// credentials to check; the FUSE adapter calls it as the kernel asks.
func (fsys *FS) DropSetID(ino uint64, inGroup func(gid uint32) bool) (bool, error) {
	var mode, gid uint32
	err := fsys.readMeta(func() error {
		in, err := fsys.getInode(ino)
		if err != nil {
			return err
		}
		mode, gid = in.rec.Mode, in.rec.Gid
		fsys.putInode(in)
		return nil
	})
	if err != nil || setIDToDrop(mode, true)|setIDToDrop(mode, false) == 0 {
		return false, pathErr("setattr", inoName(ino), err)
	}
	// inGroup may read /proc: ask outside the engine's locks.
	member := inGroup == nil || inGroup(gid)
	changed := false
	err = fsys.withMeta(func(op *opState) error {
		in, err := fsys.getInode(ino)
		if err != nil {
			return err
		}
		defer fsys.putInode(in)
		// A chown meanwhile: the caller's membership is unknown; drop.
		drop := setIDToDrop(in.rec.Mode, member && in.rec.Gid == gid)
		if drop == 0 {
			return nil
		}
		in.rec.Mode &^= drop
		in.rec.Ctime = time.Now().UnixNano()
		changed = true
		return fsys.saveInode(in)
	})
	return changed, pathErr("setattr", inoName(ino), err)
}

// Xattr flags, as setxattr(2).
const (
	XattrCreate  = 1
	XattrReplace = 2
)

// GetXattr returns the value of an extended attribute (ENODATA if absent).
func (fsys *FS) GetXattr(ino uint64, name string) ([]byte, error) {
	var val []byte
	err := fsys.readMeta(func() error {
		in, err := fsys.getInode(ino)
		if err != nil {
			return err
		}
		fsys.putInode(in)
		k := meta.XattrKey(ino, name)
		v, err := fsys.txn.Get(k)
		if errors.Is(err, kv.ErrNotFound) {
			return syscall.ENODATA
		}
		if err != nil {
			return err
		}
		val, err = meta.DecodeBytes(k, v)
		if err != nil {
			return fmt.Errorf("%v: %w", err, syscall.EIO)
		}
		return nil
	})
	return val, pathErr("getxattr", inoName(ino), err)
}

// SetXattr sets an extended attribute; flags are XattrCreate / XattrReplace.
func (fsys *FS) SetXattr(ino uint64, name string, value []byte, flags int) error {
	err := fsys.withMeta(func(op *opState) error {
		if name == "" || len(name) > maxXattrName {
			return syscall.ERANGE
		}
		if len(value) > maxXattrSize {
			return syscall.E2BIG
		}
		in, err := fsys.getInode(ino)
		if err != nil {
			return err
		}
		defer fsys.putInode(in)
		k := meta.XattrKey(ino, name)
		_, err = fsys.txn.Get(k)
		exists := err == nil
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		if flags&XattrCreate != 0 && exists {
			return syscall.EEXIST
		}
		if flags&XattrReplace != 0 && !exists {
			return syscall.ENODATA
		}
		if err := checkModify(in, false); err != nil {
			return err
		}
		in.rec.Ctime = time.Now().UnixNano()
		return errors.Join(fsys.txn.Set(k, meta.EncodeBytes(k, value)), fsys.saveInode(in))
	})
	return pathErr("setxattr", inoName(ino), err)
}

// ListXattr lists extended attribute names.
func (fsys *FS) ListXattr(ino uint64) ([]string, error) {
	var names []string
	err := fsys.readMeta(func() error {
		in, err := fsys.getInode(ino)
		if err != nil {
			return err
		}
		fsys.putInode(in)
		return fsys.eachName(meta.PrefixXattr, ino, func(name string, _, _ []byte) error {
			names = append(names, name)
			return nil
		})
	})
	return names, pathErr("listxattr", inoName(ino), err)
}

// RemoveXattr removes an extended attribute (ENODATA if absent).
func (fsys *FS) RemoveXattr(ino uint64, name string) error {
	err := fsys.withMeta(func(op *opState) error {
		in, err := fsys.getInode(ino)
		if err != nil {
			return err
		}
		defer fsys.putInode(in)
		k := meta.XattrKey(ino, name)
		if _, err := fsys.txn.Get(k); errors.Is(err, kv.ErrNotFound) {
			return syscall.ENODATA
		} else if err != nil {
			return err
		}
		if err := checkModify(in, false); err != nil {
			return err
		}
		in.rec.Ctime = time.Now().UnixNano()
		return errors.Join(fsys.txn.Delete(k), fsys.saveInode(in))
	})
	return pathErr("removexattr", inoName(ino), err)
}
