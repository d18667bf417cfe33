package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/internal/control"
	"github.com/reflinkfs/reflinkfs/internal/fusefs"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

const (
	defaultImageSize = "64G"
	defaultCacheSize = "25%"
	daemonLogName    = "daemon.log"
	defaultSubtype   = "reflinkfs"
)

// mountConfig is a fully resolved mount request: what the foreground daemon
// needs, and what the -d parent hands to the daemon it starts.
type mountConfig struct {
	Image      string // absolute image directory
	MountPoint string // absolute
	Size       int64  // image size if it has to be created
	SizeGiven  bool
	CacheBytes int64
	FsName     string
	Subtype    string
	ReadOnly   bool
	Debug      bool
	Metrics    string // TCP address for /metrics, or ""
	VFSFlags   []string
	Share      fusefs.ShareMode
	Atime      string // atime policy mount option, "" for the default
	// NoCopyShare is copyshare=off (copy detection off).
	NoCopyShare bool
	Remount     bool
	Warnings    []string
}

// mountFlags are the raw command line values of `reflinkfs mount`.
type mountFlags struct {
	size, cacheSize     string
	daemon              bool
	options             []string
	fsName, subtype     string
	metricsAddr         string
	readyFD             int
	changed             func(name string) bool
	image, mountPointIn string
}

func newMountCommand() *cobra.Command {
	var f mountFlags
	cmd := &cobra.Command{
		Use:   "mount [flags] IMAGE MOUNTPOINT",
		Short: "Serve an image at a mount point (creating the image on first use)",
		Long: `Mount the image directory IMAGE at MOUNTPOINT through FUSE.

If IMAGE does not exist or is an empty directory, a new image of --size bytes
is created there first (the data file is sparse: it uses host space only for
blocks written). MOUNTPOINT is created if missing. The mount allows other users
(allow_other) and lets the kernel check permissions (default_permissions).

Without -d the command stays in the foreground and logs to stderr; Ctrl-C,
SIGTERM or 'reflinkfs umount' unmounts, writes back everything cached and
exits 0. With -d it starts the daemon in the background (its own session,
output appended to IMAGE/daemon.log) and returns once the mount is ready, or
prints the daemon's error and exits 1.

--cache-size bounds the daemon's block cache: bytes with a K, M, G or T suffix
(powers of 1024) or a percentage of physical memory.

Options for -o (comma separated, also used by mount -t fuse.reflinkfs):
  ro, rw, size=N, cache_size=N, fsname=NAME, subtype=NAME, debug, and the
  generic options mount(8) and fstab pass (defaults, noauto, noatime, nosuid,
  _netdev, x-*, ...). See docs/cli.md for what each one does.`,
		Example: `  # create a 64 GiB image on first use and mount it in the background
  reflinkfs mount -d /var/tmp/reflinkfs.img /mnt/reflinkfs

  # foreground, 2 GiB cache, read-only, Prometheus metrics on port 9100
  reflinkfs mount --cache-size 2G -o ro --metrics-addr :9100 /var/tmp/reflinkfs.img /mnt/reflinkfs`,
		Args: exactArgs("IMAGE", "MOUNTPOINT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.changed = func(name string) bool { return cmd.Flags().Changed(name) }
			f.image, f.mountPointIn = args[0], args[1]
			cfg, err := resolveMountConfig(&f)
			if err != nil {
				return err
			}
			for _, w := range cfg.Warnings {
				fmt.Fprintf(os.Stderr, "reflinkfs: warning: %s\n", w)
			}
			if cfg.Remount {
				return remount(cfg)
			}
			if f.daemon {
				return startDaemon(cfg)
			}
			var ready *os.File
			if f.readyFD > 0 {
				ready = os.NewFile(uintptr(f.readyFD), "ready-pipe")
			}
			return serveMount(cfg, ready)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.size, "size", defaultImageSize, "image size when IMAGE is created (K, M, G, T suffixes)")
	fl.StringVar(&f.cacheSize, "cache-size", defaultCacheSize, "block cache size: bytes (K, M, G suffixes) or a percentage of RAM")
	fl.BoolVarP(&f.daemon, "daemon", "d", false, "run in the background; return once mounted")
	fl.StringArrayVarP(&f.options, "options", "o", nil, "comma-separated mount options (ro, size=, cache_size=, fsname=, subtype=, debug, ...)")
	fl.StringVar(&f.fsName, "fsname", "", "mount source shown by mount(8) and df (default: the absolute image path)")
	fl.StringVar(&f.subtype, "subtype", defaultSubtype, "file system subtype: the mount type is fuse.SUBTYPE")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "also serve Prometheus /metrics on this TCP address, e.g. :9100")
	fl.IntVar(&f.readyFD, "ready-fd", 0, "internal: descriptor on which a -d parent waits for readiness")
	fl.MarkHidden("ready-fd")
	return cmd
}

