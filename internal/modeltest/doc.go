// Package modeltest is the model-based random tester of reflinkfs.
//
// It generates seeded random sequences of file operations (write, read,
// truncate, punch, zero range, allocate, clone range, dedupe range,
// copy_file_range, unshare, sync, reopen, remove, rename, remove-while-open),
// runs each sequence against a Target (the library, or later a FUSE mount) and
// against an in-memory Oracle, and compares every result. On failure the
// Shrinker reduces the sequence to a minimal one and prints it as Go
// expressions that can be pasted into a regression table.
//
// The Oracle models contents and physical sharing at block granularity: every
// file maps block indices to block identities, an identity has a kind (written
// or unwritten), bytes and a reference count. That lets the runner check not
// only bytes and sizes but also Fiemap's Shared and Unwritten flags, the
// one-to-one mapping between identities and physical blocks, and exact space
// accounting (UsedBytes = live identities × BlockSize).
//
// Invariants the oracle keeps (and so demands of the engine):
//   - bytes beyond EOF inside a file's last block are zero;
//   - an identity with more than one reference is never modified: a write to
//     it allocates a new identity (copy on write);
//   - an identity is live exactly while some file (named or removed but still
//     open) maps it.
//
// The exact semantics of every operation are documented on the Oracle methods.
//
// # Running
//
// TestModelLibrary and TestModelRegressions in the root package drive this
// package through LibTarget (flags -model.seqs, -model.ops, -model.duration,
// -model.seed, -model.without). A failure prints the shrunk sequence as
// mt.Write(...), mt.Clone(...) lines ready to paste into the regression
// table, and the seed to replay the unshrunk one with -v (per-step results
// and times). Another frontend (a FUSE mount) only needs a Target; Detacher
// and SpaceReporter are optional.
package modeltest
