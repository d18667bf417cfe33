package reflinkfs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/reflinkfs/reflinkfs"
)

// writeFragmented writes n blocks at every other file block, so each is an
// extent of its own, and returns the data of block i at offset 2*i*BlockSize.
func writeFragmented(t *testing.T, fsys *reflinkfs.FS, name string, n int) []byte {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var all []byte
	for i := range n {
		blk := bytes.Repeat([]byte{byte(i), byte(i >> 8), 0x5a, byte(len(name))}, reflinkfs.BlockSize/4)
		if _, err := f.WriteAt(blk, int64(2*i)*reflinkfs.BlockSize); err != nil {
			t.Fatal(err)
		}
		all = append(all, blk...)
	}
	return all
}

// Deleting a file with many extents returns at once and frees its blocks in
// the background, chunk by chunk, without touching blocks still shared with
// a clone; the result is exactly what a synchronous delete leaves.
func TestDeleteOfFragmentedFileIsReapedInBackground(t *testing.T) {
	defer reflinkfs.SetReapLimits(64, 16)()
	fsys, _ := newFS(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(fsys.Sync())
	empty := fsys.Stats()
	writeFragmented(t, fsys, "keep", 40) // below the threshold: freed at once
	data := writeFragmented(t, fsys, "big", 1000)
	must(fsys.Clone("big", "clone"))
	want := make([]byte, 2000*reflinkfs.BlockSize)
	for i := range 1000 {
		copy(want[2*i*reflinkfs.BlockSize:], data[i*reflinkfs.BlockSize:(i+1)*reflinkfs.BlockSize])
	}
	clear(want[:100*reflinkfs.BlockSize])
	// Overwrite part of the clone so big has blocks of its own.
	c, err := fsys.OpenFile("clone", os.O_RDWR, 0)
	must(err)
	_, err = c.WriteAt(make([]byte, 100*reflinkfs.BlockSize), 0)
	must(err)
	must(c.Close())
	must(fsys.Sync())

	must(fsys.Remove("keep"))
	if n := fsys.Stats().ReapingFiles; n != 0 {
		t.Fatalf("a file of 40 extents went to the reaper (%d reaping)", n)
	}
	must(fsys.Remove("big"))
	if _, err := fsys.Stat("big"); !os.IsNotExist(err) {
		t.Fatalf("big still visible after Remove: %v", err)
	}
	fsys.WaitReaped()
	if n := fsys.Stats().ReapingFiles; n != 0 {
		t.Fatalf("%d files still reaping after WaitReaped", n)
	}
	checkFsck(t, fsys)
	c, err = fsys.OpenFile("clone", os.O_RDONLY, 0)
	must(err)
	got := make([]byte, len(want))
	_, err = c.ReadAt(got, 0)
	must(c.Close())
	if !bytes.Equal(got[:len(want)-reflinkfs.BlockSize], want[:len(want)-reflinkfs.BlockSize]) {
		t.Fatal("the clone's data changed when its source was reaped")
	}
	must(fsys.Remove("clone"))
	fsys.WaitReaped()
	must(fsys.Sync())
	if got := fsys.Stats(); got.FreeBytes != empty.FreeBytes || got.Inodes != empty.Inodes {
		t.Errorf("after deleting everything: %d bytes free, %d inodes; want %d, %d", got.FreeBytes, got.Inodes, empty.FreeBytes, empty.Inodes)
	}
	checkFsck(t, fsys)
}

// Reaping interrupted by a crash or a close resumes at the next open: the
// orphan is durable with the unlink, and every intermediate state is
// consistent.
func TestReapingResumesAfterCrashAndClose(t *testing.T) {
	defer reflinkfs.SetReapLimits(32, 8)()
	for _, crash := range []bool{true, false} {
		dir := filepath.Join(t.TempDir(), "img")
		opt := reflinkfs.Options{Size: 64 << 20, CacheSize: 1 << 20, CommitInterval: -1}
		fsys, err := reflinkfs.Create(dir, opt)
		if err != nil {
			t.Fatal(err)
		}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(fsys.Sync())
		empty := fsys.Stats()
		writeFragmented(t, fsys, "a", 600)
		data := writeFragmented(t, fsys, "b", 100)
		must(fsys.Sync())
		must(fsys.Remove("a"))
		must(fsys.Sync()) // the unlink is durable; reaping may be anywhere
		if crash {
			fsys.Abandon()
		} else {
			must(fsys.Close())
		}
		fsys, err = reflinkfs.Open(dir, opt)
		must(err)
		fsys.WaitReaped()
		if _, err := fsys.Stat("a"); !os.IsNotExist(err) {
			t.Fatalf("crash=%v: a is back: %v", crash, err)
		}
		b, err := fsys.OpenFile("b", os.O_RDONLY, 0)
		must(err)
		got := make([]byte, 200*reflinkfs.BlockSize)
		n, _ := b.ReadAt(got, 0)
		b.Close()
		for i := 0; i < 100; i++ {
			if !bytes.Equal(got[2*i*reflinkfs.BlockSize:(2*i+1)*reflinkfs.BlockSize], data[i*reflinkfs.BlockSize:(i+1)*reflinkfs.BlockSize]) {
				t.Fatalf("crash=%v: block %d of b differs (read %d bytes)", crash, i, n)
			}
		}
		checkFsck(t, fsys)
		must(fsys.Remove("b"))
		fsys.WaitReaped()
		must(fsys.Sync())
		if got := fsys.Stats(); got.FreeBytes != empty.FreeBytes {
			t.Errorf("crash=%v: %d bytes free after deleting everything, want %d", crash, got.FreeBytes, empty.FreeBytes)
		}
		must(fsys.Close())
	}
}

// A write that needs the space of a file still being reaped waits for the
// reaper instead of failing with ENOSPC.
func TestWriteWaitsForReapedSpace(t *testing.T) {
	defer reflinkfs.SetReapLimits(32, 8)()
	fsys, err := reflinkfs.Create(filepath.Join(t.TempDir(), "img"), reflinkfs.Options{Size: 16 << 20, CacheSize: 1 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	free := fsys.Stats().FreeBytes
	n := int(free/reflinkfs.BlockSize) * 8 / 10
	f, err := fsys.OpenFile("big", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	blk := make([]byte, reflinkfs.BlockSize)
	for i := range n { // every block its own extent
		blk[0] = byte(i)
		if _, err := f.WriteAt(blk, int64(2*i)*reflinkfs.BlockSize); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if err := fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	release := fsys.HoldReaper()
	if err := fsys.Remove("big"); err != nil {
		t.Fatal(err)
	}
	nExt := n
	if n := fsys.Stats().ReapingFiles; n != 1 {
		t.Fatalf("%d files reaping after deleting one file of %d extents, want 1", n, nExt)
	}
	// The write below must wait for the reaper, which starts only later.
	time.AfterFunc(100*time.Millisecond, release)
	g, err := fsys.OpenFile("next", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.WriteAt(make([]byte, n*reflinkfs.BlockSize), 0); err != nil {
		t.Fatalf("writing %d blocks after deleting %d: %v", n, n, err)
	}
}
