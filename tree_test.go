package reflinkfs_test

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/reflinkfs/reflinkfs"
)

func newTreeFS(t *testing.T) *reflinkfs.FS {
	t.Helper()
	// noatime: snapshotTree reads every file, which would move the source's
	// atimes (TestAtimeTreeClone covers atimes under relatime).
	fsys, err := reflinkfs.Create(t.TempDir()+"/img", reflinkfs.Options{Size: 256 << 20, CacheSize: 8 << 20, CommitInterval: -1,
		Atime: reflinkfs.AtimeNever})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsys.Close() })
	return fsys
}

// treeBuilder makes entries by inode and fails the test on any error.
type treeBuilder struct {
	t    *testing.T
	fsys *reflinkfs.FS
}

func (b treeBuilder) dir(parent uint64, name string, mode uint32, o reflinkfs.Owner) uint64 {
	b.t.Helper()
	a, err := b.fsys.MkdirAt(parent, name, mode, o)
	if err != nil {
		b.t.Fatal(err)
	}
	return a.Ino
}

// file creates a regular file holding data at offset off (a hole before it
// when off > 0) and of the given size (sparse after the data).
func (b treeBuilder) file(parent uint64, name string, mode uint32, o reflinkfs.Owner, data []byte, off, size int64) uint64 {
	b.t.Helper()
	f, a, err := b.fsys.CreateAt(parent, name, mode, o, syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL)
	if err != nil {
		b.t.Fatal(err)
	}
	defer f.Close()
	if len(data) > 0 {
		if _, err := f.WriteAt(data, off); err != nil {
			b.t.Fatal(err)
		}
	}
	if size > off+int64(len(data)) {
		if err := f.Truncate(size); err != nil {
			b.t.Fatal(err)
		}
	}
	return a.Ino
}

func (b treeBuilder) xattr(ino uint64, name string, value []byte) {
	b.t.Helper()
	if err := b.fsys.SetXattr(ino, name, value, 0); err != nil {
		b.t.Fatal(err)
	}
}

func (b treeBuilder) times(ino uint64, atime, mtime time.Time) {
	b.t.Helper()
	if _, err := b.fsys.SetAttrIno(ino, reflinkfs.SetAttr{Atime: &atime, Mtime: &mtime}); err != nil {
		b.t.Fatal(err)
	}
}

func fill(seed byte, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// An ACL in the kernel's xattr format: user::rwx user:1000:r-x group::r-x
// mask::r-x other::---.
var testACL = []byte{
	2, 0, 0, 0,
	0x01, 0, 7, 0, 0xff, 0xff, 0xff, 0xff,
	0x02, 0, 5, 0, 0xe8, 0x03, 0, 0,
	0x04, 0, 5, 0, 0xff, 0xff, 0xff, 0xff,
	0x10, 0, 5, 0, 0xff, 0xff, 0xff, 0xff,
	0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
}

// buildSourceTree makes the tree the clone tests copy, under dir "src" of
// the root, and returns its inode number.
func buildSourceTree(t *testing.T, fsys *reflinkfs.FS) uint64 {
	b := treeBuilder{t, fsys}
	root := reflinkfs.Owner{}
	alice := reflinkfs.Owner{Uid: 1000, Gid: 1000}
	bob := reflinkfs.Owner{Uid: 2000, Gid: 3000}
	src := b.dir(reflinkfs.RootIno, "src", 0o755, root)
	a := b.dir(src, "a", 0o750, alice)
	deep := b.dir(b.dir(a, "b", 0o755, alice), "c", 0o700, bob)
	sgid := b.dir(src, "sgid", 0o2775, alice)
	sticky := b.dir(src, "tmp", 0o1777, root)
	b.dir(src, "empty-dir", 0o555, root)

	b.file(src, "empty", 0o644, root, nil, 0, 0)
	b.file(src, "small", 0o640, alice, []byte("hello, tree\n"), 0, 0)
	b.file(a, "unaligned", 0o644, bob, fill(1, 3*4096+100), 0, 0)
	b.file(deep, "big", 0o600, bob, fill(2, 300<<10), 0, 0)
	b.file(sgid, "sparse", 0o644, alice, fill(3, 8192), 1<<20, 4<<20) // hole, data, hole to 4 MiB
	b.file(sticky, "none", 0o000, bob, []byte("nobody may read me"), 0, 0)
	b.file(src, "setuid", 0o4755, root, []byte("#!/bin/true\n"), 0, 0)
	linked := b.file(a, "linked", 0o644, alice, fill(4, 5000), 0, 0)
	if _, err := fsys.LinkAt(linked, deep, "linked-too"); err != nil {
		t.Fatal(err)
	}
	// A file with a second link outside the tree: copied as one file.
	outside := b.file(src, "outside-link", 0o644, root, []byte("x"), 0, 0)
	if _, err := fsys.LinkAt(outside, reflinkfs.RootIno, "elsewhere"); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.SymlinkAt(src, "sym", "a/linked", alice); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.SymlinkAt(deep, "dangling", "/no/such/target", bob); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Mknod(src, "fifo", syscall.S_IFIFO|0o620, 0, alice); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Mknod(a, "null", syscall.S_IFCHR|0o666, 1<<8|3, root); err != nil {
		t.Fatal(err)
	}

	smallAttr, _ := fsys.Lookup(src, "small")
	b.xattr(smallAttr.Ino, "user.color", []byte("blue"))
	b.xattr(smallAttr.Ino, "user.empty", nil)
	b.xattr(smallAttr.Ino, "trusted.overlay.opaque", []byte("y"))
	b.xattr(a, "system.posix_acl_access", testACL)
	b.xattr(a, "system.posix_acl_default", testACL)
	b.xattr(linked, "user.shared-by-links", []byte("both names"))
	symAttr, _ := fsys.Lookup(src, "sym")
	b.xattr(symAttr.Ino, "trusted.on-a-symlink", []byte("s"))

	// Old, distinct times on everything, set deepest first so creating
	// entries does not disturb them.
	var all []uint64
	var walk func(ino uint64)
	walk = func(ino uint64) {
		ents, err := fsys.ReadDirIno(ino)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.Mode == syscall.S_IFDIR {
				walk(e.Ino)
			}
			all = append(all, e.Ino)
		}
	}
	walk(src)
	all = append(all, src)
	for i, ino := range all {
		at := time.Date(2010, 1, 2, 3, 4, 5, i*1000+1, time.UTC)
		mt := time.Date(2001, 6, 7, 8, 9, 10, i*1000+7, time.UTC)
		b.times(ino, at, mt)
	}
	return src
}

