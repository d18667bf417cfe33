package reflinkfs

// Cloning a directory tree in one call. Built only on the inode API
// (ReadDirIno, GetAttr, MkdirAt, CreateAt, SymlinkAt, Mknod, LinkAt,
// OpenIno + CloneRange, ListXattr/GetXattr/SetXattr, SetAttrIno), so it
// needs no locks of its own: every step is an ordinary engine operation.
// Its reads of the source are not accesses: like a file clone, a tree clone
// leaves the source's atimes alone (and gives the copy the same ones).

import (
	"errors"
	"io/fs"
	"path"
	"syscall"
)

// CloneTreeOptions tune CloneTreeIno. The zero value copies everything,
// owners included, and reports no progress.
type CloneTreeOptions struct {
	// Progress, if set, is called with the number of entries cloned so far
	// every ProgressEvery entries, and once with the total at the end. A
	// non-nil error stops the clone and is returned (the FUSE adapter stops
	// when the caller is interrupted).
	Progress func(entries int64) error
	// ProgressEvery is the number of entries between Progress calls;
	// default 1024.
	ProgressEvery int64

	// Owner, if set, owns every new inode instead of the source inode's
	// owner: what a copy made by an unprivileged user gets (cp -a run by
	// that user).
	Owner *Owner
	// CopyAs, if set, returns the owner and permission bits (07777) the
	// copy of each source entry gets, the root included, in place of
	// Owner and the source's bits: the FUSE adapter gives a caller what
	// its own cp -a would make (no set-ID bits on a file it does not own).
	CopyAs func(src Attr) (own Owner, perm uint32)
	// Check, if set, is called with the attributes of every source entry
	// (the root included) before it is copied; an error stops the clone and
	// is returned. The FUSE adapter refuses entries the caller may not read.
	Check func(src Attr) error
	// SkipXattr, if set, reports extended attributes not to copy (an
	// unprivileged caller may not set trusted.* or security.*).
	SkipXattr func(name string) bool
}

const defaultProgressEvery = 1024

// CloneTreeIno makes dstParent/name a copy of the tree rooted at directory
// srcIno: directories, regular files (reflinked: they share every block),
// symlinks, special files, hard links within the tree kept as hard links,
// xattrs (POSIX ACL xattrs included), mode, ownership and times (atime,
// mtime; ctime and btime are new). It returns the new directory's Attr.
//
// dstParent/name must not exist (EEXIST); srcIno must be a directory
// (ENOTDIR); a directory cannot be cloned into itself or below itself
// (EINVAL). A directory's metadata is applied after its children, so
// creating them does not disturb its times.
//
// Consistency: there is no tree-wide snapshot. Each regular file is a
// consistent clone of itself at one instant (CloneRange of the whole file
// under the file's lock), but the source may change while the tree is
// walked: entries removed meanwhile are skipped, entries added after their
// directory was listed are not copied. The new tree is visible under its
// name while it is being filled. On an error the walk stops and the partial
// copy is left in place (as cp -a leaves it); the error names the entry
// relative to the source root.
func (fsys *FS) CloneTreeIno(srcIno, dstParent uint64, name string, o CloneTreeOptions) (Attr, error) {
	if err := checkName(name); err != nil {
		return Attr{}, pathErr("clonetree", name, err)
	}
	src, err := fsys.GetAttr(srcIno)
	if err != nil {
		return Attr{}, err
	}
	if !isDir(src.Mode) {
		return Attr{}, pathErr("clonetree", inoName(srcIno), syscall.ENOTDIR)
	}
	below, err := fsys.isBelow(dstParent, srcIno)
	if err != nil {
		return Attr{}, err
	}
	if below {
		return Attr{}, pathErr("clonetree", name, syscall.EINVAL)
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = defaultProgressEvery
	}
	if o.Check != nil {
		if err := o.Check(src); err != nil {
			return Attr{}, treeErr(".", err)
		}
	}
	own, perm := o.copyAs(src)
	root, err := fsys.MkdirAt(dstParent, name, perm, own)
	if err != nil {
		return Attr{}, err
	}
	t := &treeCloner{fsys: fsys, o: o, root: root.Ino, links: map[uint64]uint64{}}
	err = t.fill(src, root.Ino, "")
	if err == nil {
		root, err = t.finish(src, root.Ino, ".")
	}
	if err == nil && o.Progress != nil {
		err = o.Progress(t.entries)
	}
	return root, err
}

// copyAs returns the owner and permission bits of src's copy.
func (o *CloneTreeOptions) copyAs(src Attr) (Owner, uint32) {
	switch {
	case o.CopyAs != nil:
		own, perm := o.CopyAs(src)
		return own, perm & 07777
	case o.Owner != nil:
		return *o.Owner, src.Mode & 07777
	}
	return Owner{Uid: src.Uid, Gid: src.Gid}, src.Mode & 07777
}

// isBelow reports whether directory dir is top or lies below it, walking
// up from dir through "..".
func (fsys *FS) isBelow(dir, top uint64) (bool, error) {
	for i := 0; i < 1<<16; i++ {
		if dir == top {
			return true, nil
		}
		if dir == RootIno {
			return false, nil
		}
		up, err := fsys.Lookup(dir, "..")
		if err != nil {
			return false, err
		}
		dir = up.Ino
	}
	return false, pathErr("clonetree", inoName(dir), syscall.ELOOP)
}

