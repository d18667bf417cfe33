// Package backing provides the backing files FUSE passthrough reads from, so
// that clones share the kernel's page cache, mapped pages included.
//
// With passthrough the kernel serves read, splice and mmap of an open FUSE
// file from a registered backing file, and every FUSE inode passed through
// to one backing file shares that file's page cache. A backing file must
// hold, at the same offsets, exactly what the FUSE file reads, for as long as
// any passthrough open uses it, and the kernel reads it whenever it likes.
//
// # Where backing files live
//
// A Store owns a second FUSE mount of the daemon, the backing mount. It is
// mounted on a private temporary directory and detached at once (MNT_DETACH)
// after its root is opened: no path reaches it, only the daemon's directory
// descriptor. Its root holds one read-only regular file per Backing, named
// by the decimal node id, whose contents are an engine File that nothing can
// change (Source): a snapshot (File.Snapshot, a nameless whole-file clone
// that shares every block) or, on a read-only image, the file itself. Files
// on the backing mount keep their page cache across opens (FOPEN_KEEP_CACHE)
// and are filled on demand: a page the kernel does not hold is read through
// a FUSE READ of the backing mount, from the engine's block cache. So a
// backing costs no disk and no copy when it is made, and its memory is
// ordinary, reclaimable page cache holding what was read or mapped.
//
// The backing mount does not negotiate passthrough itself, so its stacking
// depth is 0 and the main mount (max_stack_depth 1) may use its files.
//
// # Identity
//
// Backings are found by content: two files with the same size and extent
// map (ContentInfo.Key, confirmed with SameContent) read the same bytes, so
// they get the same Backing. A file that changes afterwards simply no longer
// matches; the snapshot keeps the old blocks alive, so a backing never holds
// a freed or rewritten block.
//
// # Life cycle
//
// Acquire returns a Backing with a reference; Release drops it. When the
// last reference goes the backing is dropped: its id unregistered, its
// snapshot closed (the engine frees blocks no file uses any more) and the
// kernel told to drop its inode and pages. So a snapshot holds space only
// while a file with its content is open, like an unlinked open file. (With
// Options.IdleTTL, unused backings are kept a while, page cache and
// snapshot with them, for short-lived processes that open the same files
// again; the mount does not use it.) A snapshot left by a crash is an
// orphan, freed at the next mount.
//
// Lock order: Store.mu is taken before the engine's locks (ContentInfo,
// SameContent) and is never held while the backing mount is entered (the
// open(2) that makes a backing's descriptor), because the backing mount's
// handlers take Store.mu.
package backing

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs"
)

// Options configure a Store.
type Options struct {
	// Register registers a descriptor as a passthrough backing file with the
	// main FUSE connection and returns its backing id; Unregister undoes it.
	Register   func(fd int) (int32, error)
	Unregister func(id int32) error
	// IdleTTL is how long a backing nobody uses is kept, with its page
	// cache and its snapshot's blocks. 0 (the default) drops it when its
	// last reference goes, so a file's space is held only while it is open,
	// as for any unlinked open file.
	IdleTTL time.Duration
	// MaxIdle caps the backings kept unused when IdleTTL > 0 (default 256).
	MaxIdle int
	Logger  *slog.Logger
	Debug   bool
}

// Backing is one backing file: what every FUSE inode with its content is
// passed through to.
type Backing struct {
	node  uint64 // node id on the backing mount (= the source's inode number)
	key   uint64
	size  int64
	src   *reflinkfs.File
	fd    int   // open on the backing mount
	id    int32 // registered backing id
	users int   // references (passthrough opens)
	idle  time.Time
}

// ID returns the backing id to answer an open with (FOPEN_PASSTHROUGH).
func (b *Backing) ID() int32 { return b.id }

// Size returns the size of the backing file.
func (b *Backing) Size() int64 { return b.size }

// Stats describe a Store.
type Stats struct {
	Backings     int   // backing files
	InUse        int   // backings with references
	Bytes        int64 // their total size
	CachedBytes  int64 // of which in the kernel page cache
	Created      int64 // backings made since start
	Evicted      int64
	SnapshotOnly bool // false on a read-only image (the files themselves back passthrough)
}

// Store makes, shares and evicts backings.
type Store struct {
	fsys  *reflinkfs.FS
	opt   Options
	log   *slog.Logger
	srv   *fuse.Server
	root  int // O_PATH descriptor of the detached backing mount's root
	serve chan struct{}

	createMu sync.Mutex // one backing made at a time (see Acquire)

	mu      sync.Mutex
	byKey   map[uint64][]*Backing
	byNode  map[uint64]*Backing
	closed  bool
	created int64
	evicted int64
	stop    chan struct{}
	evictor chan struct{}
}

