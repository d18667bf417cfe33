package crashtest

// Corruption tests on a real on-disk image: damaged data blocks must read as
// EIO (never wrong bytes, never a panic) and be counted; a truncated data
// file must be refused or read as EIO; damaged metadata records must be
// refused at open (naming `reflinkfs fsck`) or reported by Fsck, with the
// affected file returning EIO. Nothing may hang.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reflinkfs/reflinkfs"
)

var corruptTrials = flag.Int("corrupt.trials", 12, "random damage trials per corruption test")

// flipBytes xors one random byte in each of the given physical blocks of
// the image's data file.
func flipBytes(t *testing.T, dir string, blocks []int64, rng *rand.Rand) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range blocks {
		off := p*BlockSize + rng.Int64N(BlockSize)
		b := []byte{0}
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= byte(1 + rng.IntN(255))
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
}

// checkReads reads every block of every file of the final state and demands: a block
// whose physical block is damaged returns EIO (twice: the failure is not
// cached as data); every other block returns exactly its bytes; a read of a
// whole damaged file fails with EIO rather than returning a part of it.
func checkReads(t *testing.T, fsys *reflinkfs.FS, img *testImage, damaged func(p int64) bool) {
	for path, blocks := range img.phys {
		want := []byte(img.final[path][2:])
		f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			t.Errorf("open %s: %v", path, err)
			continue
		}
		bad := false
		for pass := range 2 {
			for b, p := range blocks {
				off := int64(b) * BlockSize
				n := min(BlockSize, int64(len(want))-off)
				buf := make([]byte, n)
				_, err := f.ReadAt(buf, off)
				if p >= 0 && damaged(p) {
					bad = true
					if !errors.Is(err, syscall.EIO) {
						t.Errorf("pass %d: %s block %d (physical %d) is damaged: read gave %v, want EIO", pass, path, b, p, err)
					}
					continue
				}
				if err != nil {
					t.Errorf("pass %d: %s block %d (physical %d, undamaged): %v", pass, path, b, p, err)
				} else if !bytes.Equal(buf, want[off:off+n]) {
					t.Errorf("pass %d: %s block %d (physical %d): wrong bytes", pass, path, b, p)
				}
			}
		}
		whole := make([]byte, len(want))
		n, err := f.ReadAt(whole, 0)
		switch {
		case bad && !errors.Is(err, syscall.EIO):
			t.Errorf("%s: whole-file read of a damaged file gave %d bytes, %v; want EIO", path, n, err)
		case !bad && len(want) > 0 && (err != nil || !bytes.Equal(whole, want)):
			t.Errorf("%s: whole-file read: %d bytes, %v", path, n, err)
		}
		f.Close()
	}
}

// Random byte flips in referenced data blocks: the blocks read as EIO in
// every file sharing them, nothing else changes, and the errors are counted.
func TestDataBlockCorruption(t *testing.T) {
	img := sharedImage(t)
	all := img.referencedBlocks()
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := range *corruptTrials {
		dir := img.copyTo(t)
		var damaged []int64
		for range 1 + rng.IntN(3) {
			damaged = append(damaged, all[rng.IntN(len(all))])
		}
		slices.Sort(damaged)
		damaged = slices.Compact(damaged)
		flipBytes(t, dir, damaged, rng)
		within(t, 30*time.Second, fmt.Sprintf("trial %d (blocks %v)", trial, damaged), func() {
			fsys, err := reflinkfs.Open(dir, quietOptions())
			if err != nil {
				t.Errorf("trial %d: open: %v", trial, err)
				return
			}
			defer fsys.Close()
			checkReads(t, fsys, img, func(p int64) bool { return slices.Contains(damaged, p) })
			if n := fsys.Stats().ChecksumErrors; n < int64(len(damaged)) {
				t.Errorf("trial %d: %d checksum errors counted for %d damaged blocks", trial, n, len(damaged))
			}
			// fsck reads every data block: it must report the damaged ones
			// (by checksum) and nothing else.
			rep, err := fsys.Fsck(false)
			if err != nil {
				t.Errorf("trial %d: fsck: %v", trial, err)
				return
			}
			for _, p := range rep.Problems {
				if !strings.Contains(p, "fails its checksum") {
					t.Errorf("trial %d: fsck reports a metadata problem though only data was damaged: %s", trial, p)
				}
			}
			if rep.Clean() {
				t.Errorf("trial %d: fsck did not report the damaged data blocks %v", trial, damaged)
			}
		})
	}
}

