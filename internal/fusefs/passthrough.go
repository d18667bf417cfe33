package fusefs

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/internal/backing"
	"github.com/reflinkfs/reflinkfs/internal/tuning"
)

// ShareMode says which opens of regular files are passed through to shared
// backing files (FUSE passthrough: the kernel serves read, splice and mmap
// from one page cache per content, internal/backing) instead of being
// served by the daemon with FOPEN_DIRECT_IO.
type ShareMode int

const (
	// ShareReadOnly passes through read-only opens of files that share
	// blocks with other files (clones), and every read-only open on a
	// read-only mount. The default: shared libraries are opened read-only
	// and then mapped.
	ShareReadOnly ShareMode = iota
	// ShareExec passes through only opens for execution (FMODE_EXEC).
	ShareExec
	// ShareAll passes through every read-only open.
	ShareAll
	// ShareOff never passes through; passthrough is not negotiated.
	ShareOff
)

var shareNames = []string{"readonly", "exec", "all", "off"}

func (m ShareMode) String() string {
	if int(m) < len(shareNames) {
		return shareNames[m]
	}
	return fmt.Sprintf("ShareMode(%d)", int(m))
}

// ParseShareMode parses "readonly", "exec", "all" or "off".
func ParseShareMode(s string) (ShareMode, error) {
	for i, n := range shareNames {
		if s == n {
			return ShareMode(i), nil
		}
	}
	return 0, fmt.Errorf("share=%q: want readonly, exec, all or off", s)
}

// ioState is how an inode is open. The kernel allows an inode one backing
// file at a time and fails every open of an inode open for passthrough
// that is not passed through to the same backing, so the daemon keeps all
// opens of an inode one kind: a read-only open joins the passthrough opens
// if there are any, gets direct I/O while direct opens exist, and a
// writable open (or a truncate) of an inode with passthrough opens fails
// with ETXTBSY, as writing to a running executable does: a write must never
// change what a passthrough reader, reading a snapshot, does not see.
type ioState struct {
	mu      sync.Mutex
	holders int // goroutines holding the state (under fileSystem.ioMu)
	direct  int // open handles served by the daemon
	pass    int // open handles passed through to b
	b       *backing.Backing
	drained chan struct{} // closed when pass drops to 0; nil while 0
}

// releaseWait is how long a writer waits for passthrough opens to go
// before it gets ETXTBSY. The kernel sends RELEASE after close(2) returns,
// asynchronously: without the wait, "cat f; echo x >> f" could fail.
const releaseWait = 250 * time.Millisecond

// waitNoPassthrough waits (st locked) up to releaseWait for st's
// passthrough opens to be released; it reports whether none are left.
func (st *ioState) waitNoPassthrough() bool {
	deadline := time.NewTimer(releaseWait)
	defer deadline.Stop()
	for st.pass > 0 {
		if st.drained == nil {
			st.drained = make(chan struct{})
		}
		ch := st.drained
		st.mu.Unlock()
		select {
		case <-ch:
			st.mu.Lock()
		case <-deadline.C:
			st.mu.Lock()
			return st.pass == 0
		}
	}
	return true
}

// lockIO returns ino's open state, locked.
func (fs *fileSystem) lockIO(ino uint64) *ioState {
	fs.ioMu.Lock()
	st := fs.io[ino]
	if st == nil {
		st = &ioState{}
		fs.io[ino] = st
	}
	st.holders++
	fs.ioMu.Unlock()
	st.mu.Lock()
	return st
}

// unlockIO unlocks st and forgets it when nothing is open.
func (fs *fileSystem) unlockIO(ino uint64, st *ioState) {
	st.mu.Unlock()
	fs.ioMu.Lock()
	st.holders--
	// With no holders nobody else can change the counts.
	if st.holders == 0 && st.direct == 0 && st.pass == 0 {
		delete(fs.io, ino)
	}
	fs.ioMu.Unlock()
}

// passCounters count passthrough decisions for stats.
type passCounters struct {
	mu        sync.Mutex
	opens     int64            // opens answered with passthrough
	fallbacks map[string]int64 // opens that could have been, by reason
	refused   int64            // writable opens and truncates refused (ETXTBSY)
}

