package reflinkfs_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/reflinkfs/reflinkfs"
)

func joinView(v *reflinkfs.ReadView) []byte {
	var b []byte
	for _, s := range v.Slices() {
		b = append(b, s...)
	}
	return b
}

// A view holds exactly what ReadAt reads, for any range: data blocks
// cached or not, holes, preallocated blocks, blocks shared with a clone,
// partial first and last blocks, the end of file, and ranges too large to
// pin (copied instead).
func TestReadViewMatchesReadAt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	// 8 MiB of cache: views up to 1 MiB pin frames, larger ones are copied.
	fsys, err := reflinkfs.Create(dir, reflinkfs.Options{Size: 256 << 20, CacheSize: 8 << 20, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	f, err := fsys.OpenFile("f", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = f.WriteAt(data[:1<<20], 0)
	must(err)
	_, err = f.WriteAt(data[2<<20:], 2<<20) // [1 MiB, 2 MiB) is a hole
	must(err)
	must(f.PunchHole(2<<20+8192, 3*4096))
	must(fsys.Sync())
	must(f.AllocateKeepSize(3<<20, 1<<20)) // unwritten beyond the end: not readable
	must(f.Truncate(3<<20 - 1000))         // a partial last block
	g, err := fsys.OpenFile("g", os.O_RDWR|os.O_CREATE, 0o644)
	must(err)
	defer g.Close()
	must(g.CloneRange(f, 0, 1<<20, 0))
	must(g.Allocate(1<<20, 64<<10)) // preallocated, reads as zeros
	_, err = g.WriteAt(data[:100], 1<<20+64<<10)
	must(err)
	must(fsys.DropCache())

	check := func(file *reflinkfs.File, off int64, n int) {
		t.Helper()
		want := make([]byte, n)
		wn, werr := file.ReadAt(want, off)
		v, verr := file.ReadView(off, n)
		if !errors.Is(verr, werr) && !(verr == nil && werr == nil) {
			t.Fatalf("%s [%d,+%d): ReadView error %v, ReadAt error %v", file.Name(), off, n, verr, werr)
		}
		if v == nil {
			return
		}
		got := joinView(v)
		v.Release()
		v.Release() // a second Release does nothing
		if v.Len() != len(got) || len(got) != wn || !bytes.Equal(got, want[:wn]) {
			t.Fatalf("%s [%d,+%d): view of %d bytes (Len %d) differs from ReadAt's %d", file.Name(), off, n, len(got), v.Len(), wn)
		}
	}
	for _, file := range []*reflinkfs.File{f, g} {
		st, err := file.Stat()
		must(err)
		size := st.Size()
		for _, c := range [][2]int64{{0, 0}, {0, 1}, {4095, 2}, {0, 1 << 20}, {1<<20 - 1, 4098}, {size - 10, 100}, {size, 10}, {size + 5000, 10}, {0, 3 << 20}} {
			check(file, c[0], int(c[1]))
		}
		for range 300 {
			off := rng.Int64N(size + 8192)
			n := rng.IntN(1<<20 + 8192)
			check(file, off, n)
		}
	}
	if _, err := f.ReadView(-1, 10); err == nil {
		t.Errorf("ReadView at a negative offset succeeded")
	}
	w, err := fsys.OpenFile("g", os.O_WRONLY, 0)
	must(err)
	defer w.Close()
	if _, err := w.ReadView(0, 10); err == nil {
		t.Errorf("ReadView of a write-only file succeeded")
	}
}

// A view is a consistent snapshot: writes to the file wait until it is
// released, so a reader never sees half of a write.
func TestReadViewIsAtomicWithWrites(t *testing.T) {
	fsys, _ := newFS(t)
	f, err := fsys.OpenFile("f", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const span = 16 * reflinkfs.BlockSize
	write := func(version byte) {
		if _, err := f.WriteAt(bytes.Repeat([]byte{version}, span), 0); err != nil {
			t.Error(err)
		}
	}
	write(1)

	// A writer started while a view is held finishes only after Release.
	v, err := f.ReadView(0, span)
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan struct{})
	go func() { write(2); close(wrote) }()
	select {
	case <-wrote:
		t.Fatal("a write completed while a view of its range was held")
	case <-time.After(50 * time.Millisecond):
	}
	if got := joinView(v); !bytes.Equal(got, bytes.Repeat([]byte{1}, span)) {
		t.Fatal("the view changed while held")
	}
	v.Release()
	<-wrote

	// Concurrent writers and view readers (run under -race): every view
	// shows one version throughout.
	var readers sync.WaitGroup
	stop, writerDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			write(byte(3 + i%200))
		}
	}()
	for r := 0; r < 2; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for range 300 {
				v, err := f.ReadView(0, span)
				if err != nil && err != io.EOF {
					t.Error(err)
					return
				}
				got := joinView(v)
				v.Release()
				if len(got) != span || !bytes.Equal(got, bytes.Repeat(got[:1], span)) {
					t.Errorf("a view mixes versions of a write")
					return
				}
			}
		}()
	}
	readers.Wait()
	close(stop)
	<-writerDone
}
