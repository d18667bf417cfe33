package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reflinkfs/reflinkfs/internal/testenv"
	"golang.org/x/sys/unix"
)

var (
	builtBinOnce sync.Once
	builtBin     string
	builtBinErr  error
)

// testBinary builds the reflinkfs binary once per test process.
func testBinary(t *testing.T) string {
	t.Helper()
	builtBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "reflinkfs-bin-")
		if err != nil {
			builtBinErr = err
			return
		}
		builtBin = filepath.Join(dir, "reflinkfs")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			builtBinErr = err
			builtBin = string(out)
		}
	})
	if builtBinErr != nil {
		t.Fatalf("go build: %v\n%s", builtBinErr, builtBin)
	}
	return builtBin
}

// mountForTest mounts a new image with -d and unmounts it at cleanup.
func mountForTest(t *testing.T, bin string, args ...string) (img, mp string) {
	t.Helper()
	dir := t.TempDir()
	img, mp = filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	mustRun(t, bin, append(append([]string{"mount", "-d", "--size", "1G", "--cache-size", "64M"}, args...), img, mp)...)
	t.Cleanup(func() {
		if _, ok := mountedAt(t, mp); ok {
			runBin(t, bin, "umount", "--lazy", "--timeout", "30s", mp)
		}
	})
	return img, mp
}

// TestRemountShortForm runs the real mount(8) with the short form
// `mount -o remount,ro MOUNTPOINT`, which calls the installed helper with
// the mount's options from /proc/self/mountinfo (user_id=, group_id=,
// max_read=, ...) followed by the user's. The helper is installed in a
// private mount namespace (a tmpfs over /sbin), so the host's /sbin is
// untouched; the remount is checked there, where it takes effect.
func TestRemountShortForm(t *testing.T) {
	testenv.RequireFUSE(t)
	for _, tool := range []string{"unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s (util-linux) not found: %v", tool, err)
		}
	}
	bin := testBinary(t)
	_, mp := mountForTest(t, bin)
	sbin, err := filepath.EvalSymlinks("/sbin")
	if err != nil {
		t.Fatal(err)
	}
	script := `set -u
mount -t tmpfs reflinkfs-test "$SBIN" || exit 100
ln -s "$BIN" "$SBIN/mount.fuse.reflinkfs" || exit 101
ro() { grep -q " $MP [^ ]*\bro\b" /proc/self/mountinfo && echo ro || echo rw; }
try() { (echo x > "$MP/$1") 2>/dev/null && echo wrote || echo refused; }
mount -o remount,ro "$MP" 2>&1 && echo "after remount,ro: $(ro) $(try a)"
mount -o remount,rw "$MP" 2>&1 && echo "after remount,rw: $(ro) $(try b)"
`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "SBIN="+sbin, "BIN="+bin, "MP="+mp)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("unshare: %v\n%s", err, out)
	}
	for _, want := range []string{"after remount,ro: ro refused", "after remount,rw: rw wrote"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("mount(8) output lacks %q:\n%s", want, out)
		}
	}
}

// TestMkfsAllOrNothing: a mkfs that fails half way (here the data file
// exceeds the file size limit) leaves nothing behind, so a retry works.
func TestMkfsAllOrNothing(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	for _, tc := range []struct{ name, img string }{
		{"new directory", filepath.Join(dir, "img")},
		{"existing empty directory", t.TempDir()},
	} {
		_, existed := os.Stat(tc.img)
		limited := runBin(t, "sh", "-c", `ulimit -f 2048; exec "$0" "$@"`, bin, "mkfs", "--size", "1G", tc.img)
		if limited.code != exitFailure || !strings.Contains(limited.stderr, "too large") {
			t.Fatalf("%s: mkfs beyond the file size limit: exit %d, %q; want exit 1, file too large", tc.name, limited.code, limited.stderr)
		}
		ents, err := os.ReadDir(tc.img)
		switch {
		case existed != nil && !os.IsNotExist(err):
			t.Errorf("%s: failed mkfs left %s behind (%d entries, %v)", tc.name, tc.img, len(ents), err)
		case existed == nil && (err != nil || len(ents) != 0):
			t.Errorf("%s: failed mkfs left %d entries in %s (%v)", tc.name, len(ents), tc.img, err)
		}
		mustRun(t, bin, "mkfs", "--size", "1G", tc.img)
		mustRun(t, bin, "fsck", tc.img)
	}
}