// A checksum failure is logged with the inode and the file offset (the
// issue: "counted and logged with the inode and offset").
func TestChecksumErrorLogNamesInodeAndOffset(t *testing.T) {
	img := sharedImage(t)
	dir := img.copyTo(t)
	path := "d/f1"
	p := img.phys[path][1]
	flipBytes(t, dir, []int64{p}, rand.New(rand.NewPCG(1, 1)))
	var logs bytes.Buffer
	var mu sync.Mutex
	opt := quietOptions()
	opt.Logger = slog.New(slog.NewTextHandler(lockedWriter{&logs, &mu}, nil))
	within(t, 30*time.Second, "read of a damaged block", func() {
		fsys, err := reflinkfs.Open(dir, opt)
		if err != nil {
			t.Errorf("open: %v", err)
			return
		}
		defer fsys.Close()
		f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			t.Errorf("open: %v", err)
			return
		}
		defer f.Close()
		a, _ := f.Attr()
		buf := make([]byte, BlockSize)
		if _, err := f.ReadAt(buf, BlockSize); !errors.Is(err, syscall.EIO) {
			t.Errorf("read of damaged block: %v, want EIO", err)
		}
		mu.Lock()
		out := logs.String()
		mu.Unlock()
		if !strings.Contains(out, fmt.Sprintf("inode=%d", a.Ino)) {
			t.Errorf("the checksum error is not logged with inode=%d:\n%s", a.Ino, out)
		}
		if !strings.Contains(out, fmt.Sprintf("offset=%d", BlockSize)) {
			t.Errorf("the checksum error is not logged with the file offset (offset=%d):\n%s", BlockSize, out)
		}
	})
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// Fsck verifies data blocks against their checksums and reports the damaged
// ones (the issue: byte flips in the data file — "fsck reports them").
func TestFsckFindsDamagedDataBlocks(t *testing.T) {
	img := sharedImage(t)
	dir := img.copyTo(t)
	p := img.phys["d/f2"][0]
	flipBytes(t, dir, []int64{p}, rand.New(rand.NewPCG(2, 2)))
	within(t, 30*time.Second, "fsck", func() {
		opt := quietOptions()
		opt.ReadOnly, opt.Recovery = true, true // as `reflinkfs fsck` opens
		fsys, err := reflinkfs.Open(dir, opt)
		if err != nil {
			t.Errorf("open: %v", err)
			return
		}
		defer fsys.Close()
		rep, err := fsys.Fsck(false)
		if err != nil {
			t.Errorf("fsck: %v", err)
			return
		}
		if rep.Clean() {
			t.Errorf("fsck reports a clean image though physical block %d (d/f2 block 0) fails its checksum", p)
		}
	})
}

// A truncated data file: cut short, the image is refused with a one-line
// error; cut and grown back (the tail reads as zeros), the lost blocks read
// as EIO and the others are intact.
func TestDataFileTruncation(t *testing.T) {
	img := sharedImage(t)
	t.Run("short", func(t *testing.T) {
		dir := img.copyTo(t)
		if err := os.Truncate(filepath.Join(dir, "data"), img.size/2); err != nil {
			t.Fatal(err)
		}
		within(t, 30*time.Second, "open", func() {
			fsys, err := reflinkfs.Open(dir, quietOptions())
			if err == nil {
				fsys.Close()
				t.Errorf("a data file cut to half its size was opened")
				return
			}
			if !oneLine(err.Error()) || !strings.Contains(err.Error(), "truncated") {
				t.Errorf("refusal is not one line naming the truncation: %q", err)
			}
		})
	})
	blocks := img.referencedBlocks()
	rng := rand.New(rand.NewPCG(3, 3))
	for trial := range max(*corruptTrials/4, 2) {
		cut := blocks[rng.IntN(len(blocks))]
		t.Run(fmt.Sprintf("cut-at-block-%d", cut), func(t *testing.T) {
			dir := img.copyTo(t)
			data := filepath.Join(dir, "data")
			if err := os.Truncate(data, cut*BlockSize); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(data, img.size); err != nil {
				t.Fatal(err)
			}
			within(t, 30*time.Second, fmt.Sprintf("trial %d", trial), func() {
				fsys, err := reflinkfs.Open(dir, quietOptions())
				if err != nil {
					t.Errorf("open: %v", err)
					return
				}
				defer fsys.Close()
				// A lost block that held zeros still matches its checksum.
				zero := func(p int64) bool {
					for path, bl := range img.phys {
						for b, q := range bl {
							if q == p {
								c := []byte(img.final[path][2:])
								end := min(int64(len(c)), int64(b+1)*BlockSize)
								return bytes.Count(c[int64(b)*BlockSize:end], []byte{0}) == int(end-int64(b)*BlockSize)
							}
						}
					}
					return false
				}
				checkReads(t, fsys, img, func(p int64) bool { return p >= cut && !zero(p) })
			})
		})
	}
}
