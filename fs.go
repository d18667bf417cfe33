package reflinkfs

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/vfs"
	"github.com/google/btree"
	"github.com/reflinkfs/reflinkfs/internal/alloc"
	"github.com/reflinkfs/reflinkfs/internal/cache"
	"github.com/reflinkfs/reflinkfs/internal/device"
	"github.com/reflinkfs/reflinkfs/internal/kv"
	"github.com/reflinkfs/reflinkfs/internal/meta"
)

// Files inside an image directory.
const (
	formatFile = "reflinkfs-image" // marker: "reflinkfs image\nformat N\n"
	metaDir    = "meta"
	dataFile   = "data"
	lockFile   = "lock"
)

// reservedBlocks are the device blocks before the allocatable ones: block 0
// holds the device label (meta.EncodeLabel).
const reservedBlocks = 1

const (
	defaultSize           = 64 << 30
	defaultCacheSize      = 256 << 20
	defaultCommitInterval = 5 * time.Second
	// commitTxnBytes triggers a commit when the running transaction grows past it.
	commitTxnBytes = 64 << 20
)

// FS is an open reflinkfs image. It is safe for concurrent use.
//
// Locking, outermost first:
//
//	inode.lock   per-inode data lock: readers share it, anything that changes
//	             the file's extent map or size holds it exclusively. Holding it
//	             keeps every physical block the file maps referenced, so a
//	             reader can use cache frames of those blocks without fs.mu.
//	fs.gate      mutating operations hold it shared from planning to the last
//	             copy into a cache frame; commit holds it exclusively, so a
//	             commit never writes back half-written frames.
//	fs.mu        the running transaction, allocator, superblock counters,
//	             fresh-block index and the in-memory inode table.
//	crcMu        checksums of blocks written back but not yet committed.
type FS struct {
	dir   string
	opt   Options
	log   *slog.Logger
	lock  *os.File
	store kv.Store
	dev   device.Device
	cache *cache.Cache

	gate sync.RWMutex

	mu     sync.Mutex
	txn    kv.Txn
	alloc  *alloc.Allocator
	sb     meta.Super
	inodes map[uint64]*inode // inodes with open files or operations in flight
	// fresh holds physical runs allocated in the running transaction. No
	// durable metadata references them, so while unshared they may be
	// overwritten in place; everything else is copied on write.
	fresh *btree.BTreeG[alloc.Run]
	refs  *refTree // every refcount record, in memory
	// Counters of the running state (persisted implicitly by the records).
	mappedBlocks int64 // sum of all extent lengths (logical use)
	sharedBlocks int64 // physical blocks with reference count >= 2
	// Open snapshots (File.Snapshot), the blocks they map, and how many
	// of them map each physical block (snapshot.go).
	snapshots, snapshotBlocks int64
	snapRefs                  *refTree
	inodeCount                int64
	// atimeDirty holds inodes whose atime a read changed since the last
	// commit; commit writes them (see accessed).
	atimeDirty []*inode
	closed     bool
	// sbRebuilt is set when Recovery rebuilt a damaged superblock; Fsck
	// reports it and repair writes it.
	sbRebuilt bool
	// labelSeq is the commit sequence the device label held at open, when
	// it is ahead of the store (Recovery only; Fsck reports it).
	labelAhead uint64
	// labelDamaged is why the device label could not be read (Recovery
	// only; Fsck reports it and repair rewrites the label).
	labelDamaged error
	labelBuf     []byte // aligned block for writing the label
	readBatch    int    // see missBatch

	crcMu      sync.Mutex
	pendingCRC map[uint64]uint32

	stopCommit chan struct{}
	commitDone chan struct{}
	// prefetching counts readahead goroutines; Close stops new ones
	// (prefetchClosed, under prefetchMu) and waits for the running ones.
	prefetching    sync.WaitGroup
	reap           *reaper // frees large deleted files in the background; nil when read-only
	prefetchMu     sync.Mutex
	prefetchClosed bool

	commits        atomic.Int64
	checksumErrors atomic.Int64
	// Blocks WriteAtSharing shared instead of writing, and zero blocks it
	// kept as holes (copyshare.go).
	copySharedBlocks, copyHoleBlocks atomic.Int64
}

