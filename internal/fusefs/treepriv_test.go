package fusefs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/ioctl"
)

// The user the privilege tests run commands as (nobody:nogroup on Debian).
const (
	nobodyUid = 65534
	nobodyGid = 65534
)

// makePrivTree builds, as root, a tree holding everything whose copy
// depends on the copier's privileges: device nodes (when devices is set),
// a FIFO, a socket, set-ID and sticky files and directories owned by root
// and by nobody, a file nobody owns in a group it is not in, hard links,
// user and trusted xattrs. Everything is readable by nobody.
func makePrivTree(t *testing.T, dir string, devices bool) {
	t.Helper()
	for _, tool := range []string{"setfattr", "mknod", "mkfifo"} {
		requireTool(t, tool)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := `set -e; cd ` + dir + `
mkfifo fifo
` + systemPython(t) + ` -c 'import socket; socket.socket(socket.AF_UNIX).bind("sock")'
chmod 755 sock
printf x > suid_root; chmod 4755 suid_root
printf x > sgid_root; chmod 2755 sgid_root
printf x > sticky_root; chmod 1755 sticky_root
printf x > suid_nobody; chown 65534:65534 suid_nobody; chmod 6755 suid_nobody
printf x > sticky_nobody; chown 65534:65534 sticky_nobody; chmod 1755 sticky_nobody
printf x > suid_nobody_rootgroup; chown 65534:0 suid_nobody_rootgroup; chmod 6755 suid_nobody_rootgroup
printf x > rootuser_nogroup; chown 0:65534 rootuser_nogroup; chmod 6755 rootuser_nogroup
mkdir sgiddir; chmod 2775 sgiddir; printf y > sgiddir/f
mkdir stickydir; chmod 1777 stickydir
mkdir nobodydir; chown 65534:65534 nobodydir; chmod 3777 nobodydir
printf h > hard1; ln hard1 hard2
setfattr -n user.u -v 1 hard1
setfattr -n trusted.t -v 2 hard1
`
	if devices {
		script += "mknod blk b 8 0; chmod 600 blk; mknod chr c 1 1\n"
	}
	sh(t, script)
}

// privListing lists what a copy's privileges decide, one sorted line per
// entry: type, mode, owner, link count, device numbers, and the xattrs.
func privListing(t *testing.T, dir string) string {
	t.Helper()
	out := run(t, "sh", "-c", `cd `+dir+` && find . -printf '%P %y %M %U:%G %n ' -exec stat -c '%t:%T' {} \; | sort && find . | sort | xargs getfattr -h -d -m - 2>&1`)
	return out
}

// hostDir makes a directory on the host file system that nobody can reach.
func hostDir(t *testing.T) string {
	d := t.TempDir()
	for p := d; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// asNobody runs a command as nobody:nogroup without supplementary groups
// or capabilities, returning its combined output and error.
func asNobody(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUid, Gid: nobodyGid}}
	return cmd
}

