package bench

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// File system keys of the variants measured by the passthrough workloads.
const (
	fsReflinkfsOff = "reflinkfs_share_off" // reflinkfs mounted -o share=off (no passthrough: the old behaviour)
	fsOverlay      = "overlayfs"           // overlayfs, the shared tree a lower layer on XFS
)

// Metric names of the mapped workload.
const (
	mMapCached   = "mapped_meminfo_cached_delta" // /proc/meminfo Cached after all N mapped minus before they started
	mMapExact    = "mapped_exact_cached"         // cachestat over the files (+ backing files' cache on reflinkfs)
	mMapLib      = "mapped_exact_library"        // the same, the library alone
	mMapInode    = "mapped_inode_cached"         // reflinkfs: the FUSE inodes' own pages (cachestat)
	mMapBacking  = "mapped_backing_cached"       // reflinkfs: passthrough.backing_cached_bytes after minus before
	mMapBackings = "mapped_backing_files"        // reflinkfs: backing files afterwards
	mMapRSS      = "mapped_daemon_rss_growth"
	mMapStart    = "mapped_start_all" // from starting the N processes until all have mapped
	mMapUnit     = "mapped_library_size"
	seedMapped   = 505
)

// variant is a file system as the passthrough workloads measure it: a
// target, for reflinkfs with the share= policy it is mounted with.
type variant struct {
	key, name string
	t         *target
	share     string // reflinkfs: -o share= ("" for the default, readonly)
}

// shareVariants are reflinkfs (default policy), reflinkfs share=off and XFS.
func (r *run) shareVariants() []variant {
	return []variant{
		{key: fsXFS, name: "XFS", t: r.xfs},
		{key: fsReflinkfs, name: "reflinkfs", t: r.rfs},
		{key: fsReflinkfsOff, name: "reflinkfs share=off", t: r.rfs, share: "off"},
	}
}

// rotate returns vs for even repetitions and reversed for odd ones, so
// drift in machine load falls on all alike and the two reflinkfs
// policies stay adjacent (one remount between them).
func rotate(vs []variant, i int) []variant {
	out := append([]variant(nil), vs...)
	if i%2 == 1 {
		for a, b := 0, len(out)-1; a < b; a, b = a+1, b-1 {
			out[a], out[b] = out[b], out[a]
		}
	}
	return out
}

// use mounts reflinkfs with the variant's policy if it is not already.
func (r *run) use(ctx context.Context, v variant) error {
	if !v.t.isReflinkfs() {
		return nil
	}
	_, err := r.env.Share(ctx, v.share)
	return err
}

//go:embed maphelper/main.go
var mapHelperSource []byte

// buildMapHelper builds the mapped workload's executable (maphelper/main.go,
// standard library only, static) into the work directory with the Go
// toolchain: a small real program, so the executables' own pages stay
// small next to the library.
func (r *run) buildMapHelper(ctx context.Context) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, serr := os.Stat(goBin); serr != nil {
			return "", fmt.Errorf("the mapped workload builds a small Go program and needs the Go toolchain (go on PATH): %w", err)
		}
	}
	dir := filepath.Join(r.env.Work, "maphelper")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), mapHelperSource, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module maphelper\n\ngo 1.21\n"), 0o644); err != nil {
		return "", err
	}
	exe := filepath.Join(dir, "app")
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", exe, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the map helper: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return exe, nil
}

// appTree is the tree each clone holds: a library and an executable.
const (
	appLib = "lib/libshared.so"
	appExe = "bin/app"
)