// inode is the in-memory state of an inode in use.
type inode struct {
	ino  uint64
	lock sync.RWMutex
	// Protected by fs.mu:
	rec   meta.Inode
	ext   *extentTree // extent map, loaded on first use (regular files)
	opens int         // open Files
	refs  int         // opens plus operations in flight; the entry is dropped at 0
	// atimeDirty: rec.Atime changed by a read and not yet written (in fs.atimeDirty).
	atimeDirty bool
	// linkable: an unnamed file from TmpfileAt that LinkAt may name.
	linkable bool
}

func pathErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// metaCacheSize sizes the metadata store's block cache from the data
// cache's: 1/16 of it, between 32 MiB and 512 MiB. Metadata-heavy work (a
// tree clone reads every source inode, entry and extent map) slowed down
// 4x as the store outgrew a fixed 32 MiB; with a 4 GiB data cache this is
// 256 MiB, which held it steady.
func metaCacheSize(dataCache int64) int64 {
	return min(max(dataCache/16, 32<<20), 512<<20)
}

func (o *Options) metaFS() vfs.FS {
	if o.Storage != nil {
		return o.Storage.MetaFS
	}
	return nil
}

func (o *Options) withDefaults() Options {
	opt := *o
	if opt.Size <= 0 {
		opt.Size = defaultSize
	}
	if opt.CacheSize <= 0 {
		opt.CacheSize = defaultCacheSize
	}
	if opt.CommitInterval == 0 {
		opt.CommitInterval = defaultCommitInterval
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	return opt
}

// Create makes a new image in dir (created if missing; it must be empty or
// absent) and opens it. The data file is sparse: it uses host space only for
// blocks written.
func Create(dir string, opt Options) (*FS, error) {
	opt = opt.withDefaults()
	blocks := uint64(opt.Size) / BlockSize
	if blocks < 256 {
		return nil, pathErr("create", dir, fmt.Errorf("image size %d is below the minimum of 1 MiB: %w", opt.Size, syscall.EINVAL))
	}
	_, statErr := os.Stat(dir)
	dirCreated := errors.Is(statErr, os.ErrNotExist)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	if len(ents) > 0 {
		return nil, pathErr("create", dir, fmt.Errorf("directory is not empty: %w", syscall.EEXIST))
	}
	if err := os.Chmod(dir, imageDirMode); err != nil { // for its owner only (private.go)
		return nil, err
	}
	lk, err := lockImage(dir)
	if err != nil {
		return nil, err
	}
	// Create is all or nothing: a failure removes what it made (under the
	// lock, so nobody else's files), and a retry finds the directory as it was.
	undo := func() {
		for _, name := range []string{formatFile, dataFile, metaDir, lockFile} {
			os.RemoveAll(filepath.Join(dir, name))
		}
		if dirCreated {
			os.Remove(dir)
		}
	}
	fail := func(err error) (*FS, error) {
		undo()
		lk.Close()
		return nil, pathErr("create", dir, err)
	}
	store, err := kv.OpenPebble(filepath.Join(dir, metaDir), kv.PebbleOptions{CreateIfMissing: true, FS: opt.metaFS(), CacheSize: metaCacheSize(opt.CacheSize)})
	if err != nil {
		return fail(err)
	}
	var dev device.Device
	if opt.Storage != nil && opt.Storage.Device != nil {
		dev = opt.Storage.Device
		if dev.Size() < int64(blocks)*BlockSize {
			store.Close()
			return fail(fmt.Errorf("injected device of %d bytes is smaller than the image size %d: %w", dev.Size(), opt.Size, syscall.EINVAL))
		}
	} else if dev, err = device.OpenFile(filepath.Join(dir, dataFile), int64(blocks)*BlockSize, true); err != nil {
		store.Close()
		return fail(err)
	}
	txn := store.NewTxn()
	sb := meta.Super{Version: meta.FormatVersion, BlockSize: BlockSize, DeviceBlocks: blocks, NextIno: RootIno + 1, NextGen: 2}
	now := time.Now().UnixNano()
	root := meta.Inode{Gen: 1, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Parent: RootIno, Atime: now, Mtime: now, Ctime: now, Btime: now}
	err = errors.Join(
		txn.Set(meta.SuperKey(), sb.Encode()),
		txn.Set(meta.InodeKey(RootIno), root.Encode(RootIno)),
	)
	if err == nil {
		_, err = alloc.Format(txn, blocks, reservedBlocks)
	}
	if err == nil {
		err = store.Commit(txn, true)
	}
	if err == nil {
		err = dev.Flush()
	}
	if err == nil {
		// The marker is written last: a directory without it is not an image.
		err = writeFileSync(filepath.Join(dir, formatFile), fmt.Sprintf("reflinkfs image\nformat %d\n", meta.FormatVersion))
	}
	if opt.Storage == nil || opt.Storage.Device == nil {
		dev.Close()
	}
	store.Close()
	if err != nil {
		return fail(err)
	}
	lk.Close()
	return Open(dir, opt)
}

func writeFileSync(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, imageFileMode)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// lockImage takes the image's exclusive lock, so two processes never open
// the same image.
func lockImage(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, imageFileMode)
	if err != nil {
		return nil, pathErr("open", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(f.Name())
		f.Close()
		who := strings.TrimSpace(string(holder))
		if who != "" {
			who = " (pid " + who + ")"
		}
		return nil, pathErr("open", dir, fmt.Errorf("image is in use by another process%s: %w", who, syscall.EBUSY))
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

// checkFormat verifies that dir holds an image of a format this code reads.
func checkFormat(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, formatFile))
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(dir); serr != nil {
			return serr
		}
		return fmt.Errorf("not a reflinkfs image (no %s file): %w", formatFile, syscall.EINVAL)
	}
	if err != nil {
		return err
	}
	var version int
	if _, err := fmt.Sscanf(string(b), "reflinkfs image\nformat %d\n", &version); err != nil {
		return fmt.Errorf("not a reflinkfs image (unreadable %s): %w", formatFile, syscall.EINVAL)
	}
	if version != meta.FormatVersion {
		return fmt.Errorf("image format version %d is not supported (this build reads version %d): %w", version, meta.FormatVersion, syscall.EINVAL)
	}
	return nil
}