// Open mounts the backing mount for fsys and starts evicting idle backings.
func Open(fsys *reflinkfs.FS, opt Options) (*Store, error) {
	if opt.Register == nil || opt.Unregister == nil {
		return nil, errors.New("backing: Register and Unregister are required")
	}
	if opt.MaxIdle <= 0 {
		opt.MaxIdle = 256
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	s := &Store{
		fsys: fsys, opt: opt, log: opt.Logger, root: -1, serve: make(chan struct{}),
		byKey: make(map[uint64][]*Backing), byNode: make(map[uint64]*Backing),
		stop: make(chan struct{}), evictor: make(chan struct{}),
	}
	if err := s.mount(); err != nil {
		return nil, err
	}
	if opt.IdleTTL > 0 {
		go s.evictLoop()
	} else {
		close(s.evictor)
	}
	return s, nil
}

// mount mounts the backing mount on a private directory, opens its root
// and detaches it.
func (s *Store) mount() error {
	dir, err := os.MkdirTemp("", "reflinkfs-backing-")
	if err != nil {
		return fmt.Errorf("backing: %w", err)
	}
	defer os.Remove(dir)
	mo := &fuse.MountOptions{
		FsName:       "reflinkfs-backing",
		Name:         "reflinkfs-backing",
		DirectMount:  true,
		MaxReadAhead: 1 << 20,
		MaxWrite:     1 << 20,
		// Passthrough here would raise this mount's stacking depth to 1,
		// and the main mount could not use its files.
		DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		Debug:                s.opt.Debug,
		Logger:               slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	srv, err := fuse.NewServer(&server{RawFileSystem: fuse.NewDefaultRawFileSystem(), s: s}, dir, mo)
	if err != nil {
		return fmt.Errorf("backing: mount: %w", err)
	}
	s.srv = srv
	go func() {
		srv.Serve()
		close(s.serve)
	}()
	if err := srv.WaitMount(); err != nil {
		_ = srv.Unmount()
		return fmt.Errorf("backing: mount: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = srv.Unmount()
		return fmt.Errorf("backing: open mount root: %w", err)
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		unix.Close(fd)
		_ = srv.Unmount()
		return fmt.Errorf("backing: detach mount: %w", err)
	}
	s.root = fd
	return nil
}

// Acquire returns the backing for what f reads, making one if needed, with
// a reference the caller gives back with Release. f must be open for
// reading. Making a backing takes a snapshot of f: O(extents) of f, so a
// fragmented file makes its first open slower.
// ci is f's ContentInfo, taken by the caller.
func (s *Store) Acquire(f *reflinkfs.File, ci reflinkfs.ContentInfo) (*Backing, error) {
	if b, err := s.find(f, ci.Key); b != nil || err != nil {
		return b, err
	}
	// Made one at a time: two opens of clones arriving together must end up
	// with one backing, not two.
	s.createMu.Lock()
	defer s.createMu.Unlock()
	if b, err := s.find(f, ci.Key); b != nil || err != nil {
		return b, err
	}
	var src *reflinkfs.File
	var err error
	if s.fsys.ReadOnly() {
		src, err = s.fsys.OpenIno(f.Ino(), syscall.O_RDONLY)
	} else {
		src, err = f.Snapshot()
	}
	if err != nil {
		return nil, err
	}
	// f may have changed between ContentInfo and the snapshot: key the
	// backing by what the snapshot holds.
	sci, err := src.ContentInfo()
	if err != nil {
		src.Close()
		return nil, err
	}
	b := &Backing{node: src.Ino(), key: sci.Key, size: sci.Size, src: src, fd: -1, users: 1}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		src.Close()
		return nil, fs_ErrClosed
	}
	s.byNode[b.node] = b
	s.mu.Unlock()
	if err := s.open(b); err != nil {
		s.mu.Lock()
		delete(s.byNode, b.node)
		s.mu.Unlock()
		s.drop(b, false)
		return nil, err
	}
	s.mu.Lock()
	s.byKey[b.key] = append(s.byKey[b.key], b)
	s.created++
	s.mu.Unlock()
	return b, nil
}

var fs_ErrClosed = errors.New("backing: store closed")

// find returns a backing with f's content, with a reference taken.
func (s *Store) find(f *reflinkfs.File, key uint64) (*Backing, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fs_ErrClosed
	}
	for _, b := range s.byKey[key] {
		same, err := b.src.SameContent(f)
		if err != nil {
			return nil, err
		}
		if same {
			b.users++
			return b, nil
		}
	}
	return nil, nil
}

// open opens b's file on the backing mount and registers it.
func (s *Store) open(b *Backing) error {
	fd, err := unix.Openat(s.root, strconv.FormatUint(b.node, 10), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_LARGEFILE, 0)
	if err != nil {
		return fmt.Errorf("backing: open backing file %d: %w", b.node, err)
	}
	b.fd = fd
	id, err := s.opt.Register(fd)
	if err != nil {
		return fmt.Errorf("backing: register backing file: %w", err)
	}
	b.id = id
	return nil
}

// Release drops a reference taken by Acquire; without IdleTTL the last one
// drops the backing before Release returns.
func (s *Store) Release(b *Backing) {
	s.mu.Lock()
	b.users--
	drop := false
	if b.users == 0 {
		b.idle = time.Now()
		if s.opt.IdleTTL == 0 && !s.closed {
			s.unlink(b)
			s.evicted++
			drop = true
		}
	}
	s.mu.Unlock()
	if drop {
		s.drop(b, false)
	}
}

func (s *Store) evictLoop() {
	defer close(s.evictor)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			s.evictIdle(time.Now().Add(-s.opt.IdleTTL), s.opt.MaxIdle)
		}
	}
}

