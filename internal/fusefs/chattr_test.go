package fusefs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// chattrCase is one operation on a file or directory carrying a flag, and
// whether the kernel allows it there (checked on the host's file system too).
type chattrCase struct {
	flag   string // "i" or "a"
	onDir  bool   // the flag is on $D (holding $D/x), else on $F
	script string // sh script using $F, $D, $X (a plain file) and $C (their directory); xio is xfs_io
	ok     bool
}

var chattrCases = []chattrCase{
	// Immutable file: readable, nothing else.
	{"i", false, `cat "$F" >/dev/null`, true},
	{"i", false, `echo x >>"$F"`, false},
	{"i", false, `echo x >"$F"`, false},
	{"i", false, `xio -c "pwrite 0 4k" "$F"`, false},
	{"i", false, `truncate -s 0 "$F"`, false},
	{"i", false, `fallocate -l 8192 "$F"`, false},
	{"i", false, `chmod 600 "$F"`, false},
	{"i", false, `chown 1:1 "$F"`, false},
	{"i", false, `touch "$F"`, false},
	{"i", false, `touch -d @0 "$F"`, false},
	{"i", false, `setfattr -n user.a -v 1 "$F"`, false},
	{"i", false, `ln "$F" "$C/link"`, false},
	{"i", false, `rm -f "$F"`, false},
	{"i", false, `mv "$F" "$C/moved"`, false},
	{"i", false, `mv "$X" "$F"`, false},
	{"i", false, `xio -c "copy_range $X" "$F"`, false},
	// Append-only file: appends, allocation and touch; nothing else.
	{"a", false, `cat "$F" >/dev/null`, true},
	{"a", false, `echo x >>"$F"`, true},
	{"a", false, `xio -a -c "pwrite 0 4" "$F"`, true}, // O_APPEND: lands at the end
	{"a", false, `xio -a -c "falloc 0 64k" "$F"`, true},
	{"a", false, `xio -a -c "fpunch 0 4k" "$F"`, false},
	{"a", false, `xio -a -c "fzero 0 4k" "$F"`, false},
	{"a", false, `echo x >"$F"`, false},
	{"a", false, `xio -c "pwrite 0 4" "$F"`, false},
	{"a", false, `truncate -s 0 "$F"`, false},
	{"a", false, `chmod 600 "$F"`, false},
	{"a", false, `chown 1:1 "$F"`, false},
	{"a", false, `touch "$F"`, true},
	{"a", false, `touch -d @0 "$F"`, false},
	{"a", false, `setfattr -n user.a -v 1 "$F"`, false},
	{"a", false, `ln "$F" "$C/link"`, false},
	{"a", false, `rm -f "$F"`, false},
	{"a", false, `mv "$F" "$C/moved"`, false},
	{"a", false, `mv "$X" "$F"`, false},
	// Immutable directory: no entry added or removed; its files still change.
	{"i", true, `ls "$D" >/dev/null`, true},
	{"i", true, `echo y >"$D/x"`, true},
	{"i", true, `touch "$D/new"`, false},
	{"i", true, `mkdir "$D/sub"`, false},
	{"i", true, `ln -s x "$D/sym"`, false},
	{"i", true, `rm "$D/x"`, false},
	{"i", true, `mv "$D/x" "$D/y"`, false},
	{"i", true, `mv "$X" "$D/new"`, false},
	{"i", true, `chmod 700 "$D"`, false},
	// Append-only directory: entries added, none removed.
	{"a", true, `touch "$D/new"`, true},
	{"a", true, `mkdir "$D/sub"`, true},
	{"a", true, `mv "$X" "$D/new"`, true},
	{"a", true, `rm "$D/x"`, false},
	{"a", true, `mv "$D/x" "$D/y"`, false},
	{"a", true, `mv "$D/x" "$C/"`, false},
}

// runChattrCases runs every case in a fresh directory under base and
// reports the ones whose outcome differs from the table.
func runChattrCases(t *testing.T, base string) {
	t.Helper()
	for i, c := range chattrCases {
		dir := filepath.Join(base, fmt.Sprintf("c%d", i))
		target := filepath.Join(dir, "f")
		if c.onDir {
			target = filepath.Join(dir, "d")
		}
		sh(t, fmt.Sprintf(`set -e; mkdir %[1]q %[1]q/d; echo data >%[1]q/f; echo x >%[1]q/x; echo x >%[1]q/d/x; chattr +%[2]s %[3]q`, dir, c.flag, target))
		// xfs_io exits 0 after some failed commands: fail on any error output.
		const xio = `xio() { err=$(xfs_io "$@" 2>&1 >/dev/null); [ -z "$err" ] || { echo "$err"; return 1; }; }; `
		cmd := exec.Command("sh", "-c", xio+c.script)
		cmd.Env = append(os.Environ(), "F="+filepath.Join(dir, "f"), "D="+filepath.Join(dir, "d"),
			"X="+filepath.Join(dir, "x"), "C="+dir)
		out, err := cmd.CombinedOutput()
		if (err == nil) != c.ok {
			t.Errorf("+%s on %s: %s: %v %s; want success %v", c.flag, filepath.Base(target), c.script, err, strings.TrimSpace(string(out)), c.ok)
		}
		sh(t, fmt.Sprintf(`chattr -%s %q`, c.flag, target))
	}
}

