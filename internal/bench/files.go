package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// blockSize is the unit of random writes (and of both file systems).
const blockSize = 4096

// chunkSize is the buffer of sequential writes.
const chunkSize = 1 << 20

// randomBytes returns n pseudo-random bytes from seed.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8(seedBytes(seed)).Read(b)
	return b
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return s
}

// stamp writes the block's file offset and a seed into its first bytes, so
// no two blocks of the benchmark's files are identical.
func stamp(block []byte, off int64, seed uint64) {
	binary.LittleEndian.PutUint64(block[0:], uint64(off))
	binary.LittleEndian.PutUint64(block[8:], seed)
}

// writeSequential creates path with size bytes written in 1 MiB chunks and
// fsyncs it: on both file systems this gives few, large extents.
func writeSequential(ctx context.Context, path string, size int64, seed uint64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := randomBytes(chunkSize, seed)
	for off := int64(0); off < size; off += chunkSize {
		if off%(256<<20) == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		n := min(chunkSize, size-off)
		for b := int64(0); b < n; b += blockSize {
			stamp(buf[b:], off+b, seed)
		}
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// writeRandomBlocks creates path by writing each of its 4 KiB blocks once,
// in random order, with O_DIRECT, then fsyncs. Both file systems then
// allocate every block on its own, next to the previously written block
// rather than to its file neighbours: about one extent per block. If
// filler is not empty, a second file of the same size is written the same
// way, alternating block by block, so the two files' blocks interleave on
// disk.
func writeRandomBlocks(ctx context.Context, path, filler string, size int64, seed uint64) error {
	paths := []string{path}
	if filler != "" {
		paths = append(paths, filler)
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, p := range paths {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_DIRECT, 0o644)
		if err != nil {
			return err
		}
		files = append(files, f)
	}
	buf := alignedBlock()
	copy(buf, randomBytes(blockSize, seed))
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	for i, b := range rng.Perm(int(size / blockSize)) {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		off := int64(b) * blockSize
		for j, f := range files {
			stamp(buf, off, seed+uint64(j))
			if _, err := f.WriteAt(buf, off); err != nil {
				return err
			}
		}
	}
	for _, f := range files {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	return nil
}

// alignedBlock returns a 4 KiB buffer aligned for O_DIRECT.
func alignedBlock() []byte {
	b := make([]byte, 2*blockSize)
	skip := (blockSize - int(uintptr(unsafe.Pointer(&b[0]))%blockSize)) % blockSize
	return b[skip : skip+blockSize]
}

// readResult is one sequential read of a file.
type readResult struct {
	Bytes   int64
	Elapsed time.Duration
	CPU     time.Duration // the reading thread's own CPU time (user+system)
}

// readFile reads path from start to end with read(2) calls of bufSize
// bytes (no O_DIRECT: the file system's normal read path).
func readFile(path string, bufSize int) (readResult, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, bufSize)
	cpu0 := threadCPU()
	start := time.Now()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return readResult{}, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}()
	var total int64
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return readResult{}, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			break
		}
		total += int64(n)
	}
	err = unix.Close(fd)
	fd = -1
	if err != nil {
		return readResult{}, &os.PathError{Op: "close", Path: path, Err: err}
	}
	return readResult{Bytes: total, Elapsed: time.Since(start), CPU: threadCPU() - cpu0}, nil
}

// randomBlockOffsets returns n offsets of 4 KiB blocks below size.
func randomBlockOffsets(n int, size int64, seed uint64) []int64 {
	rng := rand.New(rand.NewPCG(seed, 7))
	blocks := size / blockSize
	out := make([]int64, n)
	for i := range out {
		out[i] = rng.Int64N(blocks) * blockSize
	}
	return out
}

// overwriteBlocks writes one 4 KiB block at each offset (buffered, in the
// given order), then fsyncs.
func overwriteBlocks(ctx context.Context, path string, offsets []int64, seed uint64) (write, fsync time.Duration, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	buf := randomBytes(blockSize, seed)
	start := time.Now()
	for i, off := range offsets {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return 0, 0, err
			}
		}
		stamp(buf, off, seed+uint64(i))
		if _, err := f.WriteAt(buf, off); err != nil {
			return 0, 0, err
		}
	}
	write = time.Since(start)
	if err := f.Sync(); err != nil {
		return 0, 0, err
	}
	fsync = time.Since(start) - write
	return write, fsync, f.Close()
}

