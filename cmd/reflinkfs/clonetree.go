package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs/ioctl"
)

// cloneFunc makes dst share src's contents (cloneFD; tests pass a copy).
type cloneFunc func(dst, src *os.File) error

// treeCloner recreates a directory tree, cloning regular files.
type treeCloner struct {
	src, dst string
	clone    cloneFunc
	warn     io.Writer
	// links maps a source inode with several links to the first path it was
	// cloned to, so later links become hard links again.
	links map[devIno]string
	// dirs lists directories in walk (pre-)order; their metadata is applied
	// in reverse at the end, children before parents, so creating entries
	// does not disturb a directory's times and read-only ones stay writable
	// while being filled.
	dirs        []pendingDir
	xattrWarned bool
}

type devIno struct{ dev, ino uint64 }

type pendingDir struct {
	src, dst string
	st       *syscall.Stat_t
}

// cloneTreeAuto clones the tree at src to dst, which must not exist: in
// one request to the daemon when both are on one reflinkfs mount (the
// CLONE_TREE ioctl), else by walking the tree with clone for each file.
func cloneTreeAuto(src, dst string, clone cloneFunc, warn io.Writer) error {
	if err := checkTreeTarget(src, dst); err != nil {
		return err
	}
	handled, err := cloneTreeIoctl(src, dst)
	if handled {
		return err
	}
	return cloneTree(src, dst, clone, warn)
}

// checkTreeTarget refuses a dst inside src (or src itself) and an existing dst.
func checkTreeTarget(src, dst string) error {
	srcAbs, err := filepath.Abs(src)
	if err != nil {
		return err
	}
	dstAbs, err := filepath.Abs(dst)
	if err != nil {
		return err
	}
	if dstAbs == srcAbs || strings.HasPrefix(dstAbs, srcAbs+"/") {
		return fmt.Errorf("%s: inside the tree being cloned (%s)", dst, src)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("%s: already exists", dst)
	}
	return nil
}

// cloneTreeIoctl asks the daemon to clone the tree. handled is false when
// the ioctl is not available for this pair: not a reflinkfs mount (ENOTTY),
// src and dst's parent on different mounts (EXDEV), or a daemon without it
// (ENOTTY, EOPNOTSUPP); the caller walks the tree then.
func cloneTreeIoctl(src, dst string) (handled bool, err error) {
	dstAbs, err := filepath.Abs(dst)
	if err != nil {
		return true, err
	}
	sd, err := os.OpenFile(src, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return true, fmt.Errorf("%s: %w", src, unwrapPathError(err))
	}
	defer sd.Close()
	parent := filepath.Dir(dstAbs)
	pd, err := os.OpenFile(parent, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return true, fmt.Errorf("%s: %w", parent, unwrapPathError(err))
	}
	defer pd.Close()
	err = ioctl.CloneTree(pd, filepath.Base(dstAbs), sd)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EXDEV):
		return false, nil
	}
	err = fmt.Errorf("%s: %w", dst, unwrapPathError(err))
	if errors.Is(err, unix.EPERM) {
		err = fmt.Errorf("%w (SRC holds a device node, and making one needs CAP_MKNOD, as with mknod)", err)
	}
	if _, serr := os.Lstat(dst); serr == nil {
		err = fmt.Errorf("%w (the partial copy in %s is left in place)", err, dst)
	}
	return true, err
}

// cloneTree clones the tree at src to dst, which must not exist, file by
// file.
func cloneTree(src, dst string, clone cloneFunc, warn io.Writer) error {
	if err := checkTreeTarget(src, dst); err != nil {
		return err
	}
	t := &treeCloner{src: src, dst: dst, clone: clone, warn: warn, links: map[devIno]string{}}
	walkErr := filepath.WalkDir(src, t.visit)
	// Directory metadata is applied even after a failure, so what was
	// cloned is not left with 0700 directories.
	for i := len(t.dirs) - 1; i >= 0; i-- {
		d := t.dirs[i]
		if err := t.applyMeta(d.src, d.dst, d.st); err != nil && walkErr == nil {
			walkErr = err
		}
	}
	if walkErr != nil {
		return fmt.Errorf("%w (the partial copy in %s is left in place)", walkErr, dst)
	}
	return nil
}