// resolveMountConfig checks and combines flags, -o options and defaults.
// Flags given explicitly win over -o options.
func resolveMountConfig(f *mountFlags) (mountConfig, error) {
	var opts mountOptions
	if err := parseMountOptions(f.options, &opts); err != nil {
		return mountConfig{}, err
	}
	cfg := mountConfig{ReadOnly: opts.ReadOnly, Debug: opts.Debug, Metrics: f.metricsAddr, VFSFlags: opts.VFSFlags,
		Remount: opts.Remount, Warnings: opts.Warnings, Atime: opts.Atime, NoCopyShare: opts.NoCopyShare}
	if opts.Share != "" {
		cfg.Share, _ = fusefs.ParseShareMode(opts.Share) // checked by parseMountOptions
	}

	var err error
	switch {
	case f.changed("size"):
		if cfg.Size, err = parseSize(f.size); err != nil {
			return cfg, usagef("--size %q: %v", f.size, err)
		}
		cfg.SizeGiven = true
	case opts.Size > 0:
		cfg.Size, cfg.SizeGiven = opts.Size, true
	default:
		cfg.Size, _ = parseSize(defaultImageSize)
	}

	cacheSize, what := f.cacheSize, "--cache-size"
	if !f.changed("cache-size") && opts.CacheSize != "" {
		cacheSize, what = opts.CacheSize, "mount option cache_size="
	}
	ram, err := physicalMemory()
	if err != nil {
		return cfg, err
	}
	if cfg.CacheBytes, err = parseCacheSize(cacheSize, ram); err != nil {
		if what == "--cache-size" {
			return cfg, usagef("--cache-size %q: %v", cacheSize, err)
		}
		return cfg, usagef("%s%s: %v", what, cacheSize, err)
	}

	if cfg.Image, err = filepath.Abs(f.image); err != nil {
		return cfg, fmt.Errorf("image %s: %w", f.image, err)
	}
	if cfg.MountPoint, err = filepath.Abs(f.mountPointIn); err != nil {
		return cfg, fmt.Errorf("mount point %s: %w", f.mountPointIn, err)
	}
	if cfg.Image == cfg.MountPoint || strings.HasPrefix(cfg.MountPoint, cfg.Image+"/") {
		return cfg, usagef("mount point %s: inside the image directory %s", cfg.MountPoint, cfg.Image)
	}
	if strings.HasPrefix(cfg.Image, cfg.MountPoint+"/") {
		// The mount would hide the image from everyone but the daemon.
		return cfg, usagef("image %s: inside the mount point %s", cfg.Image, cfg.MountPoint)
	}
	if !opts.Remount && dirHasEntries(cfg.MountPoint) {
		// As libfuse: allowed, but the files there are hidden while mounted.
		cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("mount point %s is not empty: its files are hidden while the image is mounted", cfg.MountPoint))
	}

	cfg.FsName = cfg.Image
	if f.changed("fsname") {
		cfg.FsName = f.fsName
	} else if opts.FsName != "" {
		cfg.FsName = opts.FsName
	}
	if cfg.FsName == "" {
		return cfg, usagef("--fsname: empty name")
	}
	cfg.Subtype = defaultSubtype
	if f.changed("subtype") {
		if err := checkSubtype(f.subtype); err != nil {
			return cfg, usagef("--subtype %q: %v", f.subtype, err)
		}
		cfg.Subtype = f.subtype
	} else if opts.SubtypeGiven {
		cfg.Subtype = opts.Subtype
	}
	return cfg, nil
}