// evictIdle evicts unused backings idle since before cutoff, and the oldest
// unused ones beyond keep.
func (s *Store) evictIdle(cutoff time.Time, keep int) {
	s.mu.Lock()
	var idle []*Backing
	for _, b := range s.byNode {
		if b.users == 0 && b.fd >= 0 {
			idle = append(idle, b)
		}
	}
	// Oldest first.
	sortByIdle(idle)
	var out []*Backing
	for i, b := range idle {
		if b.idle.Before(cutoff) || len(idle)-i > keep {
			out = append(out, b)
			s.unlink(b)
		}
	}
	s.evicted += int64(len(out))
	s.mu.Unlock()
	for _, b := range out {
		s.drop(b, false)
	}
}

func sortByIdle(bs []*Backing) {
	for i := 1; i < len(bs); i++ {
		for j := i; j > 0 && bs[j].idle.Before(bs[j-1].idle); j-- {
			bs[j], bs[j-1] = bs[j-1], bs[j]
		}
	}
}

// unlink removes b from the maps. Called with s.mu held.
func (s *Store) unlink(b *Backing) {
	delete(s.byNode, b.node)
	list := s.byKey[b.key]
	for i, x := range list {
		if x == b {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.byKey, b.key)
	} else {
		s.byKey[b.key] = list
	}
}

// drop releases everything b holds. b is in no map any more. At close
// (closing) the main connection may be gone and the backing mount goes as
// a whole, so only the descriptor and the snapshot are released.
func (s *Store) drop(b *Backing, closing bool) {
	if b.id != 0 && !closing {
		if err := s.opt.Unregister(b.id); err != nil {
			s.log.Warn("backing: unregister", "id", b.id, "err", err)
		}
	}
	if b.fd >= 0 {
		unix.Close(b.fd)
	}
	if !closing {
		// Drop the kernel's dentry, so the inode and its pages go now
		// rather than at memory pressure.
		_ = s.srv.DeleteNotify(fuse.FUSE_ROOT_ID, b.node, strconv.FormatUint(b.node, 10))
	}
	if err := b.src.Close(); err != nil {
		s.log.Warn("backing: close snapshot", "ino", b.node, "err", err)
	}
}

// Stats reports the backings.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	st := Stats{Created: s.created, Evicted: s.evicted, SnapshotOnly: !s.fsys.ReadOnly()}
	var fds []int
	for _, b := range s.byNode {
		if b.fd < 0 {
			continue
		}
		st.Backings++
		if b.users > 0 {
			st.InUse++
		}
		st.Bytes += b.size
		fds = append(fds, b.fd)
	}
	// cachestat runs with s.mu held: eviction (which closes descriptors)
	// waits for it.
	for _, fd := range fds {
		var cs unix.Cachestat_t
		if err := unix.Cachestat(uint(fd), &unix.CachestatRange{}, &cs, 0); err == nil {
			st.CachedBytes += int64(cs.Cache) * int64(os.Getpagesize())
		}
	}
	s.mu.Unlock()
	return st
}

// Close evicts every backing and lets the backing mount go. Passthrough
// opens still using a backing keep reading it until they close (the kernel
// holds its own references); the daemon then serves them until its exit.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var all []*Backing
	for _, b := range s.byNode {
		all = append(all, b)
	}
	s.mu.Unlock()
	close(s.stop)
	<-s.evictor
	for _, b := range all {
		s.mu.Lock()
		s.unlink(b)
		s.mu.Unlock()
		s.drop(b, true)
	}
	unix.Close(s.root)
	// The detached mount goes when its last reference does; its server
	// then ends. Do not wait for passthrough files users keep open.
	select {
	case <-s.serve:
	case <-time.After(2 * time.Second):
		s.log.Debug("backing: backing mount still referenced at close")
	}
	return nil
}
