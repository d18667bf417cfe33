package crashtest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/reflinkfs/reflinkfs"
)

// W runs a workload's operations on the recorded image and on the model
// together. Every operation must succeed, and after each one the files it
// touched must read back as the model says; otherwise the workload stops
// (Record returns the error). Commits happen only in the sync calls (Sync,
// SyncFS, Fsck), so the model at each commit is what it made durable.
type W struct {
	fs      *reflinkfs.FS
	m       *Model
	rng     *rand.Rand
	rec     *Recording
	syncing bool   // inside a call that may commit
	op      string // the operation running, for messages
	closed  bool
	nextTag int
	// reapingSyncs counts sync calls that returned with background freeing
	// still under way: their commit caught a file partly freed.
	reapingSyncs int
}

// File is a file the workload has open.
type File struct {
	w    *W
	f    *reflinkfs.File
	n    *node
	path string
}

type workloadFailure struct{ msg string }

func (w *W) fail(format string, args ...any) {
	panic(workloadFailure{msg: w.op + ": " + fmt.Sprintf(format, args...)})
}

func (w *W) begin(format string, args ...any) {
	if w.closed {
		panic("crashtest: workload used after Record returned")
	}
	w.op = fmt.Sprintf(format, args...)
}

func (w *W) check(err error) {
	if err != nil {
		w.fail("%v", err)
	}
}

// Rand is the workload's seeded random source.
func (w *W) Rand() *rand.Rand { return w.rng }