// dirHasEntries reports whether dir is a directory with at least one entry.
func dirHasEntries(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) > 0
}

// createImage creates a new image in dir, whose parent directory must exist:
// a mistyped path should not silently grow a directory tree.
func createImage(dir string, opt reflinkfs.Options) (*reflinkfs.FS, error) {
	parent := filepath.Dir(dir)
	if fi, err := os.Stat(parent); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("image %s: directory %s does not exist (create it first)", dir, parent)
		}
		return nil, fmt.Errorf("image %s: %w", dir, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("image %s: %s is not a directory", dir, parent)
	}
	return reflinkfs.Create(dir, opt)
}

// freshImage reports whether dir has no image yet: missing or empty.
// Anything else is handed to reflinkfs.Open, which says what is wrong with it.
func freshImage(dir string) (bool, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("image %s: %w", dir, unwrapPathError(err))
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("image %s: not a directory (an image is a directory; give a new or empty one to create one)", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("image %s: %w", dir, unwrapPathError(err))
	}
	return len(ents) == 0, nil
}

// prepareMountPoint creates the mount point if missing and checks it is a
// directory. It reports whether it created it.
func prepareMountPoint(mp string) (created bool, err error) {
	fi, err := os.Stat(mp)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(mp, 0o755); err != nil {
			return false, fmt.Errorf("mount point %s: cannot create: %w", mp, unwrapPathError(err))
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("mount point %s: %w", mp, unwrapPathError(err))
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("mount point %s: not a directory", mp)
	}
	return false, nil
}

// atimePolicies maps the atime mount options to the engine's policies.
var atimePolicies = map[string]reflinkfs.AtimePolicy{
	"": reflinkfs.AtimeRelative, "relatime": reflinkfs.AtimeRelative,
	"strictatime": reflinkfs.AtimeStrict, "noatime": reflinkfs.AtimeNever,
}

// openImage opens the image, creating it first if the directory is fresh.
func openImage(cfg mountConfig, log *slog.Logger) (*reflinkfs.FS, error) {
	fresh, err := freshImage(cfg.Image)
	if err != nil {
		return nil, err
	}
	opt := reflinkfs.Options{Size: cfg.Size, CacheSize: cfg.CacheBytes, Logger: log, ReadOnly: cfg.ReadOnly,
		Atime: atimePolicies[cfg.Atime]}
	if fresh {
		if cfg.ReadOnly {
			return nil, fmt.Errorf("image %s: does not exist (cannot create it read-only)", cfg.Image)
		}
		log.Info("creating image", "image", cfg.Image, "size", formatBytes(cfg.Size))
		return createImage(cfg.Image, opt)
	}
	if cfg.SizeGiven {
		log.Warn("image exists; size ignored", "image", cfg.Image)
	}
	return reflinkfs.Open(cfg.Image, opt)
}

// readyNotifier tells a waiting -d parent how startup ended. With no pipe
// (foreground) it does nothing.
type readyNotifier struct{ f *os.File }

func (r readyNotifier) done(err error) {
	if r.f == nil {
		return
	}
	msg := "ok\n"
	if err != nil {
		msg = "error: " + strings.ReplaceAll(err.Error(), "\n", " ") + "\n"
	}
	r.f.WriteString(msg)
	r.f.Close()
}

