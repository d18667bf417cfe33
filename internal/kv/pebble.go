package kv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// Tuning for a metadata store: keys and values are small and the data block
// cache above us holds file contents, so pebble's own block cache is modest
// (PebbleOptions.CacheSize, default 32 MiB).
const (
	pebbleMemTableSize = 32 << 20
	pebbleCacheSize    = 32 << 20
)

// ErrNoStore is returned (wrapped) by OpenPebble when the directory holds no
// store and CreateIfMissing is false.
var ErrNoStore = errors.New("no metadata store found")

// ErrClosed is returned by operations on a closed Store or a finished Txn.
var ErrClosed = errors.New("kv: store closed or transaction finished")

// PebbleOptions configures OpenPebble.
type PebbleOptions struct {
	// FS is the filesystem pebble works in; nil means the real disk
	// (vfs.Default), with owner-only modes (private.go). Tests use
	// vfs.NewMem() or vfs.NewStrictMem().
	FS vfs.FS
	// ReadOnly opens without writing anything; Commit fails. A read-only open
	// never creates a store.
	ReadOnly bool
	// CreateIfMissing creates an empty store when dir holds none. When false,
	// opening a directory without a store fails with ErrNoStore.
	CreateIfMissing bool
	// Logger receives pebble's informational lines at Debug level and its
	// background errors at Error level. nil discards them.
	Logger *slog.Logger
	// CacheSize bounds pebble's block cache (memory is taken as blocks are
	// read); 0 means 32 MiB.
	CacheSize int64
}

// OpenPebble opens (or creates) the pebble store in dir. Errors carry the
// prefix "metadata store <dir>:" so a caller can print them as one line;
// IsCorruption tells a damaged store apart from other failures.
func OpenPebble(dir string, opt PebbleOptions) (Store, error) {
	fs := opt.FS
	if fs == nil {
		fs = privateFS{vfs.Default}
	}
	logger := opt.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if !opt.CreateIfMissing || opt.ReadOnly {
		// Pebble itself would create the directory (and a LOCK file in it)
		// before noticing there is no store; refuse earlier and cleanly.
		if _, err := fs.Stat(dir); err != nil {
			return nil, fmt.Errorf("metadata store %s: %w: %w", dir, ErrNoStore, err)
		}
	}

	// Pebble syncs the files inside dir but not the directory entries that
	// make dir itself exist; remember which ones it will create so they can
	// be made durable after Open.
	created := missingDirs(fs, dir)

	cacheSize := opt.CacheSize
	if cacheSize <= 0 {
		cacheSize = pebbleCacheSize
	}
	cache := pebble.NewCache(cacheSize)
	defer cache.Unref() // Open takes its own reference.
	opts := &pebble.Options{
		FS:                 fs,
		ReadOnly:           opt.ReadOnly,
		ErrorIfNotExists:   !opt.CreateIfMissing,
		Cache:              cache,
		MemTableSize:       pebbleMemTableSize,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             slogPebbleLogger{logger},
		EventListener: &pebble.EventListener{
			BackgroundError: func(err error) {
				logger.Error("metadata store background error", "dir", dir, "err", err)
			},
			DiskSlow: func(info pebble.DiskSlowInfo) {
				logger.Warn("metadata store disk slow", "dir", dir, "info", info.String())
			},
		},
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		if errors.Is(err, pebble.ErrDBDoesNotExist) {
			return nil, fmt.Errorf("metadata store %s: %w", dir, ErrNoStore)
		}
		return nil, fmt.Errorf("metadata store %s: %w", dir, err)
	}
	if !opt.ReadOnly {
		for _, d := range created {
			if err := syncDir(fs, filepath.Dir(d)); err != nil {
				db.Close()
				return nil, &StoreError{Dir: dir, Op: "sync directory", Err: err}
			}
		}
	}
	return &pebbleStore{db: db, dir: dir}, nil
}

// missingDirs lists dir and those of its ancestors that do not exist yet,
// deepest first.
func missingDirs(fs vfs.FS, dir string) []string {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := fs.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if parent := filepath.Dir(d); parent == d {
			break
		}
	}
	return missing
}