// Open opens an existing image.
func Open(dir string, opt Options) (*FS, error) {
	opt = opt.withDefaults()
	if err := checkFormat(dir); err != nil {
		return nil, pathErr("open", dir, err)
	}
	lk, err := lockImage(dir)
	if err != nil {
		return nil, err
	}
	if n, err := makeImagePrivate(dir); err != nil {
		opt.Logger.Warn("image directory is readable by other users and could not be made private", "dir", dir, "err", err)
	} else if n > 0 {
		opt.Logger.Warn("image directory was readable by other users; removed group and other permissions", "dir", dir, "entries", n)
	}
	fsys := &FS{dir: dir, opt: opt, log: opt.Logger, lock: lk,
		inodes:     make(map[uint64]*inode),
		fresh:      btree.NewG(16, func(a, b alloc.Run) bool { return a.Start < b.Start }),
		pendingCRC: make(map[uint64]uint32),
		refs:       newRefTree(),
		snapRefs:   newRefTree(),
	}
	if err := fsys.load(); err != nil {
		fsys.closeResources()
		return nil, pathErr("open", dir, err)
	}
	if opt.CommitInterval > 0 && !opt.ReadOnly {
		fsys.stopCommit = make(chan struct{})
		fsys.commitDone = make(chan struct{})
		go fsys.commitLoop()
	}
	return fsys, nil
}

