package fusefs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/reflinkfs/reflinkfs"
)

func (fs *fileSystem) Lookup(cancel <-chan struct{}, in *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	var a reflinkfs.Attr
	var err error
	switch name {
	case ".":
		// Asked by the kernel to resolve a file handle (export support);
		// the node need not be a directory. A deleted inode (still open
		// somewhere) is not reachable by handle: ENOENT becomes ESTALE.
		a, err = fs.fsys.GetAttr(in.NodeId)
		if err == nil && a.Nlink == 0 {
			return fuse.ENOENT
		}
	default:
		a, err = fs.fsys.Lookup(in.NodeId, name)
	}
	if err != nil {
		st := fs.status(err)
		if st == fuse.ENOENT && name != "." && name != ".." {
			// Cache the negative entry: names only appear through this kernel.
			*out = fuse.EntryOut{}
			out.SetEntryTimeout(entryTimeout)
			return fuse.OK
		}
		return st
	}
	fs.fillEntry(out, &a)
	return fuse.OK
}

// newInode is what a create needs besides the name: the final mode, the
// owner, and the ACLs the new inode inherits from its directory.
type newInode struct {
	mode       uint32
	owner      reflinkfs.Owner
	accessACL  []byte // nil: none
	defaultACL []byte // nil: none (directories only)
}

// prepareNew applies owner rules (caller's uid/gid, setgid directories),
// default ACL inheritance and the umask to a create in parent.
func (fs *fileSystem) prepareNew(parent uint64, caller fuse.Caller, mode, umask uint32) (newInode, fuse.Status) {
	n := newInode{mode: mode, owner: reflinkfs.Owner{Uid: caller.Uid, Gid: caller.Gid}}
	pa, err := fs.fsys.GetAttr(parent)
	if err != nil {
		return n, fs.status(err)
	}
	if pa.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return n, fuse.ENOTDIR
	}
	isDir := mode&syscall.S_IFMT == syscall.S_IFDIR
	if pa.Mode&syscall.S_ISGID != 0 {
		n.owner.Gid = pa.Gid
		if isDir {
			n.mode |= syscall.S_ISGID
		}
	}
	if mode&syscall.S_IFMT == syscall.S_IFLNK {
		return n, fuse.OK
	}
	var def []byte
	if fs.acl {
		def, err = fs.getXattrCached(parent, aclDefaultName)
		if err != nil && fs.status(err) != fuse.ENODATA {
			return n, fs.status(err)
		}
	}
	if def == nil {
		if fs.dontMask {
			n.mode &^= umask & 0o777
		}
		return n, fuse.OK
	}
	acl, perr := parseACL(def)
	if perr != nil {
		fs.log.Warn("reflinkfs: ignoring undecodable default ACL", "dir", parent, "err", perr)
		if fs.dontMask {
			n.mode &^= umask & 0o777
		}
		return n, fuse.OK
	}
	access, newMode, extended := acl.createMasq(n.mode)
	n.mode = newMode
	if extended {
		n.accessACL = access.encode()
	}
	if isDir {
		n.defaultACL = def
	}
	return n, fuse.OK
}

// finishNew stores the inherited ACLs of a new inode.
func (fs *fileSystem) finishNew(ino uint64, n newInode) fuse.Status {
	if n.accessACL != nil {
		if err := fs.setXattr(ino, aclAccessName, n.accessACL, 0); err != nil {
			return fs.status(err)
		}
	}
	if n.defaultACL != nil {
		if err := fs.setXattr(ino, aclDefaultName, n.defaultACL, 0); err != nil {
			return fs.status(err)
		}
	}
	return fuse.OK
}

func (fs *fileSystem) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if fs.readOnly() {
		return fuse.EROFS
	}
	n, st := fs.prepareNew(in.NodeId, in.Caller, in.Mode&07777|syscall.S_IFDIR, in.Umask)
	if !st.Ok() {
		return st
	}
	a, err := fs.fsys.MkdirAt(in.NodeId, name, n.mode&07777, n.owner)
	if err != nil {
		return fs.status(err)
	}
	if st := fs.finishNew(a.Ino, n); !st.Ok() {
		return st
	}
	fs.fillEntry(out, &a)
	return fuse.OK
}

func (fs *fileSystem) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if fs.readOnly() {
		return fuse.EROFS
	}
	n, st := fs.prepareNew(in.NodeId, in.Caller, in.Mode, in.Umask)
	if !st.Ok() {
		return st
	}
	a, err := fs.fsys.Mknod(in.NodeId, name, n.mode, in.Rdev, n.owner)
	if err != nil {
		return fs.status(err)
	}
	if st := fs.finishNew(a.Ino, n); !st.Ok() {
		return st
	}
	fs.fillEntry(out, &a)
	return fuse.OK
}

func (fs *fileSystem) Symlink(cancel <-chan struct{}, in *fuse.InHeader, target string, name string, out *fuse.EntryOut) fuse.Status {
	if fs.readOnly() {
		return fuse.EROFS
	}
	n, st := fs.prepareNew(in.NodeId, in.Caller, syscall.S_IFLNK|0o777, 0)
	if !st.Ok() {
		return st
	}
	a, err := fs.fsys.SymlinkAt(in.NodeId, name, target, n.owner)
	if err != nil {
		return fs.status(err)
	}
	fs.fillEntry(out, &a)
	return fuse.OK
}

