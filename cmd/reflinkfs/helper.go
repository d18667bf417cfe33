package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

const helperUsage = `usage: mount.fuse.reflinkfs IMAGE MOUNTPOINT [-o OPTION[,OPTION...]] [-n] [-s] [-f] [-v]

The mount(8) helper of reflinkfs: 'mount -t fuse.reflinkfs IMAGE MOUNTPOINT -o ...'
and /etc/fstab lines of type fuse.reflinkfs run it. It mounts in the background
(as 'reflinkfs mount -d') and returns when the mount is ready.

Options: ro, rw, size=N, cache_size=N|P%, fsname=NAME, subtype=NAME, debug, and
the generic options (defaults, noauto, nosuid, noatime, _netdev, x-*, ...).
-n, -s, -v are accepted and ignored; -f (fake) checks the options and exits.

fstab example:
  /var/tmp/reflinkfs.img  /mnt/reflinkfs  fuse.reflinkfs  defaults,cache_size=4G  0  0
`

// runMountHelper implements mount.fuse.reflinkfs with mount(8)'s calling
// convention and returns the exit code.
func runMountHelper(args []string, stdout, stderr io.Writer) int {
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "%s: %s\n", helperName, fmt.Sprintf(format, a...))
		return code
	}
	var positional, options []string
	fake := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-h" || a == "--help":
			fmt.Fprint(stdout, helperUsage)
			return exitOK
		case a == "-o" || a == "-t" || a == "-N":
			if i+1 >= len(args) {
				return fail(exitUsage, "%s needs an argument", a)
			}
			i++
			switch a {
			case "-o":
				options = append(options, args[i])
			case "-N":
				return fail(exitUsage, "-N (mount namespaces) is not supported")
			} // -t: the type is ours by construction
		case strings.HasPrefix(a, "-o"):
			options = append(options, a[2:])
		case a == "-n" || a == "-s" || a == "-v":
			// no mtab to write; sloppy and verbose change nothing here
		case a == "-f":
			fake = true
		case strings.HasPrefix(a, "-") && a != "-":
			return fail(exitUsage, "unknown flag %s\n%s", a, helperUsage)
		default:
			positional = append(positional, a)
		}
	}
	if len(positional) != 2 {
		return fail(exitUsage, "want IMAGE and MOUNTPOINT, got %d arguments\n%s", len(positional), helperUsage)
	}
	f := mountFlags{
		size: defaultImageSize, cacheSize: defaultCacheSize, subtype: defaultSubtype,
		options: options,
		changed: func(string) bool { return false },
		image:   positional[0], mountPointIn: positional[1],
	}
	cfg, err := resolveMountConfig(&f)
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return fail(exitUsage, "%v", err)
		}
		return fail(exitFailure, "%v", err)
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "%s: warning: %s\n", helperName, w)
	}
	if fake {
		return exitOK
	}
	if cfg.Remount {
		if err := remount(cfg); err != nil {
			return fail(exitFailure, "%v", err)
		}
		return exitOK
	}
	if err := startDaemon(cfg); err != nil {
		return fail(exitFailure, "%v", err)
	}
	return exitOK
}

func newInstallHelperCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "install-helper [--dir /sbin]",
		Short: "Install the mount(8) helper mount.fuse.reflinkfs (a symlink to this binary)",
		Long: `Create DIR/mount.fuse.reflinkfs as a symbolic link to this binary, so that
'mount -t fuse.reflinkfs IMAGE MOUNTPOINT' and /etc/fstab entries of type
fuse.reflinkfs work. An existing symlink of that name is replaced; any other
file is left alone (an error).

fstab example:
  /var/tmp/reflinkfs.img  /mnt/reflinkfs  fuse.reflinkfs  defaults,cache_size=4G  0  0`,
		Example: `  reflinkfs install-helper
  mount -t fuse.reflinkfs -o cache_size=2G /var/tmp/reflinkfs.img /mnt/reflinkfs`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			link, target, err := installHelper(dir)
			if err != nil {
				return err
			}
			fmt.Printf("%s -> %s\n", link, target)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "/sbin", "directory mount(8) searches for helpers")
	return cmd
}

// installHelper points dir/mount.fuse.reflinkfs at this executable,
// replacing an older symlink atomically.
func installHelper(dir string) (link, target string, err error) {
	exe, err := os.Executable()
	if err != nil {
		return "", "", fmt.Errorf("cannot find this program: %w", err)
	}
	if target, err = filepath.EvalSymlinks(exe); err != nil {
		return "", "", fmt.Errorf("%s: %w", exe, err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return "", "", fmt.Errorf("--dir %s: %w", dir, unwrapPathError(err))
	} else if !fi.IsDir() {
		return "", "", fmt.Errorf("--dir %s: not a directory", dir)
	}
	link = filepath.Join(dir, helperName)
	if fi, err := os.Lstat(link); err == nil && fi.Mode().Type() != os.ModeSymlink {
		return link, target, fmt.Errorf("%s: exists and is not a symlink; remove it first", link)
	}
	tmp := link + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return link, target, fmt.Errorf("%s: %w", link, unwrapPathError(err))
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return link, target, fmt.Errorf("%s: %w", link, unwrapPathError(err))
	}
	return link, target, nil
}
