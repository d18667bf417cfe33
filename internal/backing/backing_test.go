package backing

import (
	"bytes"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/internal/testenv"
)

func newStore(t *testing.T) (*reflinkfs.FS, *Store, *sync.Map) {
	t.Helper()
	testenv.RequireFUSE(t)
	fsys, err := reflinkfs.Create(t.TempDir()+"/img", reflinkfs.Options{Size: 256 << 20, CacheSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsys.Close() })
	var registered sync.Map // id -> fd
	var next int32
	var mu sync.Mutex
	s, err := Open(fsys, Options{
		Register: func(fd int) (int32, error) {
			mu.Lock()
			defer mu.Unlock()
			next++
			registered.Store(next, fd)
			return next, nil
		},
		Unregister: func(id int32) error { registered.Delete(id); return nil },
		IdleTTL:    time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return fsys, s, &registered
}

func open(t *testing.T, fsys *reflinkfs.FS, name string) *reflinkfs.File {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func acquire(t *testing.T, s *Store, f *reflinkfs.File) *Backing {
	t.Helper()
	ci, err := f.ContentInfo()
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Acquire(f, ci)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The backing file reads exactly the file's bytes, clones share one
// backing, a changed file gets another, and eviction frees the snapshot.
func TestStoreSharesAndEvicts(t *testing.T) {
	fsys, s, registered := newStore(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 300000) // 4.8 MB, not block aligned
	w, err := fsys.OpenFile("a", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := fsys.Clone("a", "b"); err != nil {
		t.Fatal(err)
	}
	ba := acquire(t, s, open(t, fsys, "a"))
	bb := acquire(t, s, open(t, fsys, "b"))
	if ba != bb {
		t.Fatal("clones got different backings")
	}
	fd, ok := registered.Load(ba.ID())
	if !ok {
		t.Fatal("backing not registered")
	}
	got := make([]byte, len(data)+100)
	n, err := unix.Pread(fd.(int), got, 0)
	if err != nil || n != len(data) || !bytes.Equal(got[:n], data) {
		t.Fatalf("backing file reads %d bytes (%v), equal %v", n, err, bytes.Equal(got[:n], data))
	}
	if st := s.Stats(); st.Backings != 1 || st.InUse != 1 || st.CachedBytes < int64(len(data))-4096 {
		t.Fatalf("stats after reading the backing: %+v", st)
	}

	// b changes: it gets a new backing, a's still reads the old bytes.
	w, _ = fsys.OpenFile("b", os.O_RDWR, 0)
	w.WriteAt([]byte("CHANGED"), 0)
	w.Close()
	bb2 := acquire(t, s, open(t, fsys, "b"))
	if bb2 == ba {
		t.Fatal("a changed file got its old backing")
	}
	if n, _ := unix.Pread(fd.(int), got[:7], 0); n != 7 || string(got[:7]) != "0123456" {
		t.Fatalf("old backing reads %q after the change", got[:7])
	}

	s.Release(ba)
	s.Release(bb)
	s.Release(bb2)
	if st := fsys.Stats(); st.SnapshotFiles != 2 {
		t.Fatalf("%d snapshots before eviction, want 2", st.SnapshotFiles)
	}
	s.evictIdle(time.Now().Add(time.Second), 0)
	if st := s.Stats(); st.Backings != 0 || st.Evicted != 2 {
		t.Fatalf("after eviction: %+v", st)
	}
	if st := fsys.Stats(); st.SnapshotFiles != 0 {
		t.Fatalf("%d snapshots after eviction, want 0", st.SnapshotFiles)
	}
	n = 0
	registered.Range(func(k, v any) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d backing ids still registered after eviction", n)
	}
}

// Idle backings beyond MaxIdle go, oldest first; used ones stay.
func TestStoreMaxIdle(t *testing.T) {
	fsys, s, _ := newStore(t)
	var bs []*Backing
	for i, name := range []string{"x", "y", "z"} {
		w, _ := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
		w.WriteAt(bytes.Repeat([]byte{byte('a' + i)}, 8192), 0)
		w.Close()
		bs = append(bs, acquire(t, s, open(t, fsys, name)))
	}
	s.Release(bs[0])
	time.Sleep(10 * time.Millisecond)
	s.Release(bs[1])
	s.evictIdle(time.Now().Add(-time.Hour), 1) // nothing old enough; keep 1 idle
	st := s.Stats()
	if st.Backings != 2 || st.InUse != 1 || st.Evicted != 1 {
		t.Fatalf("after capping idle backings at 1: %+v", st)
	}
	s.mu.Lock()
	_, oldest := s.byNode[bs[0].node]
	s.mu.Unlock()
	if oldest {
		t.Fatal("the newer idle backing was evicted before the older one")
	}
}

// Without IdleTTL (the mount's setting) the last Release drops the backing
// at once: its snapshot no longer holds the space of a deleted file.
func TestStoreDropsAtLastRelease(t *testing.T) {
	testenv.RequireFUSE(t)
	fsys, err := reflinkfs.Create(t.TempDir()+"/img", reflinkfs.Options{Size: 256 << 20, CacheSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	s, err := Open(fsys, Options{
		Register:   func(fd int) (int32, error) { return 1, nil },
		Unregister: func(id int32) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	empty := fsys.Stats().UsedBytes
	w, _ := fsys.OpenFile("a", os.O_RDWR|os.O_CREATE, 0o644)
	w.WriteAt(bytes.Repeat([]byte("x"), 1<<20), 0)
	w.Close()
	f := open(t, fsys, "a")
	b := acquire(t, s, f)
	b2 := acquire(t, s, f)
	f.Close()
	if err := fsys.Remove("a"); err != nil {
		t.Fatal(err)
	}
	s.Release(b)
	if st := fsys.Stats(); st.SnapshotFiles != 1 {
		t.Fatalf("backing dropped while referenced: %+v", st)
	}
	s.Release(b2)
	fsys.Sync()
	if st := fsys.Stats(); st.SnapshotFiles != 0 || st.UsedBytes != empty {
		t.Fatalf("after the last release of a deleted file's backing: %d snapshots, %d bytes used; want 0, %d",
			st.SnapshotFiles, st.UsedBytes, empty)
	}
	if st := s.Stats(); st.Backings != 0 {
		t.Fatalf("backing still listed: %+v", st)
	}
}
