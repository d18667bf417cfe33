package crashtest

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"strings"
)

// BlockSize is the unit the model tracks written contents in (reflinkfs's).
const BlockSize = 4096

// Model is what a workload's files should hold: the namespace (directories
// and the file each path names) and every file's bytes. Files are nodes, so
// hard links, renames and files unlinked while open work as in a real
// filesystem. It also remembers, per file and block, every content the
// block ever held (zeros included), to tell stale data from lost writes.
type Model struct {
	files  map[string]*node // path -> file
	dirs   map[string]bool  // directories other than the root
	nextID int
	// history[id][block] is the set of hashes of every content block
	// `block` of file id has held.
	history map[int]map[int64]map[uint64]bool
}

type node struct {
	id   int
	data []byte
}

var hashSeed = maphash.MakeSeed()

func blockHash(b []byte) uint64 {
	if len(b) < BlockSize {
		var full [BlockSize]byte
		copy(full[:], b)
		return maphash.Bytes(hashSeed, full[:])
	}
	return maphash.Bytes(hashSeed, b[:BlockSize])
}

// NewModel returns the model of an empty filesystem.
func NewModel() *Model {
	return &Model{files: map[string]*node{}, dirs: map[string]bool{}, history: map[int]map[int64]map[uint64]bool{}}
}

func (m *Model) newNode() *node {
	m.nextID++
	n := &node{id: m.nextID}
	m.remember(n)
	return n
}

// remember adds n's current blocks to its history.
func (m *Model) remember(n *node) { m.rememberRange(n, 0, int64(len(n.data))) }

// rememberRange adds n's current blocks holding bytes [from, to) to its
// history.
func (m *Model) rememberRange(n *node, from, to int64) {
	h := m.history[n.id]
	if h == nil {
		h = map[int64]map[uint64]bool{}
		m.history[n.id] = h
	}
	for b := from / BlockSize; b*BlockSize < min(to, int64(len(n.data))); b++ {
		end := min(int64(len(n.data)), (b+1)*BlockSize)
		set := h[b]
		if set == nil {
			set = map[uint64]bool{}
			h[b] = set
		}
		set[blockHash(n.data[b*BlockSize:end])] = true
	}
}

func (m *Model) parentExists(path string) bool {
	i := strings.LastIndexByte(path, '/')
	return i < 0 || m.dirs[path[:i]]
}

// Mkdir adds a directory.
func (m *Model) Mkdir(path string) {
	if !m.parentExists(path) || m.dirs[path] || m.files[path] != nil {
		panic("model: bad mkdir " + path)
	}
	m.dirs[path] = true
}

// Create adds an empty file at path (which must not exist) and returns it.
func (m *Model) Create(path string) *node {
	if !m.parentExists(path) || m.dirs[path] || m.files[path] != nil {
		panic("model: bad create " + path)
	}
	n := m.newNode()
	m.files[path] = n
	return n
}

// Lookup returns the file at path, or nil.
func (m *Model) Lookup(path string) *node { return m.files[path] }

// Remove unlinks a file or removes an empty directory.
func (m *Model) Remove(path string) {
	if m.files[path] != nil {
		delete(m.files, path)
		return
	}
	if !m.dirs[path] {
		panic("model: remove of missing " + path)
	}
	for p := range m.files {
		if strings.HasPrefix(p, path+"/") {
			panic("model: remove of non-empty " + path)
		}
	}
	delete(m.dirs, path)
}

// Rename moves a file over another file, or a directory (and everything in
// it) to a new name.
func (m *Model) Rename(from, to string) {
	if n := m.files[from]; n != nil {
		delete(m.files, from)
		m.files[to] = n
		return
	}
	if !m.dirs[from] {
		panic("model: rename of missing " + from)
	}
	delete(m.dirs, from)
	m.dirs[to] = true
	for p, n := range maps.Clone(m.files) {
		if rest, ok := strings.CutPrefix(p, from+"/"); ok {
			delete(m.files, p)
			m.files[to+"/"+rest] = n
		}
	}
	for d := range maps.Clone(m.dirs) {
		if rest, ok := strings.CutPrefix(d, from+"/"); ok {
			delete(m.dirs, d)
			m.dirs[to+"/"+rest] = true
		}
	}
}

// Link names an existing file under a second path.
func (m *Model) Link(from, to string) {
	n := m.files[from]
	if n == nil || m.files[to] != nil {
		panic("model: bad link")
	}
	m.files[to] = n
}

func (n *node) resize(size int64) {
	if size <= int64(len(n.data)) {
		n.data = n.data[:size]
		return
	}
	n.data = append(n.data, make([]byte, size-int64(len(n.data)))...)
}

