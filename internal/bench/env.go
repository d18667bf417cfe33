package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reflinkfs/reflinkfs/internal/control"
	"golang.org/x/sys/unix"
)

// Env is the pair of file systems under test and everything made to hold
// them. Every resource is registered for teardown as soon as it exists.
type Env struct {
	cfg *Config
	log *progress

	Work     string // temporary directory under cfg.ScratchDir
	XFSFile  string // sparse backing file of the loop device
	LoopDev  string
	XFSMount string
	Image    string // reflinkfs image directory
	RFSMount string
	rfsPID   int    // daemon pid of the current mount
	share    string // -o share= of the current mount; "" is the default (readonly)

	mu       sync.Mutex
	cleanups []cleanup
	closed   bool
}

type cleanup struct {
	what string
	fn   func(context.Context) error
}

// teardownTimeout bounds each teardown step; a reflinkfs umount writes
// back the daemon's dirty cache, which can take a while on a slow disk.
const teardownTimeout = 5 * time.Minute

func (e *Env) onClose(what string, fn func(context.Context) error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cleanups = append(e.cleanups, cleanup{what, fn})
}

// Close tears everything down in reverse order of creation. It is safe to
// call more than once and ignores the run's context (a cancelled run must
// still unmount), giving each step its own timeout.
func (e *Env) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	cs := e.cleanups
	e.cleanups = nil
	e.mu.Unlock()
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
		if err := cs[i].fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("teardown: %s: %w", cs[i].what, err))
			e.log.Printf("teardown: %s: %v", cs[i].what, err)
		}
		cancel()
	}
	return errors.Join(errs...)
}

