package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reflinkfs/reflinkfs/internal/control"
	"github.com/reflinkfs/reflinkfs/internal/testenv"
)

type result struct {
	stdout, stderr string
	code           int
}

// runBin runs the binary with a deadline and returns its output and exit code.
func runBin(t *testing.T, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %q: %v", bin, args, err)
	}
	return result{out.String(), errb.String(), code}
}

func mustRun(t *testing.T, bin string, args ...string) string {
	t.Helper()
	r := runBin(t, bin, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", filepath.Base(bin), strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func mountedAt(t *testing.T, mp string) (mountEntry, bool) {
	t.Helper()
	ents, err := readMountInfo()
	if err != nil {
		t.Fatal(err)
	}
	return findMount(ents, mp)
}

func writeRandomFile(t *testing.T, path string, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func assertContent(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: content differs from what was written (%d vs %d bytes)", path, len(got), len(want))
	}
}

func statsJSON(t *testing.T, bin, mp string) control.Report {
	t.Helper()
	var r control.Report
	out := mustRun(t, bin, "stats", "--json", mp)
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	var m map[string]any
	json.Unmarshal([]byte(out), &m)
	for _, k := range []string{"cached_bytes", "used_bytes", "hit_rate", "memory_saved_bytes"} {
		if _, ok := m[k]; !ok {
			t.Errorf("stats --json lacks %q", k)
		}
	}
	return r
}

// TestEndToEnd drives the built binary against a real mount: mount -d, cp
// (reflinks through copy_file_range), stats, fiemap, clone, dedupe, unshare,
// umount, fsck, remount, the mount(8) helper and a foreground daemon stopped
// by SIGTERM.
func TestEndToEnd(t *testing.T) {
	testenv.RequireFUSE(t)
	if _, err := exec.LookPath("cp"); err != nil {
		t.Fatal("cp not found")
	}
	binDir := t.TempDir()
	bin := filepath.Join(binDir, "reflinkfs")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	dir := t.TempDir()
	img, mp := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	t.Cleanup(func() {
		// Leave no mount behind if a step failed half way.
		if _, ok := mountedAt(t, mp); ok {
			runBin(t, bin, "umount", "--lazy", "--timeout", "30s", mp)
		}
	})
	const size = 8 << 20
	orig := writeRandomFile(t, filepath.Join(dir, "orig"), size)

	t.Run("mount -d creates the image and mounts", func(t *testing.T) {
		mustRun(t, bin, "mount", "-d", "--size", "1G", "--cache-size", "64M", img, mp)
		m, ok := mountedAt(t, mp)
		if !ok || m.FsType != "fuse.reflinkfs" || m.Source != img {
			t.Fatalf("mountinfo entry %+v (found %v), want fuse.reflinkfs from %s", m, ok, img)
		}
		if !exists(filepath.Join(img, control.SocketName)) || !exists(filepath.Join(img, daemonLogName)) {
			t.Error("control socket or daemon.log missing in the image directory")
		}
	})

	t.Run("mounting the same image twice fails clearly", func(t *testing.T) {
		r := runBin(t, bin, "mount", "-d", img, filepath.Join(dir, "mnt2"))
		if r.code != exitFailure || !strings.Contains(r.stderr, img) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("second mount: exit %d, stderr %q; want exit 1 and one line naming the image", r.code, r.stderr)
		}
		if exists(filepath.Join(dir, "mnt2")) {
			t.Error("failed mount left the mount point it created behind")
		}
	})

	a, b, c := filepath.Join(mp, "a"), filepath.Join(mp, "b"), filepath.Join(mp, "c")
	t.Run("cp twice inside the mount shares blocks", func(t *testing.T) {
		for _, args := range [][]string{{filepath.Join(dir, "orig"), a}, {a, b}, {a, c}} {
			if out, err := exec.Command("cp", args...).CombinedOutput(); err != nil {
				t.Fatalf("cp %q: %v\n%s", args, err, out)
			}
		}
		assertContent(t, c, orig)
		r := statsJSON(t, bin, mp)
		if r.UsedBytes < size || r.UsedBytes > size+size/4 {
			t.Errorf("used_bytes = %d after one write and two cp copies; want about one copy (%d)", r.UsedBytes, size)
		}
		if r.LogicalBytes != 3*size {
			t.Errorf("logical_bytes = %d, want %d", r.LogicalBytes, 3*size)
		}
		if r.SharedBytes < size {
			t.Errorf("shared_bytes = %d, want >= %d", r.SharedBytes, size)
		}
		table := mustRun(t, bin, "stats", mp)
		for _, want := range []string{"memory saved", "hit rate", "used", "logical", "kernel page cache sharing", "backing files"} {
			if !strings.Contains(table, want) {
				t.Errorf("stats table lacks %q:\n%s", want, table)
			}
		}
		// The image directory works as the argument too.
		if r2 := statsJSON(t, bin, img); r2.UsedBytes != r.UsedBytes {
			t.Errorf("stats by image: used %d, by mount point %d", r2.UsedBytes, r.UsedBytes)
		}
	})

	t.Run("fiemap shows shared extents", func(t *testing.T) {
		out := mustRun(t, bin, "fiemap", b)
		if !strings.Contains(out, "SHARED") || !strings.Contains(out, "shared") {
			t.Errorf("fiemap of a copy does not show shared extents:\n%s", out)
		}
	})

	t.Run("clone, write to a copy, dedupe, unshare", func(t *testing.T) {
		d := filepath.Join(mp, "d")
		mustRun(t, bin, "clone", a, d)
		assertContent(t, d, orig)
		if r := statsJSON(t, bin, mp); r.LogicalBytes != 4*size || r.UsedBytes > size+size/4 {
			t.Errorf("after clone: logical %d used %d; want %d and about %d", r.LogicalBytes, r.UsedBytes, 4*size, size)
		}

		// Overwrite one block of b in place: only b changes.
		f, err := os.OpenFile(b, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xAB}, 4096), 1<<20); err != nil {
			t.Fatal(err)
		}
		f.Close()
		assertContent(t, a, orig)
		out := mustRun(t, bin, "fiemap", b)
		if !strings.Contains(out, " no ") || !strings.Contains(out, "shared") {
			t.Errorf("fiemap after a partial overwrite should show shared and unshared extents:\n%s", out)
		}

		// Dedupe: c is identical to a already (0 new bytes needed but the
		// ranges compare equal); b differs in its first 16 MiB chunk.
		e := filepath.Join(mp, "e")
		writeRandomFile(t, e, size)
		copyOrig := filepath.Join(mp, "f")
		// Written, not reflinked: by a process of another process group,
		// which read nothing on the mount (copy detection would share the
		// blocks of a file this test process read).
		w := exec.Command("sh", "-c", "cat > "+copyOrig)
		w.Stdin = bytes.NewReader(orig)
		w.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if out, err := w.CombinedOutput(); err != nil {
			t.Fatalf("write %s: %v\n%s", copyOrig, err, out)
		}
		before := statsJSON(t, bin, mp).UsedBytes
		out = mustRun(t, bin, "dedupe", a, copyOrig, e, b)
		if !strings.Contains(out, copyOrig+": 8388608 bytes deduplicated") {
			t.Errorf("dedupe output lacks the full dedupe of %s:\n%s", copyOrig, out)
		}
		if !strings.Contains(out, e+": 0 bytes deduplicated") || !strings.Contains(out, "differs: offset 0 length 8388608") {
			t.Errorf("dedupe output does not report %s as differing:\n%s", e, out)
		}
		if after := statsJSON(t, bin, mp).UsedBytes; after > before-size+size/8 {
			t.Errorf("dedupe freed too little: used %d -> %d", before, after)
		}
		assertContent(t, copyOrig, orig)

		mustRun(t, bin, "unshare", c)
		assertContent(t, c, orig)
		if out := mustRun(t, bin, "fiemap", c); strings.Contains(out, "shared ") && !strings.Contains(out, " 0 bytes shared") {
			t.Errorf("fiemap after unshare still shows shared extents:\n%s", out)
		}
	})

	t.Run("clone -r keeps a tree", func(t *testing.T) {
		tree := filepath.Join(mp, "tree")
		os.MkdirAll(filepath.Join(tree, "sub"), 0o750)
		os.WriteFile(filepath.Join(tree, "sub", "x"), orig[:100000], 0o640)
		os.Link(filepath.Join(tree, "sub", "x"), filepath.Join(tree, "hard"))
		os.Symlink("sub/x", filepath.Join(tree, "sym"))
		mustRun(t, bin, "clone", "-r", tree, filepath.Join(mp, "tree2"))
		assertContent(t, filepath.Join(mp, "tree2", "sym"), orig[:100000])
		var s1, s2 syscall.Stat_t
		syscall.Stat(filepath.Join(mp, "tree2", "hard"), &s1)
		syscall.Stat(filepath.Join(mp, "tree2", "sub", "x"), &s2)
		if s1.Ino != s2.Ino || s1.Mode&0o7777 != 0o640 {
			t.Errorf("hard link or mode not kept: inodes %d %d, mode %o", s1.Ino, s2.Ino, s1.Mode)
		}
	})

	var daemonPid int
	t.Run("umount waits for the daemon to exit", func(t *testing.T) {
		info, err := control.NewClient(filepath.Join(img, control.SocketName)).Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		daemonPid = info.Pid
		mustRun(t, bin, "umount", mp)
		if _, ok := mountedAt(t, mp); ok {
			t.Error("still mounted after umount")
		}
		if exists(filepath.Join(img, control.SocketName)) {
			t.Error("control socket still present after umount returned")
		}
		if err := syscall.Kill(daemonPid, 0); !errors.Is(err, syscall.ESRCH) && !isZombie(daemonPid) {
			t.Errorf("daemon pid %d still running after umount returned (kill: %v)", daemonPid, err)
		}
		if r := runBin(t, bin, "umount", mp); r.code != exitFailure || !strings.Contains(r.stderr, "not mounted") {
			t.Errorf("second umount: exit %d, %q", r.code, r.stderr)
		}
	})

	t.Run("fsck of the unmounted image is clean", func(t *testing.T) {
		out := mustRun(t, bin, "fsck", img)
		if !strings.Contains(out, "clean") {
			t.Errorf("fsck output: %s", out)
		}
	})

	t.Run("remount keeps the data; metrics on TCP", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		mustRun(t, bin, "mount", "-d", "--cache-size", "64M", "--metrics-addr", addr, img, mp)
		assertContent(t, a, orig)
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{"reflinkfs_used_bytes ", "reflinkfs_cache_hits_total ", "go_goroutines ", "process_resident_memory_bytes "} {
			if !strings.Contains(string(body), want) {
				t.Errorf("TCP /metrics lacks %q", want)
			}
		}
		assertContent(t, c, orig)
		assertContent(t, filepath.Join(mp, "f"), orig)
		mustRun(t, bin, "umount", mp)
	})

	t.Run("mount helper", func(t *testing.T) {
		helper := filepath.Join(binDir, helperName)
		if err := os.Symlink(bin, helper); err != nil {
			t.Fatal(err)
		}
		r := runBin(t, helper, img, mp, "-o", "remount,rw")
		if r.code != exitFailure || !strings.Contains(r.stderr, "not mounted") {
			t.Errorf("helper -o remount of nothing: exit %d, %q", r.code, r.stderr)
		}
		mustRun(t, helper, img, mp, "-o", "ro,noatime,nosuid,nodev,_netdev,cache_size=5%,x-systemd.automount")
		assertContent(t, a, orig)
		if err := os.WriteFile(filepath.Join(mp, "new"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write on an ro mount: %v, want EROFS", err)
		}
		// A daemon serving the image read-only cannot become writable.
		if r := runBin(t, helper, img, mp, "-o", "remount,rw"); r.code != exitFailure || !strings.Contains(r.stderr, "read-only") {
			t.Errorf("remount,rw of a read-only daemon: exit %d, %q", r.code, r.stderr)
		}
		mustRun(t, bin, "umount", mp)
		// mount -o remount,ro / remount,rw change a live read-write mount.
		mustRun(t, helper, img, mp, "-o", "rw")
		mustRun(t, helper, img, mp, "-o", "remount,ro")
		if err := os.WriteFile(filepath.Join(mp, "new"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write after remount,ro: %v, want EROFS", err)
		}
		mustRun(t, helper, img, mp, "-o", "remount,rw")
		if err := os.WriteFile(filepath.Join(mp, "new"), []byte("x"), 0o644); err != nil {
			t.Errorf("write after remount,rw: %v", err)
		}
		mustRun(t, helper, img, mp, "-o", "remount,ro")
		if err := os.WriteFile(filepath.Join(mp, "new2"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write after remount,ro: %v, want EROFS", err)
		}
		mustRun(t, bin, "umount", mp)
	})

	t.Run("foreground daemon stops cleanly on SIGTERM", func(t *testing.T) {
		cmd := exec.Command(bin, "mount", "--cache-size", "64M", img, mp)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(stderr)
			found := false
			for sc.Scan() {
				if !found && strings.Contains(sc.Text(), "is mounted at") {
					found = true
					ready <- true
				}
			}
			if !found {
				ready <- false
			}
		}()
		select {
		case ok := <-ready:
			if !ok {
				cmd.Wait()
				t.Fatal("foreground mount exited without mounting")
			}
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			t.Fatal("foreground mount not ready within a minute")
		}
		if err := os.WriteFile(filepath.Join(mp, "fg"), orig[:12345], 0o600); err != nil {
			t.Fatal(err)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("foreground daemon after SIGTERM: %v (want exit 0)", err)
		}
		if _, ok := mountedAt(t, mp); ok {
			t.Fatal("still mounted after SIGTERM")
		}
		mustRun(t, bin, "mount", "-d", "--cache-size", "64M", img, mp)
		assertContent(t, filepath.Join(mp, "fg"), orig[:12345])
		mustRun(t, bin, "umount", mp)
	})

	t.Run("bad paths give one clear line", func(t *testing.T) {
		notDir := filepath.Join(dir, "orig")
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"mount", "-d", notDir, mp}, "image " + notDir + ": not a directory"},
			{[]string{"mount", "-d", img, notDir}, "mount point " + notDir + ": not a directory"},
			{[]string{"mount", "-d", "-o", "ro", filepath.Join(dir, "nothing"), mp}, "cannot create it read-only"},
			{[]string{"mkfs", "--size", "1G", img}, "not empty"},
		} {
			r := runBin(t, bin, tc.args...)
			if r.code != exitFailure || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("%q: exit %d, stderr %q; want exit 1 and one line containing %q", tc.args, r.code, r.stderr, tc.want)
			}
		}
	})
}