// TestNewImageParentMustExist: a mistyped image path is refused instead of
// growing a directory tree.
func TestNewImageParentMustExist(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	img, mp := filepath.Join(dir, "no", "such", "img"), filepath.Join(dir, "mnt")
	for _, args := range [][]string{
		{"mkfs", "--size", "1G", img},
		{"mount", "-d", "--cache-size", "64M", img, mp},
		{"mount", "--cache-size", "64M", img, mp},
	} {
		r := runBin(t, bin, args...)
		want := "image " + img + ": directory " + filepath.Join(dir, "no", "such") + " does not exist"
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if r.code != exitFailure || !strings.HasPrefix(lines[len(lines)-1], "reflinkfs: "+want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 1 and a last line saying %q", args, r.code, r.stderr, want)
		}
		if exists(filepath.Join(dir, "no")) || exists(mp) {
			t.Errorf("%q created directories", args)
		}
	}
}

// TestMountOverNonEmptyDirectoryWarns: allowed, as libfuse allows it, with
// a warning that the files there are hidden.
func TestMountOverNonEmptyDirectoryWarns(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := testBinary(t)
	dir := t.TempDir()
	img, mp := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	os.Mkdir(mp, 0o755)
	os.WriteFile(filepath.Join(mp, "hidden"), []byte("x"), 0o644)
	r := runBin(t, bin, "mount", "-d", "--size", "1G", "--cache-size", "64M", img, mp)
	t.Cleanup(func() { runBin(t, bin, "umount", "--lazy", mp) })
	if r.code != exitOK || !strings.Contains(r.stderr, "warning: mount point "+mp+" is not empty") {
		t.Fatalf("mount over a non-empty directory: exit %d, stderr %q; want exit 0 and a warning", r.code, r.stderr)
	}
	if _, ok := mountedAt(t, mp); !ok {
		t.Fatal("not mounted")
	}
	mustRun(t, bin, "umount", mp)
	if !exists(filepath.Join(mp, "hidden")) {
		t.Error("the mount point's own file is gone after umount")
	}
}

// TestMountAfterPlainUmount: util-linux umount returns while the daemon is
// still writing back; a mount of the same image right after must wait for
// it (saying so) instead of failing with "in use".
func TestMountAfterPlainUmount(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := testBinary(t)
	img, mp := mountForTest(t, bin, "--cache-size", "512M")
	// Dirty data in the daemon's cache makes its write-back take a while.
	data := bytes.Repeat([]byte("reflinkfs"), 256<<20/9)
	if err := os.WriteFile(filepath.Join(mp, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("umount", mp).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}
	r := runBin(t, bin, "mount", "-d", "--cache-size", "64M", img, mp)
	if r.code != exitOK {
		t.Fatalf("mount right after umount: exit %d, %q", r.code, r.stderr)
	}
	assertContent(t, filepath.Join(mp, "big"), data)
	mustRun(t, bin, "umount", mp)
}

// TestSecondMountLeavesDaemonLogAlone: a mount of an image another daemon
// serves fails in the command, without starting a daemon that would write
// its error into the running daemon's log.
func TestSecondMountLeavesDaemonLogAlone(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := testBinary(t)
	img, _ := mountForTest(t, bin)
	logPath := filepath.Join(img, daemonLogName)
	before, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	r := runBin(t, bin, "mount", "-d", img, filepath.Join(t.TempDir(), "mnt2"))
	if r.code != exitFailure || !strings.Contains(r.stderr, "in use by another process (pid ") {
		t.Errorf("second mount: exit %d, %q; want exit 1 naming the pid that holds the image", r.code, r.stderr)
	}
	after, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("the failed mount wrote to the running daemon's log:\n%s", after[len(before):])
	}
}

