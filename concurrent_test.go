package reflinkfs_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

// Many goroutines read, write and clone files that share blocks, with
// commits in between. Each writer owns one clone and knows its exact
// contents; readers of the untouched source must always see the original
// bytes, whatever the writers and cloners do. Run under -race.
func TestConcurrentSharedFiles(t *testing.T) {
	dir := t.TempDir() + "/img"
	fsys, err := reflinkfs.Create(dir, reflinkfs.Options{Size: 256 << 20, CacheSize: 512 << 10, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	const size = 512 << 10
	orig := make([]byte, size)
	fillRandom(rand.New(rand.NewPCG(1, 2)), orig)
	src, err := fsys.OpenFile("src", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.WriteAt(orig, 0); err != nil {
		t.Fatal(err)
	}
	const writers, readers = 4, 4
	for i := 0; i < writers; i++ {
		if err := fsys.Clone("src", fmt.Sprintf("w%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, 100)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			name := fmt.Sprintf("w%d", i)
			f, err := fsys.OpenFile(name, os.O_RDWR, 0)
			if err != nil {
				errc <- err
				return
			}
			defer f.Close()
			want := bytes.Clone(orig)
			buf := make([]byte, size)
			for step := 0; step < 60; step++ {
				off := rng.IntN(size - 9000)
				n := 1 + rng.IntN(9000)
				data := make([]byte, n)
				fillRandom(rng, data)
				if _, err := f.WriteAt(data, int64(off)); err != nil {
					errc <- err
					return
				}
				copy(want[off:], data)
				if step%10 == 0 {
					if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, want) {
						errc <- fmt.Errorf("%s: contents differ after step %d (err %v)", name, step, err)
						return
					}
					// Clone our own file and check the clone.
					cl := name + "-clone"
					if err := fsys.Clone(name, cl); err != nil {
						errc <- err
						return
					}
					c, err := fsys.OpenFile(cl, os.O_RDONLY, 0)
					if err != nil {
						errc <- err
						return
					}
					if _, err := c.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, want) {
						errc <- fmt.Errorf("%s: clone differs (err %v)", cl, err)
					}
					c.Close()
				}
			}
		}(i)
	}
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, size)
			f, err := fsys.OpenFile("src", os.O_RDONLY, 0)
			if err != nil {
				errc <- err
				return
			}
			defer f.Close()
			for round := 0; round < 20; round++ {
				if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, orig) {
					errc <- fmt.Errorf("source changed while clones were written (err %v)", err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 10; i++ {
			if err := fsys.Sync(); err != nil {
				errc <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	src.Close()
	rep, err := fsys.Fsck(false)
	if err != nil || !rep.Clean() {
		t.Fatalf("fsck: %v %v", err, rep.Problems)
	}
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}
