package reflinkfs_test

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

// The engine enforces immutable and append-only for library callers too,
// and keeps the flags across a reopen.
func TestImmutableAndAppendOnly(t *testing.T) {
	fsys, dir := newFS(t)
	writeFile(t, fsys, "f", []byte("data"))
	st, err := fsys.Stat("f")
	if err != nil {
		t.Fatal(err)
	}
	ino := st.Sys().(*reflinkfs.Attr).Ino
	w, err := fsys.OpenIno(ino, syscall.O_RDWR) // opened before the flag: still refused
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := fsys.SetFlags(ino, 0x1); err == nil {
		t.Error("SetFlags with an unknown flag succeeded")
	}

	if _, err := fsys.SetFlags(ino, reflinkfs.FlagImmutable); err != nil {
		t.Fatal(err)
	}
	mode := uint32(0o600)
	for what, err := range map[string]error{
		"open for write": func() error { _, err := fsys.OpenIno(ino, syscall.O_WRONLY); return err }(),
		"write":          func() error { _, err := w.WriteAt([]byte("x"), 4); return err }(),
		"truncate":       w.Truncate(0),
		"allocate":       w.Allocate(0, 8192),
		"chmod":          func() error { _, err := fsys.SetAttrIno(ino, reflinkfs.SetAttr{Mode: &mode}); return err }(),
		"touch":          func() error { _, err := fsys.SetAttrIno(ino, reflinkfs.SetAttr{TimesNow: true}); return err }(),
		"setxattr":       fsys.SetXattr(ino, "user.a", []byte("1"), 0),
		"link":           func() error { _, err := fsys.LinkAt(ino, reflinkfs.RootIno, "g"); return err }(),
		"unlink":         fsys.Remove("f"),
		"rename":         fsys.Rename("f", "g"),
	} {
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("immutable: %s: %v, want EPERM", what, err)
		}
	}
	writeFile(t, fsys, "x", []byte("x"))
	wantErrno(t, fsys.Rename("x", "f"), syscall.EPERM)

	if _, err := fsys.SetFlags(ino, reflinkfs.FlagAppend); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("x"), 4); err != nil {
		t.Errorf("append-only: write at the end: %v", err)
	}
	_, err = w.WriteAt([]byte("x"), 0)
	wantErrno(t, err, syscall.EPERM)
	wantErrno(t, w.Truncate(0), syscall.EPERM)
	wantErrno(t, w.PunchHole(0, 4096), syscall.EPERM)
	if err := w.AllocateKeepSize(0, 8192); err != nil {
		t.Errorf("append-only: allocate: %v", err)
	}
	_, err = fsys.OpenIno(ino, syscall.O_WRONLY)
	wantErrno(t, err, syscall.EPERM)
	a, err := fsys.OpenIno(ino, syscall.O_WRONLY|syscall.O_APPEND)
	if err != nil {
		t.Errorf("append-only: O_APPEND open: %v", err)
	} else {
		a.Close()
	}
	if _, err := fsys.SetAttrIno(ino, reflinkfs.SetAttr{TimesNow: true}); err != nil {
		t.Errorf("append-only: touch: %v", err)
	}

	// Directories: +i takes no new entries, +a gives none up.
	if err := fsys.Mkdir("d", 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, fsys, "d/x", []byte("x"))
	dst, _ := fsys.Stat("d")
	dino := dst.Sys().(*reflinkfs.Attr).Ino
	if _, err := fsys.SetFlags(dino, reflinkfs.FlagImmutable); err != nil {
		t.Fatal(err)
	}
	_, err = fsys.OpenFile("d/new", os.O_CREATE|os.O_WRONLY, 0o644)
	wantErrno(t, err, syscall.EPERM)
	if _, err := fsys.SetFlags(dino, reflinkfs.FlagAppend); err != nil {
		t.Fatal(err)
	}
	writeFile(t, fsys, "d/new", nil)
	wantErrno(t, fsys.Remove("d/x"), syscall.EPERM)

	checkFsck(t, fsys)
	w.Close()
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
	fsys, err = reflinkfs.Open(dir, reflinkfs.Options{CacheSize: 1 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	if got, err := fsys.GetAttr(ino); err != nil || got.Flags != reflinkfs.FlagAppend {
		t.Errorf("after reopen: flags %#x, err %v; want append-only", got.Flags, err)
	}
}
