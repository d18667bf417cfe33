package reflinkfs

// The path API, shaped like package os, built on the inode API. Names are
// slash separated and relative to the root; symlinks are not followed (Stat
// behaves like os.Lstat).

import (
	"errors"
	"io/fs"
	"path"
	"strings"
	"syscall"
)

// Owner of files created through the path API.
var pathOwner = Owner{Uid: uint32(syscall.Getuid()), Gid: uint32(syscall.Getgid())}

// split cleans name and returns its components ("" and "." are the root).
func splitPath(name string) ([]string, error) {
	if !fs.ValidPath(strings.TrimPrefix(name, "/")) && name != "/" {
		return nil, syscall.EINVAL
	}
	clean := strings.Trim(path.Clean("/"+name), "/")
	if clean == "" {
		return nil, nil
	}
	return strings.Split(clean, "/"), nil
}

// walk resolves all components to an inode number.
func (fsys *FS) walk(parts []string) (uint64, error) {
	ino := RootIno
	for _, p := range parts {
		a, err := fsys.Lookup(ino, p)
		if err != nil {
			return 0, unwrapPath(err)
		}
		ino = a.Ino
	}
	return ino, nil
}

// walkParent resolves all but the last component.
func (fsys *FS) walkParent(name string) (uint64, string, error) {
	parts, err := splitPath(name)
	if err != nil {
		return 0, "", err
	}
	if len(parts) == 0 {
		return 0, "", syscall.EINVAL // the root has no parent entry
	}
	dir, err := fsys.walk(parts[:len(parts)-1])
	return dir, parts[len(parts)-1], err
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// OpenFile opens name with os.O_* flags (O_CREATE, O_EXCL, O_TRUNC and the
// access mode); perm is used when the file is created.
func (fsys *FS) OpenFile(name string, flag int, perm fs.FileMode) (*File, error) {
	var f *File
	var err error
	if flag&syscall.O_CREAT != 0 {
		var dir uint64
		var base string
		dir, base, err = fsys.walkParent(name)
		if err == nil {
			f, _, err = fsys.CreateAt(dir, base, fileModeToUnix(perm), pathOwner, flag)
			err = unwrapPath(err)
		}
	} else {
		var parts []string
		parts, err = splitPath(name)
		if err == nil {
			var ino uint64
			ino, err = fsys.walk(parts)
			if err == nil {
				f, err = fsys.OpenIno(ino, flag)
				err = unwrapPath(err)
			}
		}
	}
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	f.name = name
	return f, nil
}

// Mkdir creates a directory.
func (fsys *FS) Mkdir(name string, perm fs.FileMode) error {
	dir, base, err := fsys.walkParent(name)
	if err == nil {
		_, err = fsys.MkdirAt(dir, base, fileModeToUnix(perm), pathOwner)
		err = unwrapPath(err)
	}
	return pathErr("mkdir", name, err)
}

// Remove removes a file or an empty directory.
func (fsys *FS) Remove(name string) error {
	dir, base, err := fsys.walkParent(name)
	if err == nil {
		var a Attr
		if a, err = fsys.Lookup(dir, base); err == nil {
			if isDir(a.Mode) {
				err = fsys.Rmdir(dir, base)
			} else {
				err = fsys.Unlink(dir, base)
			}
		}
		err = unwrapPath(err)
	}
	return pathErr("remove", name, err)
}

// Rename renames oldname to newname, replacing newname if it exists.
func (fsys *FS) Rename(oldname, newname string) error {
	od, ob, err := fsys.walkParent(oldname)
	if err == nil {
		var nd uint64
		var nb string
		if nd, nb, err = fsys.walkParent(newname); err == nil {
			err = unwrapPath(fsys.RenameAt(od, ob, nd, nb, 0))
		}
	}
	if err != nil {
		return &LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	return nil
}

// LinkError records an error during a two-name operation, like os.LinkError.
type LinkError struct {
	Op, Old, New string
	Err          error
}

func (e *LinkError) Error() string { return e.Op + " " + e.Old + " " + e.New + ": " + e.Err.Error() }
func (e *LinkError) Unwrap() error { return e.Err }

// Stat returns a FileInfo for name (symlinks are not followed).
func (fsys *FS) Stat(name string) (fs.FileInfo, error) {
	parts, err := splitPath(name)
	if err != nil {
		return nil, pathErr("stat", name, err)
	}
	ino, err := fsys.walk(parts)
	if err != nil {
		return nil, pathErr("stat", name, err)
	}
	a, err := fsys.GetAttr(ino)
	if err != nil {
		return nil, pathErr("stat", name, unwrapPath(err))
	}
	return &fileInfo{name: path.Base("/" + name), attr: a}, nil
}

// Symlink creates name as a symbolic link to target.
func (fsys *FS) Symlink(target, name string) error {
	dir, base, err := fsys.walkParent(name)
	if err == nil {
		_, err = fsys.SymlinkAt(dir, base, target, pathOwner)
		err = unwrapPath(err)
	}
	return pathErr("symlink", name, err)
}

// Link creates newname as a hard link to oldname.
func (fsys *FS) Link(oldname, newname string) error {
	parts, err := splitPath(oldname)
	if err == nil {
		var ino, dir uint64
		var base string
		if ino, err = fsys.walk(parts); err == nil {
			if dir, base, err = fsys.walkParent(newname); err == nil {
				_, err = fsys.LinkAt(ino, dir, base)
				err = unwrapPath(err)
			}
		}
	}
	if err != nil {
		return &LinkError{Op: "link", Old: oldname, New: newname, Err: err}
	}
	return nil
}

// Readlink returns the target of symlink name.
func (fsys *FS) Readlink(name string) (string, error) {
	parts, err := splitPath(name)
	if err != nil {
		return "", pathErr("readlink", name, err)
	}
	ino, err := fsys.walk(parts)
	if err != nil {
		return "", pathErr("readlink", name, err)
	}
	t, err := fsys.ReadlinkIno(ino)
	return t, pathErr("readlink", name, unwrapPath(err))
}

type dirEntry struct {
	fsys   *FS
	parent uint64
	e      DirEntry
}

func (d dirEntry) Name() string      { return d.e.Name }
func (d dirEntry) IsDir() bool       { return isDir(d.e.Mode) }
func (d dirEntry) Type() fs.FileMode { return unixToFileMode(d.e.Mode).Type() }

// Info looks the name up again, as os.DirEntry.Info does (an lstat).
func (d dirEntry) Info() (fs.FileInfo, error) {
	a, err := d.fsys.Lookup(d.parent, d.e.Name)
	if err != nil {
		return nil, err
	}
	return &fileInfo{name: d.e.Name, attr: a}, nil
}

// ReadDir lists directory name, sorted by name.
func (fsys *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	parts, err := splitPath(name)
	if err != nil {
		return nil, pathErr("readdir", name, err)
	}
	ino, err := fsys.walk(parts)
	if err != nil {
		return nil, pathErr("readdir", name, err)
	}
	ents, err := fsys.ReadDirIno(ino)
	if err != nil {
		return nil, pathErr("readdir", name, unwrapPath(err))
	}
	out := make([]fs.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = dirEntry{fsys, ino, e}
	}
	return out, nil
}

// Clone makes dst a file sharing all of src's blocks, creating it (with
// src's permissions) or replacing its contents.
func (fsys *FS) Clone(src, dst string) error {
	s, err := fsys.OpenFile(src, syscall.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer s.Close()
	a, err := s.Attr()
	if err != nil {
		return pathErr("clone", src, err)
	}
	if !isReg(a.Mode) {
		return pathErr("clone", src, syscall.EINVAL)
	}
	d, err := fsys.OpenFile(dst, syscall.O_RDWR|syscall.O_CREAT, unixToFileMode(a.Mode).Perm())
	if err != nil {
		return err
	}
	defer d.Close()
	return d.CloneFile(s)
}

// CloneFile makes f's contents a clone of src's whole contents (FICLONE).
func (f *File) CloneFile(src *File) error {
	return f.pairOp("clone", src, func(op *opState) error {
		fsys := f.fsys
		return fsys.locked(func() error {
			if f.in == src.in {
				return nil
			}
			removed, err := fsys.unmapRange(f.in, 0, ^uint64(0))
			if err != nil {
				return err
			}
			// Shares are taken before the old blocks are released (see remap).
			size := src.in.rec.Size
			n := (uint64(size) + BlockSize - 1) / BlockSize
			if err := fsys.flushShared(src.in, 0, n); err != nil {
				return err
			}
			ms, err := fsys.extentsIn(src.in, 0, ^uint64(0))
			if err != nil {
				return err
			}
			if err := fsys.share(ms); err != nil {
				return err
			}
			if err := fsys.release(op, removed); err != nil {
				return err
			}
			for _, m := range ms {
				if err := fsys.mapRange(f.in, m); err != nil {
					return err
				}
			}
			f.in.rec.Size = size
			return fsys.touch(f.in, size)
		})
	})
}
