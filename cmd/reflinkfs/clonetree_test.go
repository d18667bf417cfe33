package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/internal/fusefs"
	"github.com/reflinkfs/reflinkfs/internal/testenv"
	"github.com/reflinkfs/reflinkfs/ioctl"
)

// copyClone stands in for a reflink where the test file system has none.
func copyClone(dst, src *os.File) error {
	_, err := io.Copy(dst, src)
	return err
}

// entryMeta is what cloneTree must reproduce for one path.
type entryMeta struct {
	mode     uint32
	uid, gid uint32
	atime    int64
	mtime    int64
	content  string
	link     string
	xattrs   map[string]string
	rdev     uint64
	inodeKey string // paths with the same key must be hard links of each other
}

func xattrMap(t *testing.T, path string) map[string]string {
	names, err := listXattrs(path)
	if err != nil && !errors.Is(err, unix.ENOTSUP) {
		t.Fatalf("listxattr %s: %v", path, err)
	}
	m := map[string]string{}
	for _, n := range names {
		v, err := getXattr(path, n)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", path, n, err)
		}
		m[n] = string(v)
	}
	return m
}

func snapshotTree(t *testing.T, root string) map[string]entryMeta {
	t.Helper()
	out := map[string]entryMeta{}
	inodes := map[uint64]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		m := entryMeta{mode: st.Mode, uid: st.Uid, gid: st.Gid, atime: st.Atim.Nano(), mtime: st.Mtim.Nano(), xattrs: xattrMap(t, path)}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOATIME, 0)
			if err != nil {
				return err
			}
			b, err := io.ReadAll(f)
			f.Close()
			if err != nil {
				return err
			}
			m.content = string(b)
		case unix.S_IFLNK:
			m.link, _ = os.Readlink(path)
		case unix.S_IFCHR, unix.S_IFBLK:
			m.rdev = st.Rdev
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if first, ok := inodes[st.Ino]; ok {
				m.inodeKey = first
			} else {
				inodes[st.Ino] = rel
				m.inodeKey = rel
			}
		}
		out[rel] = m
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// compareTrees reports every way got differs from want; owners are
// compared when the clone was made by root.
func compareTrees(t *testing.T, want, got map[string]entryMeta, owners bool) {
	t.Helper()
	for rel, w := range want {
		g, ok := got[rel]
		if !ok {
			t.Errorf("%s: missing in clone", rel)
			continue
		}
		if g.mode != w.mode {
			t.Errorf("%s: mode %o, want %o", rel, g.mode, w.mode)
		}
		if owners && (g.uid != w.uid || g.gid != w.gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, g.uid, g.gid, w.uid, w.gid)
		}
		if g.mtime != w.mtime {
			t.Errorf("%s: mtime %v, want %v", rel, time.Unix(0, g.mtime).UTC(), time.Unix(0, w.mtime).UTC())
		}
		if g.atime != w.atime && w.mode&unix.S_IFMT != unix.S_IFDIR {
			// (directories' atimes change when the snapshot reads them)
			t.Errorf("%s: atime %v, want %v", rel, time.Unix(0, g.atime).UTC(), time.Unix(0, w.atime).UTC())
		}
		if g.content != w.content || g.link != w.link || g.rdev != w.rdev || g.inodeKey != w.inodeKey {
			t.Errorf("%s: got content %q link %q rdev %d links-with %q; want %q %q %d %q",
				rel, g.content, g.link, g.rdev, g.inodeKey, w.content, w.link, w.rdev, w.inodeKey)
		}
		if len(g.xattrs) != len(w.xattrs) {
			t.Errorf("%s: xattrs %v, want %v", rel, g.xattrs, w.xattrs)
		}
		for k, v := range w.xattrs {
			if g.xattrs[k] != v {
				t.Errorf("%s: xattr %s = %q, want %q", rel, k, g.xattrs[k], v)
			}
		}
	}
	for rel := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s: extra entry in clone", rel)
		}
	}
}

