package reflinkfs_test

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/reflinkfs/reflinkfs"
)

func newFSWith(t *testing.T, policy reflinkfs.AtimePolicy) (*reflinkfs.FS, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	fsys, err := reflinkfs.Create(dir, reflinkfs.Options{Size: 64 << 20, CacheSize: 1 << 20, CommitInterval: -1, Atime: policy})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsys.Close() })
	return fsys, dir
}

// setTimes sets an inode's atime, mtime and ctime to the given ages.
func setTimes(t *testing.T, fsys *reflinkfs.FS, ino uint64, atime, mtime, ctime time.Duration) time.Time {
	t.Helper()
	now := time.Now()
	a, m, c := now.Add(-atime), now.Add(-mtime), now.Add(-ctime)
	if _, err := fsys.SetAttrIno(ino, reflinkfs.SetAttr{Atime: &a, Mtime: &m, Ctime: &c}); err != nil {
		t.Fatal(err)
	}
	return a
}

func atimeOf(t *testing.T, fsys *reflinkfs.FS, ino uint64) time.Time {
	t.Helper()
	a, err := fsys.GetAttr(ino)
	if err != nil {
		t.Fatal(err)
	}
	return a.Atime
}

// The relatime rule, per kind of read: file data (ReadAt and ReadView),
// directory listing, symlink target.
func TestAtimeRelatimeRule(t *testing.T) {
	fsys, _ := newFSWith(t, reflinkfs.AtimeRelative)
	writeFile(t, fsys, "f", []byte("data"))
	fa, err := fsys.Stat("f")
	if err != nil {
		t.Fatal(err)
	}
	fileIno := fa.Sys().(*reflinkfs.Attr).Ino
	da, err := fsys.MkdirAt(reflinkfs.RootIno, "d", 0o755, reflinkfs.Owner{})
	if err != nil {
		t.Fatal(err)
	}
	la, err := fsys.SymlinkAt(reflinkfs.RootIno, "l", "f", reflinkfs.Owner{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.OpenIno(fileIno, syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	reads := map[string]struct {
		ino  uint64
		read func() error
	}{
		"ReadAt":   {fileIno, func() error { _, err := f.ReadAt(make([]byte, 4), 0); return err }},
		"ReadView": {fileIno, func() error { v, err := f.ReadView(0, 4); v.Release(); return err }},
		"readdir":  {da.Ino, func() error { _, err := fsys.ReadDirIno(da.Ino); return err }},
		"readlink": {la.Ino, func() error { _, err := fsys.ReadlinkIno(la.Ino); return err }},
	}
	const hour, day = time.Hour, 24 * time.Hour
	for name, r := range reads {
		for _, c := range []struct {
			why                 string
			atime, mtime, ctime time.Duration // ages
			update              bool
		}{
			{"atime older than mtime", 2 * hour, hour, 3 * hour, true},
			{"atime older than ctime", 2 * hour, 3 * hour, hour, true},
			{"atime a day old", day + hour, 2 * day, 2 * day, true},
			{"atime recent and newer than mtime and ctime", hour, 2 * hour, 2 * hour, false},
		} {
			old := setTimes(t, fsys, r.ino, c.atime, c.mtime, c.ctime)
			if err := r.read(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			got := atimeOf(t, fsys, r.ino)
			if updated := !got.Equal(old); updated != c.update {
				t.Errorf("%s, %s: atime updated %v, want %v", name, c.why, updated, c.update)
			}
			if c.update && time.Since(got) > hour {
				t.Errorf("%s, %s: atime set to %v, not to now", name, c.why, got)
			}
		}
	}
}

// strictatime updates on every read, noatime never; the update costs no
// change to the running transaction and is written by the next commit.
func TestAtimePolicies(t *testing.T) {
	for _, c := range []struct {
		policy reflinkfs.AtimePolicy
		update bool
	}{{reflinkfs.AtimeStrict, true}, {reflinkfs.AtimeNever, false}} {
		fsys, dir := newFSWith(t, c.policy)
		writeFile(t, fsys, "f", []byte("data"))
		st, err := fsys.Stat("f")
		if err != nil {
			t.Fatal(err)
		}
		ino := st.Sys().(*reflinkfs.Attr).Ino
		// Recent and newer than mtime and ctime: relatime would not update.
		old := setTimes(t, fsys, ino, time.Minute, time.Hour, time.Hour)
		if err := fsys.Sync(); err != nil {
			t.Fatal(err)
		}
		f, err := fsys.OpenIno(ino, syscall.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if _, err := f.ReadAt(make([]byte, 4), 0); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		if !fsys.TxnEmpty() {
			t.Errorf("policy %d: reads wrote to the running transaction", c.policy)
		}
		got := atimeOf(t, fsys, ino)
		if updated := !got.Equal(old); updated != c.update {
			t.Fatalf("policy %d: atime updated %v, want %v", c.policy, updated, c.update)
		}
		// Persisted by the commit at close.
		if err := fsys.Close(); err != nil {
			t.Fatal(err)
		}
		fsys, err = reflinkfs.Open(dir, reflinkfs.Options{CacheSize: 1 << 20, CommitInterval: -1, Atime: reflinkfs.AtimeNever})
		if err != nil {
			t.Fatal(err)
		}
		if again := atimeOf(t, fsys, ino); !again.Equal(got) {
			t.Errorf("policy %d: atime after reopen %v, want %v", c.policy, again, got)
		}
		checkFsck(t, fsys)
		fsys.Close()
	}
}

// A tree clone reads its source without touching the source's atimes,
// and gives every copy the atime of its original.
func TestAtimeTreeClone(t *testing.T) {
	fsys, _ := newFSWith(t, reflinkfs.AtimeRelative)
	d, err := fsys.MkdirAt(reflinkfs.RootIno, "src", 0o755, reflinkfs.Owner{})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, fsys, "src/f", []byte("data"))
	l, err := fsys.SymlinkAt(d.Ino, "l", "f", reflinkfs.Owner{})
	if err != nil {
		t.Fatal(err)
	}
	fa, err := fsys.Lookup(d.Ino, "f")
	if err != nil {
		t.Fatal(err)
	}
	// Two days old: any access would update them under relatime.
	want := map[string]time.Time{}
	for name, ino := range map[string]uint64{".": d.Ino, "f": fa.Ino, "l": l.Ino} {
		want[name] = setTimes(t, fsys, ino, 48*time.Hour, 72*time.Hour, 72*time.Hour)
	}
	root, err := fsys.CloneTreeIno(d.Ino, reflinkfs.RootIno, "dst", reflinkfs.CloneTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range want {
		for _, dir := range []uint64{d.Ino, root.Ino} {
			a, err := fsys.Lookup(dir, name)
			if err != nil {
				t.Fatal(err)
			}
			if !a.Atime.Equal(w) {
				t.Errorf("%s in inode %d: atime %v, want %v", name, dir, a.Atime, w)
			}
		}
	}
}
