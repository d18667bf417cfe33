package fusefs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs/ioctl"
)

// makeToolTree builds a tree at dir with the usual tools: nested
// directories, files of several sizes (empty, unaligned, sparse), a hard
// link pair, symlinks, a FIFO, a device node, odd modes, owners, user and
// trusted xattrs, access and default ACLs, and old times.
func makeToolTree(t *testing.T, dir string) {
	t.Helper()
	for _, tool := range []string{"setfattr", "setfacl", "mknod", "mkfifo", "truncate"} {
		requireTool(t, tool)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sh(t, `set -e; cd `+dir+`
mkdir -p a/b/c empty sgid tmp
head -c 100000 /dev/urandom > a/b/c/f100k
printf hello > small
: > empty-file
head -c 12345 /dev/urandom > a/odd
dd if=/dev/urandom of=sparse bs=4096 seek=256 count=2 status=none
truncate -s 4M sparse
ln a/odd a/b/hard
ln -s a/odd sym
ln -s /nowhere dangling
mkfifo fifo
mknod null c 1 3
chmod 2775 sgid
chmod 1777 tmp
printf secret > tmp/none
chmod 000 tmp/none
chmod 4755 small
chown 1000:1000 a a/odd
chown -h 1234:5678 sym
chown 2000:3000 a/b/c/f100k
setfattr -n user.color -v blue small
setfattr -n trusted.t -v x small
setfattr -h -n trusted.on-link -v y sym
setfacl -m u:1000:rx a/b
setfacl -d -m g:100:rwx a/b
find . -exec touch -h -m -d '2001-02-03 04:05:06.123456789' {} +
find . -exec touch -h -a -d '2011-12-13 14:15:16.987654321' {} +
touch -h -m -d '1999-01-01 00:00:01.5' a/b/c a/odd sym
`)
}

// treeListing describes every entry under dir (mode, owner, size, links,
// times with nanoseconds, symlink target), one line each, in walk order.
func treeListing(t *testing.T, dir string) string {
	t.Helper()
	return run(t, "sh", "-c", `cd `+dir+` && find . -printf '%p %M %U:%G %s %n %A@ %T@ %l\n' && stat -c '%n %t:%T' null`)
}

func xattrDump(t *testing.T, dir string) string {
	t.Helper()
	return run(t, "sh", "-c", `cd `+dir+` && getfattr -R -h -d -m - -e hex . 2>&1 && getfacl -R -P -n . 2>&1`)
}

func openDir(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// The tree clone ioctl reproduces a tree made with real tools: diff finds
// no difference, find/stat/getfattr/getfacl list the same metadata, files
// share their blocks, and a cached negative entry does not hide the clone.
func TestIoctlCloneTree(t *testing.T) {
	requireTool(t, "getfattr")
	requireTool(t, "getfacl")
	m := mountFresh(t, noatime) // diff -r reads both trees; the listings compare atimes
	src := m.path("src")
	makeToolTree(t, src)
	wantList, wantXattrs := treeListing(t, src), xattrDump(t, src)

	// The kernel caches "copy does not exist" for an hour.
	if _, err := os.Lstat(m.path("copy")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lstat before the clone: %v", err)
	}
	var before unix.Stat_t
	if err := unix.Stat(m.dir, &before); err != nil {
		t.Fatal(err)
	}
	if err := ioctl.CloneTree(openDir(t, m.dir), "copy", openDir(t, src)); err != nil {
		t.Fatalf("CloneTree: %v", err)
	}
	if _, err := os.Lstat(m.path("copy")); err != nil {
		t.Fatalf("lstat after the clone: %v (negative entry not invalidated?)", err)
	}
	var after unix.Stat_t
	if err := unix.Stat(m.dir, &after); err != nil {
		t.Fatal(err)
	}
	if after.Nlink != before.Nlink+1 {
		t.Errorf("parent's link count %d after the clone, was %d", after.Nlink, before.Nlink)
	}

	copyDir := m.path("copy")
	if out, err := exec.Command("diff", "-r", "--no-dereference", "-x", "fifo", "-x", "null", src, copyDir).CombinedOutput(); err != nil {
		t.Errorf("diff -r: %v\n%s", err, out)
	}
	if got := treeListing(t, copyDir); got != wantList {
		t.Errorf("find/stat listing of the clone differs\nsource:\n%s\nclone:\n%s", wantList, got)
	}
	if got := xattrDump(t, copyDir); got != wantXattrs {
		t.Errorf("getfattr/getfacl of the clone differs\nsource:\n%s\nclone:\n%s", wantXattrs, got)
	}
	if !strings.Contains(wantXattrs, "trusted.t") || !strings.Contains(wantXattrs, "user:1000:r-x") || !strings.Contains(wantXattrs, "default:group:100:rwx") {
		t.Errorf("test tree lacks the xattrs it was given:\n%s", wantXattrs)
	}
	for _, f := range []string{"a/b/c/f100k", "a/odd", "sparse"} {
		// Closed at once: a clone open read-only is passed through, and
		// the clone is written below (a writer would get ETXTBSY).
		fd := openRO(t, filepath.Join(copyDir, f))
		exts, err := ioctl.Fiemap(fd)
		fd.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !allShared(exts) {
			t.Errorf("%s: extents of the clone not all shared: %+v", f, exts)
		}
	}

	// Changing the clone leaves the source alone.
	sh(t, `cd `+copyDir+` && printf changed > a/odd && chmod 700 a && rm a/b/c/f100k && setfattr -x user.color small`)
	if got := treeListing(t, src); got != wantList {
		t.Errorf("source changed with its clone\nbefore:\n%s\nafter:\n%s", wantList, got)
	}
	if got := xattrDump(t, src); got != wantXattrs {
		t.Errorf("source xattrs changed with its clone")
	}
	rep, err := m.fsys.Fsck(false)
	if err != nil || !rep.Clean() {
		t.Errorf("fsck: %v %v", err, rep.Problems)
	}
}

func TestIoctlCloneTreeRefuses(t *testing.T) {
	m := mountFresh(t)
	src := m.path("src")
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "file"), []byte("x"))
	if err := os.Mkdir(m.path("taken"), 0o755); err != nil {
		t.Fatal(err)
	}
	root, srcDir := openDir(t, m.dir), openDir(t, src)
	outside := openDir(t, t.TempDir())
	for _, tc := range []struct {
		what string
		dst  *os.File
		name string
		src  *os.File
		want error
	}{
		{"existing name", root, "taken", srcDir, unix.EEXIST},
		{"into itself", srcDir, "copy", srcDir, unix.EINVAL},
		{"below itself", openDir(t, filepath.Join(src, "sub")), "copy", srcDir, unix.EINVAL},
		{"source is a file", root, "copy", openRO(t, filepath.Join(src, "file")), unix.ENOTDIR},
		{"source on another file system", root, "copy", outside, unix.EXDEV},
		{"issued on a file", openRW(t, filepath.Join(src, "file")), "copy", srcDir, unix.ENOTDIR},
		{"issued outside reflinkfs", outside, "copy", srcDir, unix.ENOTTY},
	} {
		if err := ioctl.CloneTree(tc.dst, tc.name, tc.src); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.what, err, tc.want)
		}
	}
	if err := ioctl.CloneTree(root, "a/b", srcDir); !errors.Is(err, unix.EINVAL) {
		t.Errorf("name with a slash: %v, want EINVAL", err)
	}
	if _, err := os.Lstat(m.path("copy")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused clone left %s: %v", m.path("copy"), err)
	}
}