// makeTestTree builds the tree the clone tests copy at src and returns
// its snapshot and whether the file system took user xattrs.
func makeTestTree(t *testing.T, src string) (map[string]entryMeta, bool) {
	t.Helper()
	root := os.Geteuid() == 0
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "a/deep/er"), 0o755))
	must(os.Mkdir(filepath.Join(src, "ro"), 0o755))
	must(os.Mkdir(filepath.Join(src, "sgid"), 0o755))
	must(os.WriteFile(filepath.Join(src, "a/deep/er/file"), []byte("deep"), 0o640))
	must(os.WriteFile(filepath.Join(src, "ro/inside"), []byte("in a read-only dir"), 0o444))
	must(os.WriteFile(filepath.Join(src, "setuid"), []byte("#!/bin/sh\n"), 0o755))
	must(os.WriteFile(filepath.Join(src, "empty"), nil, 0o600))
	must(os.WriteFile(filepath.Join(src, "linked"), []byte("two names"), 0o644))
	must(os.Link(filepath.Join(src, "linked"), filepath.Join(src, "a/deep/linked-too")))
	must(os.Symlink("a/deep/er/file", filepath.Join(src, "symlink")))
	must(os.Symlink("/nonexistent/target", filepath.Join(src, "dangling")))
	must(unix.Mkfifo(filepath.Join(src, "fifo"), 0o620))
	if root {
		must(unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(os.Lchown(filepath.Join(src, "a/deep/er/file"), 1234, 5678))
		must(os.Lchown(filepath.Join(src, "symlink"), 4321, 8765))
		must(os.Lchown(filepath.Join(src, "a"), 1111, 2222))
	}
	must(os.Chmod(filepath.Join(src, "setuid"), 0o755|os.ModeSetuid))
	must(os.Chmod(filepath.Join(src, "sgid"), 0o2775|os.ModeSetgid))
	xattrsWork := unix.Setxattr(filepath.Join(src, "a/deep/er/file"), "user.color", []byte("blue"), 0) == nil
	if xattrsWork {
		must(unix.Setxattr(filepath.Join(src, "a"), "user.dir", []byte("d"), 0))
		must(unix.Setxattr(filepath.Join(src, "empty"), "user.empty", nil, 0))
	}
	// Distinct times in the past for every entry, set deepest first. Access
	// times are recent and after the modification times, so that with
	// relatime reading an entry (readlink) does not change them.
	var paths []string
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error { paths = append(paths, p); return err })
	recent := time.Now().Add(-time.Hour)
	for i := len(paths) - 1; i >= 0; i-- {
		at := recent.Add(time.Duration(i*1000 + 7))
		mt := time.Date(2002, 3, 4, 5, 6, 7, i*1000+9, time.UTC)
		ts := []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW))
	}
	must(os.Chmod(filepath.Join(src, "ro"), 0o555)) // after filling it; chmod keeps times
	want := snapshotTree(t, src)
	// readlink may have updated symlinks' atimes (relatime: atime <= ctime);
	// the clone copies what is there now, so expect that.
	for rel, m := range want {
		var st unix.Stat_t
		must(unix.Lstat(filepath.Join(src, rel), &st))
		m.atime = st.Atim.Nano()
		want[rel] = m
	}
	return want, xattrsWork
}

func TestCloneTree(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	root := os.Geteuid() == 0
	t.Cleanup(func() { // let TempDir's cleanup remove the read-only directories as non-root
		os.Chmod(filepath.Join(base, "src", "ro"), 0o755)
		os.Chmod(filepath.Join(base, "dst", "ro"), 0o755)
	})
	want, xattrsWork := makeTestTree(t, src)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	dst := filepath.Join(base, "dst")
	var warn bytes.Buffer
	must(cloneTree(src, dst, copyClone, &warn))
	if warn.Len() > 0 {
		t.Errorf("warnings: %s", warn.String())
	}
	compareTrees(t, want, snapshotTree(t, dst), root)
	if xattrsWork && len(want["a/deep/er/file"].xattrs) != 1 {
		t.Error("test setup: xattr not recorded")
	}
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(dst, "linked"), &st)
	if st.Nlink != 2 {
		t.Errorf("hard link count %d, want 2", st.Nlink)
	}
}

