package fusefs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reflinkfs/reflinkfs/internal/tuning"
)

// makeClones writes a file of size bytes and clones it n times with cp
// (copy_file_range reflinks); it returns the names and the contents.
func makeClones(t *testing.T, m *testMount, n, size int) ([]string, []byte) {
	t.Helper()
	data := pattern(7, size)
	writeFile(t, m.path("src"), data)
	names := []string{"src"}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("clone%d", i)
		run(t, "cp", m.path("src"), m.path(name))
		names = append(names, name)
	}
	return names, data
}

// N clones mapped at once hold one copy of their pages: the FUSE inodes'
// own page caches stay empty and one backing file holds the pages. With
// share=off (what reflinkfs did before passthrough) each holds its own.
func TestPassthroughMappedClonesShareOneCopy(t *testing.T) {
	const size = 8 << 20
	for _, mode := range []ShareMode{ShareReadOnly, ShareOff} {
		t.Run(mode.String(), func(t *testing.T) {
			m := mountFresh(t, func(c *mountConfig) { c.mount.Share = mode })
			names, data := makeClones(t, m, 4, size)
			m.waitReleased(t)
			var paths []string
			for _, n := range names {
				paths = append(paths, m.path(n))
			}
			mp := mapFiles(t, paths...)
			var own int64
			for i, n := range names {
				if mp.Sums[i] != sha256Hex(data) {
					t.Fatalf("%s mapped differs from what was written", n)
				}
				own += mp.Own[i]
			}
			p := m.srv.Passthrough()
			t.Logf("own page cache %d MiB, passthrough %+v", own>>20, p)
			switch mode {
			case ShareReadOnly:
				if p.Unavailable != "" {
					t.Fatalf("passthrough unavailable: %s", p.Unavailable)
				}
				if own != 0 || p.Backings != 1 || p.InUse != 1 || p.OpenNow != len(names) {
					t.Fatalf("%d clones mapped: own page cache %d bytes, %d backings (%d in use), %d passthrough opens; want 0, 1, 1, %d",
						len(names), own, p.Backings, p.InUse, p.OpenNow, len(names))
				}
				if p.CachedBytes < size || p.CachedBytes > size*11/10 {
					t.Fatalf("backing page cache %d bytes for %d clones of %d bytes; want one copy", p.CachedBytes, len(names), size)
				}
				if st := m.fsys.Stats(); st.SnapshotFiles != 1 {
					t.Fatalf("%d snapshots, want 1", st.SnapshotFiles)
				}
			case ShareOff:
				if own < int64(len(names))*size || p.Backings != 0 {
					t.Fatalf("share=off: own page cache %d bytes, %d backings; want %d copies and none", own, p.Backings, len(names))
				}
			}
		})
	}
}

// A cloned executable runs, through passthrough, under every policy but off.
func TestPassthroughExecClone(t *testing.T) {
	for _, mode := range []ShareMode{ShareReadOnly, ShareExec} {
		t.Run(mode.String(), func(t *testing.T) {
			m := mountFresh(t, func(c *mountConfig) {
				c.mount.Share = mode
				c.mount.MountFlags = []string{"exec"}
			})
			self, err := exec.LookPath("true")
			if err != nil {
				t.Fatal(err)
			}
			run(t, "cp", self, m.path("true"))
			run(t, "cp", m.path("true"), m.path("true2"))
			m.waitReleased(t)
			before := m.srv.Passthrough().Opens
			execFromMount(t, m.path("true2"))
			if m.srv.Passthrough().Opens == before {
				t.Fatalf("exec of a clone was not passed through (%+v)", m.srv.Passthrough())
			}
			// A plain read-only open is passed through only by readonly.
			m.waitReleased(t) // else it joins the exec's passthrough open
			before = m.srv.Passthrough().Opens
			readFile(t, m.path("true2"))
			passed := m.srv.Passthrough().Opens != before
			if passed != (mode == ShareReadOnly) {
				t.Fatalf("share=%s: read-only open passed through: %v", mode, passed)
			}
		})
	}
}

