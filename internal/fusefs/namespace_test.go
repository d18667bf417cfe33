package fusefs

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ln, ln -s, mv (over a file too), renameat2 flags, mkfifo, chmod, chown,
// touch -d, setfattr/getfattr; all of it survives unmount and a new mount.
func TestNamespaceWithTools(t *testing.T) {
	setfattr := requireTool(t, "setfattr")
	getfattr := requireTool(t, "getfattr")
	m := mountFresh(t, noatime) // the checks read a file whose atime they check

	writeFile(t, m.path("a"), []byte("content of a"))
	writeFile(t, m.path("victim"), []byte("to be replaced"))
	if err := os.Mkdir(m.path("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "ln", m.path("a"), m.path("dir/hard"))
	run(t, "ln", "-s", "../a", m.path("dir/soft"))
	run(t, "mv", m.path("dir/hard"), m.path("victim")) // over an existing file
	run(t, "mv", m.path("dir"), m.path("moved"))
	run(t, "mkfifo", m.path("fifo"))
	run(t, "chmod", "0640", m.path("a"))
	run(t, "chown", "1234:5678", m.path("a"))
	run(t, "touch", "-d", "2001-02-03 04:05:06.789 UTC", m.path("a"))
	run(t, "touch", "-h", "-d", "1999-12-31 23:59:59 UTC", m.path("moved/soft"))
	run(t, setfattr, "-n", "user.color", "-v", "blue", m.path("a"))
	run(t, setfattr, "-n", "trusted.level", "-v", "0x0102ff", m.path("a"))
	run(t, setfattr, "-n", "security.label", "-v", "secret", m.path("a"))
	run(t, setfattr, "-n", "user.gone", "-v", "x", m.path("a"))
	run(t, setfattr, "-x", "user.gone", m.path("a"))

	// renameat2: NOREPLACE refuses an existing target, EXCHANGE swaps.
	writeFile(t, m.path("x"), []byte("x"))
	writeFile(t, m.path("y"), []byte("y"))
	if err := unix.Renameat2(unix.AT_FDCWD, m.path("x"), unix.AT_FDCWD, m.path("y"), unix.RENAME_NOREPLACE); !errors.Is(err, unix.EEXIST) {
		t.Errorf("RENAME_NOREPLACE over a file: %v, want EEXIST", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, m.path("x"), unix.AT_FDCWD, m.path("y"), unix.RENAME_EXCHANGE); err != nil {
		t.Errorf("RENAME_EXCHANGE: %v", err)
	}

	// The fifo passes data between two processes.
	done := make(chan error, 1)
	go func() { done <- exec.Command("sh", "-c", "echo through the fifo > "+m.path("fifo")).Run() }()
	if got := readFile(t, m.path("fifo")); string(got) != "through the fifo\n" {
		t.Errorf("fifo read %q", got)
	}
	if err := <-done; err != nil {
		t.Errorf("fifo writer: %v", err)
	}

	check := func(when string) {
		t.Helper()
		if got := string(readFile(t, m.path("victim"))); got != "content of a" {
			t.Errorf("%s: victim (renamed hard link) reads %q", when, got)
		}
		if _, err := os.Stat(m.path("moved/hard")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: old name of moved hard link still there: %v", when, err)
		}
		sta := statOf(t, m.path("a"))
		if sta.Nlink != 2 || sta.Mode&0o7777 != 0o640 || sta.Uid != 1234 || sta.Gid != 5678 {
			t.Errorf("%s: a: nlink %d mode %o owner %d:%d", when, sta.Nlink, sta.Mode&0o7777, sta.Uid, sta.Gid)
		}
		wantM := time.Date(2001, 2, 3, 4, 5, 6, 789e6, time.UTC)
		if got := time.Unix(sta.Mtim.Unix()); !got.Equal(wantM) {
			t.Errorf("%s: mtime %v, want %v", when, got, wantM)
		}
		if got := time.Unix(sta.Atim.Unix()); !got.Equal(wantM) {
			t.Errorf("%s: atime %v, want %v", when, got, wantM)
		}
		if target, err := os.Readlink(m.path("moved/soft")); err != nil || target != "../a" {
			t.Errorf("%s: readlink %q %v", when, target, err)
		}
		if got := string(readFile(t, m.path("moved/soft"))); got != "content of a" {
			t.Errorf("%s: read through symlink %q", when, got)
		}
		if st := statOf(t, m.path("moved/soft")); time.Unix(st.Mtim.Unix()).Year() != 1999 {
			t.Errorf("%s: symlink mtime %v (touch -h)", when, time.Unix(st.Mtim.Unix()))
		}
		if st := statOf(t, m.path("fifo")); st.Mode&unix.S_IFMT != unix.S_IFIFO {
			t.Errorf("%s: fifo mode %o", when, st.Mode)
		}
		if x, y := string(readFile(t, m.path("x"))), string(readFile(t, m.path("y"))); x != "y" || y != "x" {
			t.Errorf("%s: after exchange x=%q y=%q", when, x, y)
		}
		out := run(t, getfattr, "-d", "-m", "-", "-e", "text", m.path("a"))
		for _, want := range []string{`user.color="blue"`, `security.label="secret"`} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: getfattr lacks %s:\n%s", when, want, out)
			}
		}
		if strings.Contains(out, "user.gone") {
			t.Errorf("%s: removed xattr still listed:\n%s", when, out)
		}
		if out := run(t, getfattr, "-n", "trusted.level", "-e", "hex", m.path("a")); !strings.Contains(out, "trusted.level=0x0102ff") {
			t.Errorf("%s: getfattr trusted.level:\n%s", when, out)
		}
		if _, err := run2(getfattr, "-n", "user.missing", m.path("a")); err == nil {
			t.Errorf("%s: getfattr of a missing xattr succeeded", when)
		}
	}
	check("mounted")
	m.remount(t)
	check("after remount")
}

// New inodes belong to the caller, or take a setgid directory's group;
// directories inherit the setgid bit.
func TestOwnershipAndSetgidDirectories(t *testing.T) {
	m := mountFresh(t)
	if err := os.Mkdir(m.path("shared"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(m.path("shared"), 0, 4321); err != nil {
		t.Fatal(err)
	}
	// os.Chmod takes fs.FileMode bits; unix.Chmod takes Linux bits.
	if err := unix.Chmod(m.path("shared"), 0o2777); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(m.dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	asUser(t, 1000, 1000, "umask 022; touch "+m.path("shared/file")+" "+m.path("mine")+"; mkdir "+m.path("shared/sub"))
	if st := statOf(t, m.path("shared/file")); st.Uid != 1000 || st.Gid != 4321 || st.Mode&0o7777 != 0o644 {
		t.Errorf("file in setgid dir: owner %d:%d mode %o, want 1000:4321 0644", st.Uid, st.Gid, st.Mode&0o7777)
	}
	if st := statOf(t, m.path("shared/sub")); st.Gid != 4321 || st.Mode&unix.S_ISGID == 0 || st.Mode&0o777 != 0o755 {
		t.Errorf("dir in setgid dir: gid %d mode %o, want 4321 with setgid, 0755", st.Gid, st.Mode&0o7777)
	}
	if st := statOf(t, m.path("mine")); st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("file in plain dir: owner %d:%d, want 1000:1000", st.Uid, st.Gid)
	}
	// default_permissions: the kernel refuses what the mode forbids.
	writeFile(t, m.path("private"), []byte("root only"))
	if err := os.Chmod(m.path("private"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := asUserErr(1000, 1000, "cat "+m.path("private")); err == nil {
		t.Errorf("uid 1000 read a 0600 root file")
	}
}

func asUserErr(uid, gid uint32, script string) error {
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	return cmd.Run()
}

func asUser(t testing.TB, uid, gid uint32, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as %d:%d: %s: %v\n%s", uid, gid, script, err, out)
	}
}

// POSIX ACLs are stored as xattrs, enforced by the kernel, kept in step
// with the mode, and inherited from default ACLs.
func TestPosixACLs(t *testing.T) {
	setfacl := requireTool(t, "setfacl")
	getfacl := requireTool(t, "getfacl")
	m := mountFresh(t)
	p := m.path("f")
	writeFile(t, p, []byte("acl protected"))
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := asUserErr(1000, 1000, "cat "+p); err == nil {
		t.Fatalf("uid 1000 read a 0600 file before any ACL")
	}
	run(t, setfacl, "-m", "u:1000:r", p)
	if err := asUserErr(1000, 1000, "cat "+p+" >/dev/null"); err != nil {
		t.Errorf("uid 1000 cannot read after setfacl u:1000:r: %v", err)
	}
	if st := statOf(t, p); st.Mode&0o777 != 0o640 {
		t.Errorf("mode after adding a named user entry %o, want 0640 (group bits show the mask)", st.Mode&0o777)
	}
	out := run(t, getfacl, "-n", p)
	if !strings.Contains(out, "user:1000:r--") || !strings.Contains(out, "mask::r--") {
		t.Errorf("getfacl:\n%s", out)
	}
	// chmod changes the mask.
	run(t, "chmod", "0600", p)
	if out := run(t, getfacl, "-n", p); !strings.Contains(out, "mask::---") {
		t.Errorf("getfacl after chmod 0600:\n%s", out)
	}
	if err := asUserErr(1000, 1000, "cat "+p+" >/dev/null"); err == nil {
		t.Errorf("uid 1000 can read after chmod 0600 masked its entry")
	}
	run(t, setfacl, "-b", p)
	if out := run(t, getfacl, "-n", p); strings.Contains(out, "user:1000") {
		t.Errorf("getfacl after setfacl -b:\n%s", out)
	}

	// Default ACL inheritance replaces the umask.
	d := m.path("d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, setfacl, "-d", "-m", "u:1000:rwx,g::rx,o::-", d)
	asUserErr(0, 0, "true")
	sh(t, "umask 077; touch "+d+"/child; mkdir "+d+"/sub")
	out = run(t, getfacl, "-n", d+"/child")
	if !strings.Contains(out, "user:1000:rwx") {
		t.Errorf("child lacks the inherited entry:\n%s", out)
	}
	if st := statOf(t, d+"/child"); st.Mode&0o777 != 0o660 {
		t.Errorf("child mode %o, want 0660 (0666 masked by the default ACL, umask ignored)", st.Mode&0o777)
	}
	if out := run(t, getfacl, "-n", "-d", d+"/sub"); !strings.Contains(out, "user:1000:rwx") {
		t.Errorf("subdirectory lacks the inherited default ACL:\n%s", out)
	}
	// Without a default ACL the umask applies.
	sh(t, "umask 027; touch "+m.path("plain"))
	if st := statOf(t, m.path("plain")); st.Mode&0o777 != 0o640 {
		t.Errorf("umask 027 create: mode %o, want 0640", st.Mode&0o777)
	}

	m.remount(t)
	if out := run(t, getfacl, "-n", d+"/child"); !strings.Contains(out, "user:1000:rwx") {
		t.Errorf("after remount child ACL:\n%s", out)
	}
}

// statx reports the birth time.
func TestStatxBirthTime(t *testing.T) {
	m := mountFresh(t)
	before := time.Now().Add(-time.Second)
	p := m.path("born")
	writeFile(t, p, []byte("x"))
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, 0, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &stx); err != nil {
		t.Fatal(err)
	}
	if stx.Mask&unix.STATX_BTIME == 0 {
		t.Fatalf("statx mask %#x lacks STATX_BTIME", stx.Mask)
	}
	bt := time.Unix(stx.Btime.Sec, int64(stx.Btime.Nsec))
	if bt.Before(before) || bt.After(time.Now().Add(time.Second)) {
		t.Errorf("birth time %v not around creation", bt)
	}
	if stx.Size != 1 || stx.Ino != statOf(t, p).Ino {
		t.Errorf("statx size %d ino %d", stx.Size, stx.Ino)
	}
}

// name_to_handle_at / open_by_handle_at work, also after the kernel
// forgot the inode, and a handle of a deleted file is stale.
func TestExportHandles(t *testing.T) {
	m := mountFresh(t)
	if err := os.MkdirAll(m.path("d1/d2"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := m.path("d1/d2/f")
	writeFile(t, p, []byte("by handle"))
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, p, 0)
	if err != nil {
		t.Fatalf("name_to_handle_at: %v", err)
	}
	dh, _, err := unix.NameToHandleAt(unix.AT_FDCWD, m.path("d1/d2"), 0)
	if err != nil {
		t.Fatalf("name_to_handle_at dir: %v", err)
	}
	mfd, err := unix.Open(m.dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mfd)

	sh(t, "echo 2 > /proc/sys/vm/drop_caches") // forget dentries and inodes
	fd, err := unix.OpenByHandleAt(mfd, h, unix.O_RDONLY)
	if err != nil {
		t.Fatalf("open_by_handle_at: %v", err)
	}
	f := os.NewFile(uintptr(fd), "by-handle")
	buf := make([]byte, 100)
	n, _ := f.Read(buf)
	f.Close()
	if string(buf[:n]) != "by handle" {
		t.Errorf("read through handle: %q", buf[:n])
	}
	dfd, err := unix.OpenByHandleAt(mfd, dh, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		t.Fatalf("open_by_handle_at dir: %v", err)
	}
	// Resolving a directory handle connects it to the tree through "..".
	if target, err := os.Readlink("/proc/self/fd/" + itoa(dfd)); err != nil || target != m.path("d1/d2") {
		t.Errorf("directory from handle resolves to %q %v", target, err)
	}
	unix.Close(dfd)

	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	sh(t, "echo 2 > /proc/sys/vm/drop_caches")
	if fd, err := unix.OpenByHandleAt(mfd, h, unix.O_RDONLY); err == nil {
		unix.Close(fd)
		t.Errorf("open_by_handle_at of a deleted file succeeded")
	} else if !errors.Is(err, unix.ESTALE) {
		t.Errorf("open_by_handle_at of a deleted file: %v, want ESTALE", err)
	}
}

// A read-only mount refuses changes.
func TestReadOnlyMount(t *testing.T) {
	m := mountFresh(t)
	writeFile(t, m.path("f"), []byte("data"))
	m.opt.ReadOnly = true
	m.eopt.ReadOnly = true
	m.remount(t)
	if got := string(readFile(t, m.path("f"))); got != "data" {
		t.Errorf("read-only mount reads %q", got)
	}
	if err := os.WriteFile(m.path("g"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("create on read-only mount: %v, want EROFS", err)
	}
	if _, err := os.OpenFile(m.path("f"), os.O_WRONLY, 0); !errors.Is(err, unix.EROFS) {
		t.Errorf("open for writing on read-only mount: %v, want EROFS", err)
	}
}