// serveMount runs the daemon in this process until the file system is
// unmounted, then writes everything back. ready, if set, is told when the
// mount is up or startup failed.
func serveMount(cfg mountConfig, ready *os.File) (err error) {
	notify := readyNotifier{ready}
	defer func() {
		if notify.f != nil { // startup failed before done was called
			notify.done(err)
		}
	}()
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	// Catch signals from the start, so a Ctrl-C during startup still closes
	// the image cleanly. SIGHUP too: a closed terminal must not lose cached data.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	signal.Ignore(syscall.SIGPIPE) // stderr may be a pipe whose reader went away

	createdMP, err := prepareMountPoint(cfg.MountPoint)
	if err != nil {
		return err
	}
	mounted := false
	defer func() {
		if err != nil && createdMP && !mounted {
			os.Remove(cfg.MountPoint) // only if still empty: nothing is lost
		}
	}()
	if err := checkImageFree(cfg.Image, os.Stderr); err != nil {
		return err
	}
	fsys, err := openImage(cfg, log)
	if err != nil {
		return err
	}
	closeFS := func() error {
		start := time.Now()
		if err := fsys.Close(); err != nil {
			log.Error("closing image", "image", cfg.Image, "err", err)
			return fmt.Errorf("image %s: close: %w", cfg.Image, err)
		}
		log.Info("image closed", "image", cfg.Image, "took", time.Since(start).Round(time.Millisecond))
		return nil
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	stats := &daemonStats{FS: fsys}
	ctl, err := control.ServeSource(stats, filepath.Join(cfg.Image, control.SocketName), reg)
	if err != nil {
		return errors.Join(err, closeFS())
	}
	var metricsSrv *http.Server
	if cfg.Metrics != "" {
		l, err := net.Listen("tcp", cfg.Metrics)
		if err != nil {
			ctl.Close()
			return errors.Join(fmt.Errorf("--metrics-addr %s: %w", cfg.Metrics, unwrapNetError(err)), closeFS())
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go metricsSrv.Serve(l)
	}
	stopServers := func() {
		if metricsSrv != nil {
			metricsSrv.Close()
		}
		ctl.Close()
	}

	srv, err := fusefs.Mount(fsys, cfg.MountPoint, fusefs.Options{
		FsName:             cfg.FsName,
		Subtype:            cfg.Subtype,
		NoSubtype:          cfg.Subtype == "",
		AllowOther:         true,
		DefaultPermissions: true,
		ReadOnly:           cfg.ReadOnly,
		Debug:              cfg.Debug,
		MountFlags:         cfg.VFSFlags,
		Share:              cfg.Share,
		NoCopyShare:        cfg.NoCopyShare,
		Logger:             log,
	})
	if err != nil {
		stopServers()
		return errors.Join(fmt.Errorf("mount %s at %s: %w", cfg.Image, cfg.MountPoint, err), closeFS())
	}
	mounted = true
	stats.mount.Store(srv)
	log.Info("mounted", "image", cfg.Image, "mountpoint", cfg.MountPoint, "pid", os.Getpid(),
		"cache", formatBytes(cfg.CacheBytes), "readonly", cfg.ReadOnly)
	if ready == nil {
		fmt.Fprintf(os.Stderr, "reflinkfs: %s is mounted at %s; stop with Ctrl-C or 'reflinkfs umount %s'\n",
			cfg.Image, cfg.MountPoint, cfg.MountPoint)
	}
	notify.done(nil)
	notify.f = nil

	waitForUnmount(srv, cfg.MountPoint, sigs, log)
	log.Info("unmounted; writing back cached data", "mountpoint", cfg.MountPoint)
	stopServers()
	return closeFS()
}

// waitForUnmount returns once the file system is unmounted: from outside
// (umount), or here on a signal. Signals are handled in this goroutine, so
// an unmount that a signal started has finished (its final Sync included)
// before the caller closes the image.
func waitForUnmount(srv *fusefs.Server, mountPoint string, sigs <-chan os.Signal, log *slog.Logger) {
	served := make(chan struct{})
	go func() {
		srv.Wait()
		close(served)
	}()
	detached := false
	for {
		select {
		case <-served:
			return
		case sig := <-sigs:
			if detached {
				log.Info("signal received; already detached, waiting for open files to be closed", "signal", sig.String())
				continue
			}
			log.Info("signal received; unmounting", "signal", sig.String())
			err := srv.Unmount()
			if err == nil {
				continue // served is closed: the loop returns
			}
			select {
			case <-served:
				continue // unmounted from outside meanwhile: nothing to detach
			default:
			}
			// Busy (open files, a shell inside): detach now; the kernel
			// ends the session when the last user goes, and served closes.
			log.Warn("unmount failed; detaching (lazy unmount)", "err", err)
			if err := unix.Unmount(mountPoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				log.Error("lazy unmount failed", "err", err)
			}
			detached = true
		}
	}
}

// startDaemon starts `reflinkfs mount` as a detached daemon and waits until
// it reports the mount ready or fails.
func startDaemon(cfg mountConfig) (err error) {
	if err := checkImageFree(cfg.Image, os.Stderr); err != nil {
		return err
	}
	// Create the image here, so errors are reported directly and the log
	// file can live in the image directory (Create wants an empty one).
	fresh, err := freshImage(cfg.Image)
	if err != nil {
		return err
	}
	if fresh {
		if cfg.ReadOnly {
			return fmt.Errorf("image %s: does not exist (cannot create it read-only)", cfg.Image)
		}
		fsys, err := createImage(cfg.Image, reflinkfs.Options{Size: cfg.Size})
		if err != nil {
			return err
		}
		if err := fsys.Close(); err != nil {
			return fmt.Errorf("image %s: %w", cfg.Image, err)
		}
		cfg.SizeGiven = false
	}
	createdMP, err := prepareMountPoint(cfg.MountPoint)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && createdMP {
			os.Remove(cfg.MountPoint) // only if still empty: nothing is lost
		}
	}()

	logPath := filepath.Join(cfg.Image, daemonLogName)
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600) // private, like the image directory
	if err != nil {
		return fmt.Errorf("daemon log %s: %w", logPath, unwrapPathError(err))
	}
	defer logFile.Close()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find this program to start the daemon: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()

	// stdin is /dev/null rather than closed, so no file the daemon opens
	// (such as /dev/fuse) lands on descriptor 0.
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devNull.Close()
	proc, err := os.StartProcess(exe, append([]string{"reflinkfs"}, daemonArgs(cfg)...), &os.ProcAttr{
		Dir:   "/",
		Files: []*os.File{devNull, logFile, logFile, w}, // fd 3: readiness pipe
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	w.Close()
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}

	// The daemon writes one line; EOF without one means it died.
	r.SetReadDeadline(time.Now().Add(2 * time.Minute))
	msg, readErr := io.ReadAll(r)
	line := strings.TrimSpace(string(msg))
	switch {
	case line == "ok":
		proc.Release()
		return nil
	case strings.HasPrefix(line, "error: "):
		proc.Wait()
		return errors.New(strings.TrimPrefix(line, "error: "))
	case errors.Is(readErr, os.ErrDeadlineExceeded):
		proc.Release()
		return fmt.Errorf("daemon (pid %d) did not report the mount ready within 2 minutes; see %s", proc.Pid, logPath)
	}
	st, _ := proc.Wait()
	why := "exited"
	if st != nil {
		why = st.String()
	}
	if last := lastLine(logPath); last != "" {
		return fmt.Errorf("daemon %s before the mount was ready: %s (log: %s)", why, last, logPath)
	}
	return fmt.Errorf("daemon %s before the mount was ready; see %s", why, logPath)
}

// daemonArgs is the command line of the daemon started by startDaemon.
func daemonArgs(cfg mountConfig) []string {
	args := []string{"mount", "--ready-fd=3",
		fmt.Sprintf("--cache-size=%d", cfg.CacheBytes),
		"--fsname=" + cfg.FsName,
		"--subtype=" + cfg.Subtype,
	}
	if cfg.SizeGiven {
		args = append(args, fmt.Sprintf("--size=%d", cfg.Size))
	}
	if cfg.Metrics != "" {
		args = append(args, "--metrics-addr="+cfg.Metrics)
	}
	var opts []string
	if cfg.ReadOnly {
		opts = append(opts, "ro")
	}
	if cfg.Debug {
		opts = append(opts, "debug")
	}
	if cfg.Atime != "" {
		opts = append(opts, cfg.Atime)
	}
	opts = append(opts, cfg.VFSFlags...)
	// The policies must reach the daemon: without them `mount -d -o
	// share=off` served the default.
	if cfg.Share != fusefs.ShareReadOnly {
		opts = append(opts, "share="+cfg.Share.String())
	}
	if cfg.NoCopyShare {
		opts = append(opts, "copyshare=off")
	}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	return append(args, "--", cfg.Image, cfg.MountPoint)
}

// lastLine returns the last non-empty line of a (log) file, or "".
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// unwrapPathError drops *fs.PathError's "op path:" prefix when the caller
// names the path itself.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func unwrapNetError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err
	}
	return err
}