// makeAppTree creates root with a libSize-byte library of random bytes and
// a copy of the executable exe, and syncs.
func makeAppTree(ctx context.Context, root, exe string, libSize int64) error {
	for _, d := range []string{"lib", "bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	if err := writeSequential(ctx, filepath.Join(root, appLib), libSize, seedMapped); err != nil {
		return err
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(root, appExe), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// mappedSharing: N clones of a tree holding a library and an executable;
// N processes, all alive at once, each runs the executable of its own
// clone, which maps the library of its own clone and touches every page.
// What the page cache grows by, in units of one library.
func (r *run) mappedSharing(ctx context.Context) error {
	w := WorkloadMapped
	done, err := r.workDirs(w)
	defer done()
	if err != nil {
		return err
	}
	helper, err := r.buildMapHelper(ctx)
	if err != nil {
		return err
	}
	libSize := r.cfg.MappedLibSize
	for _, t := range r.targets() {
		r.log.Printf("[mapped] writing the tree (%s library, executable) on %s", sizeLabel(libSize), t.name)
		if err := makeAppTree(ctx, filepath.Join(t.dir(w), "src"), helper, libSize); err != nil {
			return err
		}
	}
	vs := r.shareVariants()
	ovl := variant{key: fsOverlay, name: "overlayfs", t: r.xfs}
	if err := r.overlayWorks(filepath.Join(r.xfs.dir(w), "src")); err != nil {
		r.note("overlayfs was not measured in the mapped workload: %v", err)
	} else {
		// XFS, overlayfs, reflinkfs, share=off: the reflinkfs pair adjacent.
		vs = []variant{vs[0], ovl, vs[1], vs[2]}
	}
	for _, n := range r.cfg.MappedN {
		if err := r.mappedN(ctx, w, vs, n, libSize); err != nil {
			return err
		}
	}
	return nil
}

// overlayWorks mounts and unmounts one overlayfs over lower, to learn
// whether this kernel and this process may.
func (r *run) overlayWorks(lower string) error {
	base := filepath.Join(r.env.Work, "ovl-probe")
	defer os.RemoveAll(base)
	mp, err := mountOverlay(base, lower)
	if err != nil {
		return err
	}
	return unmountPlain(mp)
}

// mountOverlay mounts an overlayfs of lower with upper and work
// directories under base, on base/merged.
func mountOverlay(base, lower string) (string, error) {
	up, wk, mp := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{up, wk, mp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, up, wk)
	if err := unix.Mount("overlay", mp, "overlay", 0, opts); err != nil {
		return "", fmt.Errorf("mount -t overlay -o %s %s: %w", opts, mp, err)
	}
	return mp, nil
}

// mappedN measures N processes on every variant, cfg.Runs times.
func (r *run) mappedN(ctx context.Context, w string, vs []variant, n int, libSize int64) error {
	cs := fmt.Sprintf("N=%d", n)
	roots := map[string][]string{}
	var overlays []string
	defer func() {
		for _, mp := range overlays {
			if err := unmountPlain(mp); err != nil {
				r.log.Printf("[mapped] %v", err)
			}
		}
	}()
	for _, v := range vs {
		switch v.key {
		case fsXFS, fsReflinkfs:
			// Clones by the file system's own means: cp -a --reflink on
			// XFS, reflinkfs clone -r; share=off uses reflinkfs's clones.
			for j := 0; j < n; j++ {
				dst := filepath.Join(v.t.dir(w), fmt.Sprintf("c%02d", j))
				if _, err := v.t.cloneTree(ctx, filepath.Join(v.t.dir(w), "src"), dst); err != nil {
					return err
				}
				roots[v.key] = append(roots[v.key], dst)
			}
		case fsOverlay:
			for j := 0; j < n; j++ {
				base := filepath.Join(v.t.dir(w), fmt.Sprintf("ovl%02d", j))
				mp, err := mountOverlay(base, filepath.Join(v.t.dir(w), "src"))
				if err != nil {
					return err
				}
				r.env.onClose("unmount "+mp, func(context.Context) error { return unmountPlain(mp) })
				overlays = append(overlays, mp)
				roots[v.key] = append(roots[v.key], mp)
			}
		}
	}
	roots[fsReflinkfsOff] = roots[fsReflinkfs]
	if err := r.syncAll(); err != nil {
		return err
	}
	for i := 0; i < r.cfg.Runs; i++ {
		var line []string
		for _, v := range rotate(vs, i) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := r.use(ctx, v); err != nil {
				return err
			}
			s, err := r.mapOnce(ctx, v, roots[v.key], filepath.Join(v.t.dir(w), "src"))
			if err != nil {
				return fmt.Errorf("%s, %s: %w", cs, v.name, err)
			}
			x := float64(n)
			r.rec.Add(w, mMapCached, cs, x, v.key, unitBytes, float64(s.meminfoDelta))
			r.rec.Add(w, mMapExact, cs, x, v.key, unitBytes, float64(s.exact()))
			r.rec.Add(w, mMapLib, cs, x, v.key, unitBytes, float64(s.libExact()))
			r.rec.AddDuration(w, mMapStart, cs, x, v.key, s.start)
			r.rec.Add(w, mMapUnit, cs, x, v.key, unitBytes, float64(libSize))
			if v.t.isReflinkfs() {
				r.rec.Add(w, mMapInode, cs, x, v.key, unitBytes, float64(s.inodeLib+s.inodeExe))
				r.rec.Add(w, mMapBacking, cs, x, v.key, unitBytes, float64(s.backing))
				r.rec.Add(w, mMapBackings, cs, x, v.key, unitCount, float64(s.backingFiles))
				r.rec.Add(w, mMapRSS, cs, x, v.key, unitBytes, float64(s.rss))
			}
			line = append(line, fmt.Sprintf("%s %s (exact %s)", v.name,
				fmtRatio(float64(s.meminfoDelta)/float64(libSize)), fmtRatio(float64(s.exact())/float64(libSize))))
		}
		r.log.Printf("[mapped] %s run %d/%d, page cache growth in libraries: %s", cs, i+1, r.cfg.Runs, strings.Join(line, ", "))
	}
	if n > 0 && r.rec.Get(w, mMapBackings, cs, fsReflinkfs) != nil && r.rec.Get(w, mMapBackings, cs, fsReflinkfs).Median == 0 {
		r.note("mapped %s: reflinkfs reported no backing file while the clones were mapped: passthrough did not happen.", cs)
	}
	// Free the clones (share=off's are reflinkfs's).
	for _, v := range vs {
		if v.key == fsXFS || v.key == fsReflinkfs {
			for _, root := range roots[v.key] {
				if err := os.RemoveAll(root); err != nil {
					return err
				}
			}
		}
	}
	return r.syncAll()
}

// mapSample is one measurement of N processes on one variant.
type mapSample struct {
	meminfoDelta       int64
	cacheLib, cacheExe int64 // cachestat over the files (XFS, overlayfs: the lower files)
	inodeLib, inodeExe int64 // reflinkfs: cachestat of the FUSE inodes
	backing            int64 // reflinkfs: backing files' page cache growth
	backingFiles       int
	rss                int64
	start              time.Duration
}

// exact is the page cache holding the files: cachestat, plus the backing
// files' on reflinkfs (cachestat of a passthrough file reports the FUSE
// inode's own pages, not the backing's).
func (s mapSample) exact() int64 { return s.cacheLib + s.cacheExe + s.backing }

// libExact is exact for the library alone; on reflinkfs the backing
// files' cache counts as library (the executables' share is small and
// cannot be told apart in the daemon's total).
func (s mapSample) libExact() int64 { return s.cacheLib + s.backing }

// mapOnce drops caches, starts one process per root (root/bin/app
// mapping root/lib), waits until all have mapped, measures, and stops
// them. src is the tree the roots were cloned from (overlayfs: the lower
// layer, whose page cache the overlays use).
func (r *run) mapOnce(ctx context.Context, v variant, roots []string, src string) (s mapSample, err error) {
	if err := r.env.ColdData(ctx); err != nil {
		return s, err
	}
	rfs := v.t.isReflinkfs()
	var pt0 int64
	var rss0 int64
	if rfs {
		st, err := r.env.Stats(ctx)
		if err != nil {
			return s, err
		}
		if st.Passthrough != nil {
			pt0 = st.Passthrough.BackingCachedBytes
		}
		if rss0, err = processRSS(r.env.DaemonPID()); err != nil {
			return s, err
		}
	}
	c0, err := meminfo("Cached")
	if err != nil {
		return s, err
	}
	start := time.Now()
	procs, err := startMappers(ctx, roots)
	defer func() {
		if serr := stopMappers(procs); serr != nil && err == nil {
			err = serr
		}
	}()
	if err != nil {
		return s, err
	}
	s.start = time.Since(start)
	c1, err := meminfo("Cached")
	if err != nil {
		return s, err
	}
	s.meminfoDelta = c1 - c0
	if rfs {
		st, err := r.env.Stats(ctx)
		if err != nil {
			return s, err
		}
		if st.Passthrough != nil {
			s.backing = st.Passthrough.BackingCachedBytes - pt0
			s.backingFiles = st.Passthrough.BackingFiles
		}
		rss1, err := processRSS(r.env.DaemonPID())
		if err != nil {
			return s, err
		}
		s.rss = rss1 - rss0
	}
	if v.key == fsOverlay {
		// cachestat of an overlayfs file reports the overlay inode, which
		// holds no pages: the lower files' page cache is what is shared.
		if s.cacheLib, err = cachedBytes(filepath.Join(src, appLib)); err != nil {
			return s, err
		}
		if s.cacheExe, err = cachedBytes(filepath.Join(src, appExe)); err != nil {
			return s, err
		}
		return s, nil
	}
	// Each helper reports its own files' inodes: opening them here would
	// (on a FUSE file served with direct I/O) invalidate their pages.
	for _, p := range procs {
		lib, exe, err := p.stat()
		if err != nil {
			return s, fmt.Errorf("%s: %w", p.cmd.Path, err)
		}
		s.cacheLib += lib
		s.cacheExe += exe
		if rfs {
			s.inodeLib += lib
			s.inodeExe += exe
		}
	}
	return s, nil
}

// mapper is one running executable holding its mapping.
type mapper struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
}