func (c *passCounters) fallback(reason string) {
	c.mu.Lock()
	if c.fallbacks == nil {
		c.fallbacks = make(map[string]int64)
	}
	c.fallbacks[reason]++
	c.mu.Unlock()
}

// PassthroughStats describe page cache sharing through FUSE passthrough.
type PassthroughStats struct {
	Mode string // the share= policy
	// Unavailable says why passthrough is off ("" when it works).
	Unavailable string
	backing.Stats
	Opens     int64            // opens passed through
	OpenNow   int              // passthrough handles open now
	Refused   int64            // writable opens and truncates refused with ETXTBSY
	Fallbacks map[string]int64 // eligible opens served without passthrough, by reason
}

// Passthrough reports page cache sharing statistics.
func (s *Server) Passthrough() PassthroughStats { return s.fs.passthroughStats() }

func (fs *fileSystem) passthroughStats() PassthroughStats {
	store, off := fs.backingStore()
	st := PassthroughStats{Mode: fs.opt.Share.String(), Unavailable: off}
	if store != nil {
		st.Stats = store.Stats()
	}
	fs.ioMu.Lock()
	for _, s := range fs.io {
		s.mu.Lock()
		st.OpenNow += s.pass
		s.mu.Unlock()
	}
	fs.ioMu.Unlock()
	c := &fs.passCount
	c.mu.Lock()
	st.Opens, st.Refused = c.opens, c.refused
	st.Fallbacks = make(map[string]int64, len(c.fallbacks))
	for k, v := range c.fallbacks {
		st.Fallbacks[k] = v
	}
	c.mu.Unlock()
	return st
}

// writesContent reports whether an open with these flags may change the
// file's contents.
func writesContent(flags uint32) bool {
	return flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0
}

// chooseIO decides how h is served and counts it in st (locked). It returns
// the backing to pass through to, or nil for direct I/O, or an error status.
func (fs *fileSystem) chooseIO(st *ioState, h *fileHandle) (*backing.Backing, fuse.Status) {
	if writesContent(h.flags) {
		if !st.waitNoPassthrough() {
			fs.passCount.mu.Lock()
			fs.passCount.refused++
			fs.passCount.mu.Unlock()
			return nil, fuse.Status(syscall.ETXTBSY)
		}
		st.direct++
		return nil, fuse.OK
	}
	if st.pass > 0 {
		st.pass++
		fs.passCount.mu.Lock()
		fs.passCount.opens++
		fs.passCount.mu.Unlock()
		return st.b, fuse.OK
	}
	b, reason := fs.passthroughFor(st, h)
	if b == nil {
		if reason != "" {
			fs.passCount.fallback(reason)
		}
		st.direct++
		return nil, fuse.OK
	}
	st.b, st.pass = b, 1
	fs.passCount.mu.Lock()
	fs.passCount.opens++
	fs.passCount.mu.Unlock()
	return b, fuse.OK
}

// passthroughFor returns a backing for a read-only open of an inode with
// no passthrough opens, or nil and why not ("" when the policy does not
// want it).
func (fs *fileSystem) passthroughFor(st *ioState, h *fileHandle) (*backing.Backing, string) {
	mode := fs.opt.Share
	switch {
	case mode == ShareOff:
		return nil, ""
	case mode == ShareExec && h.flags&fuse.FMODE_EXEC == 0:
		return nil, ""
	}
	ci, err := h.f.ContentInfo()
	if err != nil || ci.Size == 0 {
		return nil, ""
	}
	if mode == ShareReadOnly && ci.SharedBlocks == 0 && !fs.readOnly() && !immutable(h.f) {
		return nil, "" // nothing shared: the block cache serves it as well
	}
	if ci.Extents > tuning.PassthroughMaxExtents && !fs.readOnly() {
		// Its snapshot would hold the engine's lock too long (O(extents)).
		return nil, "too fragmented"
	}
	store, _ := fs.backingStore()
	if store == nil {
		return nil, "unavailable"
	}
	if st.direct > 0 {
		// The kernel would refuse passthrough while another open may have
		// mapped the inode's own page cache; and a writer may be open.
		return nil, "open without passthrough"
	}
	b, err := store.Acquire(h.f, ci)
	if err != nil {
		fs.log.Warn("reflinkfs: passthrough backing", "ino", h.ino, "err", err)
		if errors.Is(err, syscall.ENOSPC) {
			return nil, "no space for snapshot"
		}
		return nil, "backing failed"
	}
	return b, ""
}

