package reflinkfs_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

func newFS(t *testing.T) (*reflinkfs.FS, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	fsys, err := reflinkfs.Create(dir, reflinkfs.Options{Size: 64 << 20, CacheSize: 1 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsys.Close() })
	return fsys, dir
}

func wantErrno(t *testing.T, err error, want syscall.Errno) {
	t.Helper()
	var got syscall.Errno
	if !errors.As(err, &got) || got != want {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

func checkFsck(t *testing.T, fsys *reflinkfs.FS) {
	t.Helper()
	rep, err := fsys.Fsck(false)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() {
		t.Fatalf("fsck: %s", strings.Join(rep.Problems, "\n"))
	}
}

func writeFile(t *testing.T, fsys *reflinkfs.FS, name string, data []byte) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, fsys *reflinkfs.FS, name string) []byte {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	buf := make([]byte, fi.Size())
	if _, err := f.ReadAt(buf, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return buf
}

func TestOpenRefusesBadImages(t *testing.T) {
	tmp := t.TempDir()
	if _, err := reflinkfs.Open(tmp, reflinkfs.Options{}); err == nil || !strings.Contains(err.Error(), "not a reflinkfs image") {
		t.Fatalf("plain directory: %v", err)
	}
	if _, err := reflinkfs.Open(filepath.Join(tmp, "missing"), reflinkfs.Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing directory: %v", err)
	}
	fsys, dir := newFS(t)
	// A second open while the first holds the image is refused.
	if _, err := reflinkfs.Open(dir, reflinkfs.Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v", err)
	}
	fsys.Close()
	os.WriteFile(filepath.Join(dir, "reflinkfs-image"), []byte("reflinkfs image\nformat 99\n"), 0o644)
	if _, err := reflinkfs.Open(dir, reflinkfs.Options{}); err == nil || !strings.Contains(err.Error(), "version 99") {
		t.Fatalf("unknown version: %v", err)
	}
	if _, err := reflinkfs.Create(dir, reflinkfs.Options{}); err == nil {
		t.Fatal("Create over an existing image succeeded")
	}
}

func TestUnlinkedOpenFileSurvivesUntilClose(t *testing.T) {
	fsys, _ := newFS(t)
	data := bytes.Repeat([]byte("x"), 100000)
	writeFile(t, fsys, "a", data)
	f, err := fsys.OpenFile("a", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Stat("a"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat after remove: %v", err)
	}
	buf := make([]byte, len(data))
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data) {
		t.Fatalf("read of unlinked open file: %v", err)
	}
	if used := fsys.Stats().UsedBytes; used < int64(len(data)) {
		t.Fatalf("blocks freed while open: used %d", used)
	}
	checkFsck(t, fsys)
	f.Close()
	if used := fsys.Stats().UsedBytes; used != 0 {
		t.Fatalf("blocks not freed at close: used %d", used)
	}
	checkFsck(t, fsys)
}

func TestOrphanFreedAfterCrash(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	fsys, err := reflinkfs.Create(dir, reflinkfs.Options{Size: 64 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, fsys, "a", bytes.Repeat([]byte("y"), 50000))
	f, _ := fsys.OpenFile("a", os.O_RDONLY, 0)
	fsys.Remove("a")
	if err := fsys.Sync(); err != nil { // the orphan record is durable
		t.Fatal(err)
	}
	_ = f
	fsys.Abandon() // crash with the file still open
	fsys, err = reflinkfs.Open(dir, reflinkfs.Options{CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	if st := fsys.Stats(); st.UsedBytes != 0 || st.Inodes != 1 {
		t.Fatalf("orphan not freed at open: %+v", st)
	}
	checkFsck(t, fsys)
}

func TestUnsyncedChangesLostSyncedKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	fsys, _ := reflinkfs.Create(dir, reflinkfs.Options{Size: 64 << 20, CommitInterval: -1})
	writeFile(t, fsys, "kept", []byte("durable"))
	f, _ := fsys.OpenFile("kept", os.O_RDWR, 0)
	f.Sync()
	writeFile(t, fsys, "lost", []byte("not synced"))
	f.WriteAt([]byte("DUR"), 0)
	fsys.Abandon()
	fsys, err := reflinkfs.Open(dir, reflinkfs.Options{CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	if got := readFile(t, fsys, "kept"); string(got) != "durable" {
		t.Fatalf("kept = %q", got)
	}
	if _, err := fsys.Stat("lost"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("unsynced file exists: %v", err)
	}
	checkFsck(t, fsys)
}

func TestNamespace(t *testing.T) {
	fsys, dir := newFS(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(fsys.Mkdir("d", 0o755))
	must(fsys.Mkdir("d/e", 0o700))
	writeFile(t, fsys, "d/f", []byte("one"))
	writeFile(t, fsys, "g", []byte("two"))
	wantErrno(t, fsys.Mkdir("d", 0o755), syscall.EEXIST)
	wantErrno(t, fsys.Remove("d"), syscall.ENOTEMPTY)
	wantErrno(t, fsys.Rename("d", "d/e/x"), syscall.EINVAL) // below itself
	// Hard link: both names, nlink 2, survives removing one name.
	must(fsys.Link("d/f", "h"))
	fi, _ := fsys.Stat("h")
	if a := fi.Sys().(*reflinkfs.Attr); a.Nlink != 2 {
		t.Fatalf("nlink %d", a.Nlink)
	}
	must(fsys.Remove("d/f"))
	if string(readFile(t, fsys, "h")) != "one" {
		t.Fatal("link lost data")
	}
	// Rename over an existing file replaces it and frees its blocks.
	must(fsys.Rename("g", "h"))
	if string(readFile(t, fsys, "h")) != "two" {
		t.Fatal("rename over")
	}
	// Directories: link counts follow subdirectories.
	fi, _ = fsys.Stat("d")
	if a := fi.Sys().(*reflinkfs.Attr); a.Nlink != 3 {
		t.Fatalf("dir nlink %d, want 3", a.Nlink)
	}
	must(fsys.Rename("d/e", "e"))
	fi, _ = fsys.Stat("d")
	if a := fi.Sys().(*reflinkfs.Attr); a.Nlink != 2 {
		t.Fatalf("dir nlink after moving subdir out %d", a.Nlink)
	}
	// Exchange and no-replace.
	writeFile(t, fsys, "p", []byte("P"))
	writeFile(t, fsys, "q", []byte("Q"))
	must(fsys.RenameAt(reflinkfs.RootIno, "p", reflinkfs.RootIno, "q", reflinkfs.RenameExchange))
	if string(readFile(t, fsys, "p")) != "Q" || string(readFile(t, fsys, "q")) != "P" {
		t.Fatal("exchange")
	}
	wantErrno(t, fsys.RenameAt(reflinkfs.RootIno, "p", reflinkfs.RootIno, "q", reflinkfs.RenameNoReplace), syscall.EEXIST)
	// Symlinks and xattrs.
	must(fsys.Symlink("target/path", "s"))
	if got, _ := fsys.Readlink("s"); got != "target/path" {
		t.Fatalf("readlink %q", got)
	}
	a, _ := fsys.Lookup(reflinkfs.RootIno, "p")
	must(fsys.SetXattr(a.Ino, "user.k", []byte("v"), 0))
	wantErrno(t, fsys.SetXattr(a.Ino, "user.k", []byte("v"), reflinkfs.XattrCreate), syscall.EEXIST)
	wantErrno(t, fsys.SetXattr(a.Ino, "user.z", []byte("v"), reflinkfs.XattrReplace), syscall.ENODATA)
	if v, _ := fsys.GetXattr(a.Ino, "user.k"); string(v) != "v" {
		t.Fatalf("xattr %q", v)
	}
	_, err := fsys.GetXattr(a.Ino, "user.none")
	wantErrno(t, err, syscall.ENODATA)
	// Bad names.
	wantErrno(t, fsys.Mkdir(strings.Repeat("n", 256), 0o755), syscall.ENAMETOOLONG)
	_, _, err = fsys.CreateAt(reflinkfs.RootIno, "a/b", 0o644, reflinkfs.Owner{}, os.O_RDWR)
	wantErrno(t, err, syscall.EINVAL)
	checkFsck(t, fsys)
	// Everything survives close and reopen; generations stay.
	ents, _ := fsys.ReadDir("")
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	gen := a.Gen
	must(fsys.Close())
	fsys2, err := reflinkfs.Open(dir, reflinkfs.Options{})
	must(err)
	defer fsys2.Close()
	ents2, _ := fsys2.ReadDir("")
	if len(ents2) != len(names) {
		t.Fatalf("entries %d after reopen, want %d", len(ents2), len(names))
	}
	a2, _ := fsys2.Lookup(reflinkfs.RootIno, "p")
	if a2.Gen != gen || a2.Ino != a.Ino {
		t.Fatal("inode identity changed across reopen")
	}
	if v, _ := fsys2.GetXattr(a2.Ino, "user.k"); string(v) != "v" {
		t.Fatal("xattr lost")
	}
	checkFsck(t, fsys2)
}

func TestReadOnlyOpen(t *testing.T) {
	fsys, dir := newFS(t)
	writeFile(t, fsys, "a", []byte("data"))
	fsys.Close()
	ro, err := reflinkfs.Open(dir, reflinkfs.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if string(readFile(t, ro, "a")) != "data" {
		t.Fatal("read-only read")
	}
	_, err = ro.OpenFile("a", os.O_RDWR, 0)
	wantErrno(t, err, syscall.EROFS)
	wantErrno(t, ro.Mkdir("x", 0o755), syscall.EROFS)
}