func TestCloneTreeRefuses(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	for _, tc := range []struct{ dst, want string }{
		{filepath.Join(src, "sub/clone"), "inside the tree being cloned"},
		{src, "inside the tree being cloned"},
		{filepath.Join(src, "sub"), "inside the tree being cloned"},
		{base, "already exists"},
	} {
		err := cloneTree(src, tc.dst, copyClone, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("cloneTree(%s, %s) = %v; want error containing %q", src, tc.dst, err, tc.want)
		}
	}
	// A clone function that fails aborts the walk and names the problem.
	os.WriteFile(filepath.Join(src, "sub/f"), []byte("x"), 0o644)
	boom := errors.New("boom")
	err := cloneTree(src, filepath.Join(base, "dst"), func(dst, src *os.File) error { return boom }, io.Discard)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "partial copy") {
		t.Errorf("failing clone: err = %v", err)
	}
}

func TestDedupeFileChunks(t *testing.T) {
	f, _ := os.CreateTemp(t.TempDir(), "f")
	defer f.Close()
	// Simulated file pair: chunks 1 and 2 differ; the tail is a partial block
	// the fake rejects unless whole blocks are asked for.
	size := int64(4*dedupeChunk + 5000)
	var calls []span
	fake := func(dst *os.File, dstOff int64, src *os.File, srcOff, length int64) (int64, bool, error) {
		if dstOff != srcOff {
			t.Fatalf("offsets differ: %d %d", dstOff, srcOff)
		}
		calls = append(calls, span{dstOff, length})
		if dstOff+length == size && length%4096 != 0 {
			return 0, false, unix.EINVAL
		}
		if dstOff >= dedupeChunk && dstOff < 3*dedupeChunk {
			return 0, true, nil
		}
		return length, false, nil
	}
	res, err := dedupeFile(f, f, size, fake)
	if err != nil {
		t.Fatal(err)
	}
	wantDeduped := size - 2*dedupeChunk - (5000 - 4096)
	if res.Deduped != wantDeduped || res.Compared != size {
		t.Errorf("deduped %d of %d, want %d of %d", res.Deduped, res.Compared, wantDeduped, size)
	}
	if len(res.Differs) != 1 || res.Differs[0] != (span{dedupeChunk, 2 * dedupeChunk}) {
		t.Errorf("differs %v, want one merged range [16M, 48M)", res.Differs)
	}
	if len(res.NotDeduped) != 1 || res.NotDeduped[0] != (span{size - 904, 904}) {
		t.Errorf("not deduplicated %v, want the 904-byte tail", res.NotDeduped)
	}
	for _, c := range calls {
		if c.Len > dedupeChunk {
			t.Errorf("request of %d bytes exceeds the chunk size", c.Len)
		}
	}

	// Short progress: the caller continues where the last call stopped.
	next := int64(0)
	short := func(dst *os.File, dstOff int64, src *os.File, srcOff, length int64) (int64, bool, error) {
		if dstOff != next {
			t.Fatalf("request at %d, want %d", dstOff, next)
		}
		n := min(length, 1<<20+4096)
		next += n
		return n, false, nil
	}
	if res, err := dedupeFile(f, f, 3*dedupeChunk, short); err != nil || res.Deduped != 3*dedupeChunk {
		t.Errorf("short progress: deduped %d, err %v; want %d", res.Deduped, err, 3*dedupeChunk)
	}

	// No progress without "differs" is an error, not a hang.
	stuck := func(*os.File, int64, *os.File, int64, int64) (int64, bool, error) { return 0, false, nil }
	if _, err := dedupeFile(f, f, 4096, stuck); err == nil {
		t.Error("no-progress dedupe did not fail")
	}
}

