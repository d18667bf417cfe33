// Package crashtest proves reflinkfs's crash contract by replay.
//
// Record runs a workload on an image whose data device is a
// device.Recorder (every write, punch and flush logged in order) and whose
// metadata store runs in a MetaFS (every file write, sync and directory
// change pebble makes, logged in order and placed in the device's log). At
// every durable commit (Storage.OnCommit, called with the image quiescent)
// it snapshots the workload's Model: the namespace and bytes that commit
// made durable.
//
// A crash Point is an instant of that combined log: the first Ops device
// operations and the first Events metadata events happened. A power cut
// also loses metadata data that was not synced and any subset of the device
// writes after the last flush; a process kill loses nothing written.
// Recording.Check rebuilds the device (Recorder.Image) and the metadata
// files (MetaFS.State) for the point, opens them as a new image, and
// demands:
//   - Open succeeds and Fsck reports no problem;
//   - the files are exactly those of the last commit whose WAL sync is part
//     of the point (so every fsync'd byte is there), with no checksum error;
//   - no block of a file holds bytes never written to that file (stale or
//     foreign data), checked against the Model's per-block history;
//   - for some points, the recovered image accepts writes, closes, reopens
//     and checks clean again.
//
// The package's tests (go test ./internal/crashtest) also cover the rest of
// the crash and bad-input contract:
//   - TestCrashReplay: every Workload, about -crash.points points in all
//     (default 300; 0 means every instant of every workload, about 2,100
//     per seed; -crash.seeds=N runs each workload with N seeds);
//   - TestKillDaemonWhileWriting: SIGKILL of a real mount's daemon under an
//     fsyncing writer, -kill.rounds times; fsck and the fsync'd data after
//     each (needs root and /dev/fuse; REFLINKFS_REQUIRE_FUSE=1 makes their
//     absence a failure);
//   - corruption tests on a real on-disk image: data block flips and data
//     file truncation (EIO, counted, never wrong bytes), damaged metadata
//     records, damaged or missing pebble files (inspected in child
//     processes, so a panic on any goroutine or a hang is caught), and
//     crafted records with valid checksums but impossible contents;
//   - TestFuzzDecoders: a short go test -fuzz run of every decoder.
//
// The invariant the harness itself relies on: commits happen only inside
// the workload's sync calls (W.Sync, W.SyncFS, W.Fsck), with periodic
// commits off, so the Model at each commit is exactly its durable state;
// Record reports any other commit as a problem.
package crashtest