// treeEntry is what a clone must reproduce for one path.
type treeEntry struct {
	mode, uid, gid, rdev uint32
	size                 int64
	atime, mtime         time.Time
	content, link        string
	xattrs               map[string]string
	group                string // first path of the inode among the tree's entries
	ino                  uint64
}

func snapshotTree(t *testing.T, fsys *reflinkfs.FS, root uint64) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	first := map[uint64]string{}
	var walk func(ino uint64, rel string)
	walk = func(ino uint64, rel string) {
		a, err := fsys.GetAttr(ino)
		if err != nil {
			t.Fatal(err)
		}
		e := treeEntry{mode: a.Mode, uid: a.Uid, gid: a.Gid, rdev: a.Rdev, size: a.Size, atime: a.Atime, mtime: a.Mtime, xattrs: map[string]string{}, ino: ino}
		names, err := fsys.ListXattr(ino)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			v, err := fsys.GetXattr(ino, n)
			if err != nil {
				t.Fatal(err)
			}
			e.xattrs[n] = string(v)
		}
		switch a.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			f, err := fsys.OpenIno(ino, syscall.O_RDONLY)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, a.Size)
			if _, err := f.ReadAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			f.Close()
			e.content = string(buf)
		case syscall.S_IFLNK:
			if e.link, err = fsys.ReadlinkIno(ino); err != nil {
				t.Fatal(err)
			}
		}
		if g, ok := first[ino]; ok {
			e.group = g
		} else {
			first[ino] = rel
			e.group = rel
		}
		out[rel] = e
		if a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return
		}
		ents, err := fsys.ReadDirIno(ino)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range ents {
			walk(c.Ino, path.Join(rel, c.Name))
		}
	}
	walk(root, ".")
	return out
}

