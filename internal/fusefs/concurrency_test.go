package fusefs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/reflinkfs/reflinkfs/ioctl"
)

// Many goroutines write their own regions of shared files, read clones that
// must not change, clone, and churn a directory, all at once. Run with -race.
func TestConcurrentGoroutines(t *testing.T) {
	m := mountFresh(t)
	const (
		size    = 4 << 20
		writers = 4
		region  = size / writers
		rounds  = 20
	)
	base := pattern(21, size)
	writeFile(t, m.path("base"), base)
	baseF := openRO(t, m.path("base"))
	for i := 0; i < 3; i++ {
		c := openRW(t, m.path(fmt.Sprintf("clone%d", i)))
		if err := ioctl.Clone(c, baseF); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(m.path("churn"), 0o755); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	fail := func(format string, args ...any) { errs <- fmt.Errorf(format, args...) }

	// Writers: each owns a region of clone0 (one shared file, parallel writes).
	shared, err := os.OpenFile(m.path("clone0"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			off := int64(w * region)
			for r := 0; r < rounds; r++ {
				data := pattern(uint64(100*w+r), region)
				if _, err := shared.WriteAt(data, off); err != nil {
					fail("writer %d: %v", w, err)
					return
				}
				got := make([]byte, region)
				if _, err := shared.ReadAt(got, off); err != nil || !bytes.Equal(got, data) {
					fail("writer %d round %d: read back differs (%v)", w, r, err)
					return
				}
			}
		}(w)
	}
	// Readers: clone1 and base never change.
	for _, name := range []string{"clone1", "base"} {
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			for r := 0; r < 5; r++ {
				got, err := os.ReadFile(m.path(name))
				if err != nil || !bytes.Equal(got, base) {
					fail("reader %s: content changed (%v)", name, err)
					return
				}
			}
		}(name)
	}
	// Cloner: repeatedly clones base over clone2 while it is read.
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := os.OpenFile(m.path("clone2"), os.O_RDWR, 0)
		if err != nil {
			fail("cloner: %v", err)
			return
		}
		defer c.Close()
		for r := 0; r < 10; r++ {
			if err := ioctl.Clone(c, baseF); err != nil {
				fail("cloner: %v", err)
				return
			}
		}
	}()
	// Namespace churn.
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for r := 0; r < 30; r++ {
				p := m.path(fmt.Sprintf("churn/g%d-%d", g, r))
				if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
					fail("churn create: %v", err)
					return
				}
				if err := os.Rename(p, p+".renamed"); err != nil {
					fail("churn rename: %v", err)
					return
				}
				if _, err := os.ReadDir(m.path("churn")); err != nil {
					fail("churn readdir: %v", err)
					return
				}
				if got, err := os.ReadFile(p + ".renamed"); err != nil || string(got) != p {
					fail("churn read: %q %v", got, err)
					return
				}
				if r%2 == 0 {
					if err := os.Remove(p + ".renamed"); err != nil {
						fail("churn remove: %v", err)
						return
					}
				}
				if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
					fail("churn: old name still exists: %v", err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if sha(t, m.path("clone2")) != sha(t, m.path("base")) {
		t.Errorf("clone2 differs from base after repeated clones")
	}
	ents, err := os.ReadDir(m.path("churn"))
	if err != nil || len(ents) != 3*15 {
		t.Errorf("churn directory has %d entries (%v), want 45", len(ents), err)
	}
}

// Several processes write and verify disjoint regions of one file with
// direct, asynchronous I/O (fio), while others read a clone of it.
func TestConcurrentProcessesFio(t *testing.T) {
	fio := requireTool(t, "fio")
	m := mountFresh(t)
	f := m.path("shared")
	writeFile(t, f, pattern(31, 8<<20))
	run(t, "cp", f, m.path("clone"))
	want := sha(t, m.path("clone"))

	readers := make([]*exec.Cmd, 3)
	for i := range readers {
		readers[i] = exec.Command("sh", "-c", "for i in 1 2 3 4; do sha256sum "+m.path("clone")+"; done")
	}
	var outs [3]bytes.Buffer
	for i, c := range readers {
		c.Stdout = &outs[i]
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	run(t, fio, "--name=shared", "--filename="+f, "--size=1M", "--numjobs=4", "--offset_increment=2M",
		"--rw=randwrite", "--bs=4k", "--direct=1", "--ioengine=libaio", "--iodepth=16",
		"--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0", "--group_reporting", "--output-format=terse")
	for i, c := range readers {
		if err := c.Wait(); err != nil {
			t.Fatalf("reader %d: %v", i, err)
		}
		if n := bytes.Count(outs[i].Bytes(), []byte(want)); n != 4 {
			t.Errorf("reader %d saw the clone change:\n%s", i, outs[i].String())
		}
	}
}
