package reflinkfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// The image directory holds every name, symlink target and xattr value of
// the file system in the clear (meta/), its data, the daemon's log and
// control socket: it and everything in it are for its owner only. New
// files are created 0600 and directories 0700 (the metadata store through
// kv's private filesystem); images made before that are fixed at open.

const (
	imageDirMode  = 0o700
	imageFileMode = 0o600
)

// makeImagePrivate removes group and other permissions from dir and
// everything in it. Symbolic links inside are not followed (a data file
// linked to a block device keeps the device's mode); dir itself may be one.
// It returns how many entries it changed.
func makeImagePrivate(dir string) (int, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return 0, err
	}
	changed := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile (a pebble file made obsolete)
			}
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if info.Mode()&0o077 == 0 {
			return nil
		}
		if err := os.Chmod(p, info.Mode().Perm()&^0o077); err != nil {
			return err
		}
		changed++
		return nil
	})
	return changed, err
}