// chattr +i / +a work on the mount with the kernel's semantics: every
// case gives the outcome it gives on a local file system.
func TestChattrImmutableAppend(t *testing.T) {
	for _, tool := range []string{"chattr", "lsattr", "xfs_io", "setfattr", "fallocate"} {
		requireTool(t, tool)
	}
	m := mountFresh(t)
	// lsattr shows what chattr set, on files and directories.
	writeFile(t, m.path("f"), []byte("data"))
	sh(t, "mkdir "+m.path("d"))
	for _, p := range []string{m.path("f"), m.path("d")} {
		run(t, "chattr", "+i", p)
		if got := run(t, "lsattr", "-d", p); !strings.HasPrefix(got, "----i") {
			t.Errorf("lsattr after chattr +i: %q", got)
		}
		run(t, "chattr", "-i", "+a", p)
		if got := run(t, "lsattr", "-d", p); !strings.HasPrefix(got, "-----a") {
			t.Errorf("lsattr after chattr -i +a: %q", got)
		}
		if got := run(t, "xfs_io", "-r", "-c", "lsattr", p); !strings.Contains(strings.Fields(got)[0], "a") {
			t.Errorf("xfs_io lsattr (FS_IOC_FSGETXATTR) after chattr +a: %q", got)
		}
		run(t, "xfs_io", "-r", "-c", "chattr -a", p) // FS_IOC_FSSETXATTR
		if got := run(t, "lsattr", "-d", p); strings.ContainsAny(strings.Fields(got)[0], "ia") {
			t.Errorf("lsattr after xfs_io chattr -a: %q", got)
		}
	}
	// Flags we do not keep are refused, not dropped silently.
	if err := exec.Command("chattr", "+c", m.path("f")).Run(); err == nil {
		t.Error("chattr +c (compression) succeeded")
	}
	// Kept across a remount.
	run(t, "chattr", "+a", m.path("f"))
	m.remount(t)
	if got := run(t, "lsattr", m.path("f")); !strings.HasPrefix(got, "-----a") {
		t.Errorf("lsattr after remount: %q", got)
	}
	run(t, "chattr", "-a", m.path("f"))

	t.Run("mount", func(t *testing.T) { runChattrCases(t, m.dir) })
	// The table is the kernel's: check it on the host's file system where
	// that supports the flags.
	host := t.TempDir()
	probe := filepath.Join(host, "probe")
	writeFile(t, probe, nil)
	if exec.Command("chattr", "+i", probe).Run() == nil {
		run(t, "chattr", "-i", probe)
		t.Run("host", func(t *testing.T) { runChattrCases(t, host) })
	}
}

// Only a caller with CAP_LINUX_IMMUTABLE may set or clear the flags:
// neither the file's owner nor root without the capability.
func TestChattrNeedsCapability(t *testing.T) {
	requireTool(t, "chattr")
	requireTool(t, "setpriv")
	m := mountFresh(t)
	p := m.path("f")
	writeFile(t, p, []byte("data"))
	run(t, "chown", "1000:1000", p)
	if err := asUserErr(1000, 1000, "chattr +a "+p); err == nil {
		t.Error("the owner, unprivileged, set +a")
	}
	noCap := []string{"--bounding-set=-linux_immutable", "--inh-caps=-linux_immutable", "chattr"}
	if err := exec.Command("setpriv", append(noCap, "+i", p)...).Run(); err == nil {
		t.Error("root without CAP_LINUX_IMMUTABLE set +i")
	}
	run(t, "chattr", "+i", p)
	if err := exec.Command("setpriv", append(noCap, "-i", p)...).Run(); err == nil {
		t.Error("root without CAP_LINUX_IMMUTABLE cleared +i")
	}
	if err := asUserErr(1000, 1000, "echo x >>"+p); err == nil {
		t.Error("the owner appended to an immutable file")
	}
	run(t, "chattr", "-i", p)
}

// The daemon's own check reads the caller's effective capabilities, in
// the daemon's user namespace only.
func TestHasCapability(t *testing.T) {
	requireTool(t, "setpriv")
	requireTool(t, "unshare")
	if !hasCapability(uint32(os.Getpid()), capLinuxImmutable) {
		t.Fatal("root test process lacks CAP_LINUX_IMMUTABLE")
	}
	for _, c := range []struct {
		why  string
		args []string
	}{
		{"without CAP_LINUX_IMMUTABLE", []string{"setpriv", "--bounding-set=-linux_immutable", "--inh-caps=-linux_immutable", "sleep", "60"}},
		{"root of a child user namespace", []string{"unshare", "-r", "sleep", "60"}},
	} {
		cmd := exec.Command(c.args[0], c.args[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The wrapper execs sleep in the same process; wait until it has.
		for {
			comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(string(comm)) == "sleep" {
				break
			}
		}
		if hasCapability(uint32(cmd.Process.Pid), capLinuxImmutable) {
			t.Errorf("a process %s has CAP_LINUX_IMMUTABLE, says hasCapability", c.why)
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
	if hasCapability(0, capLinuxImmutable) {
		t.Error("pid 0 (unknown caller) has the capability")
	}
}
