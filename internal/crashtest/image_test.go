package crashtest

// A small real on-disk image (data file and pebble files on the host
// filesystem) for the corruption tests, built in two committed phases, and
// helpers to copy and inspect it.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reflinkfs/reflinkfs"
)

// testImage is an image and what it holds.
type testImage struct {
	dir string
	// versions are the image's entries (see entries) at each commit,
	// oldest first; final is the last one, the state the image holds.
	versions []map[string]string
	final    map[string]string
	// phys maps every regular file of final to the physical block of each
	// of its blocks (-1 for holes and preallocated blocks, which are not
	// read from the device).
	phys map[string][]int64
	size int64 // data device bytes
}

var (
	builtImage     *testImage
	builtImageErr  string
	buildImageOnce sync.Once
	imageBuildDir  string
)

func quietOptions() reflinkfs.Options {
	return reflinkfs.Options{CacheSize: 512 << 10, CommitInterval: -1, Logger: slog.New(slog.DiscardHandler)}
}

// sharedImage builds the test image once per test binary (in a directory
// removed by TestMain) and returns it; tests copy it before damaging it.
func sharedImage(t *testing.T) *testImage {
	t.Helper()
	buildImageOnce.Do(func() {
		dir, err := os.MkdirTemp("", "crashtest-image-")
		if err != nil {
			builtImageErr = err.Error()
			return
		}
		imageBuildDir = dir
		builtImage, builtImageErr = buildImage(filepath.Join(dir, "image"))
	})
	if builtImageErr != "" {
		t.Fatalf("building the test image: %s", builtImageErr)
	}
	return builtImage
}

func TestMain(m *testing.M) {
	code := m.Run()
	if imageBuildDir != "" {
		os.RemoveAll(imageBuildDir)
	}
	os.Exit(code)
}

// buildImage makes the image: phase 1 writes files, a clone, a symlink, an
// xattr, a file with a hole and one with preallocated blocks; phase 2
// (after a close and reopen) overwrites, appends, creates, removes,
// truncates and clones, and closes; phase 3 reopens, writes and syncs
// twice and leaves the image open, as a crash would, so the last commits
// are only in pebble's WAL.
func buildImage(dir string) (*testImage, string) {
	img := &testImage{dir: dir, size: 8 << 20}
	opt := quietOptions()
	opt.Size = img.size
	rng := rand.New(rand.NewPCG(42, 42))
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	var failure string
	check := func(what string, err error) bool {
		if err != nil && failure == "" {
			failure = what + ": " + err.Error()
		}
		return err == nil
	}
	write := func(fsys *reflinkfs.FS, path string, off int64, b []byte) {
		f, err := fsys.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if !check("open "+path, err) {
			return
		}
		defer f.Close()
		_, err = f.WriteAt(b, off)
		check("write "+path, err)
	}

	fsys, err := reflinkfs.Create(dir, opt)
	if err != nil {
		return nil, err.Error()
	}
	check("mkdir", fsys.Mkdir("d", 0o755))
	for i := range 6 {
		write(fsys, "d/f"+string(rune('0'+i)), 0, data(1+rng.IntN(150<<10)))
	}
	check("clone", fsys.Clone("d/f0", "d/c0"))
	check("symlink", fsys.Symlink("f1", "d/link"))
	if a, err := fsys.Stat("d/f1"); check("stat", err) {
		check("setxattr", fsys.SetXattr(a.Sys().(*reflinkfs.Attr).Ino, "user.k", []byte("value"), 0))
	}
	write(fsys, "d/holey", 0, data(4096))
	write(fsys, "d/holey", 64<<10, data(4096))
	if f, err := fsys.OpenFile("d/prealloc", os.O_RDWR|os.O_CREATE, 0o644); check("create prealloc", err) {
		check("allocate", f.Allocate(0, 32<<10))
		_, err = f.WriteAt(data(100), 8<<10)
		check("write prealloc", err)
		f.Close()
	}
	img.versions = append(img.versions, entries(fsys))
	check("close phase 1", fsys.Close())

	fsys, err = reflinkfs.Open(dir, opt)
	if err != nil {
		return nil, err.Error()
	}
	write(fsys, "d/f1", 5000, data(10<<10))
	if a, err := fsys.Stat("d/f2"); check("stat", err) {
		write(fsys, "d/f2", a.Size(), data(30<<10))
	}
	write(fsys, "d/g0", 0, data(50<<10))
	check("remove", fsys.Remove("d/f3"))
	if f, err := fsys.OpenFile("d/f4", os.O_RDWR, 0); check("open f4", err) {
		check("truncate", f.Truncate(1000))
		f.Close()
	}
	check("clone", fsys.Clone("d/f5", "d/c5"))
	write(fsys, "d/c5", 4096, data(4096))
	img.versions = append(img.versions, entries(fsys))
	check("close phase 2", fsys.Close())

	fsys, err = reflinkfs.Open(dir, opt)
	if err != nil {
		return nil, err.Error()
	}
	write(fsys, "d/h0", 0, data(40<<10))
	check("sync", fsys.Sync())
	img.versions = append(img.versions, entries(fsys))
	write(fsys, "d/f1", 0, data(10))
	write(fsys, "d/g0", 50<<10, data(20<<10))
	check("remove", fsys.Remove("d/f5"))
	check("sync", fsys.Sync())
	img.final = entries(fsys)
	img.versions = append(img.versions, img.final)
	img.phys = map[string][]int64{}
	for p, e := range img.final {
		if !strings.HasPrefix(e, "f:") {
			continue
		}
		f, err := fsys.OpenFile(p, os.O_RDONLY, 0)
		if !check("open "+p, err) {
			continue
		}
		exts, err := f.Fiemap()
		f.Close()
		check("fiemap "+p, err)
		blocks := make([]int64, (len(e)-2+BlockSize-1)/BlockSize)
		for i := range blocks {
			blocks[i] = -1
		}
		for _, x := range exts {
			if x.Unwritten {
				continue
			}
			for o := int64(0); o < x.Length; o += BlockSize {
				if b := (x.Logical + o) / BlockSize; b < int64(len(blocks)) {
					blocks[b] = (x.Physical + o) / BlockSize
				}
			}
		}
		img.phys[p] = blocks
	}
	// fsys stays open (its lock too, which copies leave out): the test
	// binary's end is the crash.
	if failure != "" {
		return nil, failure
	}
	return img, ""
}