// passthroughOpen reports whether parent's entry name is a file with
// passthrough opens.
func (fs *fileSystem) passthroughOpen(parent uint64, name string) bool {
	a, err := fs.fsys.Lookup(parent, name)
	if err != nil {
		return false
	}
	fs.ioMu.Lock()
	st := fs.io[a.Ino]
	fs.ioMu.Unlock()
	if st == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.pass > 0
}

// immutable reports whether f is marked immutable (chattr +i): no writer
// can meet its passthrough readers, so it is passed through like a file on
// a read-only mount.
func immutable(f *reflinkfs.File) bool {
	a, err := f.Attr()
	return err == nil && a.Flags&reflinkfs.FlagImmutable != 0
}

// releaseIO undoes what chooseIO counted for h.
func (fs *fileSystem) releaseIO(h *fileHandle) {
	st := fs.lockIO(h.ino)
	if h.backing != nil {
		st.pass--
		if st.pass == 0 {
			store, _ := fs.backingStore()
			store.Release(st.b)
			st.b = nil
			if st.drained != nil {
				close(st.drained)
				st.drained = nil
			}
		}
	} else {
		st.direct--
	}
	fs.unlockIO(h.ino, st)
}

// startPassthrough opens the backing store once the mount is up. Without
// it (no kernel support, no CAP_SYS_ADMIN) every open is served directly,
// and the reason is logged once and shown in stats.
func (fs *fileSystem) startPassthrough(srv *fuse.Server) {
	off := ""
	defer func() {
		if off != "" {
			fs.storeMu.Lock()
			fs.passOff = off
			fs.storeMu.Unlock()
		}
	}()
	if fs.opt.Share == ShareOff {
		off = "share=off"
		return
	}
	if srv.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		off = "the kernel does not offer FUSE passthrough (Linux 6.9 or later)"
	} else if err := checkSysAdmin(); err != nil {
		off = err.Error()
	} else {
		store, err := backing.Open(fs.fsys, backing.Options{
			Register: func(fd int) (int32, error) {
				id, errno := srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
				if errno != 0 {
					return 0, errno
				}
				return id, nil
			},
			Unregister: func(id int32) error {
				if errno := srv.UnregisterBackingFd(id); errno != 0 {
					return errno
				}
				return nil
			},
			Logger: fs.log,
			Debug:  fs.opt.Debug,
		})
		if err != nil {
			off = err.Error()
		} else {
			fs.storeMu.Lock()
			closed := fs.storeClosed
			if !closed {
				fs.store = store
			}
			fs.storeMu.Unlock()
			if closed {
				_ = store.Close()
			}
			return
		}
	}
	fs.log.Warn("reflinkfs: page cache sharing through FUSE passthrough is off; clones' mapped pages are not shared",
		"reason", off)
}

// backingStore returns the backing store (nil when off or not started
// yet: opens are then served directly) and why it is off.
func (fs *fileSystem) backingStore() (*backing.Store, string) {
	fs.storeMu.Lock()
	defer fs.storeMu.Unlock()
	return fs.store, fs.passOff
}

// closeStore closes the backing store once the mount has ended.
func (fs *fileSystem) closeStore() {
	fs.storeMu.Lock()
	store := fs.store
	fs.storeClosed = true
	fs.storeMu.Unlock()
	if store != nil {
		_ = store.Close()
	}
}

// checkSysAdmin reports whether this process may register backing files
// (the kernel requires CAP_SYS_ADMIN).
func checkSysAdmin() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	if data[0].Effective&(1<<unix.CAP_SYS_ADMIN) == 0 {
		return errors.New("the daemon lacks CAP_SYS_ADMIN, which FUSE passthrough requires")
	}
	return nil
}