// mountReflinkfs mounts a fresh image in the test process and returns the
// mountpoint; it is unmounted when the test ends.
func mountReflinkfs(t *testing.T) string {
	t.Helper()
	testenv.RequireFUSE(t)
	img, mp := filepath.Join(t.TempDir(), "img"), t.TempDir()
	fsys, err := reflinkfs.Create(img, reflinkfs.Options{Size: 1 << 30, CacheSize: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fusefs.Mount(fsys, mp, fusefs.Options{FsName: img, DefaultPermissions: true, AllowOther: true})
	if err != nil {
		fsys.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		if err := fsys.Close(); err != nil {
			t.Errorf("close image: %v", err)
		}
	})
	return mp
}

// On one reflinkfs mount, clone -r is one CLONE_TREE request: no file is
// cloned by the walk, and the copy is exact and shares its blocks. Across
// file systems it falls back to the walk.
func TestCloneTreeUsesIoctl(t *testing.T) {
	mp := mountReflinkfs(t)
	src := filepath.Join(mp, "src")
	want, xattrsWork := makeTestTree(t, src)
	if !xattrsWork {
		t.Fatal("reflinkfs mount refused a user xattr")
	}
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(src, "a", "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(src, "a"), time.Now(), time.Date(2002, 3, 4, 5, 6, 7, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	want = snapshotTree(t, src)
	walked := 0
	countingClone := func(dst, src *os.File) error { walked++; return copyClone(dst, src) }

	dst := filepath.Join(mp, "dst")
	var warn bytes.Buffer
	if err := cloneTreeAuto(src, dst, countingClone, &warn); err != nil {
		t.Fatal(err)
	}
	if walked != 0 || warn.Len() > 0 {
		t.Errorf("clone within reflinkfs walked the tree (%d files cloned one by one; warnings %q)", walked, warn.String())
	}
	compareTrees(t, want, snapshotTree(t, dst), true)
	f, err := os.Open(filepath.Join(dst, "a", "big"))
	if err != nil {
		t.Fatal(err)
	}
	exts, err := ioctl.Fiemap(f)
	f.Close()
	if err != nil || len(exts) == 0 || !exts[0].Shared {
		t.Errorf("a/big in the clone: extents %+v (%v), want shared", exts, err)
	}
	if err := cloneTreeAuto(src, dst, countingClone, io.Discard); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second clone to %s: %v, want already exists", dst, err)
	}

	// Another file system: EXDEV from the daemon, the walk copies.
	other := filepath.Join(t.TempDir(), "copy")
	t.Cleanup(func() { os.Chmod(filepath.Join(other, "ro"), 0o755) })
	if err := cloneTreeAuto(src, other, countingClone, io.Discard); err != nil {
		t.Fatal(err)
	}
	if walked == 0 {
		t.Error("clone to another file system did not walk the tree")
	}
	compareTrees(t, want, snapshotTree(t, other), true)
}

// makeRootfsTree writes a container-rootfs-shaped tree at root: files of 1
// to 64 KiB (log-uniform), about 20 per directory, directories up to 7
// deep under a few wide top levels, a symlink per 50 files. It returns the
// number of entries made.
func makeRootfsTree(t *testing.T, root string, files int) int {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(files), 606))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(root, 0o755))
	type dir struct {
		path  string
		depth int
	}
	var dirs []dir
	for _, name := range []string{"bin", "etc", "lib", "usr", "var", "opt"} {
		dirs = append(dirs, dir{filepath.Join(root, name), 1})
		must(os.Mkdir(dirs[len(dirs)-1].path, 0o755))
	}
	for len(dirs) < files/20 {
		parent := dirs[rng.IntN(len(dirs))]
		if parent.depth >= 7 {
			continue
		}
		d := dir{filepath.Join(parent.path, fmt.Sprintf("d%04d", len(dirs))), parent.depth + 1}
		must(os.Mkdir(d.path, 0o755))
		dirs = append(dirs, d)
	}
	entries := len(dirs)
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for i := 0; i < files; i++ {
		d := dirs[rng.IntN(len(dirs))]
		size := int(1024 * math.Exp2(rng.Float64()*6))
		content := data[:size]
		binary.LittleEndian.PutUint64(content, uint64(i)) // distinct files
		name := filepath.Join(d.path, fmt.Sprintf("f%05d", i))
		must(os.WriteFile(name, content, 0o644))
		entries++
		if i%50 == 0 {
			must(os.Symlink(filepath.Base(name), name+".link"))
			entries++
		}
	}
	return entries
}

