package reflinkfs_test

import (
	"bytes"
	"math/rand"
	"os"
	"syscall"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

func readAll(t *testing.T, f *reflinkfs.File, size int) []byte {
	t.Helper()
	buf := make([]byte, size)
	n, err := f.ReadAt(buf, 0)
	if n != size {
		t.Fatalf("read %d of %d bytes: %v", n, size, err)
	}
	return buf
}

// A snapshot reads what its source read when it was taken, whatever
// happens to the source and its clones afterwards, and its blocks are freed
// when it closes.
func TestSnapshotIsImmutableAndFreed(t *testing.T) {
	dir := t.TempDir() + "/img"
	fsys, err := reflinkfs.Create(dir, reflinkfs.Options{Size: 64 << 20, CacheSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	base := fsys.Stats()
	data := make([]byte, 1<<20+123)
	rand.New(rand.NewSource(1)).Read(data)
	writeFile(t, fsys, "a", data)
	if err := fsys.Clone("a", "b"); err != nil {
		t.Fatal(err)
	}
	a, err := fsys.OpenFile("a", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := fsys.OpenFile("b", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	ia, _ := a.ContentInfo()
	ib, _ := b.ContentInfo()
	if ia.Key != ib.Key || ia.Size != int64(len(data)) || ia.SharedBlocks != ia.MappedBlocks || ia.MappedBlocks == 0 {
		t.Fatalf("clones: content info a %+v b %+v", ia, ib)
	}
	if same, err := a.SameContent(b); !same || err != nil {
		t.Fatalf("clones not the same content: %v", err)
	}
	used := fsys.Stats()

	s, err := b.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if same, _ := s.SameContent(b); !same {
		t.Fatal("snapshot does not map b's blocks")
	}
	st := fsys.Stats()
	if st.SnapshotFiles != 1 || st.SnapshotBytes != ia.MappedBlocks*reflinkfs.BlockSize ||
		st.Inodes != used.Inodes || st.LogicalBytes != used.LogicalBytes || st.UsedBytes != used.UsedBytes {
		t.Fatalf("stats with a snapshot: %+v, before %+v", st, used)
	}
	if _, err := s.WriteAt([]byte("x"), 0); err == nil {
		t.Fatal("write to a snapshot succeeded")
	}
	if st.SharedBytes != used.SharedBytes {
		t.Fatalf("a snapshot changed SharedBytes: %d, before %d", st.SharedBytes, used.SharedBytes)
	}

	// Change a (copy on write), then delete both clones.
	if _, err := a.WriteAt([]byte("changed"), 4096); err != nil {
		t.Fatal(err)
	}
	// a's new block is a's alone; b's blocks are shared with the snapshot
	// only once a is deleted: Fiemap and ContentInfo do not count it.
	ext, err := a.Fiemap()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ext {
		if e.Logical == 4096 && e.Shared {
			t.Fatalf("a's rewritten block reported shared: %+v", ext)
		}
	}
	if ia2, _ := a.ContentInfo(); ia2.Key == ia.Key {
		t.Fatal("key unchanged by a write")
	}
	if same, _ := s.SameContent(a); same {
		t.Fatal("snapshot still the same content as a written file")
	}
	a.Close()
	if err := fsys.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if ci, _ := b.ContentInfo(); ci.SharedBlocks != 0 {
		t.Fatalf("b, whose clone is gone, shares %d blocks (with its snapshot only)", ci.SharedBlocks)
	}
	if ext, _ := b.Fiemap(); len(ext) == 0 || ext[0].Shared {
		t.Fatalf("b's blocks reported shared with its snapshot: %+v", ext)
	}
	if st := fsys.Stats(); st.SharedBytes != 0 {
		t.Fatalf("SharedBytes %d with one file and its snapshot", st.SharedBytes)
	}
	b.Close()
	for _, n := range []string{"b"} {
		if err := fsys.Remove(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	fsys.DropCache()
	if got := readAll(t, s, len(data)); !bytes.Equal(got, data) {
		t.Fatal("snapshot changed after its source was written and deleted")
	}
	checkFsck(t, fsys)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	fsys.WaitReaped()
	st = fsys.Stats()
	if st.UsedBytes != base.UsedBytes || st.SnapshotFiles != 0 || st.SnapshotBytes != 0 {
		t.Fatalf("after closing the snapshot: %+v, empty image %+v", st, base)
	}
	checkFsck(t, fsys)
}

// A snapshot left open when the image is closed without closing it (a
// crashed daemon) is an orphan, freed at the next mount.
func TestSnapshotOrphanFreedAtOpen(t *testing.T) {
	dir := t.TempDir() + "/img"
	fsys, err := reflinkfs.Create(dir, reflinkfs.Options{Size: 64 << 20, CacheSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	base := fsys.Stats()
	writeFile(t, fsys, "a", bytes.Repeat([]byte("abcd"), 100000))
	a, _ := fsys.OpenFile("a", os.O_RDONLY, 0)
	if _, err := a.Snapshot(); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if err := fsys.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
	fsys, err = reflinkfs.Open(dir, reflinkfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	fsys.WaitReaped()
	if st := fsys.Stats(); st.UsedBytes != base.UsedBytes || st.LogicalBytes != 0 || st.SnapshotFiles != 0 {
		t.Fatalf("snapshot survived a remount: %+v", st)
	}
	checkFsck(t, fsys)
}

func TestSnapshotRefused(t *testing.T) {
	dir := t.TempDir() + "/img"
	fsys, err := reflinkfs.Create(dir, reflinkfs.Options{Size: 64 << 20, CacheSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, fsys, "a", []byte("hello"))
	w, _ := fsys.OpenFile("a", os.O_WRONLY, 0)
	_, err = w.Snapshot()
	wantErrno(t, err, syscall.EBADF)
	w.Close()
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
	fsys, err = reflinkfs.Open(dir, reflinkfs.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	r, _ := fsys.OpenFile("a", os.O_RDONLY, 0)
	_, err = r.Snapshot()
	wantErrno(t, err, syscall.EROFS)
}