// A tree clone by a caller without privileges makes what cp -a run by
// that caller makes on the host file system: no device nodes (EPERM, as
// mknod), FIFOs and sockets, owners it may give, set-ID bits only on what
// it owns with its group, no trusted xattrs, hard links kept.
func TestIoctlCloneTreeLikeCp(t *testing.T) {
	requireTool(t, "getfattr")
	// What cp -a as nobody makes of the tree on the host.
	host := hostDir(t)
	makePrivTree(t, filepath.Join(host, "src"), true)
	if err := os.Mkdir(filepath.Join(host, "dst"), 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(host, "dst"), 0o777)
	out, err := asNobody("cp", "-a", filepath.Join(host, "src"), filepath.Join(host, "dst", "copy")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "blk") || !strings.Contains(string(out), "Operation not permitted") {
		t.Fatalf("cp -a as nobody of a tree with device nodes: %v\n%s", err, out)
	}
	want := privListing(t, filepath.Join(host, "dst", "copy"))
	for _, s := range []string{"blk ", "chr ", "trusted."} {
		if strings.Contains(want, s) {
			t.Fatalf("cp -a as nobody copied %q:\n%s", s, want)
		}
	}

	m := mountFresh(t)
	src := m.path("src")
	makePrivTree(t, src, true)
	if err := os.Mkdir(m.path("mine"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(m.path("mine"), nobodyUid, nobodyGid); err != nil {
		t.Fatal(err)
	}

	// Device nodes stop the clone with EPERM, and none is made.
	if e := cloneTreeAs(t, nobodyUid, nobodyGid, m.path("mine"), "t", src, "0"); e != int(unix.EPERM) {
		t.Errorf("tree clone with device nodes by nobody: errno %d, want EPERM", e)
	}
	if got := run(t, "find", m.path("mine"), "-type", "b", "-o", "-type", "c"); got != "" {
		t.Errorf("unprivileged tree clone made device nodes:\n%s", got)
	}

	// Without them, the clone is what cp -a made.
	for _, dev := range []string{"blk", "chr"} {
		if err := os.Remove(filepath.Join(src, dev)); err != nil {
			t.Fatal(err)
		}
	}
	if e := cloneTreeAs(t, nobodyUid, nobodyGid, m.path("mine"), "t2", src, "0"); e != 0 {
		t.Fatalf("tree clone by nobody: errno %d", e)
	}
	if got := privListing(t, m.path("mine/t2")); got != want {
		t.Errorf("tree clone by nobody differs from cp -a by nobody\ncp -a:\n%s\nclone:\n%s", want, got)
	}
	var st1, st2 unix.Stat_t
	if err := unix.Lstat(m.path("mine/t2/hard1"), &st1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(m.path("mine/t2/hard2"), &st2); err != nil {
		t.Fatal(err)
	}
	if st1.Ino != st2.Ino {
		t.Errorf("hard links copied as two files")
	}

	// Into a set-group-ID directory of a group nobody is not in: what
	// nobody creates there takes that group.
	for _, d := range []string{filepath.Join(host, "sgid"), m.path("sgid")} {
		if err := os.Mkdir(d, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, os.ModeSetgid|0o777); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(host, "src", "blk")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(host, "src", "chr")); err != nil {
		t.Fatal(err)
	}
	if out, err := asNobody("cp", "-a", filepath.Join(host, "src"), filepath.Join(host, "sgid", "copy")).CombinedOutput(); err != nil {
		t.Fatalf("cp -a as nobody into a setgid directory: %v\n%s", err, out)
	}
	want = privListing(t, filepath.Join(host, "sgid", "copy"))
	if !strings.Contains(want, " 65534:0 ") {
		t.Fatalf("cp -a into a setgid directory of group 0 made nothing of group 0:\n%s", want)
	}
	if e := cloneTreeAs(t, nobodyUid, nobodyGid, m.path("sgid"), "copy", src, "0"); e != 0 {
		t.Fatalf("tree clone by nobody into a setgid directory: errno %d", e)
	}
	if got := privListing(t, m.path("sgid/copy")); got != want {
		t.Errorf("tree clone by nobody into a setgid directory differs from cp -a\ncp -a:\n%s\nclone:\n%s", want, got)
	}
}

// Capabilities decide, not uid 0: root without CAP_MKNOD, and root of a
// child user namespace (whose capabilities do not reach this mount), make
// no device node, as mknod(2) refuses them; root with it copies them.
func TestIoctlCloneTreeDevicesNeedCapMknod(t *testing.T) {
	requireTool(t, "setpriv")
	requireTool(t, "unshare")
	m := mountFresh(t)
	src := m.path("src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	sh(t, `cd `+src+` && mknod blk b 8 0 && chmod 600 blk && mknod chr c 1 1`)
	for _, tc := range []struct {
		what string
		wrap []string
	}{
		{"root without CAP_MKNOD", []string{"setpriv", "--bounding-set=-mknod", "--inh-caps=-mknod"}},
		{"root of a child user namespace", []string{"unshare", "--map-root-user"}},
	} {
		mknod := append(append([]string{}, tc.wrap...), "mknod", m.path("direct"), "b", "8", "0")
		if out, err := exec.Command(mknod[0], mknod[1:]...).CombinedOutput(); err == nil {
			t.Fatalf("%s: mknod on the mount succeeded, so the test does not drop the capability:\n%s", tc.what, out)
		}
		if e := cloneTreeWith(t, tc.wrap, m.dir, "nocap", src); e != int(unix.EPERM) {
			t.Errorf("tree clone by %s: errno %d, want EPERM", tc.what, e)
		}
		if got := run(t, "find", m.dir, "-path", m.path("src"), "-prune", "-o", "(", "-type", "b", "-o", "-type", "c", ")", "-print"); got != "" {
			t.Errorf("tree clone by %s made device nodes:\n%s", tc.what, got)
		}
		os.RemoveAll(m.path("nocap"))
	}
	if e := cloneTreeWith(t, nil, m.dir, "full", src); e != 0 {
		t.Fatalf("tree clone by root: errno %d", e)
	}
	if got := run(t, "stat", "-c", "%n %F %a %u:%g %t:%T", m.path("full/blk"), m.path("full/chr")); got != m.path("full/blk")+" block special file 600 0:0 8:0\n"+m.path("full/chr")+" character special file 644 0:0 1:1\n" {
		t.Errorf("tree clone by root:\n%s", got)
	}
}

// cloneTreeWith issues the tree clone ioctl from a process started through
// the command prefix wrap (e.g. setpriv) and returns its errno.
func cloneTreeWith(t *testing.T, wrap []string, dstDir, name, srcDir string) int {
	t.Helper()
	script := `
import fcntl, os, struct, sys
src = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
dst = os.open(sys.argv[2], os.O_RDONLY | os.O_DIRECTORY)
try:
    fcntl.ioctl(dst, int(sys.argv[4]), struct.pack("q256s", src, sys.argv[3].encode()))
    print(0)
except OSError as e:
    print(e.errno)
`
	args := append(append([]string{}, wrap...), systemPython(t), "-c", script, srcDir, dstDir, name, strconv.FormatUint(uint64(ioctl.IocCloneTree), 10))
	out := run(t, args[0], args[1:]...)
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("python printed %q", out)
	}
	return n
}

// copyAs covers the partial capability sets the tests above do not reach.
func TestCopyAsCapabilities(t *testing.T) {
	file := reflinkfs.Attr{Mode: syscall.S_IFREG | 0o6755, Uid: 2000, Gid: 3000}
	for _, tc := range []struct {
		what     string
		c        creds
		own      reflinkfs.Owner
		wantPerm uint32
	}{
		{"all capabilities", creds{caps: ^capSet(0)}, reflinkfs.Owner{Uid: 2000, Gid: 3000}, 0o6755},
		{"uid 0 without capabilities", creds{}, reflinkfs.Owner{Uid: 0, Gid: 0}, 0o755},
		{"CAP_CHOWN without CAP_FSETID, not in the group", creds{uid: 1000, gid: 1000, caps: 1 << unix.CAP_CHOWN}, reflinkfs.Owner{Uid: 2000, Gid: 3000}, 0o4755},
		{"CAP_CHOWN without CAP_FSETID, in the group", creds{uid: 1000, gid: 1000, groups: map[uint32]bool{3000: true}, caps: 1 << unix.CAP_CHOWN}, reflinkfs.Owner{Uid: 2000, Gid: 3000}, 0o6755},
		{"owner, group through a supplementary group", creds{uid: 2000, gid: 1000, groups: map[uint32]bool{3000: true}}, reflinkfs.Owner{Uid: 2000, Gid: 3000}, 0o6755},
		{"owner, not in the group", creds{uid: 2000, gid: 1000}, reflinkfs.Owner{Uid: 2000, Gid: 1000}, 0o755},
	} {
		own, perm := copyAs(file, tc.c, tc.c.gid)
		if own != tc.own || perm != tc.wantPerm {
			t.Errorf("%s: %+v %o, want %+v %o", tc.what, own, perm, tc.own, tc.wantPerm)
		}
	}
}