func isErrno(err error, want syscall.Errno) bool {
	var e syscall.Errno
	return errors.As(err, &e) && e == want
}

// A writer meets passthrough readers: opens for writing and truncates of
// that file fail with ETXTBSY while readers are open; other clones stay
// writable and never change what the readers read; once the readers close,
// the writer works and a new reader sees what was written.
func TestPassthroughWriterMeetsReaders(t *testing.T) {
	const size = 1 << 20
	m := mountFresh(t)
	names, data := makeClones(t, m, 2, size)
	m.waitReleased(t)
	r, err := os.Open(m.path(names[1]))
	if err != nil {
		t.Fatal(err)
	}
	if m.srv.Passthrough().OpenNow != 1 {
		t.Fatalf("read-only open of a clone not passed through: %+v", m.srv.Passthrough())
	}
	mp := mapFiles(t, m.path(names[1]))

	if _, err := os.OpenFile(m.path(names[1]), os.O_WRONLY, 0); !isErrno(err, syscall.ETXTBSY) {
		t.Fatalf("open for writing with a passthrough reader: %v, want ETXTBSY", err)
	}
	out, err := exec.Command("truncate", "-s", "0", m.path(names[1])).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Text file busy") {
		t.Fatalf("truncate with a passthrough reader: %v %s", err, out)
	}
	if err := os.Truncate(m.path(names[1]), 0); !isErrno(err, syscall.ETXTBSY) {
		t.Fatalf("truncate(2) with a passthrough reader: %v, want ETXTBSY", err)
	}
	out, err = exec.Command("fallocate", "-p", "-o", "0", "-l", "8192", m.path(names[1])).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Text file busy") {
		t.Fatalf("punch hole with a passthrough reader: %v %s", err, out)
	}
	// The other clones are free to change; the reader does not see it.
	sh(t, "printf XXXX | dd of="+m.path(names[0])+" bs=4096 seek=3 conv=notrunc status=none")
	sh(t, "printf YYYY | dd of="+m.path(names[2])+" bs=4096 seek=3 conv=notrunc status=none")
	got := make([]byte, size)
	if _, err := r.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("passthrough reader saw another clone's write (read err %v)", err)
	}
	again := mapFiles(t, m.path(names[1]))
	if again.Sums[0] != sha256Hex(data) {
		t.Fatal("a new mapping of the read clone shows another clone's write")
	}
	again.release()
	if p := m.srv.Passthrough(); p.Refused < 3 {
		t.Fatalf("refusals not counted: %+v", p)
	}
	mp.release()
	r.Close()

	// Readers gone: the writer works, and reading again shows the write.
	sh(t, "printf ZZZZ | dd of="+m.path(names[1])+" bs=4096 seek=5 conv=notrunc status=none")
	want := append([]byte(nil), data...)
	copy(want[5*4096:], "ZZZZ")
	if got := readFile(t, m.path(names[1])); !bytes.Equal(got, want) {
		t.Fatal("a read after the write does not show it")
	}
	want0 := append([]byte(nil), data...)
	copy(want0[3*4096:], "XXXX")
	if got := readFile(t, m.path(names[0])); !bytes.Equal(got, want0) {
		t.Fatal("the source lost its write")
	}
}