// compareTrees reports every difference between the source snapshot and
// the clone's; ownerOf maps a source entry's owner to the expected one.
func compareTrees(t *testing.T, want, got map[string]treeEntry, skipXattr func(string) bool, owner func(treeEntry) (uint32, uint32)) {
	t.Helper()
	var rels []string
	for rel := range want {
		rels = append(rels, rel)
	}
	sort.Strings(rels)
	for _, rel := range rels {
		w := want[rel]
		g, ok := got[rel]
		if !ok {
			t.Errorf("%s: missing in the clone", rel)
			continue
		}
		uid, gid := owner(w)
		if g.mode != w.mode || g.uid != uid || g.gid != gid || g.rdev != w.rdev || g.size != w.size {
			t.Errorf("%s: mode %o owner %d:%d rdev %d size %d; want %o %d:%d %d %d", rel, g.mode, g.uid, g.gid, g.rdev, g.size, w.mode, uid, gid, w.rdev, w.size)
		}
		if !g.mtime.Equal(w.mtime) || !g.atime.Equal(w.atime) {
			t.Errorf("%s: atime %v mtime %v; want %v %v", rel, g.atime.UTC(), g.mtime.UTC(), w.atime.UTC(), w.mtime.UTC())
		}
		if g.content != w.content || g.link != w.link {
			t.Errorf("%s: content (%d bytes) or link %q differs from the source (%d bytes, %q)", rel, len(g.content), g.link, len(w.content), w.link)
		}
		if g.group != w.group {
			t.Errorf("%s: is a link of %q, want of %q", rel, g.group, w.group)
		}
		wx := map[string]string{}
		for k, v := range w.xattrs {
			if skipXattr == nil || !skipXattr(k) {
				wx[k] = v
			}
		}
		if fmt.Sprint(g.xattrs) != fmt.Sprint(wx) {
			t.Errorf("%s: xattrs %q, want %q", rel, g.xattrs, wx)
		}
	}
	for rel := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s: extra entry in the clone", rel)
		}
	}
}

func sameOwner(e treeEntry) (uint32, uint32) { return e.uid, e.gid }

func TestCloneTree(t *testing.T) {
	fsys := newTreeFS(t)
	src := buildSourceTree(t, fsys)
	want := snapshotTree(t, fsys, src)
	if err := fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	before := fsys.Stats()

	var reports []int64
	start := time.Now()
	root, err := fsys.CloneTreeIno(src, reflinkfs.RootIno, "dst", reflinkfs.CloneTreeOptions{
		ProgressEvery: 5,
		Progress:      func(n int64) error { reports = append(reports, n); return nil },
	})
	if err != nil {
		t.Fatalf("CloneTreeIno: %v", err)
	}
	if !root.Btime.After(start.Add(-time.Second)) || !root.Ctime.After(start.Add(-time.Second)) {
		t.Errorf("new root btime %v ctime %v, want new", root.Btime, root.Ctime)
	}
	if a, err := fsys.Lookup(reflinkfs.RootIno, "dst"); err != nil || a.Ino != root.Ino {
		t.Fatalf("lookup dst: %+v %v, want inode %d", a, err, root.Ino)
	}
	got := snapshotTree(t, fsys, root.Ino)
	compareTrees(t, want, got, nil, sameOwner)
	for rel, g := range got {
		if g.ino == want[rel].ino {
			t.Errorf("%s: the clone is the source inode", rel)
		}
	}

	// Progress: every 5 entries, then the total (all entries but the root).
	total := int64(len(want) - 1)
	if len(reports) == 0 || reports[len(reports)-1] != total {
		t.Errorf("progress reports %v, want a last one of %d", reports, total)
	}
	for i, n := range reports[:max(len(reports)-1, 0)] {
		if n != int64(5*(i+1)) {
			t.Errorf("progress reports %v, want multiples of 5", reports)
			break
		}
	}

	// Hard links: the pair inside is a pair again; the file linked from
	// outside the tree is one file with one link.
	if a, _ := fsys.GetAttr(got["a/linked"].ino); a.Nlink != 2 {
		t.Errorf("a/linked: %d links, want 2", a.Nlink)
	}
	if a, _ := fsys.GetAttr(got["outside-link"].ino); a.Nlink != 1 {
		t.Errorf("outside-link: %d links, want 1", a.Nlink)
	}
	// Directory link counts follow their subdirectories.
	for _, rel := range []string{".", "a", "a/b/c", "empty-dir"} {
		ws, _ := fsys.GetAttr(want[rel].ino)
		gs, _ := fsys.GetAttr(got[rel].ino)
		if ws.Nlink != gs.Nlink {
			t.Errorf("%s: %d links, source has %d", rel, gs.Nlink, ws.Nlink)
		}
	}

	// Every block is shared with the source: no new space, extents at the
	// same physical places.
	for rel, w := range want {
		if w.mode&syscall.S_IFMT != syscall.S_IFREG || w.size == 0 {
			continue
		}
		we, ge := fiemapIno(t, fsys, w.ino), fiemapIno(t, fsys, got[rel].ino)
		if len(we) != len(ge) {
			t.Errorf("%s: %d extents, source has %d", rel, len(ge), len(we))
			continue
		}
		for i := range we {
			if ge[i].Logical != we[i].Logical || ge[i].Physical != we[i].Physical || ge[i].Length != we[i].Length || !ge[i].Shared {
				t.Errorf("%s: extent %d is %+v, source's is %+v", rel, i, ge[i], we[i])
			}
		}
	}
	if err := fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	after := fsys.Stats()
	if after.UsedBytes > before.UsedBytes {
		t.Errorf("used bytes grew from %d to %d by the tree clone", before.UsedBytes, after.UsedBytes)
	}
	if gotShared, grew := after.SharedBytes, after.LogicalBytes-before.LogicalBytes; gotShared < grew || grew < int64(len(want["a/b/c/big"].content)) {
		t.Errorf("shared bytes %d, logical bytes grew by %d", gotShared, grew)
	}
	fsckClean(t, fsys)

	// Writing, truncating and renaming inside the clone leaves the source alone.
	f, err := fsys.OpenIno(got["a/b/c/big"].ino, syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("changed in the clone"), 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	size := int64(10)
	if _, err := fsys.SetAttrIno(got["a/unaligned"].ino, reflinkfs.SetAttr{Size: &size}); err != nil {
		t.Fatal(err)
	}
	if err := fsys.SetXattr(got["small"].ino, "user.color", []byte("red"), 0); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Unlink(got["a/b/c"].ino, "linked-too"); err != nil {
		t.Fatal(err)
	}
	mode := uint32(0o700)
	if _, err := fsys.SetAttrIno(got["a"].ino, reflinkfs.SetAttr{Mode: &mode}); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, want, snapshotTree(t, fsys, src), nil, sameOwner)
	fsckClean(t, fsys)
}