// syncDir fsyncs a directory: on reflinkfs that commits everything.
func syncDir(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestCloneTreeTiming times clone -r of a 10,000-file tree through a
// reflinkfs mount: the one-request CLONE_TREE ioctl against the file-by-file
// walk, median of three runs each, alternating; every run starts from an
// image holding the source tree only. It is a measurement, not a
// check, and runs only when REFLINKFS_CLONETREE_TIMING is set: to 1 to mount
// a fresh image in the test process, or to a directory on a mount served by
// a reflinkfs daemon. REFLINKFS_CLONETREE_FILES changes the file count.
//
//	REFLINKFS_CLONETREE_TIMING=1 go test -run TestCloneTreeTiming -v ./cmd/reflinkfs
func TestCloneTreeTiming(t *testing.T) {
	where := os.Getenv("REFLINKFS_CLONETREE_TIMING")
	if where == "" {
		t.Skip("a measurement; set REFLINKFS_CLONETREE_TIMING=1 (or a directory on a reflinkfs mount)")
	}
	files := 10000
	if n, err := strconv.Atoi(os.Getenv("REFLINKFS_CLONETREE_FILES")); err == nil && n > 0 {
		files = n
	}
	base := where
	if where == "1" {
		base = mountReflinkfs(t)
	} else {
		dir, err := os.MkdirTemp(where, "clonetree-timing-")
		if err != nil {
			t.Fatal(err)
		}
		base = dir
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	src := filepath.Join(base, "src")
	start := time.Now()
	entries := makeRootfsTree(t, src, files)
	syncDir(t, base)
	t.Logf("tree: %d files, %d entries, written in %v", files, entries, time.Since(start).Round(time.Millisecond))

	noWalk := func(dst, src *os.File) error { return errors.New("the one-request clone fell back to the walk") }
	measure := func(name string, i int) time.Duration {
		dst := filepath.Join(base, fmt.Sprintf("%s%d", name, i))
		start := time.Now()
		var err error
		if name == "ioctl" {
			err = cloneTreeAuto(src, dst, noWalk, io.Discard)
		} else {
			err = cloneTree(src, dst, cloneFD, io.Discard)
		}
		d := time.Since(start)
		if err != nil {
			t.Fatalf("%s clone: %v", name, err)
		}
		// Untimed: commit and remove the copy, so every run starts from an
		// image holding the source tree only.
		syncDir(t, base)
		if err := os.RemoveAll(dst); err != nil {
			t.Fatal(err)
		}
		syncDir(t, base)
		return d
	}
	var fast, walk []time.Duration
	for i := 0; i < 3; i++ {
		if i%2 == 0 {
			fast = append(fast, measure("ioctl", i))
			walk = append(walk, measure("walk", i))
		} else {
			walk = append(walk, measure("walk", i))
			fast = append(fast, measure("ioctl", i))
		}
	}
	median := func(ds []time.Duration) time.Duration {
		s := append([]time.Duration(nil), ds...)
		slices.Sort(s)
		return s[len(s)/2]
	}
	mf, mw := median(fast), median(walk)
	t.Logf("clone -r of %d files (%d entries), median of 3:", files, entries)
	t.Logf("  CLONE_TREE ioctl  %8v  (runs %v)  %6.0f entries/s", mf.Round(time.Millisecond), fast, float64(entries)/mf.Seconds())
	t.Logf("  file-by-file walk %8v  (runs %v)  %6.0f entries/s", mw.Round(time.Millisecond), walk, float64(entries)/mw.Seconds())
	t.Logf("  speedup %.1fx", mw.Seconds()/mf.Seconds())
}

// The walk, run by a user, makes what cp -a run by that user makes: no
// device nodes (the kernel refuses them), no set-ID bits on copies of files
// the user does not own with their group, hard links and user xattrs kept.
// The test binary runs itself as nobody for the walk.
func TestCloneTreeWalkAsUserLikeCp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to build a tree of other users' files and to run as nobody")
	}
	for _, tool := range []string{"setfattr", "getfattr", "mknod", "mkfifo"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, "tool %s not installed (apt-get install -y attr): %v", tool, err)
		}
	}
	base := t.TempDir()
	for d := base; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src, dst := filepath.Join(base, "src"), filepath.Join(base, "dst")
	shell := func(script string) string {
		t.Helper()
		out, err := exec.Command("sh", "-c", "set -e; "+script).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		return string(out)
	}
	shell(`mkdir ` + src + ` ` + dst + ` && chmod 777 ` + dst + ` && cd ` + src + `
mknod blk b 8 0; mkfifo fifo
printf x > suid_root; chmod 4755 suid_root
printf x > sticky_root; chmod 1755 sticky_root
printf x > suid_nobody; chown 65534:65534 suid_nobody; chmod 6755 suid_nobody
printf x > nobody_rootgroup; chown 65534:0 nobody_rootgroup; chmod 6755 nobody_rootgroup
mkdir sgiddir; chmod 2775 sgiddir; mkdir stickydir; chmod 1777 stickydir
mkdir nobodydir; chown 65534:65534 nobodydir; chmod 3777 nobodydir
printf h > hard1; ln hard1 hard2; setfattr -n user.u -v 1 hard1`)
	walkAsNobody := func(to string) string { return cloneTreeAsNobody(t, base, "walk", src, to) }
	listing := func(dir string) string {
		return shell(`cd ` + dir + ` && find . -printf '%P %y %M %U:%G %n\n' | sort && find . | sort | xargs getfattr -h -d -m -`)
	}

	if out := walkAsNobody(filepath.Join(dst, "walk")); !strings.Contains(out, "blk: operation not permitted") {
		t.Errorf("walk as nobody over a device node: %s", out)
	}
	if got := shell(`find ` + dst + ` -type b`); got != "" {
		t.Errorf("walk as nobody made a device node: %s", got)
	}
	shell(`rm ` + src + `/blk`)
	cmd := exec.Command("cp", "-a", src, filepath.Join(dst, "cp"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cp -a as nobody: %v\n%s", err, out)
	}
	if out := walkAsNobody(filepath.Join(dst, "walk2")); strings.Contains(out, "error:") {
		t.Errorf("walk as nobody: %s", out)
	}
	if want, got := listing(filepath.Join(dst, "cp")), listing(filepath.Join(dst, "walk2")); got != want {
		t.Errorf("walk as nobody differs from cp -a as nobody\ncp -a:\n%s\nwalk:\n%s", want, got)
	}
}

