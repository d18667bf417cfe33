package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// tool is an external program the run needs, and the Debian package that
// provides it.
type tool struct {
	name, pkg string
	why       string
}

// requiredTools are checked before anything is set up.
var requiredTools = []tool{
	{"mkfs.xfs", "xfsprogs", "creates the XFS file system with reflink"},
	{"xfs_io", "xfsprogs", "counts XFS extents (fiemap)"},
	{"losetup", "mount", "attaches the XFS backing file as a loop device"},
	{"fincore", "util-linux-extra", "measures page cache held by files"},
	{"cp", "coreutils", "clones directory trees on XFS (cp -a --reflink=always)"},
}

// System is what the prerequisite check looks at; tests substitute it.
type System struct {
	LookPath func(string) (string, error)
	EUID     int
	HaveFUSE bool // /dev/fuse exists
}

// HostSystem describes the running machine.
func HostSystem() System {
	_, err := os.Stat("/dev/fuse")
	return System{LookPath: exec.LookPath, EUID: os.Geteuid(), HaveFUSE: err == nil}
}

// MissingError lists everything the run needs and does not have.
type MissingError struct {
	NotRoot  bool
	NoFUSE   bool
	Tools    []string // missing programs
	Packages []string // Debian packages providing them
}

func (e *MissingError) Error() string {
	var b strings.Builder
	b.WriteString("bench cannot run here:")
	if e.NotRoot {
		b.WriteString("\n  - it must run as root (it attaches a loop device, mounts XFS and FUSE, and drops caches)")
	}
	if e.NoFUSE {
		b.WriteString("\n  - /dev/fuse is missing (load the fuse module: modprobe fuse)")
	}
	for _, name := range e.Tools {
		for _, t := range requiredTools {
			if t.name == name {
				fmt.Fprintf(&b, "\n  - %s not found (package %s; it %s)", t.name, t.pkg, t.why)
			}
		}
	}
	if len(e.Packages) > 0 {
		fmt.Fprintf(&b, "\ninstall with: apt-get install -y %s", strings.Join(e.Packages, " "))
		if slices.Contains(e.Packages, "util-linux-extra") {
			b.WriteString("\n(fincore is in util-linux on Debian before 12 and on Ubuntu before 23.04)")
		}
	}
	return b.String()
}

// CheckPrereqs returns a *MissingError naming every missing prerequisite,
// or nil.
func CheckPrereqs(sys System) error {
	var e MissingError
	e.NotRoot = sys.EUID != 0
	e.NoFUSE = !sys.HaveFUSE
	for _, t := range requiredTools {
		if _, err := sys.LookPath(t.name); err != nil {
			e.Tools = append(e.Tools, t.name)
			if !slices.Contains(e.Packages, t.pkg) {
				e.Packages = append(e.Packages, t.pkg)
			}
		}
	}
	if !e.NotRoot && !e.NoFUSE && len(e.Tools) == 0 {
		return nil
	}
	return &e
}

// AddSbinToPath appends /usr/sbin and /sbin to PATH when missing: mkfs.xfs
// and losetup live there, and a root shell reached through su may lack them.
func AddSbinToPath() {
	path := os.Getenv("PATH")
	dirs := filepath.SplitList(path)
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	os.Setenv("PATH", strings.Join(dirs, string(filepath.ListSeparator)))
}