func syncDir(fs vfs.FS, dir string) error {
	f, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// StoreError is how this package reports a pebble failure: it names the
// store directory and the operation, and prints as a single line even when
// pebble's message spans several.
type StoreError struct {
	Dir string
	Op  string // "" for open
	Err error
}

func (e *StoreError) Error() string {
	msg := strings.TrimSpace(e.Err.Error())
	msg = strings.ReplaceAll(msg, "\n", "; ")
	if e.Op == "" {
		return "metadata store " + e.Dir + ": " + msg
	}
	return "metadata store " + e.Dir + ": " + e.Op + ": " + msg
}

func (e *StoreError) Unwrap() error { return e.Err }

// IsCorruption reports whether err says the store's files are damaged (as
// opposed to, say, missing or unreadable).
func IsCorruption(err error) bool {
	return err != nil && pebble.IsCorruptionError(err)
}

// slogPebbleLogger adapts slog to pebble's Logger. Pebble calls Fatalf only
// when it cannot continue safely (for example a failed WAL write), and it
// expects Fatalf not to return, so we log and panic.
type slogPebbleLogger struct{ l *slog.Logger }

func (s slogPebbleLogger) Infof(format string, args ...any) {
	if s.l.Enabled(context.Background(), slog.LevelDebug) {
		s.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (s slogPebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.l.Error(msg, "component", "pebble")
	panic("metadata store fatal error: " + msg)
}

type pebbleStore struct {
	db     *pebble.DB
	dir    string
	closed atomic.Bool
}

func (s *pebbleStore) wrap(op string, err error) error {
	return &StoreError{Dir: s.dir, Op: op, Err: err}
}

func (s *pebbleStore) Get(key []byte) ([]byte, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	return getCopy(s.db, key, s)
}

// pointReader is what pebble.DB and pebble.Batch have in common for point reads.
type pointReader interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

// getCopy reads key from r and returns a copy the caller owns.
func getCopy(r pointReader, key []byte, s *pebbleStore) ([]byte, error) {
	v, c, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, s.wrap("get", err)
	}
	out := append([]byte(nil), v...)
	if err := c.Close(); err != nil {
		return nil, s.wrap("get", err)
	}
	return out, nil
}

func (s *pebbleStore) NewIter(lower, upper []byte) Iterator {
	if s.closed.Load() {
		return &pebbleIter{err: ErrClosed}
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return &pebbleIter{err: s.wrap("iterate", err)}
	}
	return &pebbleIter{it: it}
}

func (s *pebbleStore) NewTxn() Txn {
	if s.closed.Load() {
		return &pebbleTxn{store: s} // every use reports ErrClosed
	}
	return &pebbleTxn{store: s, b: s.db.NewIndexedBatch()}
}

func (s *pebbleStore) Commit(t Txn, sync bool) error {
	if s.closed.Load() {
		return ErrClosed
	}
	pt, ok := t.(*pebbleTxn)
	if !ok || pt.store != s {
		return fmt.Errorf("metadata store %s: commit of a transaction from another store", s.dir)
	}
	if pt.b == nil {
		return ErrClosed
	}
	b := pt.b
	pt.b = nil
	return s.commit(b, sync)
}

// commit commits and releases a pebble batch.
func (s *pebbleStore) commit(b *pebble.Batch, sync bool) error {
	wo := pebble.NoSync
	if sync {
		wo = pebble.Sync
	}
	err := b.Commit(wo)
	b.Close()
	if err != nil {
		return s.wrap("commit", err)
	}
	return nil
}

// pebbleBatch is a write-only (non-indexed) pebble batch.
type pebbleBatch struct {
	store *pebbleStore
	b     *pebble.Batch
}

func (b *pebbleBatch) Set(key, value []byte) error {
	if b.b == nil {
		return ErrClosed
	}
	return b.b.Set(key, value, nil)
}

func (b *pebbleBatch) Delete(key []byte) error {
	if b.b == nil {
		return ErrClosed
	}
	return b.b.Delete(key, nil)
}

func (s *pebbleStore) NewBatch() Batch { return &pebbleBatch{store: s, b: s.db.NewBatch()} }

func (s *pebbleStore) CommitBatch(bt Batch, sync bool) error {
	if s.closed.Load() {
		return ErrClosed
	}
	pb, ok := bt.(*pebbleBatch)
	if !ok || pb.store != s || pb.b == nil {
		return fmt.Errorf("metadata store %s: commit of a batch from another store, or twice", s.dir)
	}
	b := pb.b
	pb.b = nil
	return s.commit(b, sync)
}

func (s *pebbleStore) Flush() error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := s.db.Flush(); err != nil {
		return s.wrap("flush", err)
	}
	return nil
}

func (s *pebbleStore) Close() error {
	if s.closed.Swap(true) {
		return ErrClosed
	}
	if err := s.db.Close(); err != nil {
		return s.wrap("close", err)
	}
	return nil
}

// pebbleTxn is an indexed batch: reads merge its pending writes over the
// committed state. b is nil once the Txn has been committed.
type pebbleTxn struct {
	store *pebbleStore
	b     *pebble.Batch
}

func (t *pebbleTxn) live() error {
	if t.b == nil || t.store.closed.Load() {
		return ErrClosed
	}
	return nil
}

func (t *pebbleTxn) Get(key []byte) ([]byte, error) {
	if err := t.live(); err != nil {
		return nil, err
	}
	return getCopy(t.b, key, t.store)
}

// NewIter sees the writes made through t before the call, not later ones.
func (t *pebbleTxn) NewIter(lower, upper []byte) Iterator {
	if err := t.live(); err != nil {
		return &pebbleIter{err: err}
	}
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return &pebbleIter{err: t.store.wrap("iterate", err)}
	}
	return &pebbleIter{it: it}
}

