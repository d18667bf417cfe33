package fusefs

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// fsTypeAt returns the file system type of the mount at dir, from
// /proc/self/mountinfo ("" if dir is not a mount point).
func fsTypeAt(t *testing.T, dir string) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	typ := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i := 6; i+1 < len(fields); i++ {
			if fields[i] == "-" && fields[4] == dir {
				typ = fields[i+1]
			}
		}
	}
	return typ
}

// TestMountNoSubtype: a mount with NoSubtype has the kernel type "fuse"
// exactly, works like any other (cp, reads, writes) and unmounts.
func TestMountNoSubtype(t *testing.T) {
	m := mountFresh(t, func(c *mountConfig) { c.mount.NoSubtype = true })
	if typ := fsTypeAt(t, m.dir); typ != "fuse" {
		t.Fatalf("mount type %q, want fuse", typ)
	}
	want := []byte("no subtype\n")
	if err := os.WriteFile(m.path("a"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "cp", m.path("a"), m.path("b"))
	if got, err := os.ReadFile(m.path("b")); err != nil || string(got) != string(want) {
		t.Fatalf("read of the cp copy: %q, %v", got, err)
	}
	if err := m.srv.Unmount(); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	m.srv = nil
	if typ := fsTypeAt(t, m.dir); typ != "" {
		t.Fatalf("still mounted (type %s) after Unmount", typ)
	}
}
