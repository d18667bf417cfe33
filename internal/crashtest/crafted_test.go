package crashtest

// Records with valid checksums but impossible contents (what a bug, a
// misdirected write that kept its checksum, or a crafted image produces):
// out-of-range block numbers, entries naming missing inodes, directory
// cycles, free space overlapping used blocks, counters below what exists.
// The contract: refused at open with a clear error, or the affected entry
// returns EIO, fsck reports the damage, nothing hangs or panics, and no
// file ever shows bytes no commit left in it.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/internal/kv"
	"github.com/reflinkfs/reflinkfs/internal/meta"
)

// imageFacts are what the crafted cases need to know about the image.
type imageFacts struct {
	ino    map[string]uint64 // path -> inode number
	super  meta.Super
	phys   map[string][]int64
	maxIno uint64
}

func factsOf(t *testing.T, img *testImage, dir string) imageFacts {
	t.Helper()
	opt := quietOptions()
	opt.ReadOnly = true
	fsys, err := reflinkfs.Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	f := imageFacts{ino: map[string]uint64{}, phys: img.phys}
	for p := range img.final {
		if strings.Contains(p, "#") {
			continue
		}
		fi, err := fsys.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		ino := fi.Sys().(*reflinkfs.Attr).Ino
		f.ino[p] = ino
		f.maxIno = max(f.maxIno, ino)
	}
	return f
}

// craftedCase changes the store of a copy of the image; after, if set, then
// uses the opened image and reports what it finds wrong.
type craftedCase struct {
	name   string
	change func(store kv.Store, f imageFacts) error
	after  func(t *testing.T, img *testImage, dir string, f imageFacts)
}

func put(store kv.Store, key, val []byte) error {
	txn := store.NewTxn()
	if err := txn.Set(key, val); err != nil {
		return err
	}
	return store.Commit(txn, true)
}

// firstExtent returns the key and value of ino's first extent record.
func firstExtent(store kv.Store, ino uint64) ([]byte, meta.Extent, error) {
	p := meta.InodePrefix(meta.PrefixExtent, ino)
	it := store.NewIter(p, meta.PrefixEnd(p))
	defer it.Close()
	if !it.First() {
		return nil, meta.Extent{}, errors.Join(fmt.Errorf("inode %d has no extent", ino), it.Close())
	}
	k := append([]byte(nil), it.Key()...)
	e, err := meta.DecodeExtent(k, it.Value())
	return k, e, err
}

var craftedCases = []craftedCase{
	{name: "extent-beyond-device", change: func(s kv.Store, f imageFacts) error {
		k, e, err := firstExtent(s, f.ino["d/f1"])
		if err != nil {
			return err
		}
		e.Pblk = f.super.DeviceBlocks + 8
		return put(s, k, e.Encode(k))
	}},
	{name: "extent-at-huge-block", change: func(s kv.Store, f imageFacts) error {
		k, e, err := firstExtent(s, f.ino["d/f2"])
		if err != nil {
			return err
		}
		e.Pblk, e.Len = 1<<62, 1
		return put(s, k, e.Encode(k))
	}},
	{name: "extent-of-missing-inode", change: func(s kv.Store, f imageFacts) error {
		k := meta.ExtentKey(f.maxIno+1000, 0)
		e := meta.Extent{Pblk: uint64(f.phys["d/f1"][0]), Len: 1}
		return put(s, k, e.Encode(k))
	}},
	{name: "entry-naming-missing-inode", change: func(s kv.Store, f imageFacts) error {
		k := meta.DirentKey(f.ino["d"], "ghost")
		d := meta.Dirent{Ino: f.maxIno + 1000, Type: syscall.S_IFREG}
		return put(s, k, d.Encode(k))
	}},
	{name: "directory-cycle", change: func(s kv.Store, f imageFacts) error {
		k := meta.DirentKey(f.ino["d"], "loop")
		d := meta.Dirent{Ino: f.ino["d"], Type: syscall.S_IFDIR}
		return put(s, k, d.Encode(k))
	}},
	{name: "entry-type-disagrees-with-inode", change: func(s kv.Store, f imageFacts) error {
		k := meta.DirentKey(f.ino["d"], "f1")
		d := meta.Dirent{Ino: f.ino["d/f1"], Type: syscall.S_IFDIR}
		return put(s, k, d.Encode(k))
	}},
	{name: "directory-parent-loop", change: func(s kv.Store, f imageFacts) error {
		ino := f.ino["d"]
		v, err := s.Get(meta.InodeKey(ino))
		if err != nil {
			return err
		}
		in, err := meta.DecodeInode(ino, v)
		if err != nil {
			return err
		}
		in.Parent = ino
		return put(s, meta.InodeKey(ino), in.Encode(ino))
	}, after: func(t *testing.T, img *testImage, dir string, f imageFacts) {
		// Moving a directory into the looping one walks its parent chain.
		fsys, err := reflinkfs.Open(dir, quietOptions())
		if err != nil {
			return
		}
		defer fsys.Close()
		if err := fsys.Mkdir("e", 0o755); err != nil {
			t.Errorf("mkdir: %v", err)
			return
		}
		err = fsys.Rename("e", "d/e")
		t.Logf("rename of a directory into the looping one: %v", err)
	}},
	{name: "xattr-of-missing-inode", change: func(s kv.Store, f imageFacts) error {
		k := meta.XattrKey(f.maxIno+1000, "user.ghost")
		return put(s, k, meta.EncodeBytes(k, []byte("boo")))
	}},
	{name: "refcount-on-unshared-block", change: func(s kv.Store, f imageFacts) error {
		p := uint64(f.phys["d/f2"][0])
		k := meta.RefcountKey(p)
		r := meta.Run{Len: 1, Count: 2}
		return put(s, k, r.Encode(k))
	}},
	{name: "next-inode-below-existing", change: func(s kv.Store, f imageFacts) error {
		sb := f.super
		sb.NextIno = 2
		return put(s, meta.SuperKey(), sb.Encode())
	}, after: func(t *testing.T, img *testImage, dir string, f imageFacts) {
		// New files must not take the numbers of existing ones.
		mustNotClobber(t, img, dir, func(fsys *reflinkfs.FS) error {
			for i := range 5 {
				if err := writeNew(fsys, fmt.Sprintf("new%d", i), 5000); err != nil {
					return err
				}
			}
			return nil
		})
	}},
	{name: "free-run-over-used-blocks", change: func(s kv.Store, f imageFacts) error {
		// Mark every block of d/f2 free, as a damaged or misdirected
		// free-space record would.
		for _, p := range f.phys["d/f2"] {
			if p < 0 {
				continue
			}
			k := meta.FreeKey(uint64(p))
			r := meta.Run{Len: 1}
			if err := put(s, k, r.Encode(k)); err != nil {
				return err
			}
		}
		return nil
	}, after: func(t *testing.T, img *testImage, dir string, f imageFacts) {
		// New data must not land in d/f2's blocks.
		mustNotClobber(t, img, dir, func(fsys *reflinkfs.FS) error {
			return writeNew(fsys, "big", 4<<20)
		})
	}},
}