func (t *pebbleTxn) Set(key, value []byte) error {
	if err := t.live(); err != nil {
		return err
	}
	return t.b.Set(key, value, nil)
}

func (t *pebbleTxn) Delete(key []byte) error {
	if err := t.live(); err != nil {
		return err
	}
	return t.b.Delete(key, nil)
}

func (t *pebbleTxn) DeleteRange(start, end []byte) error {
	if err := t.live(); err != nil {
		return err
	}
	return t.b.DeleteRange(start, end, nil)
}

func (t *pebbleTxn) Size() int {
	if t.b == nil || t.b.Empty() {
		return 0
	}
	return t.b.Len()
}

func (t *pebbleTxn) Empty() bool {
	return t.b == nil || t.b.Empty()
}

// pebbleIter wraps a pebble iterator; with it == nil it is an iterator that
// never becomes valid and reports err from Close.
type pebbleIter struct {
	it  *pebble.Iterator
	err error
}

func (i *pebbleIter) First() bool { return i.it != nil && i.it.First() }
func (i *pebbleIter) Last() bool  { return i.it != nil && i.it.Last() }
func (i *pebbleIter) SeekGE(key []byte) bool {
	return i.it != nil && i.it.SeekGE(key)
}
func (i *pebbleIter) SeekLT(key []byte) bool {
	return i.it != nil && i.it.SeekLT(key)
}
func (i *pebbleIter) Next() bool  { return i.it != nil && i.it.Next() }
func (i *pebbleIter) Prev() bool  { return i.it != nil && i.it.Prev() }
func (i *pebbleIter) Valid() bool { return i.it != nil && i.it.Valid() }

func (i *pebbleIter) Key() []byte {
	if i.it == nil {
		return nil
	}
	return i.it.Key()
}

func (i *pebbleIter) Value() []byte {
	if i.it == nil {
		return nil
	}
	return i.it.Value()
}

// Close releases the iterator and returns the first error met while
// iterating. Closing twice is harmless.
func (i *pebbleIter) Close() error {
	if i.it != nil {
		if err := i.it.Close(); err != nil && i.err == nil {
			i.err = fmt.Errorf("metadata store: iterate: %w", err)
		}
		i.it = nil
	}
	err := i.err
	i.err = nil
	return err
}

var _ Store = (*pebbleStore)(nil)
