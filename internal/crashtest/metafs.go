package crashtest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/vfs"
)

// MetaFS is the filesystem the metadata store (pebble) runs in during a
// recorded workload. It forwards every call to an in-memory vfs.MemFS and
// logs every change (file creation, write, sync, rename, removal, directory
// creation) in the order it took effect, each tagged with the data device's
// operation count at that moment. From the log, State rebuilds the files as
// a crash after any prefix of it leaves them: after a power cut only synced
// file data and synced directory entries survive; after a process kill
// everything written survives.
//
// The log is ordered by one mutex held across the forwarded call, so log
// order is the order the changes happened in.
type MetaFS struct {
	live *vfs.MemFS
	tag  func() int // data device operations done so far

	mu      sync.Mutex
	events  []metaEvent
	handles int

	cacheMu   sync.Mutex
	cacheKey  [2]int
	cacheFS   *vfs.MemFS
	cacheUsed bool
}

type eventKind int

const (
	evCreate    eventKind = iota + 1 // Create(path) -> handle
	evOpen                           // Open(path) -> handle (read only, or a directory)
	evOpenRW                         // OpenReadWrite(path) -> handle
	evLink                           // Link(path, path2)
	evRemove                         // Remove(path)
	evRemoveAll                      // RemoveAll(path)
	evRename                         // Rename(path, path2)
	evReuse                          // ReuseForWrite(path, path2) -> handle
	evMkdirAll                       // MkdirAll(path)
	evLock                           // Lock(path): creates the file
	evWrite                          // handle.Write(data)
	evWriteAt                        // handle.WriteAt(data, off)
	evSync                           // handle.Sync()
)

// metaEvent is one logged change. Tag is the number of data device
// operations completed when it happened.
type metaEvent struct {
	kind        eventKind
	path, path2 string
	handle      int
	data        []byte
	off         int64
	tag         int
}

// NewMetaFS returns an empty recording filesystem. tag reports how many data
// device operations have completed; every logged event carries its value.
func NewMetaFS(tag func() int) *MetaFS {
	return &MetaFS{live: vfs.NewMem(), tag: tag}
}

var _ vfs.FS = (*MetaFS)(nil)

// log appends an event; the caller holds m.mu.
func (m *MetaFS) log(e metaEvent) {
	e.tag = m.tag()
	m.events = append(m.events, e)
}

func (m *MetaFS) newHandle() int {
	m.handles++
	return m.handles
}

// Len is the number of events logged so far.
func (m *MetaFS) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.events)
}

// Tags returns the device-operation tag of every event, in log order.
func (m *MetaFS) Tags() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	tags := make([]int, len(m.events))
	for i, e := range m.events {
		tags[i] = e.tag
	}
	return tags
}

// LastSync returns the index of the last logged sync of a file whose name
// ends in suffix (pebble's WAL files end in ".log"), or -1.
func (m *MetaFS) LastSync(suffix string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.events) - 1; i >= 0; i-- {
		if e := m.events[i]; e.kind == evSync && strings.HasSuffix(e.path, suffix) {
			return i
		}
	}
	return -1
}

// syncIndexes returns the indexes of every sync event.
func (m *MetaFS) syncIndexes() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []int
	for i, e := range m.events {
		if e.kind == evSync {
			out = append(out, i)
		}
	}
	return out
}

// FirstWrite returns the index of the first write in events [from, to) to a
// file whose name ends in suffix, or -1.
func (m *MetaFS) FirstWrite(suffix string, from, to int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := max(from, 0); i < min(to, len(m.events)); i++ {
		if e := m.events[i]; (e.kind == evWrite || e.kind == evWriteAt) && strings.HasSuffix(e.path, suffix) {
			return i
		}
	}
	return -1
}

