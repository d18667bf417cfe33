package fusefs

import (
	"encoding/binary"
	"errors"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/reflinkfs/reflinkfs"
)

// With FUSE_POSIX_ACL the kernel enforces ACLs but leaves keeping the mode
// and the access ACL in step, and default ACL inheritance, to the daemon.
// ACLs travel in the kernel's xattr format (linux/posix_acl_xattr.h): a
// little-endian u32 version 2, then entries {u16 tag, u16 perm, u32 id}.

const aclXattrVersion = 2

// ACL entry tags.
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
)

type aclEntry struct {
	tag, perm uint16
	id        uint32
}

type posixACL []aclEntry

var errBadACL = errors.New("malformed POSIX ACL xattr")

func parseACL(b []byte) (posixACL, error) {
	if len(b) < 4 || (len(b)-4)%8 != 0 || binary.LittleEndian.Uint32(b) != aclXattrVersion {
		return nil, errBadACL
	}
	var acl posixACL
	for p := b[4:]; len(p) > 0; p = p[8:] {
		acl = append(acl, aclEntry{
			tag:  binary.LittleEndian.Uint16(p),
			perm: binary.LittleEndian.Uint16(p[2:]),
			id:   binary.LittleEndian.Uint32(p[4:]),
		})
	}
	// The rules of the kernel's posix_acl_valid, minus ordering: one each
	// of USER_OBJ, GROUP_OBJ, OTHER, at most one MASK, required with named
	// entries; permissions are rwx bits.
	var count [0x21]int
	named := false
	for _, e := range acl {
		switch e.tag {
		case aclUserObj, aclGroupObj, aclMask, aclOther:
			count[e.tag]++
		case aclUser, aclGroup:
			named = true
		default:
			return nil, errBadACL
		}
		if e.perm&^7 != 0 {
			return nil, errBadACL
		}
	}
	if count[aclUserObj] != 1 || count[aclGroupObj] != 1 || count[aclOther] != 1 || count[aclMask] > 1 {
		return nil, errBadACL
	}
	if named && count[aclMask] == 0 {
		return nil, errBadACL
	}
	return acl, nil
}

func (acl posixACL) encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, aclXattrVersion)
	for _, e := range acl {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// extended reports whether the ACL says more than the mode bits can.
func (acl posixACL) extended() bool {
	for _, e := range acl {
		if e.tag&(aclUser|aclGroup|aclMask) != 0 {
			return true
		}
	}
	return false
}

// modeBits returns the permission bits the ACL implies: owner from
// USER_OBJ, group from MASK if present (else GROUP_OBJ), other from OTHER.
func (acl posixACL) modeBits() uint32 {
	var user, group, mask, other uint32
	hasMask := false
	for _, e := range acl {
		p := uint32(e.perm & 7)
		switch e.tag {
		case aclUserObj:
			user = p
		case aclGroupObj:
			group = p
		case aclMask:
			mask, hasMask = p, true
		case aclOther:
			other = p
		}
	}
	if hasMask {
		group = mask
	}
	return user<<6 | group<<3 | other
}

// chmod returns a copy with USER_OBJ, MASK (or GROUP_OBJ) and OTHER set
// from mode, as chmod(2) does to an access ACL.
func (acl posixACL) chmod(mode uint32) posixACL {
	out := append(posixACL(nil), acl...)
	hasMask := false
	for _, e := range out {
		if e.tag == aclMask {
			hasMask = true
		}
	}
	for i := range out {
		switch e := &out[i]; {
		case e.tag == aclUserObj:
			e.perm = uint16(mode >> 6 & 7)
		case e.tag == aclMask, e.tag == aclGroupObj && !hasMask:
			e.perm = uint16(mode >> 3 & 7)
		case e.tag == aclOther:
			e.perm = uint16(mode & 7)
		}
	}
	return out
}

// createMasq derives a new inode's access ACL from its directory's default
// ACL and the mode asked for (the umask is ignored then): each entry that
// maps to a mode class is limited by that class, and the mode by the entry.
// It returns the access ACL, the resulting mode, and whether the ACL must be
// stored (it says more than the mode).
func (acl posixACL) createMasq(mode uint32) (posixACL, uint32, bool) {
	out := append(posixACL(nil), acl...)
	var groupObj, mask *aclEntry
	for i := range out {
		e := &out[i]
		switch e.tag {
		case aclUserObj:
			e.perm &= uint16(mode >> 6 & 7)
			mode &= uint32(e.perm)<<6 | ^uint32(0o700)
		case aclGroupObj:
			groupObj = e
		case aclMask:
			mask = e
		case aclOther:
			e.perm &= uint16(mode & 7)
			mode &= uint32(e.perm) | ^uint32(0o007)
		}
	}
	g := mask
	if g == nil {
		g = groupObj
	}
	if g != nil {
		g.perm &= uint16(mode >> 3 & 7)
		mode &= uint32(g.perm)<<3 | ^uint32(0o070)
	}
	return out, mode, out.extended()
}

// setAccessACL stores an access ACL set through setxattr (setfacl) and
// brings the mode in step. An ACL the mode expresses fully is not stored,
// as on local filesystems.
func (fs *fileSystem) setAccessACL(ino uint64, value []byte, killSgid bool) fuse.Status {
	acl, err := parseACL(value)
	if err != nil {
		return fuse.EINVAL
	}
	a, err := fs.fsys.GetAttr(ino)
	if err != nil {
		return fs.status(err)
	}
	mode := a.Mode&^0o777&07777 | acl.modeBits()
	if killSgid {
		mode &^= syscall.S_ISGID
	}
	if acl.extended() {
		if err := fs.setXattr(ino, aclAccessName, value, 0); err != nil {
			return fs.status(err)
		}
	} else if err := fs.removeXattr(ino, aclAccessName); err != nil && fs.status(err) != fuse.ENODATA {
		return fs.status(err)
	}
	if mode != a.Mode&07777 {
		if _, err := fs.fsys.SetAttrIno(ino, reflinkfs.SetAttr{Mode: &mode}); err != nil {
			return fs.status(err)
		}
	}
	return fuse.OK
}

// chmodACL updates the access ACL of ino, if it has one, after its mode
// changed to mode.
func (fs *fileSystem) chmodACL(ino uint64, mode uint32) fuse.Status {
	v, err := fs.getXattrCached(ino, aclAccessName)
	if err != nil {
		if st := fs.status(err); st != fuse.ENODATA {
			return st
		}
		return fuse.OK
	}
	acl, err := parseACL(v)
	if err != nil {
		fs.log.Warn("reflinkfs: replacing undecodable access ACL on chmod", "ino", ino, "err", err)
		return fs.status(fs.removeXattr(ino, aclAccessName))
	}
	return fs.status(fs.setXattr(ino, aclAccessName, acl.chmod(mode).encode(), 0))
}