// A MAP_SHARED write not yet written back is part of the clone. Another
// process maps and writes: a fault on our own mount from the test process
// could deadlock with the garbage collector stopping the daemon goroutines.
func TestIoctlCloneTreeSeesMappedWrites(t *testing.T) {
	requireTool(t, "python3")
	m := mountFresh(t)
	src := m.path("src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "mapped"), make([]byte, 8192))
	cmd := exec.Command("python3", "-c", fmt.Sprintf(`
import mmap, os, sys
fd = os.open(%q, os.O_RDWR)
m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[100:127] = b"written through the mapping"
print("ready", flush=True)
sys.stdin.read()  # keep the dirty mapping until the test is done
`, filepath.Join(src, "mapped")))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	ready := make([]byte, 6)
	if _, err := io.ReadFull(stdout, ready); err != nil || string(ready) != "ready\n" {
		t.Fatalf("mapping process: %q %v", ready, err)
	}
	if err := ioctl.CloneTree(openDir(t, m.dir), "copy", openDir(t, src)); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, m.path("copy/mapped")); string(got[100:127]) != "written through the mapping" {
		t.Errorf("clone of a mapped file lacks the mapped write: %q", got[100:127])
	}
}

// systemPython is a python3 other users can run (the one on PATH may live
// under /root).
func systemPython(t *testing.T) string {
	for _, p := range []string{"/usr/bin/python3", "/usr/local/bin/python3"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	skipOrFail(t, "no system python3 for tests running as another user")
	return ""
}

// cloneTreeAs issues the tree clone ioctl from a process running as
// uid:gid and returns its errno (0 on success). srcFlags are extra os.open
// flags for the source directory (a Python expression).
func cloneTreeAs(t *testing.T, uid, gid uint32, dstDir, name, srcDir, srcFlags string) int {
	t.Helper()
	script := fmt.Sprintf(`
import fcntl, os, struct
src = os.open(%q, os.O_RDONLY | os.O_DIRECTORY | %s)
dst = os.open(%q, os.O_RDONLY | os.O_DIRECTORY)
try:
    fcntl.ioctl(dst, %d, struct.pack("q256s", src, %q.encode()))
    print(0)
except OSError as e:
    print(e.errno)
`, srcDir, srcFlags, dstDir, ioctl.IocCloneTree, name)
	cmd := exec.Command(systemPython(t), "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python as %d:%d: %v\n%s", uid, gid, err, out)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("python printed %q", out)
	}
	return n
}

