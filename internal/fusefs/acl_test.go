package fusefs

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/reflinkfs/reflinkfs"
)

func mkACL(entries ...aclEntry) posixACL { return posixACL(entries) }

func TestACLModeBitsAndChmod(t *testing.T) {
	acl := mkACL(
		aclEntry{tag: aclUserObj, perm: 7},
		aclEntry{tag: aclUser, perm: 6, id: 1000},
		aclEntry{tag: aclGroupObj, perm: 5},
		aclEntry{tag: aclMask, perm: 4},
		aclEntry{tag: aclOther, perm: 1},
	)
	if got := acl.modeBits(); got != 0o741 {
		t.Errorf("modeBits %o, want 0741 (group bits from the mask)", got)
	}
	if !acl.extended() {
		t.Errorf("ACL with a named user not extended")
	}
	ch := acl.chmod(0o650)
	if ch.modeBits() != 0o650 || ch[2].perm != 5 || ch[1].perm != 6 {
		t.Errorf("chmod 0650: %+v", ch)
	}
	if acl[0].perm != 7 {
		t.Errorf("chmod modified its receiver")
	}
	minimal := mkACL(aclEntry{tag: aclUserObj, perm: 6}, aclEntry{tag: aclGroupObj, perm: 4}, aclEntry{tag: aclOther, perm: 0})
	if minimal.extended() || minimal.modeBits() != 0o640 || minimal.chmod(0o700).modeBits() != 0o700 {
		t.Errorf("minimal ACL: extended %v bits %o", minimal.extended(), minimal.modeBits())
	}
}

func TestACLCreateMasq(t *testing.T) {
	def := mkACL(
		aclEntry{tag: aclUserObj, perm: 7},
		aclEntry{tag: aclUser, perm: 7, id: 1000},
		aclEntry{tag: aclGroupObj, perm: 5},
		aclEntry{tag: aclMask, perm: 7},
		aclEntry{tag: aclOther, perm: 0},
	)
	access, mode, ext := def.createMasq(0o100666)
	if mode != 0o100660 || !ext {
		t.Errorf("file from 0666: mode %o extended %v, want 0100660 true", mode, ext)
	}
	if access[0].perm != 6 || access[3].perm != 6 || access[4].perm != 0 || access[1].perm != 7 {
		t.Errorf("access ACL %+v", access)
	}
	plain := mkACL(aclEntry{tag: aclUserObj, perm: 7}, aclEntry{tag: aclGroupObj, perm: 5}, aclEntry{tag: aclOther, perm: 5})
	if _, mode, ext := plain.createMasq(0o40777); mode != 0o40755 || ext {
		t.Errorf("dir from minimal default ACL: mode %o extended %v", mode, ext)
	}
}

func TestACLParseRejectsMalformed(t *testing.T) {
	good := mkACL(aclEntry{tag: aclUserObj, perm: 7}, aclEntry{tag: aclGroupObj, perm: 5}, aclEntry{tag: aclOther, perm: 5}).encode()
	if acl, err := parseACL(good); err != nil || !bytes.Equal(acl.encode(), good) {
		t.Fatalf("parse of a valid ACL: %v", err)
	}
	for name, b := range map[string][]byte{
		"empty":       nil,
		"bad version": append([]byte{1, 0, 0, 0}, good[4:]...),
		"torn entry":  good[:len(good)-3],
		"no other":    good[:len(good)-8],
		"user without mask": mkACL(aclEntry{tag: aclUserObj}, aclEntry{tag: aclUser, id: 5},
			aclEntry{tag: aclGroupObj}, aclEntry{tag: aclOther}).encode(),
	} {
		if _, err := parseACL(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func FuzzParseACL(f *testing.F) {
	f.Add(mkACL(aclEntry{tag: aclUserObj, perm: 7}, aclEntry{tag: aclGroupObj, perm: 5}, aclEntry{tag: aclOther, perm: 5}).encode())
	f.Add([]byte{2, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		acl, err := parseACL(b)
		if err != nil {
			return
		}
		if !bytes.Equal(acl.encode(), b) {
			t.Fatalf("encode(parse(x)) != x")
		}
		_, mode, _ := acl.createMasq(0o100777)
		if mode&^0o100777 != 0 {
			t.Fatalf("createMasq added mode bits: %o", mode)
		}
		if acl.chmod(0o751).modeBits() != 0o751 {
			t.Fatalf("chmod does not round-trip through modeBits")
		}
	})
}

// The "no xattrs" bit answers security.capability without the engine and
// is cleared by any xattr change. Needs no mount.
func TestNoXattrsBit(t *testing.T) {
	fsys, err := reflinkfs.Create(filepath.Join(t.TempDir(), "img"), reflinkfs.Options{Size: 1 << 30, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	f, a, err := fsys.CreateAt(reflinkfs.RootIno, "f", 0o644, reflinkfs.Owner{}, 0x2 /* O_RDWR */)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	fs := newFileSystem(fsys, Options{Logger: testLogger(t), DefaultPermissions: true})
	hdr := &fuse.InHeader{NodeId: a.Ino}
	buf := make([]byte, 100)
	if _, st := fs.GetXAttr(nil, hdr, "security.capability", buf); st != fuse.ENODATA {
		t.Fatalf("first lookup: %v", st)
	}
	if !fs.nodeFor(a.Ino).noXattrs {
		t.Fatalf("no-xattrs bit not set after a miss on an inode without xattrs")
	}
	if st := fs.SetXAttr(nil, &fuse.SetXAttrIn{InHeader: *hdr}, "security.capability", []byte("cap")); !st.Ok() {
		t.Fatalf("setxattr: %v", st)
	}
	if fs.nodeFor(a.Ino).noXattrs {
		t.Fatalf("no-xattrs bit survived a setxattr")
	}
	if n, st := fs.GetXAttr(nil, hdr, "security.capability", buf); !st.Ok() || string(buf[:n]) != "cap" {
		t.Fatalf("after setxattr: %q %v", buf[:n], st)
	}
	if n, st := fs.GetXAttr(nil, hdr, "security.capability", nil); st != fuse.ERANGE || n != 3 {
		t.Fatalf("size query: %d %v, want 3 ERANGE", n, st)
	}
	if st := fs.RemoveXAttr(nil, hdr, "security.capability"); !st.Ok() {
		t.Fatal(st)
	}
	if _, st := fs.GetXAttr(nil, hdr, "security.capability", buf); st != fuse.ENODATA || !fs.nodeFor(a.Ino).noXattrs {
		t.Fatalf("after removexattr: %v, bit %v", st, fs.nodeFor(a.Ino).noXattrs)
	}
	fs.looked(a.Ino)
	fs.Forget(a.Ino, 1)
	if _, ok := fs.nodes[a.Ino]; ok {
		t.Errorf("node state kept after the kernel forgot the node")
	}
}
