package reflinkfs_test

import (
	"syscall"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

// A directory removed while open is an orphan: its attributes stay
// readable through the open (nlink 0), fsck accepts it, and a crash
// before it is closed frees it at the next open.
func TestRemovedDirectoryWhileOpen(t *testing.T) {
	fsys, dir := newFS(t)
	a, err := fsys.MkdirAt(reflinkfs.RootIno, "d", 0o755, reflinkfs.Owner{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.OpenIno(a.Ino, syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.Rmdir(reflinkfs.RootIno, "d"); err != nil {
		t.Fatal(err)
	}
	for _, get := range []func() (reflinkfs.Attr, error){f.Attr, func() (reflinkfs.Attr, error) { return fsys.GetAttr(a.Ino) }} {
		got, err := get()
		if err != nil {
			t.Fatalf("attributes of the removed open directory: %v", err)
		}
		if got.Nlink != 0 || got.Mode != a.Mode {
			t.Errorf("removed open directory: nlink %d mode %o, want 0 and %o", got.Nlink, got.Mode, a.Mode)
		}
	}
	if _, err := fsys.MkdirAt(a.Ino, "sub", 0o755, reflinkfs.Owner{}); err == nil {
		t.Error("mkdir inside a removed directory succeeded")
	}
	checkFsck(t, fsys)
	// Close the image with the directory still open (as a crash would
	// leave it): the next open frees it.
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
	fsys, err = reflinkfs.Open(dir, reflinkfs.Options{CacheSize: 1 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	_, err = fsys.GetAttr(a.Ino)
	wantErrno(t, err, syscall.ENOENT)
	checkFsck(t, fsys)
}
