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
// writes after the last flush, down to single 4 KiB blocks: a multi-block
// write call may be lost, kept, or torn (some of its blocks kept), which
// the harness models by splitting the recorded write itself
// (device.Recorder.Image keeps or loses a call whole); a process kill loses
// nothing written.
// Recording.Check rebuilds the device (Recorder.Image) and the metadata
// files (MetaFS.State) for the point, opens them as a new image, and
// demands:
//   - Open succeeds and Fsck reports no problem;
//   - the files are exactly those of the last commit whose WAL sync is part
//     of the point (so every fsync'd byte is there), with no checksum error;
//   - no block of a file holds bytes never written to that file (stale or
//     foreign data), checked against the Model's per-block history;
//   - no deleted file outlives recovery: once the background freeing that
//     Open resumes is done (FS.WaitReaped), the image holds exactly the
//     expected inodes and Stats.ReapingFiles is 0 (with fsck clean, so no
//     block is leaked), and an image with no file left has exactly the free
//     space of the freshly created image;
//   - for some points, the recovered image accepts writes, closes, reopens
//     and checks clean again.
//
// The first fsck runs while the reaper may still work (Fsck once raced
// operations between its commit and its gate: TestFsckWhileReaping).
//
// A crash during recovery: Recording.RecordRecovery replays a point, puts
// the crashed device under a new device.Recorder (NewRecorderFrom) and the
// crashed metadata files, as durable events, into a new MetaFS, and records
// the recovery (Open: WAL replay, orphans freed or handed to the reaper,
// the recovery commit; the reaper finishing; Close). The result is again a
// Recording, whose points are crash instants inside that recovery and
// whose every commit holds the state the first crash must show, so the same
// Check applies unchanged. (For a first crash that is a kill, the killed
// process's unsynced metadata writes are taken as durable.)
//
// Background freeing ("reaping"): the workloads reap-cloned and
// reap-unlinked-open lower tuning.ReapThreshold and ReapChunk (64 extents,
// 4 per operation; Workload.Reap and Tune, for the recording and every
// replay) and delete files of one to a few hundred single-block extents,
// some shared with a clone, some unlinked while open (the last close or a
// rename over them hands them to the reaper), with syncs and writes while
// the reaper runs; TestCrashReplay logs how many commits caught a file
// partly freed. Replays then find orphans that are whole, partly freed, or
// gone, and recovery hands them back to the reaper.
//
// The package's tests (go test ./internal/crashtest) also cover the rest of
// the crash and bad-input contract:
//   - TestCrashReplay: every Workload, about -crash.points points in all
//     (default 300; 0 means every instant of every workload, about 4,500
//     per seed; -crash.seeds=N runs each workload with N seeds);
//   - TestCrashDuringRecovery: -crash.recovery first crash points (default
//     8, over the reaping workloads, unlink-open-clone-source and mix,
//     chosen right after commits first, passing over recoveries that commit
//     nothing), each recovery crashed at -crash.recovery.points points
//     (default 8; 0 means every instant of it);
//   - TestPowerCutTearsWrites: crash images include lost, kept and torn
//     unflushed writes; TestFsckWhileReaping: Fsck while the reaper frees a
//     file reports no false problem;
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
// Record reports any other commit as a problem. The reaper commits on its
// own only past a 64 MiB transaction, which the workloads stay far below.
package crashtest