// writeNew creates name with n bytes and syncs.
func writeNew(fsys *reflinkfs.FS, name string, n int) error {
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + 7)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return err
	}
	return f.Sync()
}

// mustNotClobber opens the damaged image (if it opens), runs fn, and then
// demands that every entry the image had still shows a committed state or
// EIO: new data must never replace old files' bytes.
func mustNotClobber(t *testing.T, img *testImage, dir string, fn func(*reflinkfs.FS) error) {
	t.Helper()
	within(t, 30*time.Second, "writing to the damaged image", func() {
		fsys, err := reflinkfs.Open(dir, quietOptions())
		if err != nil {
			t.Logf("open refused: %v", err)
			return
		}
		err = fn(fsys)
		t.Logf("writing: %v", err)
		got := summarize(entries(fsys))
		fsys.Close()
		rep := childReport{Entries: map[string]string{}, MountProblems: []string{"(damaged on purpose)"}}
		for p, e := range got {
			if _, old := img.final[p]; old || strings.HasPrefix(p, ".") {
				rep.Entries[p] = e
			}
		}
		v, _ := judge(img, rep)
		for _, x := range v {
			t.Errorf("after writing to the damaged image: %s", x)
		}
	})
}

func TestCraftedRecords(t *testing.T) {
	img := sharedImage(t)
	for _, c := range craftedCases {
		t.Run(c.name, func(t *testing.T) {
			dir := img.copyTo(t)
			f := factsOf(t, img, dir)
			store, err := kv.OpenPebble(filepath.Join(dir, "meta"), kv.PebbleOptions{})
			if err != nil {
				t.Fatal(err)
			}
			v, err := store.Get(meta.SuperKey())
			if err == nil {
				f.super, err = meta.DecodeSuper(v)
			}
			if err == nil {
				err = c.change(store, f)
			}
			if cerr := store.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			var rep childReport
			within(t, 60*time.Second, "inspect", func() { rep = inspect(dir) })
			violations, silent := judge(img, rep)
			for _, x := range violations {
				t.Error(x)
			}
			if silent != "" {
				t.Error(silent)
			}
			if rep.OpenErr == "" && len(rep.MountProblems) == 0 && rep.MountFsckErr == "" {
				t.Errorf("the image opened and fsck reported nothing")
			}
			if rep.FsckOpenErr == "" && rep.FsckErr == "" && len(rep.FsckProblems) == 0 {
				t.Errorf("`reflinkfs fsck` (read-only, recovery) reports a clean image")
			}
			t.Logf("open: %q; fsck: open %q, err %q, problems %q", rep.OpenErr, rep.FsckOpenErr, rep.FsckErr, rep.FsckProblems)
			if c.after != nil {
				c.after(t, img, dir, f)
			}
		})
	}
}