// Data returns n bytes no earlier call returned: random bytes, or (one time
// in eight) zeros, since writing zeros must be kept apart from never writing.
func (w *W) Data(n int) []byte {
	b := make([]byte, n)
	if w.rng.IntN(8) == 0 {
		return b
	}
	for i := 0; i < n; i += 8 {
		v := w.rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// verify reads f back through the image and compares it with the model.
func (f *File) verify() {
	a, err := f.f.Attr()
	f.w.check(err)
	if a.Size != int64(len(f.n.data)) {
		f.w.fail("%s: size %d, model %d", f.path, a.Size, len(f.n.data))
	}
	got := make([]byte, a.Size)
	if a.Size > 0 {
		n, err := f.f.ReadAt(got, 0)
		if n != len(got) {
			f.w.fail("%s: read %d of %d bytes: %v", f.path, n, len(got), err)
		}
	}
	if !bytes.Equal(got, f.n.data) {
		i := 0
		for got[i] == f.n.data[i] {
			i++
		}
		f.w.fail("%s: reads differ from the model at byte %d", f.path, i)
	}
}

// Mkdir creates a directory.
func (w *W) Mkdir(path string) {
	w.begin("mkdir %s", path)
	w.check(w.fs.Mkdir(path, 0o755))
	w.m.Mkdir(path)
}

// Create creates (or truncates) path and opens it read-write.
func (w *W) Create(path string) *File {
	w.begin("create %s", path)
	f, err := w.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	w.check(err)
	n := w.m.Lookup(path)
	if n == nil {
		n = w.m.Create(path)
	} else {
		w.m.Truncate(n, 0)
	}
	file := &File{w: w, f: f, n: n, path: path}
	file.verify()
	return file
}

// Open opens an existing file read-write.
func (w *W) Open(path string) *File {
	w.begin("open %s", path)
	n := w.m.Lookup(path)
	if n == nil {
		w.fail("model has no file %s", path)
	}
	f, err := w.fs.OpenFile(path, os.O_RDWR, 0)
	w.check(err)
	file := &File{w: w, f: f, n: n, path: path}
	file.verify()
	return file
}

// WriteFile creates path with n new bytes and closes it.
func (w *W) WriteFile(path string, n int) {
	f := w.Create(path)
	if n > 0 {
		f.Write(0, n)
	}
	f.Close()
}

// Remove unlinks a file or removes an empty directory.
func (w *W) Remove(path string) {
	w.begin("remove %s", path)
	w.check(w.fs.Remove(path))
	w.m.Remove(path)
}

// Rename renames from to to, replacing a file at to.
func (w *W) Rename(from, to string) {
	w.begin("rename %s %s", from, to)
	w.check(w.fs.Rename(from, to))
	w.m.Rename(from, to)
}

// Link makes to a hard link of from.
func (w *W) Link(from, to string) {
	w.begin("link %s %s", from, to)
	w.check(w.fs.Link(from, to))
	w.m.Link(from, to)
}

// Clone makes dst (created if missing) a clone of src's whole contents.
func (w *W) Clone(src, dst string) {
	w.begin("clone %s %s", src, dst)
	s := w.m.Lookup(src)
	if s == nil {
		w.fail("model has no file %s", src)
	}
	w.check(w.fs.Clone(src, dst))
	d := w.m.Lookup(dst)
	if d == nil {
		d = w.m.Create(dst)
	}
	w.m.Replace(d, s)
}

// SyncFS makes everything durable (syncfs). It commits.
func (w *W) SyncFS() {
	w.begin("syncfs")
	w.syncing = true
	err := w.fs.Sync()
	w.syncing = false
	w.check(err)
	w.noteReaping()
}

// noteReaping counts a sync that returned while the reaper was still busy.
func (w *W) noteReaping() {
	if w.fs.Stats().ReapingFiles > 0 {
		w.reapingSyncs++
	}
}

// WaitReaped waits for the background freeing of deleted files to finish
// (its work is durable at the next sync).
func (w *W) WaitReaped() {
	w.begin("wait reaped")
	w.fs.WaitReaped()
}

// Fsck checks the recorded image (it commits first) and fails the workload
// on any problem.
func (w *W) Fsck() {
	w.begin("fsck")
	w.syncing = true
	rep, err := w.fs.Fsck(false)
	w.syncing = false
	w.check(err)
	w.noteReaping()
	if !rep.Clean() {
		w.fail("%s", strings.Join(rep.Problems, "; "))
	}
}

// CheckAll reads every file and compares the whole namespace with the model.
func (w *W) CheckAll() {
	w.begin("check all")
	got, problems := ReadState(w.fs)
	if len(problems) > 0 {
		w.fail("%s", strings.Join(problems, "; "))
	}
	if diff := w.m.Snapshot().Diff(got, nil); len(diff) > 0 {
		w.fail("%s", strings.Join(diff, "; "))
	}
}

// Size is the file's size in the model.
func (f *File) Size() int64 { return int64(len(f.n.data)) }

// Write writes n new bytes at off and returns them.
func (f *File) Write(off int64, n int) []byte {
	data := f.w.Data(n)
	f.WriteData(off, data)
	return data
}

// WriteData writes data at off.
func (f *File) WriteData(off int64, data []byte) {
	f.w.begin("write %s %d+%d", f.path, off, len(data))
	_, err := f.f.WriteAt(data, off)
	f.w.check(err)
	f.w.m.Write(f.n, off, data)
	f.verify()
}

// WriteEvery writes n new bytes at off, off+stride, ... (count writes) and
// checks the file once at the end: a cheap way to make many extents.
func (f *File) WriteEvery(off, stride int64, count, n int) {
	for i := range count {
		at := off + int64(i)*stride
		data := f.w.Data(n)
		f.w.begin("write %s %d+%d (%d of %d)", f.path, at, n, i+1, count)
		_, err := f.f.WriteAt(data, at)
		f.w.check(err)
		f.w.m.Write(f.n, at, data)
	}
	f.verify()
}

// Truncate sets the size.
func (f *File) Truncate(size int64) {
	f.w.begin("truncate %s %d", f.path, size)
	f.w.check(f.f.Truncate(size))
	f.w.m.Truncate(f.n, size)
	f.verify()
}

// Punch punches a hole (size unchanged).
func (f *File) Punch(off, length int64) {
	f.w.begin("punch %s %d+%d", f.path, off, length)
	f.w.check(f.f.PunchHole(off, length))
	f.w.m.Zero(f.n, off, length, true)
	f.verify()
}

// Zero zeroes a range (fallocate ZERO_RANGE), growing the file unless keepSize.
func (f *File) Zero(off, length int64, keepSize bool) {
	f.w.begin("zero %s %d+%d keep=%v", f.path, off, length, keepSize)
	if keepSize {
		f.w.check(f.f.ZeroRangeKeepSize(off, length))
	} else {
		f.w.check(f.f.ZeroRange(off, length))
	}
	f.w.m.Zero(f.n, off, length, keepSize)
	f.verify()
}

// Allocate preallocates a range (fallocate mode 0 or KEEP_SIZE).
func (f *File) Allocate(off, length int64, keepSize bool) {
	f.w.begin("allocate %s %d+%d keep=%v", f.path, off, length, keepSize)
	if keepSize {
		f.w.check(f.f.AllocateKeepSize(off, length))
	} else {
		f.w.check(f.f.Allocate(off, length))
	}
	if !keepSize && off+length > f.Size() {
		f.w.m.Truncate(f.n, off+length)
	}
	f.verify()
}

// CloneFrom makes f a clone of src's whole contents (FICLONE).
func (f *File) CloneFrom(src *File) {
	f.w.begin("clone file %s <- %s", f.path, src.path)
	f.w.check(f.f.CloneFile(src.f))
	f.w.m.Replace(f.n, src.n)
	f.verify()
}

// CloneRange shares src's blocks [srcOff, srcOff+length) at dstOff
// (FICLONERANGE; block-aligned offsets, length aligned or reaching src's EOF).
func (f *File) CloneRange(src *File, srcOff, length, dstOff int64) {
	f.w.begin("clone range %s@%d <- %s@%d+%d", f.path, dstOff, src.path, srcOff, length)
	f.w.check(f.f.CloneRange(src.f, srcOff, length, dstOff))
	if length == 0 {
		length = src.Size() - srcOff
	}
	f.w.m.Copy(f.n, src.n, srcOff, length, dstOff)
	f.verify()
}

// Dedupe shares src's blocks with f's identical ones.
func (f *File) Dedupe(src *File, srcOff, length, dstOff int64) {
	f.w.begin("dedupe %s@%d <- %s@%d+%d", f.path, dstOff, src.path, srcOff, length)
	n, err := f.f.DedupeRange(src.f, srcOff, length, dstOff)
	f.w.check(err)
	if n == 0 {
		f.w.fail("deduplicated nothing")
	}
	f.verify()
}

// CopyRange copies bytes (copy_file_range: shares what is aligned).
func (f *File) CopyRange(src *File, srcOff, length, dstOff int64) {
	f.w.begin("copy range %s@%d <- %s@%d+%d", f.path, dstOff, src.path, srcOff, length)
	n, err := f.f.CopyRange(src.f, srcOff, length, dstOff)
	f.w.check(err)
	want := min(length, max(src.Size()-srcOff, 0))
	if n != want {
		f.w.fail("copied %d bytes, want %d", n, want)
	}
	f.w.m.Copy(f.n, src.n, srcOff, n, dstOff)
	f.verify()
}

// Sync is fsync: it commits.
func (f *File) Sync() {
	f.w.begin("fsync %s", f.path)
	f.w.syncing = true
	err := f.f.Sync()
	f.w.syncing = false
	f.w.check(err)
	f.w.noteReaping()
}

// Close closes the file (an unlinked file is freed at its last close).
func (f *File) Close() {
	f.w.begin("close %s", f.path)
	f.w.check(f.f.Close())
}
