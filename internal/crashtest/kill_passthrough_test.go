package crashtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reflinkfs/reflinkfs/internal/testenv"
)

// statsOf runs `reflinkfs stats --json` on a mountpoint.
func statsOf(t *testing.T, bin, mp string) map[string]any {
	t.Helper()
	out, code := run(t, bin, "stats", "--json", mp)
	if code != 0 {
		t.Fatalf("stats: exit %d\n%s", code, out)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	return r
}

// The daemon killed while clones are open through passthrough (their
// backing snapshots in use): fsck is clean, the next mount frees the
// snapshots (no stale backing survives) and every file reads as written.
func TestKillDaemonWithPassthroughOpen(t *testing.T) {
	testenv.RequireFUSE(t)
	bin := buildReflinkfs(t)
	base := t.TempDir()
	img, mp := filepath.Join(base, "img"), filepath.Join(base, "mnt")
	var holder *exec.Cmd
	t.Cleanup(func() {
		if holder != nil && holder.Process != nil {
			holder.Process.Kill()
			holder.Wait()
		}
		if b, err := os.ReadFile(filepath.Join(img, "lock")); err == nil {
			var pid int
			if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 1 {
				if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(cmd, []byte(img)) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		syscall.Unmount(mp, syscall.MNT_DETACH)
	})
	if out, code := run(t, bin, "mount", "-d", "--size", "2G", "--cache-size", "16M", img, mp); code != 0 {
		t.Fatalf("mount: exit %d\n%s", code, out)
	}
	data := bytes.Repeat([]byte("reflinkfs passthrough "), 200000) // 4.4 MB
	if err := os.WriteFile(filepath.Join(mp, "src"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"c1", "c2", "c3"} {
		if out, err := exec.Command("cp", filepath.Join(mp, "src"), filepath.Join(mp, c)).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
	}
	// fsync of a directory commits everything (syncfs never reaches FUSE).
	if out, err := exec.Command("sync", mp).CombinedOutput(); err != nil {
		t.Fatalf("sync: %v %s", err, out)
	}
	used := statsOf(t, bin, mp)["used_bytes"].(float64)

	// A process holds two clones open (read-only: passed through).
	holder = exec.Command("sh", "-c", "exec 3<"+filepath.Join(mp, "c1")+" 4<"+filepath.Join(mp, "c2")+"; echo ready; exec sleep 1000")
	stdout, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := stdout.Read(buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("holder: %q %v", buf, err)
	}
	p, _ := statsOf(t, bin, mp)["passthrough"].(map[string]any)
	if p == nil || p["backing_files"].(float64) != 1 || p["open_now"].(float64) != 2 {
		t.Fatalf("two clones open read-only: passthrough %v, want 1 backing file, 2 opens", p)
	}

	pid := daemonPid(t, img)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, 30*time.Second)
	holder.Process.Kill()
	holder.Wait()
	holder = nil
	waitUnlocked(t, img, 30*time.Second)
	if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
		t.Fatalf("lazy unmount of the dead mount: %v", err)
	}
	if out, code := run(t, bin, "fsck", img); code != 0 {
		t.Fatalf("fsck after killing the daemon with passthrough opens: exit %d\n%s", code, out)
	}

	if out, code := run(t, bin, "mount", "-d", img, mp); code != 0 {
		t.Fatalf("mount again: exit %d\n%s", code, out)
	}
	r := statsOf(t, bin, mp)
	if r["snapshot_files"].(float64) != 0 || r["used_bytes"].(float64) != used {
		t.Fatalf("after the remount: %v snapshots, %v bytes used; want 0 and %v (no backing snapshot survives)",
			r["snapshot_files"], r["used_bytes"], used)
	}
	for _, n := range []string{"src", "c1", "c2", "c3"} {
		got, err := os.ReadFile(filepath.Join(mp, n))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s after the remount: %v (equal %v)", n, err, bytes.Equal(got, data))
		}
	}
	if out, code := run(t, bin, "umount", mp); code != 0 {
		t.Fatalf("umount: exit %d\n%s", code, out)
	}
	if out, code := run(t, bin, "fsck", img); code != 0 || !strings.Contains(out, "clean") {
		t.Fatalf("fsck after a clean unmount: exit %d\n%s", code, out)
	}
}