// remount changes the flags of the mount at cfg.MountPoint: read-only or
// read-write, and suid/dev/exec. The kernel applies them to a FUSE mount
// itself (the daemon keeps running; a read-only mount refuses writes in
// the VFS before they reach it). Options not given take the mount's
// defaults (rw,nosuid,nodev,exec), as for a new mount.
func remount(cfg mountConfig) error {
	m, err := checkReflinkfsMount(cfg.MountPoint)
	if err != nil {
		return err
	}
	if !cfg.ReadOnly && filepath.IsAbs(m.Source) {
		// A daemon serving the image read-only cannot become writable.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err := control.NewClient(filepath.Join(m.Source, control.SocketName)).Info(ctx)
		cancel()
		if err == nil && info.ReadOnly {
			return fmt.Errorf("remount %s read-write: its daemon serves %s read-only; unmount it and mount it again without -o ro", cfg.MountPoint, m.Source)
		}
	}
	flags := uintptr(syscall.MS_REMOUNT | syscall.MS_NOSUID | syscall.MS_NODEV)
	if cfg.ReadOnly {
		flags |= syscall.MS_RDONLY
	}
	for _, f := range cfg.VFSFlags {
		flags, _ = fusefs.ApplyVFSFlag(flags, f) // checked by parseMountOptions
	}
	if err := syscall.Mount("", cfg.MountPoint, "", flags, ""); err != nil {
		return fmt.Errorf("remount %s: %w", cfg.MountPoint, err)
	}
	return nil
}