// treeInfo describes a generated tree.
type treeInfo struct {
	Files, Dirs, Symlinks int
	Bytes                 int64
}

// makeTree creates a tree shaped like a container's root file system under
// root (which must not exist): nested directories of varying depth, files
// of 1–64 KiB with mostly small sizes (log-uniform), a few symbolic links.
// The same seed gives the same tree.
func makeTree(ctx context.Context, root string, files int, seed uint64) (treeInfo, error) {
	rng := rand.New(rand.NewPCG(seed, 11))
	var info treeInfo
	if err := os.Mkdir(root, 0o755); err != nil {
		return info, err
	}
	type dir struct {
		path  string
		depth int
	}
	// About 20 files per directory, parents chosen at random among the
	// shallower directories: a few wide top levels and deep narrow chains,
	// like usr/share/... of a distribution image.
	dirs := []dir{{root, 0}}
	top := []string{"bin", "etc", "lib", "usr", "var", "opt", "srv"}
	for _, name := range top {
		p := filepath.Join(root, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			return info, err
		}
		dirs = append(dirs, dir{p, 1})
	}
	for len(dirs) < max(files/20, len(top)+1) {
		parent := dirs[1+rng.IntN(len(dirs)-1)]
		if parent.depth >= 7 {
			continue
		}
		p := filepath.Join(parent.path, fmt.Sprintf("d%03d", len(dirs)))
		if err := os.Mkdir(p, 0o755); err != nil {
			return info, err
		}
		dirs = append(dirs, dir{p, parent.depth + 1})
	}
	info.Dirs = len(dirs) - 1
	data := randomBytes(64<<10+blockSize, seed)
	for i := 0; i < files; i++ {
		if i%512 == 0 {
			if err := ctx.Err(); err != nil {
				return info, err
			}
		}
		d := dirs[1+rng.IntN(len(dirs)-1)]
		// log-uniform between 1 KiB and 64 KiB
		size := int(1024 * math.Exp2(rng.Float64()*6))
		p := filepath.Join(d.path, fmt.Sprintf("f%05d", i))
		start := rng.IntN(blockSize)
		content := data[start : start+size]
		binary.LittleEndian.PutUint64(content, uint64(i)) // distinct files
		if err := os.WriteFile(p, content, 0o644); err != nil {
			return info, err
		}
		info.Files++
		info.Bytes += int64(size)
		if i%50 == 0 {
			if err := os.Symlink(fmt.Sprintf("f%05d", i), p+".link"); err != nil {
				return info, err
			}
			info.Symlinks++
		}
	}
	return info, nil
}

// readTree reads every regular file under root in full (directory order,
// 64 KiB reads) and returns the files and bytes read.
func readTree(ctx context.Context, root string) (files int, bytes int64, err error) {
	buf := make([]byte, 64<<10)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if files%512 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		n, err := io.CopyBuffer(io.Discard, onlyReader{f}, buf)
		f.Close()
		if err != nil {
			return err
		}
		files++
		bytes += n
		return nil
	})
	return files, bytes, err
}

// onlyReader hides WriterTo, so io.CopyBuffer uses our buffer.
type onlyReader struct{ io.Reader }

// regularFiles lists the regular files under root, sorted.
func regularFiles(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// fincoreBytes sums the page cache bytes of files as fincore(1) reports
// them, in batches to stay below the argument length limit.
func fincoreBytes(ctx context.Context, files []string) (int64, error) {
	const batch = 1000
	var total int64
	for i := 0; i < len(files); i += batch {
		args := append([]string{"--json", "--bytes", "--"}, files[i:min(i+batch, len(files))]...)
		out, err := runCmd(ctx, "fincore", args...)
		if err != nil {
			return 0, err
		}
		res, err := parseFincoreJSON([]byte(out))
		if err != nil {
			return 0, err
		}
		for _, n := range res {
			total += n
		}
	}
	return total, nil
}
