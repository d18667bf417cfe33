package fusefs

import (
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Names of the POSIX ACL xattrs.
const (
	aclAccessName  = "system.posix_acl_access"
	aclDefaultName = "system.posix_acl_default"
)

// xattrNameAllowed reports whether name is in a namespace the mount stores.
func (fs *fileSystem) xattrNameAllowed(name string) bool {
	switch {
	case strings.HasPrefix(name, "user."), strings.HasPrefix(name, "trusted."),
		strings.HasPrefix(name, "security."):
		return true
	case name == aclAccessName, name == aclDefaultName:
		return fs.acl
	}
	return false
}

// getXattrCached reads an xattr, answering ENODATA without the engine when
// the inode is known to have no xattrs at all (or, for security.capability,
// not that one). The kernel asks for security.capability once per inode, we
// check it on every write (killpriv.go), and the kernel asks for ACLs on
// permission checks, so this is a hot path.
func (fs *fileSystem) getXattrCached(ino uint64, name string) ([]byte, error) {
	n := fs.nodeFor(ino)
	capability := name == capabilityXattr
	fs.nodesMu.Lock()
	none, gen := n.noXattrs || capability && n.noCapability, n.xattrGen
	fs.nodesMu.Unlock()
	if none {
		return nil, syscall.ENODATA
	}
	v, err := fs.fsys.GetXattr(ino, name)
	if fs.status(err) != fuse.ENODATA {
		return v, err
	}
	if capability {
		fs.nodesMu.Lock()
		if n.xattrGen == gen {
			n.noCapability = true
		}
		fs.nodesMu.Unlock()
	}
	// Missing: learn whether the inode has any xattrs at all.
	names, lerr := fs.fsys.ListXattr(ino)
	if lerr == nil && len(names) == 0 {
		fs.nodesMu.Lock()
		if n.xattrGen == gen {
			n.noXattrs = true
		}
		fs.nodesMu.Unlock()
	}
	return nil, syscall.ENODATA
}

// xattrChanged forgets the "no xattrs" bit of ino; called after every
// change, so a reader that listed before the change cannot set the bit.
func (fs *fileSystem) xattrChanged(ino uint64) {
	n := fs.nodeFor(ino)
	fs.nodesMu.Lock()
	n.xattrGen++
	n.noXattrs, n.noCapability = false, false
	fs.nodesMu.Unlock()
}

func (fs *fileSystem) setXattr(ino uint64, name string, value []byte, flags int) error {
	err := fs.fsys.SetXattr(ino, name, value, flags)
	fs.xattrChanged(ino)
	return err
}

func (fs *fileSystem) removeXattr(ino uint64, name string) error {
	err := fs.fsys.RemoveXattr(ino, name)
	fs.xattrChanged(ino)
	return err
}

func (fs *fileSystem) GetXAttr(cancel <-chan struct{}, in *fuse.InHeader, name string, dest []byte) (uint32, fuse.Status) {
	if !fs.xattrNameAllowed(name) {
		return 0, fuse.ENODATA
	}
	v, err := fs.getXattrCached(in.NodeId, name)
	if err != nil {
		return 0, fs.status(err)
	}
	if len(dest) < len(v) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (fs *fileSystem) ListXAttr(cancel <-chan struct{}, in *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	names, err := fs.fsys.ListXattr(in.NodeId)
	if err != nil {
		return 0, fs.status(err)
	}
	var list []byte
	for _, name := range names {
		if !fs.xattrNameAllowed(name) {
			continue
		}
		list = append(list, name...)
		list = append(list, 0)
	}
	if len(dest) < len(list) {
		return uint32(len(list)), fuse.ERANGE
	}
	return uint32(copy(dest, list)), fuse.OK
}

func (fs *fileSystem) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, name string, data []byte) fuse.Status {
	if fs.readOnly() {
		return fuse.EROFS
	}
	if !fs.xattrNameAllowed(name) {
		return fuse.ENOTSUP
	}
	flags := int(in.Flags)
	if flags&^(xattrCreate|xattrReplace) != 0 {
		return fuse.EINVAL
	}
	if name == aclAccessName {
		return fs.setAccessACL(in.NodeId, data, in.SetXAttrFlags&fuse.SETXATTR_ACL_KILL_SGID != 0)
	}
	return fs.status(fs.setXattr(in.NodeId, name, data, flags))
}

// setxattr(2) flags.
const (
	xattrCreate  = 0x1
	xattrReplace = 0x2
)

func (fs *fileSystem) RemoveXAttr(cancel <-chan struct{}, in *fuse.InHeader, name string) fuse.Status {
	if fs.readOnly() {
		return fuse.EROFS
	}
	if !fs.xattrNameAllowed(name) {
		return fuse.ENOTSUP
	}
	return fs.status(fs.removeXattr(in.NodeId, name))
}