// A writer that opened first keeps the file out of passthrough: readers
// arriving while it is open are served by the daemon and see its writes.
func TestPassthroughWriterFirst(t *testing.T) {
	const size = 1 << 20
	m := mountFresh(t)
	names, data := makeClones(t, m, 1, size)
	m.waitReleased(t)
	w, err := os.OpenFile(m.path(names[1]), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := os.Open(m.path(names[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := m.srv.Passthrough()
	if p.OpenNow != 0 || p.Fallbacks["open without passthrough"] != 1 {
		t.Fatalf("reader of a file open for writing: %+v", p)
	}
	if _, err := w.WriteAt([]byte("late"), 100); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if _, err := r.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), data...)
	copy(want[100:], "late")
	if !bytes.Equal(got, want) {
		t.Fatal("reader opened after the writer does not see its write")
	}
}

// A write through a MAP_SHARED mapping of one clone never shows in another
// clone mapped through passthrough, and shows in the written clone when it
// is opened again.
func TestPassthroughMapSharedWriteStaysInItsClone(t *testing.T) {
	const size = 1 << 20
	m := mountFresh(t)
	names, data := makeClones(t, m, 2, size)
	m.waitReleased(t)
	other := mapFiles(t, m.path(names[2]))
	mapWrite(t, m.path(names[1]), 8192, "mapped write")
	if again := mapFiles(t, m.path(names[2])); again.Sums[0] != sha256Hex(data) || other.Sums[0] != sha256Hex(data) {
		t.Fatal("a mapped write to one clone shows in another clone's mapping")
	}
	want := append([]byte(nil), data...)
	copy(want[8192:], "mapped write")
	if got := mapFiles(t, m.path(names[1])); got.Sums[0] != sha256Hex(want) {
		t.Fatal("the written clone, mapped again, does not show the mapped write")
	}
	if p := m.srv.Passthrough(); p.Backings != 2 {
		t.Fatalf("two contents mapped, %d backings", p.Backings)
	}
}

// waitReleased waits until the kernel has released every open file of the
// mount (it sends RELEASE after close returns, asynchronously), so that a
// test's next open is not decided by a writer that has already closed.
func (m *testMount) waitReleased(t *testing.T) {
	t.Helper()
	for i := 0; ; i++ {
		m.srv.fs.ioMu.Lock()
		n := len(m.srv.fs.io)
		m.srv.fs.ioMu.Unlock()
		if n == 0 {
			return
		}
		if i == 1000 {
			t.Fatalf("%d inodes still open after 10s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A fragmented file is not passed through (its snapshot would cost
// O(extents) under the engine's lock): it is read through the daemon.
func TestPassthroughSkipsFragmentedFiles(t *testing.T) {
	defer func(n int) { tuning.PassthroughMaxExtents = n }(tuning.PassthroughMaxExtents)
	tuning.PassthroughMaxExtents = 4
	m := mountFresh(t)
	for i := 0; i < 10; i++ { // ten one-block extents with holes between
		sh(t, fmt.Sprintf("printf data%d | dd of=%s bs=4096 seek=%d conv=notrunc status=none", i, m.path("frag"), 2*i))
	}
	// cp copies a sparse file with read/write (no sharing): clone it.
	if err := m.fsys.Clone("frag", "frag2"); err != nil {
		t.Fatal(err)
	}
	m.waitReleased(t)
	want := readFile(t, m.path("frag"))
	if got := readFile(t, m.path("frag2")); !bytes.Equal(got, want) {
		t.Fatal("clone of a fragmented file differs")
	}
	p := m.srv.Passthrough()
	if p.Opens != 0 || p.Fallbacks["too fragmented"] == 0 {
		t.Fatalf("fragmented clone: %+v, want no passthrough and a 'too fragmented' fallback", p)
	}
}

// On a read-only mount nothing can change a file, so every read-only open
// is passed through, with the file itself as the backing (no snapshot).
func TestPassthroughReadOnlyMount(t *testing.T) {
	const size = 1 << 20
	m := mountFresh(t)
	data := pattern(3, size)
	writeFile(t, m.path("plain"), data) // shares nothing
	m.close(t)
	m.eopt.ReadOnly, m.opt.ReadOnly = true, true
	m.remount(t)
	mp := mapFiles(t, m.path("plain"), m.path("plain"))
	p := m.srv.Passthrough()
	if mp.Sums[0] != sha256Hex(data) || mp.Own[0] != 0 || mp.Own[1] != 0 || p.Backings != 1 || p.OpenNow != 2 {
		t.Fatalf("read-only mount: own page cache %v, passthrough %+v", mp.Own, p)
	}
	if st := m.fsys.Stats(); st.SnapshotFiles != 0 {
		t.Fatalf("%d snapshots on a read-only image", st.SnapshotFiles)
	}
}

// Under share=exec a running clone refuses writers (the kernel's own rule
// for executables, and ours), while plain readers do not hold writers off.
func TestPassthroughExecWriter(t *testing.T) {
	m := mountFresh(t, func(c *mountConfig) {
		c.mount.Share = ShareExec
		c.mount.MountFlags = []string{"exec"}
	})
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	run(t, "cp", sleep, m.path("sleep"))
	run(t, "cp", m.path("sleep"), m.path("sleep2"))
	m.waitReleased(t)
	r, err := os.Open(m.path("sleep2")) // a reader: served directly
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	m.waitReleased(t)
	cmd := exec.Command("sh", "-c", "exec "+m.path("sleep2")+" 30") // see execFromMount
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// Wait until the shell has become the clone (its execve is done).
	exe := fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)
	for i := 0; ; i++ {
		if p, _ := os.Readlink(exe); p == m.path("sleep2") {
			break
		}
		if i == 500 {
			t.Fatal("the clone did not start running")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m.srv.Passthrough().OpenNow == 0 {
		t.Fatalf("the running clone is not open through passthrough: %+v", m.srv.Passthrough())
	}
	if _, err := os.OpenFile(m.path("sleep2"), os.O_WRONLY, 0); !isErrno(err, syscall.ETXTBSY) {
		t.Fatalf("open for writing of a running clone: %v, want ETXTBSY", err)
	}
	// The other clone stays writable.
	sh(t, "printf x | dd of="+m.path("sleep")+" bs=1 seek=100000 conv=notrunc status=none")
}

// Passthrough reads never reach the daemon: the open counts as the access
// (relatime: an atime older than the mtime is updated).
func TestPassthroughOpenUpdatesAtime(t *testing.T) {
	m := mountFresh(t)
	names, _ := makeClones(t, m, 1, 1<<20)
	run(t, "touch", "-a", "-d", "2001-01-01", m.path(names[1]))
	m.waitReleased(t)
	before := m.srv.Passthrough().Opens
	sh(t, "cat "+m.path(names[1])+" > /dev/null")
	if m.srv.Passthrough().Opens == before {
		t.Fatal("read-only open of a clone not passed through")
	}
	if out := strings.TrimSpace(run(t, "stat", "-c", "%X", m.path(names[1]))); out == "978307200" {
		t.Fatalf("atime still %s after a passthrough read", out)
	}
}

// execFromMount runs a program that lives on the mount this test process
// serves, through a shell. Never exec it directly: Go starts a child with
// vfork, and the parent thread keeps its scheduler slot (P) until the
// child's execve is done; that execve waits for this process's FUSE server,
// and a garbage collection starting meanwhile waits for that P for ever.
func execFromMount(t *testing.T, path string, args ...string) {
	t.Helper()
	run(t, "sh", append([]string{"-c", `exec "$0" "$@"`, path}, args...)...)
}

// An immutable file (chattr +i) is passed through even if it shares
// nothing: no writer can meet its readers.
func TestPassthroughImmutableFile(t *testing.T) {
	requireTool(t, "chattr")
	m := mountFresh(t)
	writeFile(t, m.path("frozen"), pattern(5, 1<<20))
	run(t, "chattr", "+i", m.path("frozen"))
	defer run(t, "chattr", "-i", m.path("frozen"))
	m.waitReleased(t)
	before := m.srv.Passthrough().Opens
	readFile(t, m.path("frozen"))
	if m.srv.Passthrough().Opens == before {
		t.Fatalf("read-only open of an immutable file not passed through: %+v", m.srv.Passthrough())
	}
}