func (fs *fileSystem) Readlink(cancel <-chan struct{}, in *fuse.InHeader) ([]byte, fuse.Status) {
	target, err := fs.fsys.ReadlinkIno(in.NodeId)
	if err != nil {
		return nil, fs.status(err)
	}
	return []byte(target), fuse.OK
}

func (fs *fileSystem) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if fs.readOnly() {
		return fuse.EROFS
	}
	a, err := fs.fsys.LinkAt(in.Oldnodeid, in.NodeId, name)
	if err != nil {
		return fs.status(err)
	}
	fs.fillEntry(out, &a)
	return fuse.OK
}

func (fs *fileSystem) Unlink(cancel <-chan struct{}, in *fuse.InHeader, name string) fuse.Status {
	if fs.readOnly() {
		return fuse.EROFS
	}
	return fs.status(fs.fsys.Unlink(in.NodeId, name))
}

func (fs *fileSystem) Rmdir(cancel <-chan struct{}, in *fuse.InHeader, name string) fuse.Status {
	if fs.readOnly() {
		return fuse.EROFS
	}
	return fs.status(fs.fsys.Rmdir(in.NodeId, name))
}

func (fs *fileSystem) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName string, newName string) fuse.Status {
	if fs.readOnly() {
		return fuse.EROFS
	}
	const known = reflinkfs.RenameNoReplace | reflinkfs.RenameExchange
	if in.Flags&^known != 0 {
		// RENAME_WHITEOUT is for overlay upper layers; not supported.
		return fuse.EINVAL
	}
	return fs.status(fs.fsys.RenameAt(in.NodeId, oldName, in.Newdir, newName, int(in.Flags)))
}

// ---- directory handles ----

func (fs *fileSystem) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	a, err := fs.fsys.GetAttr(in.NodeId)
	if err != nil {
		return fs.status(err)
	}
	if a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return fuse.ENOTDIR
	}
	// An engine open keeps the inode alive if the directory is removed
	// while open, so fstat still answers (nlink 0), as for files.
	f, err := fs.fsys.OpenIno(in.NodeId, engineFlags(in.Flags)&syscall.O_NOATIME|syscall.O_RDONLY)
	if err != nil {
		return fs.status(err)
	}
	out.Fh = fs.addDir(&dirHandle{ino: in.NodeId, f: f})
	return fuse.OK
}

func (fs *fileSystem) ReleaseDir(in *fuse.ReleaseIn) {
	fs.handlesMu.Lock()
	h := fs.dirs[in.Fh]
	delete(fs.dirs, in.Fh)
	fs.handlesMu.Unlock()
	if h == nil {
		return
	}
	if err := h.f.Close(); err != nil {
		fs.log.Warn("reflinkfs: close directory", "ino", h.ino, "err", err)
	}
}

// listing returns the directory's entries, "." and ".." first; it takes a
// new snapshot when reading starts over at offset 0.
func (fs *fileSystem) listing(h *dirHandle, offset uint64) ([]reflinkfs.DirEntry, fuse.Status) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.entries == nil || offset == 0 {
		list, err := h.f.ReadDir()
		if err != nil {
			return nil, fs.status(err)
		}
		parent := h.ino
		if h.ino != reflinkfs.RootIno {
			if pa, err := fs.fsys.Lookup(h.ino, ".."); err == nil {
				parent = pa.Ino
			}
		}
		entries := make([]reflinkfs.DirEntry, 0, len(list)+2)
		entries = append(entries,
			reflinkfs.DirEntry{Name: ".", Ino: h.ino, Mode: syscall.S_IFDIR},
			reflinkfs.DirEntry{Name: "..", Ino: parent, Mode: syscall.S_IFDIR})
		for _, e := range list {
			if e.Name == "." || e.Name == ".." {
				continue
			}
			entries = append(entries, e)
		}
		h.entries = entries
	}
	return h.entries, fuse.OK
}

// handleListing returns the listing of the open directory handle in.Fh.
func (fs *fileSystem) handleListing(in *fuse.ReadIn) ([]reflinkfs.DirEntry, fuse.Status) {
	h := fs.dir(in.Fh)
	if h == nil {
		return nil, fuse.EBADF
	}
	return fs.listing(h, in.Offset)
}

func (fs *fileSystem) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	entries, st := fs.handleListing(in)
	if !st.Ok() {
		return st
	}
	for i := in.Offset; i < uint64(len(entries)); i++ {
		e := entries[i]
		if !out.AddDirEntry(fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: e.Mode, Off: i + 1}) {
			break
		}
	}
	return fuse.OK
}

func (fs *fileSystem) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	entries, st := fs.handleListing(in)
	if !st.Ok() {
		return st
	}
	for i := in.Offset; i < uint64(len(entries)); i++ {
		e := entries[i]
		var a reflinkfs.Attr
		dot := e.Name == "." || e.Name == ".."
		if !dot {
			var err error
			a, err = fs.fsys.GetAttr(e.Ino)
			if err != nil {
				// Removed since the snapshot: give a plain entry, no lookup.
				dot = true
			}
		}
		eo := out.AddDirLookupEntry(fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: e.Mode, Off: i + 1})
		if eo == nil {
			break
		}
		if !dot {
			// The kernel takes a reference for every non-dot entry it gets.
			fs.fillEntry(eo, &a)
		}
	}
	return fuse.OK
}

// FsyncDir makes the directory's entries durable: the engine commits
// everything, as namespace changes live in one transaction.
func (fs *fileSystem) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if fs.readOnly() {
		return fuse.OK
	}
	return fs.status(fs.fsys.Sync())
}