func (fsys *FS) load() error {
	store, err := kv.OpenPebble(filepath.Join(fsys.dir, metaDir), kv.PebbleOptions{ReadOnly: fsys.opt.ReadOnly, FS: fsys.opt.metaFS(), CacheSize: metaCacheSize(fsys.opt.CacheSize)})
	if err != nil {
		if fsys.opt.Recovery {
			return unrepairable{oneLine(fmt.Errorf("%w; fsck cannot check or repair a metadata store it cannot open (the damaged store is left as it is): restore the image from a backup", err))}
		}
		return oneLine(fmt.Errorf("metadata store is damaged or missing (run `reflinkfs fsck %s`): %w", fsys.dir, err))
	}
	fsys.store = store
	v, err := store.Get(meta.SuperKey())
	var sb meta.Super
	if err == nil {
		sb, err = meta.DecodeSuper(v)
	}
	if err != nil {
		if !fsys.opt.Recovery {
			return oneLine(fmt.Errorf("superblock is damaged (run `reflinkfs fsck --repair %s`): %w", fsys.dir, err))
		}
		fsys.log.Warn("superblock damaged; rebuilding it from the other records", "err", err)
		if sb, err = fsys.rebuildSuper(); err != nil {
			return oneLine(fmt.Errorf("superblock is damaged and cannot be rebuilt: %w", err))
		}
		fsys.sbRebuilt = true
	}
	if sb.Version != meta.FormatVersion || sb.BlockSize != BlockSize {
		return fmt.Errorf("superblock has format %d, block size %d; this build reads format %d, block size %d: %w",
			sb.Version, sb.BlockSize, meta.FormatVersion, BlockSize, syscall.EINVAL)
	}
	fsys.sb = sb
	var dev device.Device
	if fsys.opt.Storage != nil && fsys.opt.Storage.Device != nil {
		dev = fsys.opt.Storage.Device
	} else if dev, err = device.OpenFile(filepath.Join(fsys.dir, dataFile), int64(sb.DeviceBlocks)*BlockSize, false); err != nil {
		return fmt.Errorf("data device: %w", err)
	}
	fsys.dev = dev
	fsys.labelBuf = device.AlignedBuffer(BlockSize)
	if err := fsys.checkLabel(); err != nil {
		return err
	}
	if dev.Size() < int64(sb.DeviceBlocks)*BlockSize {
		return fmt.Errorf("data file is %d bytes, superblock says %d (truncated image?): %w", dev.Size(), int64(sb.DeviceBlocks)*BlockSize, syscall.EIO)
	}
	if maxIno, err := fsys.maxInode(); err != nil {
		if !fsys.opt.Recovery {
			return oneLine(fmt.Errorf("reading inodes (run `reflinkfs fsck --repair %s`): %w", fsys.dir, err))
		}
		fsys.log.Warn("inode records unreadable; fsck reports which", "err", err)
	} else if maxIno >= sb.NextIno {
		if !fsys.opt.Recovery {
			return fmt.Errorf("superblock's next inode number %d is not above existing inode %d (run `reflinkfs fsck --repair %s`): %w",
				sb.NextIno, maxIno, fsys.dir, syscall.EIO)
		}
		fsys.sb.NextIno = maxIno + 1 // never hand out a number in use; fsck reports it
	}
	if fsys.alloc, err = alloc.Load(store, sb.DeviceBlocks); err != nil {
		if !fsys.opt.Recovery {
			return fmt.Errorf("free space records are damaged (run `reflinkfs fsck --repair %s`): %w", fsys.dir, err)
		}
		fsys.log.Warn("free space records damaged; nothing can be allocated until fsck repairs them", "err", err)
		fsys.alloc = alloc.Empty(sb.DeviceBlocks)
	}
	if err := fsys.loadCounters(); err != nil {
		if !fsys.opt.Recovery {
			return fmt.Errorf("metadata records are damaged (run `reflinkfs fsck --repair %s`): %w", fsys.dir, err)
		}
		fsys.log.Warn("metadata records damaged; counters are partial until fsck repairs them", "err", err)
	}
	fsys.cache, err = cache.New(cache.Config{Bytes: fsys.opt.CacheSize, WriteBack: fsys.writeBackOne})
	if err != nil {
		return err
	}
	fsys.readBatch = max(1, min(256, int(fsys.cache.Frames()/64)))
	fsys.txn = store.NewTxn()
	if fsys.opt.ReadOnly || fsys.opt.Recovery {
		// fsck checks orphans as they are (their records may be among the
		// damaged ones); the next normal open frees them.
		return nil
	}
	fsys.startReaper()
	return fsys.processOrphans()
}