func fiemapIno(t *testing.T, fsys *reflinkfs.FS, ino uint64) []reflinkfs.Extent {
	t.Helper()
	f, err := fsys.OpenIno(ino, syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	exts, err := f.Fiemap()
	if err != nil {
		t.Fatal(err)
	}
	return exts
}

func fsckClean(t *testing.T, fsys *reflinkfs.FS) {
	t.Helper()
	if err := fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	rep, err := fsys.Fsck(false)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() {
		t.Errorf("fsck: %v", rep.Problems)
	}
}

// A clone made for an unprivileged user: new inodes are the user's, the
// xattrs it may not set are left out, and Check can refuse entries.
func TestCloneTreeOptions(t *testing.T) {
	fsys := newTreeFS(t)
	src := buildSourceTree(t, fsys)
	want := snapshotTree(t, fsys, src)
	user := reflinkfs.Owner{Uid: 4242, Gid: 4343}
	skip := func(name string) bool { return len(name) > 8 && name[:8] == "trusted." }
	root, err := fsys.CloneTreeIno(src, reflinkfs.RootIno, "mine", reflinkfs.CloneTreeOptions{Owner: &user, SkipXattr: skip})
	if err != nil {
		t.Fatal(err)
	}
	compareTrees(t, want, snapshotTree(t, fsys, root.Ino), skip, func(treeEntry) (uint32, uint32) { return user.Uid, user.Gid })

	// Check refuses the 0000 file: the walk stops with its error and names it.
	var checked int
	_, err = fsys.CloneTreeIno(src, reflinkfs.RootIno, "refused", reflinkfs.CloneTreeOptions{Check: func(a reflinkfs.Attr) error {
		checked++
		if a.Mode&0o777 == 0 && a.Mode&syscall.S_IFMT == syscall.S_IFREG {
			return syscall.EACCES
		}
		return nil
	}})
	if !errors.Is(err, syscall.EACCES) || !bytes.Contains([]byte(err.Error()), []byte("tmp/none")) {
		t.Errorf("clone with a refusing Check: %v, want EACCES naming tmp/none", err)
	}
	if checked < 2 {
		t.Errorf("Check called %d times", checked)
	}
	// A Progress error stops the walk.
	stop := errors.New("stop")
	_, err = fsys.CloneTreeIno(src, reflinkfs.RootIno, "stopped", reflinkfs.CloneTreeOptions{ProgressEvery: 3, Progress: func(n int64) error {
		if n >= 6 {
			return stop
		}
		return nil
	}})
	if !errors.Is(err, stop) {
		t.Errorf("clone with a failing Progress: %v", err)
	}
	fsckClean(t, fsys)
}

func TestCloneTreeRefuses(t *testing.T) {
	fsys := newTreeFS(t)
	b := treeBuilder{t, fsys}
	src := b.dir(reflinkfs.RootIno, "src", 0o755, reflinkfs.Owner{})
	sub := b.dir(b.dir(src, "sub", 0o755, reflinkfs.Owner{}), "subsub", 0o755, reflinkfs.Owner{})
	file := b.file(src, "file", 0o644, reflinkfs.Owner{}, []byte("x"), 0, 0)
	b.dir(reflinkfs.RootIno, "taken", 0o755, reflinkfs.Owner{})
	for _, tc := range []struct {
		what      string
		src, dst  uint64
		name      string
		want      error
		wantEntry bool // the name exists afterwards (it did before)
	}{
		{"existing name", src, reflinkfs.RootIno, "taken", syscall.EEXIST, true},
		{"existing name (the source itself)", src, reflinkfs.RootIno, "src", syscall.EEXIST, true},
		{"into itself", src, src, "copy", syscall.EINVAL, false},
		{"below itself", src, sub, "copy", syscall.EINVAL, false},
		{"source is a file", file, reflinkfs.RootIno, "copy", syscall.ENOTDIR, false},
		{"destination is a file", src, file, "copy", syscall.ENOTDIR, false},
		{"bad name", src, reflinkfs.RootIno, "a/b", syscall.EINVAL, false},
		{"dot", src, reflinkfs.RootIno, "..", syscall.EINVAL, false},
		{"missing source", 999999, reflinkfs.RootIno, "copy", syscall.ENOENT, false},
	} {
		_, err := fsys.CloneTreeIno(tc.src, tc.dst, tc.name, reflinkfs.CloneTreeOptions{})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.what, err, tc.want)
		}
		if tc.name == ".." {
			continue
		}
		if _, err := fsys.Lookup(tc.dst, tc.name); (err == nil) != tc.wantEntry && !errors.Is(err, syscall.ENOTDIR) {
			t.Errorf("%s: lookup of the name afterwards: %v", tc.what, err)
		}
	}
	// A sibling that merely shares a prefix is fine.
	if _, err := fsys.CloneTreeIno(sub, src, "copy-of-subsub", reflinkfs.CloneTreeOptions{}); err != nil {
		t.Errorf("clone of a subdirectory into an ancestor: %v", err)
	}
	fsckClean(t, fsys)
}