// Write stores data at off, growing the file.
func (m *Model) Write(n *node, off int64, data []byte) {
	from := off // blocks changed: the written ones, and the zeros a gap past the end reads as
	if end := off + int64(len(data)); end > int64(len(n.data)) {
		from = min(from, int64(len(n.data)))
		n.resize(end)
	}
	copy(n.data[off:], data)
	m.rememberRange(n, from, off+int64(len(data)))
}

// Truncate sets the size; growth reads as zeros.
func (m *Model) Truncate(n *node, size int64) {
	n.resize(size)
	m.remember(n)
}

// Zero makes [off, off+length) zeros; the size grows to off+length unless
// keepSize (punch hole and zero range with KEEP_SIZE do not grow it).
func (m *Model) Zero(n *node, off, length int64, keepSize bool) {
	if end := off + length; !keepSize && end > int64(len(n.data)) {
		n.resize(end)
	}
	if off < int64(len(n.data)) {
		clear(n.data[off:min(off+length, int64(len(n.data)))])
	}
	m.remember(n)
}

// Copy copies length bytes of src at srcOff to dst at dstOff (clone range,
// copy_file_range): the bytes are dst's from now on.
func (m *Model) Copy(dst, src *node, srcOff, length, dstOff int64) {
	data := bytes.Clone(src.data[srcOff : srcOff+length])
	m.Write(dst, dstOff, data)
}

// Replace gives dst a copy of src's whole contents (clone of a file).
func (m *Model) Replace(dst, src *node) {
	dst.data = bytes.Clone(src.data)
	m.remember(dst)
}

// FileState is one file of a Snapshot.
type FileState struct {
	ID   int
	Data []byte
}

// Snapshot is the namespace and contents at one moment.
type Snapshot struct {
	Files map[string]FileState
	Dirs  map[string]bool
}

// Snapshot copies the current state.
func (m *Model) Snapshot() Snapshot {
	s := Snapshot{Files: map[string]FileState{}, Dirs: maps.Clone(m.dirs)}
	for p, n := range m.files {
		s.Files[p] = FileState{ID: n.id, Data: bytes.Clone(n.data)}
	}
	return s
}

// neverHeld returns the first block of data (read from the file that was
// file id) whose contents that file never held, or -1.
func (m *Model) neverHeld(id int, data []byte) int64 {
	if id < 0 {
		return -1 // a file the model did not write: no history
	}
	h := m.history[id]
	for b := int64(0); b*BlockSize < int64(len(data)); b++ {
		end := min(int64(len(data)), (b+1)*BlockSize)
		if !h[b][blockHash(data[b*BlockSize:end])] {
			return b
		}
	}
	return -1
}

// Diff describes how got differs from want (nil when equal). model, when
// set, is used to say whether differing bytes were ever written to the file
// (stale data) or are an older or newer version (lost or unexpected data).
func (want Snapshot) Diff(got Snapshot, model *Model) []string {
	var out []string
	for _, d := range slices.Sorted(maps.Keys(want.Dirs)) {
		if !got.Dirs[d] {
			out = append(out, fmt.Sprintf("directory %s is missing", d))
		}
	}
	for _, d := range slices.Sorted(maps.Keys(got.Dirs)) {
		if !want.Dirs[d] {
			out = append(out, fmt.Sprintf("directory %s should not exist", d))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(want.Files)) {
		w := want.Files[p]
		g, ok := got.Files[p]
		if !ok {
			out = append(out, fmt.Sprintf("file %s is missing", p))
			continue
		}
		if model != nil {
			if b := model.neverHeld(w.ID, g.Data); b >= 0 {
				out = append(out, fmt.Sprintf("file %s block %d holds bytes never written to that file (stale or foreign data)", p, b))
			}
		}
		if len(g.Data) != len(w.Data) {
			out = append(out, fmt.Sprintf("file %s has size %d, want %d", p, len(g.Data), len(w.Data)))
		} else if !bytes.Equal(g.Data, w.Data) {
			i := 0
			for g.Data[i] == w.Data[i] {
				i++
			}
			out = append(out, fmt.Sprintf("file %s differs from byte %d (block %d)", p, i, i/BlockSize))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(got.Files)) {
		if _, ok := want.Files[p]; !ok {
			out = append(out, fmt.Sprintf("file %s should not exist", p))
		}
	}
	return out
}

// Equal reports whether two snapshots hold the same namespace and bytes.
func (want Snapshot) Equal(got Snapshot) bool { return len(want.Diff(got, nil)) == 0 }