// checkLabel compares the commit recorded in the device label with the
// store's: a store behind the label lost commits that were durable (its
// write-ahead log was damaged or lost), which must not pass silently.
func (fsys *FS) checkLabel() error {
	if err := fsys.dev.ReadBlocks([][]byte{fsys.labelBuf}, meta.LabelBlock*BlockSize); err != nil {
		return fmt.Errorf("reading the device label: %w", err)
	}
	seq, ok, err := meta.DecodeLabel(fsys.labelBuf)
	if err != nil {
		// Without it a store that lost commits would pass unnoticed: a
		// problem for fsck to report and repair, not a warning.
		if fsys.opt.Recovery {
			fsys.labelDamaged = err
			return nil
		}
		return fmt.Errorf("the device label (block 0 of the data file) is damaged, so lost commits cannot be detected (run `reflinkfs fsck --repair %s` to rewrite it): %w", fsys.dir, err)
	}
	if !ok || seq <= fsys.sb.CommitSeq {
		return nil
	}
	if fsys.sbRebuilt {
		fsys.sb.CommitSeq = seq // the rebuilt superblock cannot know it
		return nil
	}
	if fsys.opt.Recovery {
		fsys.labelAhead = seq
		return nil
	}
	return fmt.Errorf("metadata store holds commit %d but commit %d was made durable: its write-ahead log was lost or damaged, and fsync'd changes are missing; restore the image from a backup, or run `reflinkfs fsck --repair %s` to accept the loss: %w",
		fsys.sb.CommitSeq, seq, fsys.dir, syscall.EIO)
}

// writeLabel writes the device label for commit seq (not flushed).
func (fsys *FS) writeLabel(seq uint64) error {
	meta.EncodeLabel(fsys.labelBuf, seq)
	return fsys.dev.WriteBlocks([][]byte{fsys.labelBuf}, meta.LabelBlock*BlockSize)
}

// maxInode returns the highest inode number in the store.
func (fsys *FS) maxInode() (uint64, error) {
	it := fsys.store.NewIter([]byte{meta.PrefixInode}, []byte{meta.PrefixInode + 1})
	if !it.Last() {
		return 0, it.Close() // no inode, or an error positioning there
	}
	ino, err := meta.ParseKey1(meta.PrefixInode, it.Key())
	return ino, errors.Join(err, it.Close())
}

// rebuildSuper reconstructs a damaged superblock (Recovery only): the
// device size from the data file, the counters from the highest inode
// number and generation in use.
func (fsys *FS) rebuildSuper() (meta.Super, error) {
	sb := meta.Super{Version: meta.FormatVersion, BlockSize: BlockSize}
	if fsys.opt.Storage != nil && fsys.opt.Storage.Device != nil {
		sb.DeviceBlocks = uint64(fsys.opt.Storage.Device.Size()) / BlockSize
	} else {
		fi, err := os.Stat(filepath.Join(fsys.dir, dataFile))
		if err != nil {
			return sb, err
		}
		sb.DeviceBlocks = uint64(fi.Size()) / BlockSize
	}
	// Whatever inode records can be read: fsck reports (and repair salvages
	// from) the parts of the store that cannot.
	_, err := kv.ScanReadable(fsys.store, []byte{meta.PrefixInode}, []byte{meta.PrefixInode + 1}, func(k, v []byte) error {
		ino, err := meta.ParseKey1(meta.PrefixInode, k)
		if err != nil {
			return nil
		}
		sb.NextIno = max(sb.NextIno, ino+1)
		if rec, err := meta.DecodeInode(ino, v); err == nil {
			sb.NextGen = max(sb.NextGen, rec.Gen+1)
		}
		return nil
	})
	if err != nil {
		return sb, err
	}
	sb.NextIno = max(sb.NextIno, RootIno+1)
	sb.NextGen = max(sb.NextGen, 2)
	return sb, nil
}

// oneLine flattens an error's message to one line (pebble's can span
// several), keeping it unwrappable.
func oneLine(err error) error {
	if err == nil || !strings.Contains(err.Error(), "\n") {
		return err
	}
	return &flatError{strings.Join(strings.Fields(err.Error()), " "), err}
}

type flatError struct {
	msg string
	err error
}

func (e *flatError) Error() string { return e.msg }
func (e *flatError) Unwrap() error { return e.err }