// TestCloneTreeAsUserHelper is what cloneTreeAsNobody runs as nobody: a
// tree clone by the walk alone ("walk") or as clone -r does it ("auto"),
// or a file clone ("file").
func TestCloneTreeAsUserHelper(t *testing.T) {
	args := os.Getenv("REFLINKFS_TEST_CLONE_AS_USER")
	if args == "" {
		t.Skip("run by other tests as another user")
	}
	how, rest, _ := strings.Cut(args, "\n")
	src, dst, _ := strings.Cut(rest, "\n")
	var err error
	switch how {
	case "walk":
		err = cloneTree(src, dst, copyClone, os.Stderr)
	case "file":
		err = cloneOneFile(src, dst)
	default:
		err = cloneTreeAuto(src, dst, cloneFD, os.Stderr)
	}
	if err != nil {
		fmt.Println("error:", err)
	}
}

// cloneTreeAsNobody runs TestCloneTreeAsUserHelper as nobody from a copy
// of the test binary in dir (go test's own directory is root's only) and
// returns its output.
func cloneTreeAsNobody(t *testing.T, dir, how, src, dst string) string {
	t.Helper()
	bin := filepath.Join(dir, "clone-as-user.test")
	if _, err := os.Stat(bin); err != nil {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", exe, bin).CombinedOutput(); err != nil {
			t.Fatalf("copy the test binary: %v\n%s", err, out)
		}
		if err := os.Chmod(bin, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-test.run=^TestCloneTreeAsUserHelper$")
	cmd.Env = append(os.Environ(), "REFLINKFS_TEST_CLONE_AS_USER="+how+"\n"+src+"\n"+dst)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("clone as nobody: %v\n%s", err, out)
	}
	return string(out)
}

