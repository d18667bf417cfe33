// Package kv is the small ordered, transactional key-value interface the
// metadata layer is written against. Pebble backs it today; the interface is
// kept narrow so a distributed store could back it later.
//
// Invariants: a Store is safe for concurrent use; a Txn and an Iterator are
// not. A committed Txn is applied atomically or not at all, and a Commit with
// sync is durable when it returns. Values returned by Get belong to the
// caller; Key and Value of an Iterator do not.
//
// An iterator that meets a part of the store it cannot read (a damaged
// table) stops as if the records ended; only Close tells the two apart.
// Loop with Scan, which returns that error, or ScanReadable to salvage
// around it.
package kv

import "errors"

// ErrNotFound is returned by Get when the key is absent.
var ErrNotFound = errors.New("kv: not found")

// Iterator walks keys in [lower, upper) in byte order. Key and Value are only
// valid until the next positioning call; copy them to keep them. A
// positioning call returning false means no record or an error: Close says
// which.
type Iterator interface {
	First() bool
	Last() bool
	SeekGE(key []byte) bool
	SeekLT(key []byte) bool
	Next() bool
	Prev() bool
	Valid() bool
	Key() []byte
	Value() []byte
	Close() error
}

// Reader reads keys.
type Reader interface {
	// Get returns a copy of the value of key, or ErrNotFound.
	Get(key []byte) ([]byte, error)
	// NewIter iterates over [lower, upper); nil bounds are open.
	NewIter(lower, upper []byte) Iterator
}

// Txn is a pending set of changes. Reads through a Txn see its own writes
// on top of the committed store. A Txn is not safe for concurrent use.
// An Iterator from a Txn sees the writes made before NewIter, not later
// ones: open a new Iterator after writing.
type Txn interface {
	Reader
	Set(key, value []byte) error
	Delete(key []byte) error
	// DeleteRange deletes every key in [start, end).
	DeleteRange(start, end []byte) error
	// Size is the approximate encoded size of the pending changes in bytes.
	Size() int
	// Empty reports whether the Txn holds no changes.
	Empty() bool
}

// Batch is a write-only set of changes: cheaper than a Txn because nothing
// is indexed for reading. It is committed atomically like a Txn.
type Batch interface {
	Set(key, value []byte) error
	Delete(key []byte) error
}

// Store is an ordered key-value store with atomic multi-key commits.
type Store interface {
	Reader // reads committed state only
	NewTxn() Txn
	NewBatch() Batch
	// CommitBatch applies b atomically, like Commit. Commits are durable in
	// order: a synced commit makes every earlier commit durable too.
	CommitBatch(b Batch, sync bool) error
	// Commit applies t atomically; with sync it is durable when Commit returns.
	// t must not be used afterwards.
	Commit(t Txn, sync bool) error
	// Flush forces memtables to disk (used before taking a crash snapshot in tests).
	Flush() error
	// Close releases the store. Uncommitted Txns are discarded.
	Close() error
}