// The kernel checks no permissions for ioctls, so the daemon does: write
// and search on the destination, read on what is copied; an unprivileged
// caller's copy is its own and lacks privileged xattrs.
func TestIoctlCloneTreePermissions(t *testing.T) {
	requireTool(t, "setfacl")
	m := mountFresh(t)
	src := m.path("src")
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "sub", "f"), []byte("readable"))
	sh(t, `cd `+src+` && chown 2000:2000 sub/f && setfattr -n user.u -v 1 sub/f && setfattr -n trusted.t -v 2 sub/f && chmod 4755 sub/f`)
	for _, d := range []string{"rootdir", "userdir", "acldir"} {
		if err := os.Mkdir(m.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(m.path("userdir"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	run(t, "setfacl", "-m", "u:1000:rwx", m.path("acldir"))

	if e := cloneTreeAs(t, 1000, 1000, m.path("rootdir"), "copy", src, "0"); e != int(unix.EACCES) {
		t.Errorf("clone into a directory the user may not write: errno %d, want EACCES", e)
	}
	if _, err := os.Lstat(m.path("rootdir/copy")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused clone left something: %v", err)
	}
	if e := cloneTreeAs(t, 1000, 1000, m.path("userdir"), "copy", src, "os.O_PATH"); e != int(unix.EBADF) {
		t.Errorf("source descriptor opened O_PATH: errno %d, want EBADF", e)
	}
	for _, d := range []string{"userdir", "acldir"} {
		if e := cloneTreeAs(t, 1000, 1000, m.path(d), "copy", src, "0"); e != 0 {
			t.Fatalf("clone into %s: errno %d", d, e)
		}
		out := run(t, "sh", "-c", `cd `+m.path(d+"/copy")+` && find . -printf '%p %U:%G %m\n' && getfattr -h -d -m - sub/f`)
		for _, want := range []string{". 1000:1000 755", "./sub 1000:1000 755", "./sub/f 1000:1000 755", `user.u="1"`} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: clone by uid 1000 lacks %q:\n%s", d, want, out)
			}
		}
		if strings.Contains(out, "trusted.") {
			t.Errorf("%s: unprivileged clone copied a trusted xattr:\n%s", d, out)
		}
	}
	// Root's copy keeps owners and every xattr.
	if e := cloneTreeAs(t, 0, 0, m.path("rootdir"), "copy", src, "0"); e != 0 {
		t.Fatalf("clone by root: errno %d", e)
	}
	if out := run(t, "sh", "-c", `cd `+m.path("rootdir/copy")+` && stat -c '%u:%g %a' sub/f && getfattr -h -d -m - sub/f`); !strings.Contains(out, "2000:2000 4755") || !strings.Contains(out, "trusted.t") {
		t.Errorf("clone by root: %s", out)
	}

	// A file the user may not read stops its clone.
	writeFile(t, filepath.Join(src, "sub", "secret"), []byte("root only"))
	if err := os.Chmod(filepath.Join(src, "sub", "secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if e := cloneTreeAs(t, 1000, 1000, m.path("userdir"), "copy2", src, "0"); e != int(unix.EACCES) {
		t.Errorf("clone of a tree holding an unreadable file: errno %d, want EACCES", e)
	}
	if _, err := os.Stat(m.path("userdir/copy2/sub/secret")); err == nil {
		t.Errorf("the unreadable file was copied")
	}
}
