package fusefs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Changing a file removes privileges exactly as the kernel's own file
// systems do: each case runs on the mount and on a reference directory of the
// host file system, and the resulting modes and capabilities must agree.
func TestChangesDropPrivilegesLikeTheKernel(t *testing.T) {
	m := mountFresh(t)
	xfsIO := requireTool(t, "xfs_io")
	ref := t.TempDir()
	for d := ref; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	type change struct {
		name  string
		mode  string // chmod argument for the file, owned by root
		as    uint32 // uid (and gid) running script
		after string // shell script; $F is the file, $S a readable source
	}
	changes := []change{
		{"write by user, setuid+setgid, group exec", "6777", 1000, `printf x >> "$F"`},
		{"write by user, setgid without group exec", "2767", 1000, `printf x >> "$F"`},
		{"write by root keeps set-ID bits", "6755", 0, `printf x >> "$F"`},
		{"truncate by user", "6777", 1000, `truncate -s 1 "$F"`},
		{"truncate by root", "6777", 0, `truncate -s 1 "$F"`},
		{"open O_TRUNC by user", "6777", 1000, `: > "$F"`},
		{"open O_TRUNC by user, setgid without group exec", "2766", 1000, `: > "$F"`},
		{"chown by root", "6755", 0, `chown 1000:1000 "$F"`},
		{"chown by root, setgid without group exec", "2745", 0, `chown 1000:1000 "$F"`},
		{"fallocate by user", "6777", 1000, `fallocate -l 65536 "$F"`},
		{"copy_file_range by user", "6777", 1000, xfsIO + ` -c "copy_range $S" "$F"`},
		{"chmod by root is left alone", "6755", 0, `chmod 6750 "$F"`},
	}
	outcome := func(dir string, i int, c change) string {
		f, s := filepath.Join(dir, fmt.Sprintf("f%d", i)), filepath.Join(dir, "src")
		sh(t, fmt.Sprintf(`printf 0123456789 > %q && chmod %s %q && printf abcdef > %q && chmod 644 %q`, f, c.mode, f, s, s))
		cmd := exec.Command("sh", "-c", c.after)
		cmd.Env = append(os.Environ(), "F="+f, "S="+s)
		if c.as != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: c.as, Gid: c.as}}
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s in %s: %v\n%s", c.name, dir, err, out)
		}
		return fmt.Sprintf("mode %o", statOf(t, f).Mode&0o7777)
	}
	for i, c := range changes {
		want, got := outcome(ref, i, c), outcome(m.dir, i, c)
		if got != want {
			t.Errorf("%s (chmod %s): reflinkfs has %s, the host file system %s", c.name, c.mode, got, want)
		}
	}

	// File capabilities go on any write, even root's.
	setcap, getcap := requireTool(t, "setcap"), requireTool(t, "getcap")
	for _, dir := range []string{ref, m.dir} {
		f := filepath.Join(dir, "capable")
		writeFile(t, f, []byte("binary"))
		run(t, setcap, "cap_net_raw+ep", f)
		if out := run(t, getcap, f); !strings.Contains(out, "cap_net_raw") {
			t.Fatalf("%s: setcap did not take: %q", dir, out)
		}
		sh(t, fmt.Sprintf(`printf x >> %q`, f))
		if out := run(t, getcap, f); strings.TrimSpace(out) != "" {
			t.Errorf("%s: capability survived a write: %q", dir, out)
		}
	}
}
