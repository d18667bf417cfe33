package crashtest

// The crash contract through a real mount: a writer fsyncs files while the
// daemon is killed with SIGKILL at random moments; after each kill the dead
// mount is detached, `reflinkfs fsck` must find the image clean, and the
// next mount must show every fsync'd byte.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/reflinkfs/reflinkfs/internal/testenv"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	killRounds = flag.Int("kill.rounds", 5, "daemon kills in TestKillDaemonWhileWriting")
	killSeed   = flag.Uint64("kill.seed", 0, "seed of the writer and the kill times (0: from the clock, logged)")
)

// buildReflinkfs builds the command into a temporary directory.
func buildReflinkfs(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "reflinkfs")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/reflinkfs")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/reflinkfs: %v\n%s", err, out)
	}
	return bin
}

// run runs the binary with a deadline and returns its combined output and
// exit code.
func run(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("reflinkfs %s did not finish within 2 minutes:\n%s", strings.Join(args, " "), out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("reflinkfs %s: %v", strings.Join(args, " "), err)
	}
	return string(out), 0
}

// daemonPid reads the pid of the process holding the image (its lock file)
// and makes sure it is a reflinkfs daemon.
func daemonPid(t *testing.T, img string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(img, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Fatalf("lock file holds %q, not a pid", b)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("reflinkfs")) {
		t.Fatalf("pid %d from the lock file is not a reflinkfs daemon (%q, %v)", pid, cmdline, err)
	}
	return pid
}

// waitUnlocked waits until nothing holds the image's lock: a killed
// daemon's group leader can be a zombie while its other threads are still
// exiting with the lock file open.
func waitUnlocked(t *testing.T, img string, d time.Duration) {
	t.Helper()
	f, err := os.Open(filepath.Join(img, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("image %s still locked %v after its daemon was killed", img, d)
}

// waitGone waits until pid has exited (gone, or a zombie nobody reaps).
func waitGone(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("daemon %d still alive %v after SIGKILL", pid, d)
}

// writerState is what the writer knows: durable holds the contents of
// every file whose last change was fsync'd; uncertain lists files a change
// was under way to when the daemon died (any of their versions may show).
type writerState struct {
	durable   map[string][]byte
	uncertain map[string]bool
}

// writer changes files under dir until an operation fails (the daemon is
// dead) and returns that failure.
func (s *writerState) write(dir string, rng *rand.Rand, round int) error {
	randData := func(n int) []byte {
		b := make([]byte, n)
		for i := 0; i < n; i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8 && i+j < n; j++ {
				b[i+j] = byte(v >> (8 * j))
			}
		}
		return b
	}
	syncDir := func() error {
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}
	for i := 0; ; i++ {
		names := slices.Sorted(func(yield func(string) bool) {
			for n := range s.durable {
				if !yield(n) {
					return
				}
			}
		})
		switch op := rng.IntN(10); {
		case op < 5 || len(names) == 0: // a new file, written in pieces, fsync'd
			name := fmt.Sprintf("r%d-%03d", round, i)
			data := randData(1 + rng.IntN(600<<10))
			s.uncertain[name] = true
			f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			for off := 0; off < len(data); off += 64 << 10 {
				if _, err := f.Write(data[off:min(len(data), off+64<<10)]); err != nil {
					f.Close()
					return err
				}
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return err
			}
			f.Close()
			s.durable[name] = data
			delete(s.uncertain, name)
		case op < 8: // overwrite a range of a durable file, fsync
			name := names[rng.IntN(len(names))]
			old := s.durable[name]
			off := rng.IntN(len(old) + 1)
			patch := randData(1 + rng.IntN(100<<10))
			s.uncertain[name] = true
			delete(s.durable, name)
			f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			if _, err := f.WriteAt(patch, int64(off)); err != nil {
				f.Close()
				return err
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return err
			}
			f.Close()
			data := append([]byte(nil), old...)
			if end := off + len(patch); end > len(data) {
				data = append(data, make([]byte, end-len(data))...)
			}
			copy(data[off:], patch)
			s.durable[name] = data
			delete(s.uncertain, name)
		case op < 9: // replace a file by renaming a new one over it
			name := names[rng.IntN(len(names))]
			tmp := name + ".tmp"
			data := randData(1 + rng.IntN(100<<10))
			s.uncertain[name], s.uncertain[tmp] = true, true
			delete(s.durable, name)
			if err := os.WriteFile(filepath.Join(dir, tmp), data, 0o644); err != nil {
				return err
			}
			if err := os.Rename(filepath.Join(dir, tmp), filepath.Join(dir, name)); err != nil {
				return err
			}
			if err := syncDir(); err != nil {
				return err
			}
			s.durable[name] = data
			delete(s.uncertain, name)
			delete(s.uncertain, tmp)
		default: // remove a file
			name := names[rng.IntN(len(names))]
			s.uncertain[name] = true
			delete(s.durable, name)
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return err
			}
			if err := syncDir(); err != nil {
				return err
			}
			delete(s.uncertain, name)
		}
	}
}

