package fusefs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// shIn runs a shell command line in a process group of its own (so the
// test binary's own reads are no source for it), as uid:gid with extra
// supplementary groups when uid is not 0.
func shIn(t testing.TB, uid, gid uint32, groups []uint32, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if uid != 0 || gid != 0 || groups != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as %d:%d: %s: %v\n%s", uid, gid, script, err, out)
	}
}

// sharedOf returns the bytes of name (relative to the mount) that share
// blocks, and the bytes it maps.
func (m *testMount) sharedOf(t testing.TB, name string) (shared, mapped int64) {
	t.Helper()
	f, err := m.fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ext, err := f.Fiemap()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ext {
		mapped += e.Length
		if e.Shared {
			shared += e.Length
		}
	}
	return shared, mapped
}

func (m *testMount) used() int64 { return m.fsys.Stats().UsedBytes }

// checkIndependent writes to src and to dst and checks each reads its own.
func checkIndependent(t *testing.T, src, dst string) {
	t.Helper()
	a, b := readFile(t, src), readFile(t, dst)
	if !bytes.Equal(a, b) {
		t.Fatalf("%s differs from %s", dst, src)
	}
	patch := func(p string, data []byte, off int64) {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	patch(src, bytes.Repeat([]byte{0xAA}, 8192), 4096)
	patch(dst, bytes.Repeat([]byte{0x55}, 5000), 12288)
	copy(a[4096:], bytes.Repeat([]byte{0xAA}, 8192))
	copy(b[12288:], bytes.Repeat([]byte{0x55}, 5000))
	if !bytes.Equal(readFile(t, src), a) || !bytes.Equal(readFile(t, dst), b) {
		t.Fatalf("after writing both, %s or %s reads wrong", src, dst)
	}
}

// makeSparse writes a file with 1 MiB of data, a 4 MiB hole, 1 MiB of data
// and a 2 MiB hole at the end (8 MiB in all).
func makeSparse(t *testing.T, m *testMount, name string) {
	t.Helper()
	p := m.path(name)
	pat := outside(t, "pat", pattern(1, 1<<20))
	sh(t, "dd if="+pat+" of="+p+" bs=1M count=1 status=none && "+
		"dd if="+pat+" of="+p+" bs=1M seek=5 count=1 conv=notrunc status=none && "+
		"truncate -s 8M "+p)
}

// outside writes data to a file outside the mount, readable by everyone.
func outside(t testing.TB, name string, data []byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// cp of a sparse file (coreutils 9.1: SEEK_DATA and read/write, no
// copy_file_range) shares the data blocks and keeps the holes.
func TestCopyShareCpSparse(t *testing.T) {
	m := mountFresh(t)
	makeSparse(t, m, "a")
	before := m.used()
	shIn(t, 0, 0, nil, "cp "+m.path("a")+" "+m.path("b"))
	if grown := m.used() - before; grown > 64<<10 {
		t.Errorf("used bytes grew by %d copying 2 MiB of data, want sharing", grown)
	}
	if shared, mapped := m.sharedOf(t, "b"); shared != 2<<20 || mapped != 2<<20 {
		t.Errorf("copy maps %d bytes, %d shared; want 2 MiB, all shared", mapped, shared)
	}
	f, err := os.Open(m.path("b"))
	if err != nil {
		t.Fatal(err)
	}
	if off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE); err != nil || off != 1<<20 {
		t.Errorf("SEEK_HOLE from 0: %d %v, want 1 MiB", off, err)
	}
	if off, err := unix.Seek(int(f.Fd()), 1<<20, unix.SEEK_DATA); err != nil || off != 5<<20 {
		t.Errorf("SEEK_DATA from 1 MiB: %d %v, want 5 MiB", off, err)
	}
	f.Close()
	if st := m.fsys.Stats(); st.CopySharedBlocks != 512 {
		t.Errorf("stats: %d blocks shared by copy detection, want 512", st.CopySharedBlocks)
	}
	checkIndependent(t, m.path("a"), m.path("b"))
}

// Other copy tools share: sendfile (shutil.copyfile), a pipeline of two
// processes, dd, rsync (its receiver is another process than the reader),
// tar c | tar x.
func TestCopyShareTools(t *testing.T) {
	m := mountFresh(t)
	data := pattern(2, 4<<20+1000)
	writeFile(t, m.path("src"), data)
	if err := os.Mkdir(m.path("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	rsync := requireTool(t, "rsync")
	tools := []struct{ name, script string }{
		{"shutil", "/usr/bin/python3 -c 'import shutil; shutil.copyfile(\"SRC\", \"DST\")'"},
		{"cat-pipe", "cat SRC | cat > DST"},
		{"dd", "dd if=SRC of=DST bs=128k status=none"},
		{"rsync", rsync + " SRC DST"},
		{"tar", "cd " + m.dir + " && tar cf - src | (cd x && tar xf -) && mv x/src DST"},
	}
	for _, tool := range tools {
		t.Run(tool.name, func(t *testing.T) {
			dst := m.path("copy-" + tool.name)
			before := m.used()
			shIn(t, 0, 0, nil, strings.NewReplacer("SRC", m.path("src"), "DST", dst).Replace(tool.script))
			if !bytes.Equal(readFile(t, dst), data) {
				t.Fatal("copy reads wrong")
			}
			if grown := m.used() - before; grown != 0 {
				t.Errorf("used bytes grew by %d copying 4 MiB", grown)
			}
			if shared, _ := m.sharedOf(t, "copy-"+tool.name); shared != 4<<20+4096 {
				t.Errorf("copy shares %d bytes, want %d (every block)", shared, 4<<20+4096)
			}
		})
	}
	checkIndependent(t, m.path("src"), m.path("copy-rsync"))
}

// Security: a write matches only data the writer (or its process group,
// with no more rights than the writer) read. A user who writes the exact
// bytes of a root-only file gets new blocks, whether or not root read it
// in the same process group; so does a process whose group-mate read the
// file through a supplementary group the writer lacks, and a process of
// another process group.
func TestCopyShareOnlyWhatWasRead(t *testing.T) {
	m := mountFresh(t)
	secret := pattern(3, 2<<20)
	writeFile(t, m.path("secret"), secret)
	if err := os.Chmod(m.path("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	guess := outside(t, "guess", secret) // the attacker's guess, made elsewhere
	if err := os.Chmod(m.dir, 0o777); err != nil {
		t.Fatal(err)
	}
	// A file readable by group 2000 only.
	writeFile(t, m.path("grp"), pattern(4, 2<<20))
	os.Chown(m.path("grp"), 0, 2000)
	os.Chmod(m.path("grp"), 0o640)
	grpGuess := outside(t, "grp-guess", pattern(4, 2<<20))
	// Two 1000:1000 files only the owner reads.
	writeFile(t, m.path("mine"), pattern(5, 2<<20))
	os.Chown(m.path("mine"), 1000, 1000)

	cases := []struct{ name, script string }{
		// Writes the secret's bytes, never having read the secret.
		{"never-read", "cat " + guess + " > " + m.path("w1")},
		// Holds the secret open as root in the same process group, while
		// uid 1000 writes its bytes.
		{"root-read-in-group", "exec 3<" + m.path("secret") + "; cat /proc/self/fd/3 >/dev/null; " +
			"setpriv --reuid=1000 --regid=1000 --clear-groups sh -c 'cat " + guess + " > " + m.path("w2") + "'"},
		// A group-mate of uid 1000 with supplementary group 2000 reads grp;
		// a writer without group 2000 writes its bytes.
		{"group-read-in-group", "setpriv --reuid=1000 --regid=1000 --groups=2000 cat " + m.path("grp") + " >/dev/null; " +
			"setpriv --reuid=1000 --regid=1000 --clear-groups sh -c 'cat " + grpGuess + " > " + m.path("w3") + "'"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := m.used()
			shIn(t, 0, 0, nil, c.script)
			if grown := m.used() - before; grown < 2<<20 {
				t.Errorf("used bytes grew by %d writing 2 MiB the writer never read, want new blocks", grown)
			}
		})
	}
	// Another process group of the same user read "mine"; this one writes
	// its bytes from a copy kept elsewhere: new blocks.
	shIn(t, 1000, 1000, []uint32{}, "cat "+m.path("mine")+" > /dev/null")
	mineGuess := outside(t, "mine-guess", pattern(5, 2<<20))
	before := m.used()
	shIn(t, 1000, 1000, []uint32{}, "cat "+mineGuess+" > "+m.path("w4"))
	if grown := m.used() - before; grown < 2<<20 {
		t.Errorf("used bytes grew by %d: a read by another process group let this one match", grown)
	}
	// And the writer that did read the source itself shares.
	before = m.used()
	shIn(t, 1000, 1000, []uint32{}, "cat "+m.path("mine")+" | cat > "+m.path("w5"))
	if grown := m.used() - before; grown > 64<<10 {
		t.Errorf("used bytes grew by %d copying a file the writer read", grown)
	}
	for _, w := range []string{"w1", "w2", "w3", "w4"} {
		if shared, _ := m.sharedOf(t, w); shared != 0 {
			t.Errorf("%s shares %d bytes, want none", w, shared)
		}
	}
}

// copyshare=off: copies get their own blocks.
func TestCopyShareOff(t *testing.T) {
	m := mountFresh(t, func(c *mountConfig) { c.mount.NoCopyShare = true })
	makeSparse(t, m, "a")
	before := m.used()
	shIn(t, 0, 0, nil, "cp "+m.path("a")+" "+m.path("b")+" && /usr/bin/python3 -c 'import shutil; shutil.copyfile(\""+m.path("a")+"\", \""+m.path("c")+"\")'")
	if grown := m.used() - before; grown < 2*(2<<20) {
		t.Errorf("used bytes grew by %d with copyshare=off, want two private copies", grown)
	}
	if !bytes.Equal(readFile(t, m.path("b")), readFile(t, m.path("a"))) || !bytes.Equal(readFile(t, m.path("c")), readFile(t, m.path("a"))) {
		t.Fatal("copies read wrong")
	}
}

// Opens from another user namespace are not sources: their capabilities
// there cannot be compared with a writer's.
func TestCopyShareForeignUserNamespace(t *testing.T) {
	requireTool(t, "unshare")
	m := mountFresh(t)
	writeFile(t, m.path("a"), pattern(6, 1<<20))
	before := m.used()
	shIn(t, 0, 0, nil, "unshare -r sh -c 'cat "+m.path("a")+" | cat > "+m.path("b")+"'")
	if grown := m.used() - before; grown < 1<<20 {
		t.Errorf("used bytes grew by %d: a copy made in a user namespace shared", grown)
	}
	if !bytes.Equal(readFile(t, m.path("b")), readFile(t, m.path("a"))) {
		t.Fatal("copy reads wrong")
	}
}
