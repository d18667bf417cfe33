package reflinkfs_test

import (
	"bytes"
	"syscall"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

// An O_TMPFILE file has no name and no links until LinkAt names it; if it
// never gets one it is freed at close, or at the next open after a crash.
func TestTmpfile(t *testing.T) {
	fsys, dir := newFS(t)
	if _, _, err := fsys.TmpfileAt(reflinkfs.RootIno, 0o600, reflinkfs.Owner{}, syscall.O_RDONLY); err == nil {
		t.Error("read-only tmpfile created")
	}
	f, a, err := fsys.TmpfileAt(reflinkfs.RootIno, 0o640, reflinkfs.Owner{Uid: 7, Gid: 8}, syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if a.Nlink != 0 || a.Mode != syscall.S_IFREG|0o640 || a.Uid != 7 || a.Gid != 8 {
		t.Errorf("tmpfile attributes %+v", a)
	}
	data := bytes.Repeat([]byte("tmp"), 5000)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if ents, _ := fsys.ReadDir("/"); len(ents) != 0 {
		t.Errorf("the tmpfile shows in its directory: %v", ents)
	}
	checkFsck(t, fsys)
	if _, err := fsys.LinkAt(f.Ino(), reflinkfs.RootIno, "named"); err != nil {
		t.Fatalf("link of the tmpfile: %v", err)
	}
	// Linked once; unlinked again it is an ordinary deleted open file.
	if err := fsys.Remove("named"); err != nil {
		t.Fatal(err)
	}
	_, err = fsys.LinkAt(f.Ino(), reflinkfs.RootIno, "again")
	wantErrno(t, err, syscall.ENOENT)
	f.Close()
	_, err = fsys.GetAttr(a.Ino)
	wantErrno(t, err, syscall.ENOENT)

	// O_EXCL: never linkable.
	x, _, err := fsys.TmpfileAt(reflinkfs.RootIno, 0o600, reflinkfs.Owner{}, syscall.O_WRONLY|syscall.O_EXCL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fsys.LinkAt(x.Ino(), reflinkfs.RootIno, "x")
	wantErrno(t, err, syscall.ENOENT)
	x.Close()

	// Linked: an ordinary file that survives a reopen.
	k, _, err := fsys.TmpfileAt(reflinkfs.RootIno, 0o600, reflinkfs.Owner{}, syscall.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	k.WriteAt(data, 0)
	if _, err := fsys.LinkAt(k.Ino(), reflinkfs.RootIno, "kept"); err != nil {
		t.Fatal(err)
	}
	k.Close()
	// Never linked, open at a crash (after a commit that made it durable).
	lost, la, err := fsys.TmpfileAt(reflinkfs.RootIno, 0o600, reflinkfs.Owner{}, syscall.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	lost.WriteAt(data, 0)
	if err := fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	used := fsys.Stats().UsedBytes
	fsys.Abandon()

	fsys, err = reflinkfs.Open(dir, reflinkfs.Options{CacheSize: 1 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	_, err = fsys.GetAttr(la.Ino)
	wantErrno(t, err, syscall.ENOENT)
	if got := fsys.Stats().UsedBytes; got >= used {
		t.Errorf("used bytes %d after reopen, %d before: the lost tmpfile was not freed", got, used)
	}
	if got := readFile(t, fsys, "kept"); !bytes.Equal(got, data) {
		t.Errorf("linked tmpfile: %d bytes after reopen, want %d", len(got), len(data))
	}
	checkFsck(t, fsys)
}