// loadCounters recomputes the space counters from the records. It reads
// every extent and refcount record once, at open.
func (fsys *FS) loadCounters() error {
	err := kv.Scan(fsys.store, []byte{meta.PrefixExtent}, []byte{meta.PrefixExtent + 1}, func(k, v []byte) error {
		e, err := meta.DecodeExtent(k, v)
		if err != nil {
			if fsys.opt.Recovery {
				return nil
			}
			return err
		}
		fsys.mappedBlocks += int64(e.Len)
		return nil
	})
	if err != nil {
		return err
	}
	err = kv.Scan(fsys.store, []byte{meta.PrefixRefcount}, []byte{meta.PrefixRefcount + 1}, func(k, v []byte) error {
		r, err := decodeRefRun(k, v)
		if err != nil {
			if fsys.opt.Recovery {
				return nil
			}
			return err
		}
		fsys.refs.ReplaceOrInsert(r)
		fsys.sharedBlocks += int64(r.n)
		return nil
	})
	if err != nil {
		return err
	}
	return kv.Scan(fsys.store, []byte{meta.PrefixInode}, []byte{meta.PrefixInode + 1}, func(_, _ []byte) error {
		fsys.inodeCount++
		return nil
	})
}

// processOrphans frees inodes that were unlinked while open when the image
// was last closed (or crashed).
func (fsys *FS) processOrphans() error {
	var orphans []uint64
	err := kv.Scan(fsys.store, []byte{meta.PrefixOrphan}, []byte{meta.PrefixOrphan + 1}, func(k, _ []byte) error {
		ino, err := meta.ParseKey1(meta.PrefixOrphan, k)
		orphans = append(orphans, ino)
		return err
	})
	if err != nil {
		return oneLine(fmt.Errorf("orphan records are damaged (run `reflinkfs fsck --repair %s`): %w", fsys.dir, err))
	}
	if len(orphans) == 0 {
		return nil
	}
	fsys.mu.Lock()
	for _, ino := range orphans {
		if err := fsys.freeInodeLocked(ino); err != nil {
			fsys.mu.Unlock()
			return fmt.Errorf("freeing orphan inode %d: %w", ino, err)
		}
	}
	fsys.mu.Unlock()
	fsys.log.Info("freed orphan inodes", "count", len(orphans))
	return fsys.Sync()
}

func (fsys *FS) commitLoop() {
	defer close(fsys.commitDone)
	t := time.NewTicker(fsys.opt.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-fsys.stopCommit:
			return
		case <-t.C:
			if err := fsys.commit(); err != nil {
				fsys.log.Error("periodic commit failed", "image", fsys.dir, "err", err)
			}
		}
	}
}

// Sync makes every change made so far durable (syncfs).
func (fsys *FS) Sync() error {
	return pathErr("sync", fsys.dir, fsys.commit())
}

// commit makes the running transaction durable: dirty data is written to the
// device and flushed before the metadata that references it is committed;
// blocks freed by the transaction become reusable only afterwards.
func (fsys *FS) commit() error {
	// Most dirty data is written back before operations are held off; what
	// is dirtied meanwhile is written under the gate below.
	if !fsys.opt.ReadOnly && !fsys.isClosed() {
		if err := fsys.cache.FlushDirty(0, ^uint64(0), fsys.writeBackRun); err != nil {
			return fmt.Errorf("writing back data: %w", err)
		}
	}
	fsys.gate.Lock()
	defer fsys.gate.Unlock()
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	return fsys.commitLocked()
}