func (t *treeCloner) visit(path string, d fs.DirEntry, err error) error {
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(t.src, path)
	if err != nil {
		return err
	}
	target := filepath.Join(t.dst, rel)
	info, err := d.Info() // lstat: WalkDir does not follow symlinks
	if err != nil {
		return err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no stat information", path)
	}

	if d.IsDir() {
		if err := os.Mkdir(target, 0o700); err != nil {
			return err
		}
		t.dirs = append(t.dirs, pendingDir{path, target, st})
		return nil
	}

	if st.Nlink > 1 {
		key := devIno{uint64(st.Dev), st.Ino}
		if first, ok := t.links[key]; ok {
			return os.Link(first, target)
		}
		t.links[key] = target
	}

	switch info.Mode().Type() {
	case 0:
		err = t.cloneFile(path, target)
	case fs.ModeSymlink:
		var dest string
		if dest, err = os.Readlink(path); err == nil {
			err = os.Symlink(dest, target)
		}
	default: // fifo, socket, device
		err = unix.Mknod(target, st.Mode, int(st.Rdev))
		if err != nil {
			err = &os.PathError{Op: "mknod", Path: target, Err: err}
		}
	}
	if err != nil {
		return err
	}
	return t.applyMeta(path, target, st)
}

func (t *treeCloner) cloneFile(src, dst string) error {
	sf, err := os.Open(src)
	if err != nil {
		return err
	}
	defer sf.Close()
	df, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = t.clone(df, sf)
	if cerr := df.Close(); err == nil {
		err = cerr
	}
	return err
}

// applyMeta gives dst src's ownership, mode, extended attributes and times,
// in that order: chown clears setuid bits and file capabilities, so it comes
// before chmod and the xattrs; times come last because the others change
// ctime only, but writing xattrs may touch them on some file systems.
//
// Like cp -a, it tries to give dst src's owner and group whoever runs it;
// where that is refused (a user copying others' files) it keeps the group
// if it can and drops the set-ID bits, and the sticky bit of a
// non-directory, so a user's copy of a set-user-ID program is not one.
func (t *treeCloner) applyMeta(src, dst string, st *syscall.Stat_t) error {
	isLink := st.Mode&syscall.S_IFMT == syscall.S_IFLNK
	mode := st.Mode & 0o7777
	if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EINVAL) {
			return err
		}
		os.Lchown(dst, -1, int(st.Gid)) // refused unless a member: the group stays the creator's
		mode &^= syscall.S_ISUID | syscall.S_ISGID
		if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			mode &^= syscall.S_ISVTX
		}
	}
	if !isLink {
		if err := unix.Fchmodat(unix.AT_FDCWD, dst, mode, 0); err != nil {
			return &os.PathError{Op: "chmod", Path: dst, Err: err}
		}
	}
	if err := t.copyXattrs(src, dst); err != nil {
		return err
	}
	ts := []unix.Timespec{
		unix.NsecToTimespec(syscall.TimespecToNsec(st.Atim)),
		unix.NsecToTimespec(syscall.TimespecToNsec(st.Mtim)),
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: dst, Err: err}
	}
	return nil
}

// copyXattrs copies every extended attribute of src to dst (not following
// symlinks). A destination without xattr support, or attributes the caller
// may not set (trusted.* as non-root), give a warning, not an error.
func (t *treeCloner) copyXattrs(src, dst string) error {
	names, err := listXattrs(src)
	if errors.Is(err, unix.ENOTSUP) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "listxattr", Path: src, Err: err}
	}
	for _, name := range names {
		val, err := getXattr(src, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return &os.PathError{Op: "getxattr " + name, Path: src, Err: err}
		}
		err = unix.Lsetxattr(dst, name, val, 0)
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOTSUP):
			if !t.xattrWarned {
				fmt.Fprintf(t.warn, "reflinkfs: warning: %s: extended attributes not supported; not copied\n", dst)
				t.xattrWarned = true
			}
			return nil
		case errors.Is(err, unix.EPERM):
			fmt.Fprintf(t.warn, "reflinkfs: warning: %s: not permitted to set %s; not copied\n", dst, name)
		default:
			return &os.PathError{Op: "setxattr " + name, Path: dst, Err: err}
		}
	}
	return nil
}

func listXattrs(path string) ([]string, error) {
	for {
		n, err := unix.Llistxattr(path, nil)
		if err != nil || n == 0 {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew meanwhile
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, name := range strings.Split(string(buf[:n]), "\x00") {
			if name != "" {
				names = append(names, name)
			}
		}
		return names, nil
	}
}

func getXattr(path, name string) ([]byte, error) {
	for {
		n, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