// check compares the mounted files with the writer's state: durable files
// hold exactly their bytes, uncertain ones are readable, nothing else is
// there. Uncertain files are then forgotten (removed).
func (s *writerState) check(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		seen[name] = true
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		want, durable := s.durable[name]
		switch {
		case durable && !bytes.Equal(got, want):
			t.Errorf("%s: fsync'd contents (%d bytes) differ after the crash (%d bytes)", name, len(want), len(got))
		case !durable && !s.uncertain[name]:
			t.Errorf("%s: a file that was never written (or whose removal was fsync'd) exists", name)
		}
	}
	for name := range s.durable {
		if !seen[name] {
			t.Errorf("%s: fsync'd file is missing after the crash", name)
		}
	}
	for name := range s.uncertain {
		if seen[name] {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				t.Errorf("removing %s: %v", name, err)
			}
		}
	}
	s.uncertain = map[string]bool{}
}

// TestKillDaemonWhileWriting kills the mount daemon with SIGKILL while a
// writer fsyncs, several times, checking fsck and the fsync'd data after
// each kill.
func TestKillDaemonWhileWriting(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildReflinkfs(t)
	base := t.TempDir()
	img, mp := filepath.Join(base, "img"), filepath.Join(base, "mnt")
	t.Cleanup(func() {
		// Leave no mount or daemon behind if a step failed half way.
		if b, err := os.ReadFile(filepath.Join(img, "lock")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(cmd, []byte("reflinkfs")) && bytes.Contains(cmd, []byte(img)) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		syscall.Unmount(mp, syscall.MNT_DETACH)
	})
	seed := *killSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -kill.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	state := &writerState{durable: map[string][]byte{}, uncertain: map[string]bool{}}
	mount := func() int {
		if out, code := run(t, bin, "mount", "-d", "--size", "2G", "--cache-size", "16M", img, mp); code != 0 {
			t.Fatalf("mount: exit %d\n%s", code, out)
		}
		return daemonPid(t, img)
	}
	for round := range *killRounds {
		pid := mount()
		state.check(t, mp)
		if t.Failed() {
			t.Fatalf("round %d: the image does not hold the fsync'd data", round)
		}
		// The writer has its own random source: rng stays with this goroutine.
		delay := time.Duration(50+rng.IntN(700)) * time.Millisecond
		writerRng := rand.New(rand.NewPCG(rng.Uint64(), uint64(round)))
		done := make(chan error, 1)
		go func() { done <- state.write(mp, writerRng, round) }()
		select {
		case err := <-done:
			t.Fatalf("round %d: the writer stopped before the kill: %v", round, err)
		case <-time.After(delay):
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
		select {
		case err := <-done:
			t.Logf("round %d: killed after %v; writer stopped with: %v (%d fsync'd files, %d uncertain)", round, delay, err, len(state.durable), len(state.uncertain))
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: the writer hangs after the daemon was killed", round)
		}
		waitGone(t, pid, 30*time.Second)
		waitUnlocked(t, img, 30*time.Second)
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
			t.Fatalf("round %d: lazy unmount of the dead mount: %v", round, err)
		}
		if out, code := run(t, bin, "fsck", img); code != 0 {
			t.Fatalf("round %d: reflinkfs fsck after the kill: exit %d\n%s", round, code, out)
		}
	}
	mount()
	state.check(t, mp)
	out, code := run(t, bin, "stats", "--json", mp)
	if code != 0 || !strings.Contains(out, `"checksum_errors": 0`) && !strings.Contains(out, `"checksum_errors":0`) {
		t.Errorf("stats after the rounds: exit %d, want no checksum errors:\n%s", code, out)
	}
	if out, code := run(t, bin, "umount", mp); code != 0 {
		t.Fatalf("umount: exit %d\n%s", code, out)
	}
	if out, code := run(t, bin, "fsck", img); code != 0 {
		t.Fatalf("reflinkfs fsck after a clean unmount: exit %d\n%s", code, out)
	}
}
