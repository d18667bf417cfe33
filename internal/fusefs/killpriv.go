package fusefs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Removing privileges when a file changes.
//
// The mount negotiates CAP_HANDLE_KILLPRIV_V2: the kernel then stops asking
// for security.capability before each change of an inode (it marks the super
// block SB_NOSEC, so after one check per inode a write or copy_file_range is
// a single request) and leaves it to us to do what the VFS does when a file's
// contents or owner change:
//
//   - security.capability is removed on every write, truncate, chown,
//     fallocate, copy_file_range or clone into the file, whoever the caller;
//   - set-user-ID is cleared when an unprivileged caller writes or truncates
//     (the kernel flags those requests: WRITE_KILL_SUIDGID, FATTR_KILL_SUIDGID)
//     and on every chown of a non-directory (FATTR_KILL_SUIDGID too);
//     set-group-ID with it if the file is group-executable or the caller is
//     not in the file's group (as the VFS does since Linux 6.2; the FUSE
//     protocol text only mentions the first rule).
//
// Requests that carry no flag (fallocate, copy_file_range, our clone ioctls)
// clear set-ID bits unless the caller is root: the request does not carry
// CAP_FSETID, uid 0 is what holds it in practice, and reading the caller's
// capabilities from /proc (caller.go, as the tree clone does) would cost
// every such request a file read.

const capabilityXattr = "security.capability"

// dropPrivileges removes what a change of ino's contents or owner removes;
// setID says whether set-ID bits go too. It costs no engine transaction when
// there is nothing to remove.
func (fs *fileSystem) dropPrivileges(ino uint64, caller *fuse.Caller, setID bool) error {
	if setID {
		changed, err := fs.fsys.DropSetID(ino, func(gid uint32) bool { return inGroup(caller, gid) })
		if err != nil {
			return err
		}
		if changed {
			fs.invalidate(ino, false) // the kernel caches the mode
		}
	}
	return fs.dropCapability(ino)
}

// dropCapability removes ino's security.capability xattr if it has one.
func (fs *fileSystem) dropCapability(ino uint64) error {
	if _, err := fs.getXattrCached(ino, capabilityXattr); err != nil {
		if errors.Is(err, syscall.ENODATA) {
			return nil
		}
		return err
	}
	if err := fs.removeXattr(ino, capabilityXattr); err != nil && !errors.Is(err, syscall.ENODATA) {
		return err
	}
	return nil
}

// unprivileged reports whether the caller is taken to lack CAP_FSETID, for
// requests where the kernel does not say.
func unprivileged(h *fuse.InHeader) bool { return h.Caller.Uid != 0 }

// inGroup reports whether the caller is root or in group gid, primary or
// supplementary (read from /proc: the request carries only the primary
// group). Unknown membership counts as not in the group, which drops the bit.
func inGroup(c *fuse.Caller, gid uint32) bool {
	if c.Uid == 0 || c.Gid == gid {
		return true
	}
	if c.Pid == 0 {
		return false
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid))
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(status)) {
		if groups, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, g := range strings.Fields(groups) {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(n) == gid {
					return true
				}
			}
			return false
		}
	}
	return false
}