// Setup creates the work directory, the XFS file system on a loop device
// and the reflinkfs mount (only the work directory when no workload needs
// mounts). On error everything made so far is torn down.
func Setup(ctx context.Context, cfg *Config, log *progress) (_ *Env, err error) {
	e := &Env{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if err := os.MkdirAll(cfg.ScratchDir, 0o755); err != nil {
		return nil, err
	}
	if e.Work, err = os.MkdirTemp(cfg.ScratchDir, "reflinkfs-bench-"); err != nil {
		return nil, err
	}
	e.onClose("remove "+e.Work, func(context.Context) error { return os.RemoveAll(e.Work) })
	log.Printf("work directory %s", e.Work)
	if err := checkFreeSpace(cfg.ScratchDir, neededScratch(cfg)); err != nil {
		return nil, err
	}
	if !cfg.needsMounts() {
		return e, nil
	}
	if err := e.setupXFS(ctx); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := e.setupReflinkfs(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// neededScratch estimates the peak host disk use: the largest workload's
// files on both file systems (they are removed after each workload), plus
// slack for metadata and logs.
func neededScratch(cfg *Config) int64 {
	var peak int64
	for _, s := range cfg.CloneSizes {
		peak = max(peak, s)
	}
	for _, s := range cfg.OpenSizes {
		peak = max(peak, s)
	}
	var frag int64
	for _, s := range cfg.FragSizes {
		frag += s
	}
	peak = max(peak, frag, cfg.MemFileSize, 2*cfg.ReadFileSize, cfg.MappedLibSize, 2*cfg.CoWFileSize, int64(cfg.TreeFiles)*64<<10)
	return 2*peak + 2<<30
}

func checkFreeSpace(dir string, need int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < need {
		return fmt.Errorf("scratch directory %s has %s free; the run needs about %s (choose another with --scratch)",
			dir, fmtBytes(float64(free)), fmtBytes(float64(need)))
	}
	return nil
}

func (e *Env) setupXFS(ctx context.Context) error {
	// Setup commands run to completion even if the run is cancelled
	// meanwhile: a losetup killed half way could leave a device we do not
	// know about. Cancellation is checked between steps.
	bg := context.WithoutCancel(ctx)
	e.XFSFile = filepath.Join(e.Work, "xfs.img")
	f, err := os.Create(e.XFSFile)
	if err != nil {
		return err
	}
	err = f.Truncate(e.cfg.ImageSize)
	f.Close()
	if err != nil {
		return fmt.Errorf("sparse backing file %s: %w", e.XFSFile, err)
	}
	// Detach by backing file rather than by name: covers a device attached
	// by a losetup whose output we never saw.
	e.onClose("detach loop devices of "+e.XFSFile, func(ctx context.Context) error { return detachLoops(ctx, e.XFSFile) })
	out, err := runCmd(bg, "losetup", "--direct-io=on", "--find", "--show", e.XFSFile)
	if err != nil {
		return err
	}
	e.LoopDev = strings.TrimSpace(out)
	e.log.Printf("XFS: %s on %s (direct I/O)", e.LoopDev, e.XFSFile)
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := runCmd(bg, "mkfs.xfs", "-q", "-f", "-m", "reflink=1", e.LoopDev); err != nil {
		return err
	}
	e.XFSMount = filepath.Join(e.Work, "xfs")
	if err := os.Mkdir(e.XFSMount, 0o755); err != nil {
		return err
	}
	e.onClose("unmount "+e.XFSMount, func(ctx context.Context) error { return unmountPlain(e.XFSMount) })
	if err := unix.Mount(e.LoopDev, e.XFSMount, "xfs", 0, ""); err != nil {
		return fmt.Errorf("mount %s on %s: %w", e.LoopDev, e.XFSMount, err)
	}
	return nil
}

// unmountPlain unmounts a kernel file system, detaching it lazily if busy.
func unmountPlain(mp string) error {
	if !isMountPoint(mp) {
		return nil
	}
	if err := unix.Unmount(mp, 0); err != nil {
		if err2 := unix.Unmount(mp, unix.MNT_DETACH); err2 != nil {
			return fmt.Errorf("umount %s: %v; lazy: %w", mp, err, err2)
		}
	}
	return nil
}

// detachLoops detaches every loop device backed by file.
func detachLoops(ctx context.Context, file string) error {
	out, err := runCmd(ctx, "losetup", "--associated", file, "--noheadings", "--output", "NAME")
	if err != nil {
		return err
	}
	var errs []error
	for _, dev := range strings.Fields(out) {
		if _, err := runCmd(ctx, "losetup", "--detach", dev); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *Env) setupReflinkfs(ctx context.Context) error {
	e.Image = filepath.Join(e.Work, "reflinkfs.img")
	e.RFSMount = filepath.Join(e.Work, "reflinkfs")
	e.onClose("unmount "+e.RFSMount, e.unmountReflinkfs)
	if err := e.mountReflinkfs(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	e.log.Printf("reflinkfs: %s on %s (daemon pid %d, cache %s)", e.Image, e.RFSMount, e.rfsPID, fmtBytes(float64(e.cfg.CacheSize)))
	return nil
}

func (e *Env) mountReflinkfs(ctx context.Context) error {
	args := []string{"mount", "-d",
		"--size", strconv.FormatInt(e.cfg.ImageSize, 10),
		"--cache-size", strconv.FormatInt(e.cfg.CacheSize, 10)}
	if e.share != "" {
		args = append(args, "-o", "share="+e.share)
	}
	_, err := runCmd(ctx, e.cfg.Exe, append(args, e.Image, e.RFSMount)...)
	if err != nil {
		return err
	}
	pid, err := readPIDFile(filepath.Join(e.Image, "lock"))
	if err != nil {
		return fmt.Errorf("reflinkfs daemon pid: %w", err)
	}
	e.rfsPID = pid
	return nil
}

// unmountReflinkfs unmounts and waits for the daemon to write back and
// exit; if the mount is busy or the daemon hangs it detaches the mount and
// stops the daemon it started.
func (e *Env) unmountReflinkfs(ctx context.Context) error {
	pid := e.rfsPID
	if !isMountPoint(e.RFSMount) {
		return waitExit(ctx, pid)
	}
	_, err := runCmd(ctx, e.cfg.Exe, "umount", e.RFSMount)
	if err == nil {
		return waitExit(ctx, pid)
	}
	e.log.Printf("reflinkfs umount failed (%v); detaching lazily", err)
	if _, err2 := runCmd(ctx, e.cfg.Exe, "umount", "--lazy", "--timeout", "1m", e.RFSMount); err2 == nil {
		return waitExit(ctx, pid)
	}
	unix.Unmount(e.RFSMount, unix.MNT_DETACH)
	if pid > 0 && processAlive(pid) {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	return errors.Join(err, waitExit(ctx, pid))
}

// Remount unmounts and mounts the image again: the daemon starts with an
// empty block cache and the kernel forgets the mount's inodes.
func (e *Env) Remount(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx) // never leave it half way
	if err := e.unmountReflinkfs(ctx); err != nil {
		return err
	}
	return e.mountReflinkfs(ctx)
}

// Share remounts the image with -o share=mode ("" for the default,
// readonly) unless it is mounted so already; it reports whether it had to.
func (e *Env) Share(ctx context.Context, mode string) (bool, error) {
	if mode == e.share && e.rfsPID > 0 && processAlive(e.rfsPID) && isMountPoint(e.RFSMount) {
		return false, nil
	}
	e.share = mode
	return true, e.Remount(ctx)
}

// EnsureReflinkfs remounts the image if the daemon has gone away (a
// crash); it reports whether it had to.
func (e *Env) EnsureReflinkfs(ctx context.Context) (bool, error) {
	if e.rfsPID > 0 && processAlive(e.rfsPID) && isMountPoint(e.RFSMount) {
		return false, nil
	}
	return true, e.Remount(ctx)
}

func processAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// waitExit waits until pid has exited (the daemon flushes before exiting).
func waitExit(ctx context.Context, pid int) error {
	for processAlive(pid) {
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && procState(string(st)) == "Z" {
			return nil // a zombie of ours? it has finished
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("daemon pid %d did not exit: %w", pid, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func procState(stat string) string {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(stat[i+1:])
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// DaemonPID is the pid of the current reflinkfs daemon.
func (e *Env) DaemonPID() int { return e.rfsPID }

// Stats asks the daemon for its statistics.
func (e *Env) Stats(ctx context.Context) (control.Report, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return control.NewClient(filepath.Join(e.Image, control.SocketName)).Report(ctx)
}

// DropCaches syncs and drops the kernel's page, dentry and inode caches.
func DropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}

// ColdData makes both file systems' data cold without restarting the
// daemon: sync, have the daemon write back and evict its block cache
// (control socket POST /drop-cache), drop the kernel's caches. The
// daemon's cache memory stays mapped, as the kernel's free pages do, so a
// cold read measures the device and the read path, not first-touch faults.
func (e *Env) ColdData(ctx context.Context) error {
	unix.Sync()
	if e.RFSMount != "" {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		if _, err := control.NewClient(filepath.Join(e.Image, control.SocketName)).DropCache(ctx); err != nil {
			return err
		}
	}
	return DropCaches()
}

// Cold makes both file systems cold: sync, remount reflinkfs (emptying
// the daemon's cache), drop the kernel's caches.
func (e *Env) Cold(ctx context.Context) error {
	unix.Sync()
	if e.RFSMount != "" {
		if err := e.Remount(ctx); err != nil {
			return err
		}
	}
	return DropCaches()
}

// isMountPoint reports whether path is a mount point in this namespace.
func isMountPoint(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, mp := range mountPoints(string(b)) {
		if mp == path {
			return true
		}
	}
	return false
}

// mountPoints lists field 5 of /proc/self/mountinfo, unescaped.
func mountPoints(mountinfo string) []string {
	var out []string
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		out = append(out, unescapeMountinfo(f[4]))
	}
	return out
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// runCmd runs a program to completion and returns its stdout. The child
// gets its own process group, so a Ctrl-C at the terminal reaches only the
// harness, which then tears down in order. The error carries stderr.
func runCmd(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if msg != "" {
			return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		return stdout.String(), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return stdout.String(), nil
}

// progress writes timestamped progress lines (to stderr).
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func newProgress(w io.Writer) *progress {
	if w == nil {
		w = io.Discard
	}
	return &progress{w: w, start: time.Now()}
}

func (p *progress) Printf(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	el := time.Since(p.start).Round(time.Second)
	fmt.Fprintf(p.w, "bench [%02d:%02d:%02d] %s\n", int(el.Hours()), int(el.Minutes())%60, int(el.Seconds())%60, fmt.Sprintf(format, a...))
}
