package reflinkfs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/reflinkfs/reflinkfs/internal/alloc"
	"github.com/reflinkfs/reflinkfs/internal/meta"
)

// damage applies raw changes to the committed store, bypassing the engine.
func damage(t *testing.T, fsys *FS, fn func(set func(k, v []byte), del func(k []byte))) {
	t.Helper()
	txn := fsys.store.NewTxn()
	fn(func(k, v []byte) { txn.Set(k, v) }, func(k []byte) { txn.Delete(k) })
	if err := fsys.store.Commit(txn, true); err != nil {
		t.Fatal(err)
	}
}

func TestFsckRepair(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	fsys, err := Create(dir, Options{Size: 64 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	data := bytes.Repeat([]byte("abcd"), 10000)
	for _, name := range []string{"a", "lost", "linked"} {
		f, _ := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
		f.WriteAt(data, 0)
		f.Close()
	}
	if err := fsys.Clone("a", "b"); err != nil {
		t.Fatal(err)
	}
	fsys.Sync()
	la, _ := fsys.Lookup(RootIno, "lost")
	li, _ := fsys.Lookup(RootIno, "linked")
	// Drop every refcount record (a and b share blocks), one free run (a
	// leak), the entry of "lost" (an unreachable inode), add an entry naming
	// a missing inode and give "linked" a wrong link count.
	damage(t, fsys, func(set func(k, v []byte), del func(k []byte)) {
		fsys.refs.Ascend(func(r refRun) bool { del(meta.RefcountKey(r.start)); return true })
		fsys.alloc.Each(func(r alloc.Run) bool { del(meta.FreeKey(r.Start)); return false }) // leak
		del(meta.DirentKey(RootIno, "lost"))
		k := meta.DirentKey(RootIno, "ghost")
		d := meta.Dirent{Ino: 999, Type: 0o100000}
		set(k, d.Encode(k))
		in := meta.Inode{Gen: li.Gen, Mode: li.Mode, Nlink: 5, Size: li.Size, Blocks: uint64(li.Blocks / 8)}
		set(meta.InodeKey(li.Ino), in.Encode(li.Ino))
	})
	fsys.mu.Lock()
	delete(fsys.inodes, li.Ino) // forget cached state, as after a restart
	fsys.mu.Unlock()
	rep, err := fsys.Fsck(false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Clean() {
		t.Fatal("damage not detected")
	}
	t.Logf("found:\n%s", strings.Join(rep.Problems, "\n"))
	rep, err = fsys.Fsck(true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("repaired:\n%s", strings.Join(rep.Repaired, "\n"))
	if !rep.Clean() {
		t.Fatalf("left after repair:\n%s", strings.Join(rep.Problems, "\n"))
	}
	// The unreachable file is back, under lost+found, with its data.
	f, err := fsys.OpenFile("lost+found/#"+itoa(la.Ino), os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(data))
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data) {
		t.Fatalf("reconnected file: %v", err)
	}
	f.Close()
	// Sharing is intact: writing to b must not change a.
	g, _ := fsys.OpenFile("b", os.O_RDWR, 0)
	g.WriteAt([]byte("XX"), 0)
	g.Close()
	f, _ = fsys.OpenFile("a", os.O_RDONLY, 0)
	f.ReadAt(buf, 0)
	f.Close()
	if !bytes.Equal(buf, data) {
		t.Fatal("a changed after writing its clone: refcounts were not rebuilt")
	}
	if rep, _ := fsys.Fsck(false); !rep.Clean() {
		t.Fatalf("after use: %v", rep.Problems)
	}
}

func itoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// A damaged free-space record makes Open refuse the image, naming fsck;
// Recovery opens it and Fsck(true) rebuilds the records.
func TestFsckRecoversDamagedFreeSpace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	fsys, err := Create(dir, Options{Size: 64 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := fsys.OpenFile("a", os.O_RDWR|os.O_CREATE, 0o644)
	f.WriteAt([]byte("hello"), 0)
	f.Close()
	fsys.Sync()
	var first uint64
	fsys.alloc.Each(func(r alloc.Run) bool { first = r.Start; return false })
	damage(t, fsys, func(set func(k, v []byte), del func(k []byte)) {
		set(meta.FreeKey(first), []byte("garbage"))
	})
	fsys.Close()
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "reflinkfs fsck") {
		t.Fatalf("open of damaged image: %v", err)
	}
	fsys, err = Open(dir, Options{Recovery: true})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := fsys.Fsck(true)
	if err != nil || !rep.Clean() {
		t.Fatalf("repair: %v %v", err, rep)
	}
	fsys.Close()
	fsys, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("open after repair: %v", err)
	}
	defer fsys.Close()
	f, err = fsys.OpenFile("b", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("writable again"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// A metadata store that lost durable commits (its log damaged or lost) is
// noticed through the device label: open refuses, fsck reports it, and
// repair accepts the loss explicitly.
func TestStoreBehindDeviceLabel(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	fsys, err := Create(dir, Options{Size: 64 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	write := func(fsys *FS, name string) {
		f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("data of "+name), 0)
		f.Sync()
		f.Close()
	}
	write(fsys, "a")
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(t.TempDir(), "meta-old")
	if err := os.CopyFS(old, os.DirFS(filepath.Join(dir, metaDir))); err != nil {
		t.Fatal(err)
	}
	fsys, err = Open(dir, Options{CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	write(fsys, "b")
	write(fsys, "c")
	fsys.Close()
	// The store goes back in time; the data device does not.
	os.RemoveAll(filepath.Join(dir, metaDir))
	if err := os.Rename(old, filepath.Join(dir, metaDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "write-ahead log") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("open of a store behind the device: %v", err)
	}
	fsys, err = Open(dir, Options{Recovery: true, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := fsys.Fsck(false); err != nil || rep.Clean() {
		t.Fatalf("fsck did not report lost commits: %v %v", err, rep)
	}
	fsys.Close()
	fsys, err = Open(dir, Options{Recovery: true})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := fsys.Fsck(true)
	if err != nil || !rep.Clean() || !strings.Contains(strings.Join(rep.Repaired, ";"), "accepted the loss") {
		t.Fatalf("repair: %v %+v", err, rep)
	}
	fsys.Close()
	fsys, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("open after accepting the loss: %v", err)
	}
	defer fsys.Close()
	if _, err := fsys.Stat("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Stat("b"); err == nil {
		t.Fatal("b survived in a store that never had it")
	}
}

// A damaged device label switched lost-commit detection off with only a
// warning. Now open refuses naming `fsck --repair`, fsck reports it, and
// repair rewrites the label, after which the image opens and is clean.
func TestDamagedDeviceLabel(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	fsys, err := Create(dir, Options{Size: 64 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := fsys.OpenFile("a", os.O_RDWR|os.O_CREATE, 0o644)
	f.WriteAt([]byte("hello"), 0)
	f.Sync()
	f.Close()
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
	// Flip a byte of the label's commit sequence: its checksum no longer
	// matches.
	data, err := os.OpenFile(filepath.Join(dir, dataFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	data.ReadAt(b, 12)
	b[0] ^= 0x40
	if _, err := data.WriteAt(b, 12); err != nil {
		t.Fatal(err)
	}
	data.Close()

	if fsys, err := Open(dir, Options{}); err == nil {
		fsys.Close()
		t.Fatal("an image with a damaged device label was opened")
	} else if msg := err.Error(); !strings.Contains(msg, "device label") || !strings.Contains(msg, "reflinkfs fsck --repair") || strings.Contains(msg, "\n") {
		t.Errorf("open's refusal does not say what is wrong and what to do on one line: %q", msg)
	}
	fsys, err = Open(dir, Options{Recovery: true, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := fsys.Fsck(false)
	fsys.Close()
	if err != nil || rep.Clean() || len(rep.Unrepairable) > 0 || !strings.Contains(strings.Join(rep.Problems, ";"), "device label") {
		t.Fatalf("fsck of a damaged label: %v %+v; want a problem repair can fix", err, rep)
	}
	fsys, err = Open(dir, Options{Recovery: true})
	if err != nil {
		t.Fatal(err)
	}
	rep, err = fsys.Fsck(true)
	fsys.Close()
	if err != nil || !rep.Clean() || !strings.Contains(strings.Join(rep.Repaired, ";"), "device label") {
		t.Fatalf("repair: %v %+v", err, rep)
	}
	fsys, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("open after repair: %v", err)
	}
	defer fsys.Close()
	if rep, err := fsys.Fsck(false); err != nil || !rep.Clean() {
		t.Fatalf("fsck after repair: %v %+v", err, rep)
	}
}

// Every progress report names its phase (xattrs and symlinks had none).
func TestFsckProgressNamesEveryPhase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	fsys, err := Create(dir, Options{Size: 64 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	f, _ := fsys.OpenFile("a", os.O_RDWR|os.O_CREATE, 0o644)
	f.WriteAt([]byte("hello"), 0)
	f.Close()
	if err := fsys.Symlink("a", "l"); err != nil {
		t.Fatal(err)
	}
	a, err := fsys.Lookup(RootIno, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.SetXattr(a.Ino, "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	phases := map[string]bool{}
	if _, err := fsys.Check(CheckOptions{Progress: func(phase string, done int64) { phases[phase] = true }}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"inodes", "entries", "extents", "xattrs", "symlinks", "data"} {
		if !phases[want] {
			t.Errorf("no progress for phase %q (got %v)", want, phases)
		}
	}
	if phases[""] {
		t.Errorf("a progress report without a phase name (got %v)", phases)
	}
}

// Repair of a damaged tree: a cycle of directories cut off from the root, a
// directory with two entries, a symlink without its target and a file whose
// checksum record is gone. Repair leaves a clean image where both cycle
// directories are reachable (one under /lost+found) and the file reads.
func TestFsckRepairsDamagedTree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	fsys, err := Create(dir, Options{Size: 64 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	for _, d := range []string{"a", "b", "c", "other"} {
		if err := fsys.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := fsys.Symlink("target", "l"); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("xyz"), 3000)
	f, _ := fsys.OpenFile("c/file", os.O_RDWR|os.O_CREATE, 0o644)
	f.WriteAt(data, 0)
	f.Close()
	fsys.Sync()
	a, _ := fsys.Lookup(RootIno, "a")
	b, _ := fsys.Lookup(RootIno, "b")
	c, _ := fsys.Lookup(RootIno, "c")
	l, _ := fsys.Lookup(RootIno, "l")
	// a and b name each other and nothing else names them: a cycle. c gets
	// a second entry in "other". l loses its target, and every checksum
	// record goes.
	damage(t, fsys, func(set func(k, v []byte), del func(k []byte)) {
		del(meta.DirentKey(RootIno, "a"))
		del(meta.DirentKey(RootIno, "b"))
		kb := meta.DirentKey(a.Ino, "b")
		db := meta.Dirent{Ino: b.Ino, Type: syscall.S_IFDIR}
		set(kb, db.Encode(kb))
		ka := meta.DirentKey(b.Ino, "a")
		da := meta.Dirent{Ino: a.Ino, Type: syscall.S_IFDIR}
		set(ka, da.Encode(ka))
		oth, _ := fsys.Lookup(RootIno, "other")
		kc := meta.DirentKey(oth.Ino, "c2")
		dc := meta.Dirent{Ino: c.Ino, Type: syscall.S_IFDIR}
		set(kc, dc.Encode(kc))
		del(meta.SymlinkKey(l.Ino))
		for g := uint64(0); g < 64; g++ {
			del(meta.ChecksumKey(g))
		}
	})
	fsys.mu.Lock()
	fsys.inodes = map[uint64]*inode{} // forget cached state, as after a restart
	fsys.mu.Unlock()
	rep, err := fsys.Fsck(false)
	if err != nil || rep.Clean() || len(rep.Unrepairable) > 0 {
		t.Fatalf("fsck: %v %+v; want problems repair can fix", err, rep)
	}
	rep, err = fsys.Fsck(true)
	if err != nil || !rep.Clean() {
		t.Fatalf("repair: %v; left: %q; repaired: %q", err, rep.Problems, rep.Repaired)
	}
	t.Logf("repaired: %q", rep.Repaired)
	found := 0
	for _, ino := range []uint64{a.Ino, b.Ino} {
		if _, err := fsys.Stat(fmt.Sprintf("lost+found/#%d", ino)); err == nil {
			found++
		}
	}
	if found != 1 {
		t.Errorf("%d directories of the cycle under lost+found, want 1", found)
	}
	if _, err := fsys.Lookup(RootIno, "l"); err == nil {
		t.Error("the symlink without a target is still there")
	}
	if _, err := fsys.Stat("other/c2"); err == nil {
		t.Error("the second entry of directory c is still there")
	}
	f, err = fsys.OpenFile("c/file", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(data))
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data) {
		t.Errorf("c/file after its checksums were recomputed: %v", err)
	}
	f.Close()
}