// entries describes every entry of an image: "d:" for a directory, "f:" and
// the bytes of a regular file, "l:" and the target of a symlink, "e:" and
// the error met reading it; and each extended attribute of an entry, under
// "PATH#NAME", as "x:" and its value.
func entries(fsys *reflinkfs.FS) map[string]string {
	out := map[string]string{}
	walkImage(fsys, func(e walkEntry) {
		if fi, err := fsys.Stat(e.path); err == nil {
			ino := fi.Sys().(*reflinkfs.Attr).Ino
			names, err := fsys.ListXattr(ino)
			if err != nil {
				out[e.path+"#"] = "e:" + err.Error()
			}
			for _, n := range names {
				v, err := fsys.GetXattr(ino, n)
				if err != nil {
					out[e.path+"#"+n] = "e:" + err.Error()
				} else {
					out[e.path+"#"+n] = "x:" + string(v)
				}
			}
		}
		switch {
		case e.err != nil:
			out[e.path] = "e:" + e.err.Error()
		case e.mode.IsDir():
			out[e.path] = "d:"
		case e.mode&os.ModeSymlink != 0:
			out[e.path] = "l:" + string(e.data)
		default:
			out[e.path] = "f:" + string(e.data)
		}
	})
	return out
}

// referencedBlocks lists every physical block some file of v2 reads from
// the device, in increasing order.
func (img *testImage) referencedBlocks() []int64 {
	set := map[int64]bool{}
	for _, blocks := range img.phys {
		for _, p := range blocks {
			if p >= 0 {
				set[p] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// copyTo copies the image (without its lock file) to a new directory, the
// data file sparsely, and returns the directory.
func (img *testImage) copyTo(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "image")
	err := filepath.Walk(img.dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(img.dir, path)
		to := filepath.Join(dst, rel)
		switch {
		case info.IsDir():
			return os.MkdirAll(to, 0o755)
		case rel == "lock":
			return nil
		case rel == "data":
			return copySparse(path, to, info.Size())
		default:
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(to, b, 0o644)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func copySparse(from, to string, size int64) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if err := out.Truncate(size); err != nil {
		out.Close()
		return err
	}
	buf := make([]byte, BlockSize)
	var zero [BlockSize]byte
	for off := int64(0); off < size; off += BlockSize {
		if _, err := io.ReadFull(in, buf); err != nil {
			out.Close()
			return err
		}
		if !bytes.Equal(buf, zero[:]) {
			if _, err := out.WriteAt(buf, off); err != nil {
				out.Close()
				return err
			}
		}
	}
	return out.Close()
}

// within runs fn and fails the test if it panics or does not return within d
// (fn must report failures with t.Errorf, not t.Fatal: it runs on another
// goroutine).
func within(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		fn()
	}()
	select {
	case v := <-done:
		if v != nil {
			t.Fatalf("%s panicked: %v", what, v)
		}
	case <-time.After(d):
		t.Fatalf("%s did not finish within %v (hang)", what, d)
	}
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

// oneLine reports whether an error message is a single line.
func oneLine(msg string) bool { return !strings.ContainsAny(msg, "\r\n") }