// clone -r run by a user on a mount (one CLONE_TREE request) makes no
// device node and says why; without one the copy is the user's, without
// the set-user-ID bit of root's program.
func TestCloneTreeAsUserOnMount(t *testing.T) {
	mp := mountReflinkfs(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to run as nobody")
	}
	for d := filepath.Dir(mp); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	base := t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	src, mine := filepath.Join(mp, "src"), filepath.Join(mp, "mine")
	script := `set -e; mkdir ` + src + ` ` + mine + `; chown 65534:65534 ` + mine + `; cd ` + src + `
printf x > prog; chmod 4755 prog; mknod disk b 8 0; chmod 600 disk`
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out := cloneTreeAsNobody(t, base, "auto", src, filepath.Join(mine, "t"))
	if !strings.Contains(out, "operation not permitted") || !strings.Contains(out, "CAP_MKNOD") {
		t.Errorf("clone -r as nobody of a tree with a device node: %s", out)
	}
	if _, err := os.Lstat(filepath.Join(mine, "t", "disk")); err == nil {
		t.Errorf("clone -r as nobody made a device node")
	}
	if err := os.Remove(filepath.Join(src, "disk")); err != nil {
		t.Fatal(err)
	}
	if out := cloneTreeAsNobody(t, base, "auto", src, filepath.Join(mine, "t2")); strings.Contains(out, "error:") {
		t.Fatalf("clone -r as nobody: %s", out)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(mine, "t2", "prog"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 65534 || st.Mode&0o7777 != 0o755 {
		t.Errorf("clone -r as nobody of root's 4755 program: owner %d mode %o, want 65534 and 755", st.Uid, st.Mode&0o7777)
	}
}

// A file clone keeps set-ID and sticky bits only where the clone has the
// source's owner and group: a user's clone of root's set-user-ID program,
// or root's clone of a user's, is not set-user-ID; root's of its own is.
func TestCloneFileSetIDBits(t *testing.T) {
	mp := mountReflinkfs(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to make other users' files")
	}
	for d := filepath.Dir(mp); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script := `set -e; cd ` + mp + `; mkdir mine; chown 65534:65534 mine
printf x > rootprog; chmod 4755 rootprog
printf x > userprog; chown 1000:1000 userprog; chmod 6755 userprog`
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	base := t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if out := cloneTreeAsNobody(t, base, "file", filepath.Join(mp, "rootprog"), filepath.Join(mp, "mine", "prog")); strings.Contains(out, "error:") {
		t.Fatal(out)
	}
	for _, c := range [][2]string{{"rootprog", "rootcopy"}, {"userprog", "usercopy"}} {
		if err := cloneOneFile(filepath.Join(mp, c[0]), filepath.Join(mp, c[1])); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]string{"mine/prog": "65534 755", "rootcopy": "0 4755", "usercopy": "0 755"} {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(mp, name), &st); err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%d %o", st.Uid, st.Mode&0o7777); got != want {
			t.Errorf("%s: owner and mode %s, want %s", name, got, want)
		}
	}
}