// State rebuilds the filesystem as a crash right after the first n logged
// events leaves it (powerCut: only synced data and directory entries; else
// everything), and returns a new filesystem holding the tree under from
// moved to to (the metadata directory of the image a replay opens).
func (m *MetaFS) State(n int, powerCut bool, from, to string) (vfs.FS, error) {
	src, err := m.rebuild(n, powerCut)
	if err != nil {
		return nil, err
	}
	dst := vfs.NewMem()
	if ok, err := vfs.Clone(src, dst, from, to); err != nil {
		return nil, fmt.Errorf("copying crash state: %w", err)
	} else if !ok {
		// The directory did not survive: the store is missing. Open must
		// refuse such an image; give it the empty parent.
		if err := dst.MkdirAll(dst.PathDir(to), 0o755); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// rebuild replays the first n events into a strict in-memory filesystem.
// The last result is cached: consecutive crash points often share it.
func (m *MetaFS) rebuild(n int, powerCut bool) (*vfs.MemFS, error) {
	key := [2]int{n, 0}
	if powerCut {
		key[1] = 1
	}
	m.cacheMu.Lock()
	defer m.cacheMu.Unlock()
	if m.cacheUsed && m.cacheKey == key {
		return m.cacheFS, nil
	}
	m.mu.Lock()
	if n > len(m.events) {
		m.mu.Unlock()
		return nil, fmt.Errorf("crash state after %d events: only %d logged", n, len(m.events))
	}
	events := m.events[:n:n]
	m.mu.Unlock()

	fs := vfs.NewStrictMem()
	files := map[int]vfs.File{}
	for i, e := range events {
		if err := replayEvent(fs, files, e); err != nil {
			return nil, fmt.Errorf("replaying metadata event %d (%v %s): %w", i, e.kind, e.path, err)
		}
	}
	if powerCut {
		fs.ResetToSyncedState()
	}
	m.cacheKey, m.cacheFS, m.cacheUsed = key, fs, true
	return fs, nil
}

func replayEvent(fs *vfs.MemFS, files map[int]vfs.File, e metaEvent) error {
	var f vfs.File
	var err error
	switch e.kind {
	case evCreate:
		f, err = fs.Create(e.path)
	case evOpen:
		f, err = fs.Open(e.path)
	case evOpenRW:
		f, err = fs.OpenReadWrite(e.path)
	case evReuse:
		f, err = fs.ReuseForWrite(e.path, e.path2)
	case evLink:
		return fs.Link(e.path, e.path2)
	case evRemove:
		return fs.Remove(e.path)
	case evRemoveAll:
		return fs.RemoveAll(e.path)
	case evRename:
		return fs.Rename(e.path, e.path2)
	case evMkdirAll:
		return fs.MkdirAll(e.path, 0o755)
	case evLock:
		l, err := fs.Lock(e.path)
		if err != nil {
			return err
		}
		return l.Close()
	case evWrite, evWriteAt, evSync:
		h := files[e.handle]
		if h == nil {
			return fmt.Errorf("unknown handle %d", e.handle)
		}
		switch e.kind {
		case evWrite:
			_, err = h.Write(bytes.Clone(e.data))
		case evWriteAt:
			_, err = h.WriteAt(e.data, e.off)
		default:
			err = h.Sync()
		}
		return err
	default:
		return fmt.Errorf("unknown event kind %d", e.kind)
	}
	if err != nil {
		return err
	}
	files[e.handle] = f
	return nil
}

func (k eventKind) String() string {
	names := [...]string{"?", "create", "open", "open-rw", "link", "remove", "remove-all", "rename", "reuse", "mkdir-all", "lock", "write", "write-at", "sync"}
	if int(k) < len(names) {
		return names[k]
	}
	return fmt.Sprintf("eventKind(%d)", int(k))
}

// wrap returns a logging File for f opened as handle h under name.
func (m *MetaFS) wrap(f vfs.File, h int, name string) vfs.File {
	return &metaFile{File: f, m: m, h: h, name: name}
}

// open forwards an open-like call and logs it with a new handle.
func (m *MetaFS) open(kind eventKind, path, path2 string, fn func() (vfs.File, error)) (vfs.File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := fn()
	if err != nil {
		return nil, err
	}
	h := m.newHandle()
	name := path
	if kind == evReuse {
		name = path2
	}
	m.log(metaEvent{kind: kind, path: path, path2: path2, handle: h})
	return m.wrap(f, h, name), nil
}

// change forwards a namespace change and logs it when it succeeds.
func (m *MetaFS) change(kind eventKind, path, path2 string, fn func() error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := fn(); err != nil {
		return err
	}
	m.log(metaEvent{kind: kind, path: path, path2: path2})
	return nil
}

func (m *MetaFS) Create(name string) (vfs.File, error) {
	return m.open(evCreate, name, "", func() (vfs.File, error) { return m.live.Create(name) })
}

func (m *MetaFS) Link(oldname, newname string) error {
	return m.change(evLink, oldname, newname, func() error { return m.live.Link(oldname, newname) })
}

func (m *MetaFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	return m.open(evOpen, name, "", func() (vfs.File, error) { return m.live.Open(name, opts...) })
}

func (m *MetaFS) OpenReadWrite(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	return m.open(evOpenRW, name, "", func() (vfs.File, error) { return m.live.OpenReadWrite(name, opts...) })
}

func (m *MetaFS) OpenDir(name string) (vfs.File, error) {
	return m.open(evOpen, name, "", func() (vfs.File, error) { return m.live.OpenDir(name) })
}

func (m *MetaFS) Remove(name string) error {
	return m.change(evRemove, name, "", func() error { return m.live.Remove(name) })
}

func (m *MetaFS) RemoveAll(name string) error {
	return m.change(evRemoveAll, name, "", func() error { return m.live.RemoveAll(name) })
}

func (m *MetaFS) Rename(oldname, newname string) error {
	return m.change(evRename, oldname, newname, func() error { return m.live.Rename(oldname, newname) })
}

func (m *MetaFS) ReuseForWrite(oldname, newname string) (vfs.File, error) {
	return m.open(evReuse, oldname, newname, func() (vfs.File, error) { return m.live.ReuseForWrite(oldname, newname) })
}

func (m *MetaFS) MkdirAll(dir string, perm os.FileMode) error {
	return m.change(evMkdirAll, dir, "", func() error { return m.live.MkdirAll(dir, perm) })
}

func (m *MetaFS) Lock(name string) (io.Closer, error) {
	var c io.Closer
	err := m.change(evLock, name, "", func() error {
		var err error
		c, err = m.live.Lock(name)
		return err
	})
	return c, err
}

func (m *MetaFS) List(dir string) ([]string, error)               { return m.live.List(dir) }
func (m *MetaFS) Stat(name string) (os.FileInfo, error)           { return m.live.Stat(name) }
func (m *MetaFS) PathBase(path string) string                     { return m.live.PathBase(path) }
func (m *MetaFS) PathJoin(elem ...string) string                  { return m.live.PathJoin(elem...) }
func (m *MetaFS) PathDir(path string) string                      { return m.live.PathDir(path) }
func (m *MetaFS) GetDiskUsage(path string) (vfs.DiskUsage, error) { return m.live.GetDiskUsage(path) }

// metaFile logs the writes and syncs made through it.
type metaFile struct {
	vfs.File
	m    *MetaFS
	h    int
	name string
}

func (f *metaFile) Write(p []byte) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	data := bytes.Clone(p) // vfs.File.Write may modify p
	n, err := f.File.Write(p)
	if n > 0 {
		f.m.log(metaEvent{kind: evWrite, handle: f.h, path: f.name, data: data[:n]})
	}
	return n, err
}

func (f *metaFile) WriteAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	data := bytes.Clone(p)
	n, err := f.File.WriteAt(p, off)
	if n > 0 {
		f.m.log(metaEvent{kind: evWriteAt, handle: f.h, path: f.name, data: data[:n], off: off})
	}
	return n, err
}

func (f *metaFile) Sync() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.File.Sync(); err != nil {
		return err
	}
	f.m.log(metaEvent{kind: evSync, handle: f.h, path: f.name})
	return nil
}

// SyncData is a full sync in MemFS; log it as one.
func (f *metaFile) SyncData() error { return f.Sync() }