// TestForegroundSignalLogsNoFalseAlarm: Ctrl-C (SIGINT) or SIGTERM of a
// foreground mount with dirty data unmounts, writes back and exits 0,
// logging neither a warning nor an error (the unmount a signal starts used
// to race the image's close: a failed Sync, then a detach of a path no
// longer mounted). The race needs write-back in flight, hence several rounds.
func TestForegroundSignalLogsNoFalseAlarm(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := testBinary(t)
	dir := t.TempDir()
	img, mp := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	mustRun(t, bin, "mkfs", "--size", "2G", img)
	data := bytes.Repeat([]byte("0123456789abcdef"), 96<<20/16)
	for round, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGINT, syscall.SIGTERM} {
		cmd := exec.Command(bin, "mount", "--cache-size", "256M", img, mp)
		var stderr lockedBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if _, ok := mountedAt(t, mp); ok {
				unix.Unmount(mp, unix.MNT_DETACH)
			}
		})
		waitMounted(t, cmd, mp)
		name := filepath.Join(mp, fmt.Sprint("f", round))
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd.Process.Signal(sig)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("round %d: foreground mount after %v: %v (want exit 0)\n%s", round, sig, err, stderr.String())
		}
		for _, line := range strings.Split(stderr.String(), "\n") {
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				t.Errorf("round %d, %v: %s", round, sig, line)
			}
		}
	}
	mustRun(t, bin, "fsck", img)
}

// waitMounted waits until mp is a FUSE mount or cmd has exited.
func waitMounted(t *testing.T, cmd *exec.Cmd, mp string) {
	t.Helper()
	exited := make(chan struct{})
	go func() {
		for {
			if m, ok := mountedAt(t, mp); ok && isFuseMount(m) {
				close(exited)
				return
			}
			if cmd.ProcessState != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	select {
	case <-exited:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatalf("%s not mounted within a minute", mp)
	}
}

// lockedBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRunScriptPutsReflinkfsOnPath: after scripts/run.sh the README's tour
// calls plain `reflinkfs` (from inside the mount, too), so run.sh links it
// into a directory on PATH (here a temporary one, through REFLINKFS_BINDIR).
func TestRunScriptPutsReflinkfsOnPath(t *testing.T) {
	testenv.RequireFUSE(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir, binDir := t.TempDir(), t.TempDir()
	img, mp := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	cmd := exec.Command("sh", filepath.Join(repo, "scripts", "run.sh"), img, mp, "--size", "1G", "--cache-size", "64M")
	cmd.Env = append(os.Environ(), "REFLINKFS_BINDIR="+binDir)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, ok := mountedAt(t, mp); ok {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
	})
	waitMounted(t, cmd, mp)
	if target, err := os.Readlink(filepath.Join(binDir, "reflinkfs")); err != nil || target != filepath.Join(repo, "bin", "reflinkfs") {
		t.Errorf("%s/reflinkfs -> %q (%v); want a symlink to %s/bin/reflinkfs\n%s", binDir, target, err, repo, stderr.String())
	}
	tour := exec.Command("sh", "-c", `cd "$1" && reflinkfs stats .`, "sh", mp)
	tour.Env = append(os.Environ(), "PATH="+binDir+":/usr/bin:/bin")
	if out, err := tour.CombinedOutput(); err != nil || !strings.Contains(string(out), "memory saved") {
		t.Errorf("reflinkfs stats from the mount with run.sh's PATH entry: %v\n%s", err, out)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("run.sh after SIGTERM: %v (want exit 0)\n%s", err, stderr.String())
	}
}

// TestEmptySubtype: --subtype "" (or -o subtype=) mounts with the kernel
// type "fuse" alone, as libfuse allows; stats and umount still find the
// daemon, and a foreground mount still stops on SIGTERM.
func TestEmptySubtype(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := testBinary(t)
	img, mp := mountForTest(t, bin, "--subtype", "")
	if m, ok := mountedAt(t, mp); !ok || m.FsType != "fuse" || m.Source != img {
		t.Fatalf("mountinfo entry %+v (found %v); want type fuse from %s", m, ok, img)
	}
	want := []byte("plain fuse\n")
	if err := os.WriteFile(filepath.Join(mp, "a"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := statsJSON(t, bin, mp); r.Inodes < 2 {
		t.Errorf("stats: %d inodes", r.Inodes)
	}
	mustRun(t, bin, "umount", mp)

	cmd := exec.Command(bin, "mount", "-o", "subtype=", "--cache-size", "64M", img, mp)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitMounted(t, cmd, mp)
	if m, _ := mountedAt(t, mp); m.FsType != "fuse" {
		t.Errorf("-o subtype=: type %q, want fuse", m.FsType)
	}
	assertContent(t, filepath.Join(mp, "a"), want)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("foreground mount after SIGTERM: %v\n%s", err, stderr.String())
	}
	if _, ok := mountedAt(t, mp); ok {
		t.Error("still mounted after SIGTERM")
	}
}
