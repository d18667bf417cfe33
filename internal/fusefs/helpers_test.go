package fusefs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"github.com/reflinkfs/reflinkfs/internal/testenv"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

// The FUSE gate lives in internal/testenv, shared with the other mount tests.
var (
	fuseRequired = testenv.FUSERequired
	skipOrFail   = testenv.SkipOrFail
	requireFUSE  = testenv.RequireFUSE
)

// requireTool returns the path of a command-line tool the test runs.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, "tool %s not installed (apt-get install -y xfsprogs attr acl fio): %v", name, err)
	}
	return p
}

// testMount is a fresh image mounted at a temporary directory.
type testMount struct {
	image string
	dir   string
	fsys  *reflinkfs.FS
	srv   *Server
	opt   Options
	eopt  reflinkfs.Options
}

type mountConfig struct {
	engine reflinkfs.Options
	mount  Options
}

// mountFresh creates an image in a temporary directory and mounts it; the
// mount is unmounted and the image closed when the test ends.
func mountFresh(t testing.TB, cfgs ...func(*mountConfig)) *testMount {
	t.Helper()
	requireFUSE(t)
	cfg := mountConfig{
		engine: reflinkfs.Options{Size: 8 << 30, CacheSize: 256 << 20, Logger: testLogger(t)},
		mount:  Options{AllowOther: true, DefaultPermissions: true, Logger: testLogger(t)},
	}
	for _, c := range cfgs {
		c(&cfg)
	}
	m := &testMount{image: filepath.Join(t.TempDir(), "image"), dir: t.TempDir(), opt: cfg.mount, eopt: cfg.engine}
	m.opt.FsName = m.image
	// t.TempDir's parents are 0700; tests run commands as other users.
	for d := filepath.Dir(m.dir); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m.opt.Debug = os.Getenv("REFLINKFS_FUSE_DEBUG") == "1"
	fsys, err := reflinkfs.Create(m.image, cfg.engine)
	if err != nil {
		t.Fatalf("create image: %v", err)
	}
	m.fsys = fsys
	m.srv, err = Mount(fsys, m.dir, m.opt)
	if err != nil {
		fsys.Close()
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() { m.close(t) })
	return m
}

func (m *testMount) close(t testing.TB) {
	if m.srv != nil {
		if err := m.srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			// Do not leave a dead mount behind.
			exec.Command("umount", "-l", m.dir).Run()
		}
		m.srv = nil
	}
	if m.fsys != nil {
		if err := m.fsys.Close(); err != nil {
			t.Errorf("close image: %v", err)
		}
		m.fsys = nil
	}
}

// remount unmounts, closes the image, opens it again and mounts it again.
func (m *testMount) remount(t testing.TB) {
	t.Helper()
	m.close(t)
	fsys, err := reflinkfs.Open(m.image, m.eopt)
	if err != nil {
		t.Fatalf("reopen image: %v", err)
	}
	m.fsys = fsys
	m.srv, err = Mount(fsys, m.dir, m.opt)
	if err != nil {
		t.Fatalf("mount again: %v", err)
	}
}

func (m *testMount) path(name string) string { return filepath.Join(m.dir, name) }

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("REFLINKFS_FUSE_DEBUG") == "1" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// run runs a command and fails the test if it fails; it returns stdout.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// sh runs a shell command line (for redirections) and returns stdout.
func sh(t testing.TB, script string) string {
	t.Helper()
	return run(t, "sh", "-c", script)
}

func sha(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// pattern returns n deterministic pseudo-random bytes.
func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := 0; i+8 <= n; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for j := 0; j < 8; j++ {
			b[i+j] = byte(x >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(i)
	}
	return b
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