// treeCloner is the state of one CloneTreeIno walk.
type treeCloner struct {
	fsys *FS
	o    CloneTreeOptions
	root uint64 // the new tree's root, never copied into itself
	// links maps a source inode with several links to its copy, so later
	// names of it become links to the copy.
	links   map[uint64]uint64
	entries int64
}

// treeErr names the entry an error happened at, keeping the errno.
func treeErr(rel string, err error) error {
	return &fs.PathError{Op: "clonetree", Path: rel, Err: unwrapPath(err)}
}

// gone reports whether err says the source entry vanished meanwhile.
func gone(err error) bool { return errors.Is(err, syscall.ENOENT) }

// fill copies the entries of source directory src into the new directory
// dst; rel is src's path relative to the source root.
func (t *treeCloner) fill(src Attr, dst uint64, rel string) error {
	ents, err := t.fsys.readDir(src.Ino, false)
	if gone(err) {
		return nil // removed meanwhile: its copy stays empty
	}
	if err != nil {
		return treeErr(path.Join(".", rel), err)
	}
	for _, e := range ents {
		if e.Ino == t.root {
			continue // the new tree itself, moved into the source meanwhile
		}
		erel := path.Join(rel, e.Name)
		if err := t.entry(e, dst, erel); err != nil {
			return err
		}
		t.entries++
		if t.o.Progress != nil && t.entries%t.o.ProgressEvery == 0 {
			if err := t.o.Progress(t.entries); err != nil {
				return err
			}
		}
	}
	return nil
}

// entry copies one source entry into directory dst.
func (t *treeCloner) entry(e DirEntry, dst uint64, rel string) error {
	fsys := t.fsys
	a, err := fsys.GetAttr(e.Ino)
	if gone(err) || err == nil && a.Nlink == 0 {
		return nil // removed since the listing
	}
	if err != nil {
		return treeErr(rel, err)
	}
	if t.o.Check != nil {
		if err := t.o.Check(a); err != nil {
			return treeErr(rel, err)
		}
	}
	if !isDir(a.Mode) && a.Nlink > 1 {
		if first, ok := t.links[a.Ino]; ok {
			if _, err := fsys.LinkAt(first, dst, e.Name); err != nil {
				return treeErr(rel, err)
			}
			return nil
		}
	}
	own, perm := t.o.copyAs(a)
	var made Attr
	switch a.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		if made, err = fsys.MkdirAt(dst, e.Name, perm, own); err != nil {
			return treeErr(rel, err)
		}
		if err := t.fill(a, made.Ino, rel); err != nil {
			return err
		}
		_, err = t.finish(a, made.Ino, rel)
		return err
	case syscall.S_IFREG:
		var skip bool
		if made, skip, err = t.cloneFile(a, dst, e.Name, perm, own); err != nil {
			return treeErr(rel, err)
		}
		if skip {
			return nil
		}
	case syscall.S_IFLNK:
		target, err := fsys.readlink(a.Ino, false)
		if gone(err) {
			return nil
		}
		if err != nil {
			return treeErr(rel, err)
		}
		if made, err = fsys.SymlinkAt(dst, e.Name, target, own); err != nil {
			return treeErr(rel, err)
		}
	default: // FIFO, socket, device
		if made, err = fsys.Mknod(dst, e.Name, a.Mode&syscall.S_IFMT|perm, a.Rdev, own); err != nil {
			return treeErr(rel, err)
		}
	}
	if a.Nlink > 1 {
		t.links[a.Ino] = made.Ino
	}
	_, err = t.finish(a, made.Ino, rel)
	return err
}

// cloneFile creates dst/name as a clone of the whole regular file src. skip
// is set when the source vanished before it could be opened (the new entry
// is removed again).
func (t *treeCloner) cloneFile(src Attr, dst uint64, name string, perm uint32, own Owner) (Attr, bool, error) {
	fsys := t.fsys
	sf, err := fsys.OpenIno(src.Ino, syscall.O_RDONLY)
	if gone(err) {
		return Attr{}, true, nil
	}
	if err != nil {
		return Attr{}, false, err
	}
	defer sf.Close()
	df, made, err := fsys.CreateAt(dst, name, perm, own, syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL)
	if err != nil {
		return Attr{}, false, err
	}
	// Length 0: to the source's end of file as it is under its lock, so
	// the copy is one consistent state even if the source is being written.
	err = df.CloneRange(sf, 0, 0, 0)
	if cerr := df.Close(); err == nil {
		err = cerr
	}
	return made, false, err
}

// finish gives the copy dst of src its extended attributes and times, last
// because creating children changes a directory's times. Mode and owner
// were set when dst was created.
func (t *treeCloner) finish(src Attr, dst uint64, rel string) (Attr, error) {
	fsys := t.fsys
	names, err := fsys.ListXattr(src.Ino)
	if err != nil && !gone(err) {
		return Attr{}, treeErr(rel, err)
	}
	for _, n := range names {
		if t.o.SkipXattr != nil && t.o.SkipXattr(n) {
			continue
		}
		v, err := fsys.GetXattr(src.Ino, n)
		if errors.Is(err, syscall.ENODATA) || gone(err) {
			continue // removed meanwhile
		}
		if err != nil {
			return Attr{}, treeErr(rel, err)
		}
		if err := fsys.SetXattr(dst, n, v, 0); err != nil {
			return Attr{}, treeErr(rel, err)
		}
	}
	atime, mtime := src.Atime, src.Mtime
	a, err := fsys.SetAttrIno(dst, SetAttr{Atime: &atime, Mtime: &mtime})
	if err != nil {
		return Attr{}, treeErr(rel, err)
	}
	return a, nil
}