// The source changes while it is cloned: each file is still a consistent
// copy of one state of itself, and the engine stays consistent.
func TestCloneTreeConcurrentWrites(t *testing.T) {
	fsys := newTreeFS(t)
	b := treeBuilder{t, fsys}
	src := b.dir(reflinkfs.RootIno, "src", 0o755, reflinkfs.Owner{})
	const files = 40
	var inos []uint64
	for i := 0; i < files; i++ {
		inos = append(inos, b.file(src, fmt.Sprintf("f%02d", i), 0o644, reflinkfs.Owner{}, bytes.Repeat([]byte{'a'}, 16<<10), 0, 0))
	}
	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		// Rewrite whole files with one letter at a time: any clone must
		// hold a single letter throughout.
		for round := byte('b'); ; round++ {
			for _, ino := range inos {
				select {
				case <-done:
					return
				default:
				}
				f, err := fsys.OpenIno(ino, syscall.O_RDWR)
				if err != nil {
					errc <- err
					return
				}
				_, err = f.WriteAt(bytes.Repeat([]byte{'a' + round%26}, 16<<10), 0)
				f.Close()
				if err != nil {
					errc <- err
					return
				}
			}
			if _, err := fsys.MkdirAt(src, fmt.Sprintf("d%d", round), 0o755, reflinkfs.Owner{}); err != nil && !errors.Is(err, syscall.EEXIST) {
				errc <- err
				return
			}
		}
	}()
	for c := 0; c < 5; c++ {
		root, err := fsys.CloneTreeIno(src, reflinkfs.RootIno, fmt.Sprintf("copy%d", c), reflinkfs.CloneTreeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ents, err := fsys.ReadDirIno(root.Ino)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.Mode != syscall.S_IFREG {
				continue
			}
			f, err := fsys.OpenIno(e.Ino, syscall.O_RDONLY)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16<<10)
			if _, err := f.ReadAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if bytes.Count(buf, buf[:1]) != len(buf) {
				t.Errorf("copy%d/%s mixes two states of the file", c, e.Name)
			}
		}
	}
	close(done)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	fsckClean(t, fsys)
}