// stat asks the helper for the page cache of its library and executable.
func (p *mapper) stat() (lib, exe int64, err error) {
	if _, err := io.WriteString(p.stdin, "stat\n"); err != nil {
		return 0, 0, err
	}
	line, err := p.stdout.ReadString('\n')
	if err != nil {
		return 0, 0, err
	}
	return parseHelperCache(line)
}

// parseHelperCache reads the helper's "cache LIB EXE" line (bytes; -1 if
// its cachestat failed).
func parseHelperCache(line string) (lib, exe int64, err error) {
	var word string
	if n, _ := fmt.Sscanf(strings.TrimSpace(line), "%s %d %d", &word, &lib, &exe); n != 3 || word != "cache" {
		return 0, 0, fmt.Errorf("unexpected helper output %q", strings.TrimSpace(line))
	}
	if lib < 0 || exe < 0 {
		return 0, 0, fmt.Errorf("the helper's cachestat failed: %q", strings.TrimSpace(line))
	}
	return lib, exe, nil
}

// startMappers starts root/bin/app root/lib/... for every root and waits
// until each has printed "ready" (has touched every page of its
// mapping). On error the processes started so far are returned for
// stopMappers.
func startMappers(ctx context.Context, roots []string) ([]*mapper, error) {
	var procs []*mapper
	for _, root := range roots {
		cmd := exec.CommandContext(ctx, filepath.Join(root, appExe), filepath.Join(root, appLib))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return procs, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return procs, err
		}
		if err := cmd.Start(); err != nil {
			return procs, fmt.Errorf("run %s: %w", cmd.Path, err)
		}
		procs = append(procs, &mapper{cmd: cmd, stdin: stdin, stdout: bufio.NewReader(stdout)})
	}
	for i, p := range procs {
		line, err := p.stdout.ReadString('\n')
		if err := checkReady(line, err); err != nil {
			return procs, fmt.Errorf("%s: %w", procs[i].cmd.Path, err)
		}
	}
	return procs, nil
}

// checkReady accepts the helper's "ready <sum>" line.
func checkReady(line string, err error) error {
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return fmt.Errorf("no ready line: %w", err)
	}
	if !strings.HasPrefix(line, "ready ") {
		return fmt.Errorf("unexpected output %q", strings.TrimSpace(line))
	}
	return nil
}

// stopMappers closes every helper's stdin (it then exits) and waits.
func stopMappers(procs []*mapper) error {
	var errs []error
	for _, p := range procs {
		p.stdin.Close()
	}
	for _, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.cmd.Path, err))
		}
	}
	return errors.Join(errs...)
}

// cachedBytes is the page cache of path's inode by cachestat(2): on a
// FUSE passthrough file that is the FUSE inode's own pages (none), not the
// backing file's.
func cachedBytes(path string) (int64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var cs unix.Cachestat_t
	if err := unix.Cachestat(uint(fd), &unix.CachestatRange{}, &cs, 0); err != nil {
		return 0, &os.PathError{Op: "cachestat", Path: path, Err: err}
	}
	return int64(cs.Cache) * int64(os.Getpagesize()), nil
}
