package reflinkfs_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

func TestSmoke(t *testing.T) {
	dir := t.TempDir() + "/img"
	fsys, err := reflinkfs.Create(dir, reflinkfs.Options{Size: 64 << 20, CacheSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.OpenFile("a", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("hello world "), 100000)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Clone("a", "b"); err != nil {
		t.Fatal(err)
	}
	g, err := fsys.OpenFile("b", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	g.WriteAt([]byte("XXXX"), 5000)
	buf := make([]byte, len(data))
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data) {
		t.Fatalf("a changed: %v", err)
	}
	g.ReadAt(buf, 0)
	want := append([]byte(nil), data...)
	copy(want[5000:], "XXXX")
	if !bytes.Equal(buf, want) {
		t.Fatal("b wrong")
	}
	ext, _ := g.Fiemap()
	t.Logf("fiemap b: %+v", ext)
	t.Logf("stats: %+v", fsys.Stats())
	f.Close()
	g.Close()
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
	fsys, err = reflinkfs.Open(dir, reflinkfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g, _ = fsys.OpenFile("b", os.O_RDONLY, 0)
	g.ReadAt(buf, 0)
	if !bytes.Equal(buf, want) {
		t.Fatal("b wrong after reopen")
	}
	t.Logf("stats: %+v", fsys.Stats())
	g.Close()
	rep, err := fsys.Fsck(false)
	if err != nil || !rep.Clean() {
		t.Fatalf("fsck: %v %+v", err, rep)
	}
	fsys.Close()
}