// checkReflinkfsMount refuses to remount what is not a FUSE mount.
func checkReflinkfsMount(mountPoint string) (mountEntry, error) {
	m, mp, err := lookupMount(mountPoint)
	if errors.Is(err, errNotMounted) {
		return m, fmt.Errorf("remount %s: not mounted", mp)
	}
	if err != nil {
		return m, fmt.Errorf("remount %s: %w", mountPoint, err)
	}
	if !isFuseMount(m) {
		return m, fmt.Errorf("remount %s: not a reflinkfs mount (type %s)", mp, m.FsType)
	}
	return m, nil
}

// daemonStats is what the control server reports: the engine's statistics
// and, once mounted, the mount's passthrough statistics.
type daemonStats struct {
	*reflinkfs.FS
	mount atomic.Pointer[fusefs.Server]
}

func (d *daemonStats) Passthrough() *control.PassthroughReport {
	srv := d.mount.Load()
	if srv == nil {
		return nil
	}
	p := srv.Passthrough()
	return &control.PassthroughReport{
		Mode: p.Mode, Unavailable: p.Unavailable,
		BackingFiles: p.Backings, BackingFilesInUse: p.InUse, BackingBytes: p.Bytes,
		BackingCachedBytes: p.CachedBytes, BackingsCreated: p.Created, BackingsEvicted: p.Evicted,
		Opens: p.Opens, OpenNow: p.OpenNow, Refused: p.Refused, Fallbacks: p.Fallbacks,
	}
}
