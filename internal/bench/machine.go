package bench

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"golang.org/x/sys/unix"
)

// describeMachine collects what the report says about the machine. Missing
// pieces are left empty rather than failing the run.
func describeMachine(ctx context.Context, cfg *Config) Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = parseCPUModel(string(b))
	}
	m.MemBytes, _ = meminfo("MemTotal")
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				m.Revision = s.Value + m.Revision
			case "vcs.modified":
				if s.Value == "true" {
					m.Revision += "+dirty"
				}
			}
		}
	}
	if cfg.Exe != "" {
		if out, err := runCmd(ctx, cfg.Exe, "version"); err == nil {
			m.Binary = strings.TrimSpace(out)
		}
	}
	if out, err := runCmd(ctx, "mkfs.xfs", "-V"); err == nil {
		m.MkfsXFS = strings.TrimSpace(out)
	}
	var st unix.Statfs_t
	if unix.Statfs(cfg.ScratchDir, &st) == nil {
		m.Filesystem = fsTypeName(st.Type)
	}
	return m
}

// fsTypeName names the common statfs magic numbers of a scratch directory.
func fsTypeName(magic int64) string {
	switch uint32(magic) {
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x01021994:
		return "tmpfs"
	case 0x794C7630:
		return "overlayfs"
	}
	return "unknown"
}