// commitLocked is commit with the gate held exclusively and fs.mu held:
// for callers that need no operation to run between the commit and what
// they do next (fsck).
func (fsys *FS) commitLocked() error {
	if fsys.closed {
		return fs.ErrClosed
	}
	if fsys.opt.ReadOnly {
		return nil
	}
	// 1. Data: every dirty frame belongs to a fresh block of this transaction.
	if err := fsys.cache.FlushDirty(0, ^uint64(0), fsys.writeBackRun); err != nil {
		return fmt.Errorf("writing back data: %w", err)
	}
	if err := fsys.saveAccessTimes(); err != nil {
		return err
	}
	fsys.crcMu.Lock()
	pending := make(map[uint64]uint32, len(fsys.pendingCRC))
	for b, c := range fsys.pendingCRC {
		pending[b] = c
	}
	fsys.crcMu.Unlock()
	if fsys.txn.Empty() && len(pending) == 0 {
		return nil
	}
	// The label, flushed with the data, records the last durable commit.
	if err := fsys.writeLabel(fsys.sb.CommitSeq); err != nil {
		return fmt.Errorf("writing the device label: %w", err)
	}
	if err := fsys.dev.Flush(); err != nil {
		return fmt.Errorf("flushing data device: %w", err)
	}
	// 2. Checksums of the data just made durable, in a cheap write-only batch
	// ahead of the metadata: a checksum of a block nothing references yet is
	// harmless if it lands alone, and the synced commit below makes it
	// durable with everything else (commits are durable in order).
	if len(pending) > 0 {
		cb := fsys.store.NewBatch()
		if err := fsys.commitChecksums(cb, pending); err != nil {
			return fmt.Errorf("checksum records: %w", err)
		}
		if err := fsys.store.CommitBatch(cb, false); err != nil {
			return fmt.Errorf("committing checksums: %w", err)
		}
	}
	// 3. Metadata.
	next := fsys.sb
	next.CommitSeq++
	if err := fsys.txn.Set(meta.SuperKey(), next.Encode()); err != nil {
		return err
	}
	if err := fsys.store.Commit(fsys.txn, true); err != nil {
		// The transaction is lost; the in-memory state is ahead of the
		// store and can no longer be made durable.
		fsys.txn = fsys.store.NewTxn()
		return fmt.Errorf("committing metadata: %w", err)
	}
	fsys.txn = fsys.store.NewTxn()
	fsys.sb.CommitSeq = next.CommitSeq
	fsys.commits.Add(1)
	fsys.crcMu.Lock()
	for b, c := range pending {
		if fsys.pendingCRC[b] == c {
			delete(fsys.pendingCRC, b)
		}
	}
	fsys.crcMu.Unlock()
	// 4. Freed blocks: durable now, so reusable; give their host space back.
	for _, r := range fsys.alloc.ReleaseQuarantine() {
		if err := fsys.dev.Punch(int64(r.Start)*BlockSize, int64(r.Len)*BlockSize); err != nil {
			fsys.log.Warn("punching freed blocks failed", "start", r.Start, "blocks", r.Len, "err", err)
		}
	}
	fsys.fresh.Clear(false)
	if fsys.opt.Storage != nil && fsys.opt.Storage.OnCommit != nil {
		fsys.opt.Storage.OnCommit()
	}
	// Idle inodes stay cached (their extent maps are expensive to reload
	// through the store right after many changes) until the table grows.
	if len(fsys.inodes) > maxIdleInodes {
		for ino, in := range fsys.inodes {
			if in.refs == 0 {
				delete(fsys.inodes, ino)
			}
		}
	}
	return nil
}

// maxIdleInodes bounds the inode table: past it, commits drop idle inodes.
const maxIdleInodes = 4096

// maybeCommit commits when the running transaction has grown large. Called
// by operations after they release their locks.
func (fsys *FS) maybeCommit() {
	fsys.mu.Lock()
	big := fsys.txn != nil && fsys.txn.Size() > commitTxnBytes
	fsys.mu.Unlock()
	if big {
		if err := fsys.commit(); err != nil && !errors.Is(err, fs.ErrClosed) {
			fsys.log.Error("commit failed", "err", err)
		}
	}
}

// throttleDirty writes back dirty data in large runs once it fills a
// quarter of the cache, so eviction rarely has to write single blocks.
// Written-back blocks stay cached, clean; they are still fresh, so later
// writes in this transaction still go in place.
func (fsys *FS) throttleDirty() {
	if fsys.cache.DirtyFrames()*4 < fsys.cache.Frames() {
		return
	}
	if err := fsys.cache.FlushDirty(0, ^uint64(0), fsys.writeBackRun); err != nil {
		fsys.log.Warn("background write-back failed", "err", err)
	}
}

// writeBackRun writes consecutive dirty blocks to the device and records
// their checksums for the next commit.
func (fsys *FS) writeBackRun(first uint64, data [][]byte) error {
	if err := fsys.dev.WriteBlocks(data, int64(first)*BlockSize); err != nil {
		return err
	}
	fsys.crcMu.Lock()
	for i, d := range data {
		fsys.pendingCRC[first+uint64(i)] = meta.Checksum(d)
	}
	fsys.crcMu.Unlock()
	return nil
}

func (fsys *FS) writeBackOne(block uint64, data []byte) error {
	return fsys.writeBackRun(block, [][]byte{data})
}

// Close commits everything and releases the image.
func (fsys *FS) Close() error {
	if fsys.stopCommit != nil {
		close(fsys.stopCommit)
		<-fsys.commitDone
		fsys.stopCommit = nil
	}
	fsys.stopPrefetch()
	fsys.stopReaper()
	err := fsys.commit()
	fsys.mu.Lock()
	if fsys.closed {
		fsys.mu.Unlock()
		return pathErr("close", fsys.dir, fs.ErrClosed)
	}
	fsys.closed = true
	fsys.mu.Unlock()
	if err == nil && !fsys.opt.ReadOnly {
		// Move everything out of the WAL into tables: after a clean close the
		// image does not depend on its log, so a lost or damaged log loses
		// nothing. Then the label records the final commit.
		err = fsys.store.Flush()
		if err == nil {
			err = fsys.writeLabel(fsys.sb.CommitSeq)
		}
		if err == nil {
			err = fsys.dev.Flush()
		}
	}
	return pathErr("close", fsys.dir, errors.Join(err, fsys.closeResources()))
}

func (fsys *FS) closeResources() error {
	var errs []error
	if fsys.cache != nil {
		errs = append(errs, fsys.cache.Close())
	}
	if fsys.dev != nil {
		errs = append(errs, fsys.dev.Close())
	}
	if fsys.store != nil {
		errs = append(errs, fsys.store.Close())
	}
	if fsys.lock != nil {
		errs = append(errs, fsys.lock.Close())
	}
	return errors.Join(errs...)
}

// Stats reports space and cache figures.
func (fsys *FS) Stats() Stats {
	fsys.mu.Lock()
	s := Stats{
		BlockSize:     BlockSize,
		DeviceBytes:   int64(fsys.sb.DeviceBlocks-reservedBlocks) * BlockSize,
		FreeBytes:     int64(fsys.alloc.FreeBlocks()) * BlockSize,
		LogicalBytes:  (fsys.mappedBlocks - fsys.snapshotBlocks) * BlockSize,
		SharedBytes:   (fsys.sharedBlocks - fsys.snapshotOnlySharedBlocks()) * BlockSize,
		Inodes:        fsys.inodeCount - fsys.snapshots,
		SnapshotFiles: fsys.snapshots,
		SnapshotBytes: fsys.snapshotBlocks * BlockSize,
	}
	fsys.mu.Unlock()
	s.UsedBytes = s.DeviceBytes - s.FreeBytes
	cs := fsys.cache.Stats()
	s.CacheLimitBytes = cs.Frames * BlockSize
	s.CachedBytes = cs.Resident * BlockSize
	s.DirtyBytes = cs.Dirty * BlockSize
	s.SharedCachedBytes = cs.Shared * BlockSize
	s.PerFileCachedBytes = cs.PerFile * BlockSize
	s.CacheHits, s.CacheMisses, s.CacheEvictions = cs.Hits, cs.Misses, cs.Evictions
	s.ChecksumErrors = fsys.checksumErrors.Load()
	s.Commits = fsys.commits.Load()
	s.CopySharedBlocks = fsys.copySharedBlocks.Load()
	s.CopyHoleBlocks = fsys.copyHoleBlocks.Load()
	s.ReapingFiles = fsys.reaping()
	return s
}

// startPrefetch registers a readahead goroutine; false once closing.
func (fsys *FS) startPrefetch() bool {
	fsys.prefetchMu.Lock()
	defer fsys.prefetchMu.Unlock()
	if fsys.prefetchClosed {
		return false
	}
	fsys.prefetching.Add(1)
	return true
}

// stopPrefetch refuses new readaheads and waits for the running ones.
func (fsys *FS) stopPrefetch() {
	fsys.prefetchMu.Lock()
	fsys.prefetchClosed = true
	fsys.prefetchMu.Unlock()
	fsys.prefetching.Wait()
}

// ReadOnly reports whether the image was opened read-only.
func (fsys *FS) ReadOnly() bool { return fsys.opt.ReadOnly }

// DropCache writes back and then evicts every cached block (for benchmarks
// and tests, like writing 3 to /proc/sys/vm/drop_caches).
func (fsys *FS) DropCache() error {
	if err := fsys.commit(); err != nil {
		return err
	}
	fsys.gate.Lock()
	defer fsys.gate.Unlock()
	if err := fsys.cache.FlushDirty(0, ^uint64(0), fsys.writeBackRun); err != nil {
		return err
	}
	fsys.cache.DropAll()
	return nil
}
