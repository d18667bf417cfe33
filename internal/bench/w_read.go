package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Metric names of the read workload.
const (
	mUncachedRead = "uncached_read"      // B/s, first read after cold caches
	mCachedRead   = "cached_read"        // B/s, second read
	mReaderCPU    = "reader_cpu_per_gib" // s of the reading thread's CPU per GiB (cached read)
	mDaemonCPU    = "daemon_cpu_per_gib" // s of the reflinkfs daemon's CPU per GiB (cached read)
	mDaemonCPUUnc = "daemon_cpu_per_gib_uncached"
	mCachedSecs   = "cached_read_s_per_gib"
	seedRead      = 404
)

func readCase(bs int) string { return sizeLabel(int64(bs)) + " reads" }

// sharedReadCase is the case of reads of a file that shares its blocks
// (a clone): on reflinkfs with passthrough the kernel serves it from the
// backing file's page cache.
func sharedReadCase(bs int) string { return readCase(bs) + ", clone" }

// readThroughput: sequential read of one file with 1 MiB and 128 KiB
// read(2) calls, from cold caches (uncached) and again right after
// (cached, the figure of the second read). The same reads of a file of the
// same size on the FUSE ceiling server (ceiling.go) give the most any FUSE
// file system could deliver here, in the same run.
func (r *run) readThroughput(ctx context.Context) error {
	w := WorkloadRead
	done, err := r.workDirs(w)
	defer done()
	if err != nil {
		return err
	}
	size := r.cfg.ReadFileSize
	for _, t := range r.targets() {
		r.log.Printf("[read] writing a %s file on %s", sizeLabel(size), t.name)
		if err := writeSequential(ctx, filepath.Join(t.dir(w), "file"), size, seedRead); err != nil {
			return err
		}
	}
	// A second file and its clone: the read of the clone is passed
	// through on reflinkfs. The first file stays unshared, so its rows
	// keep measuring reads served by the daemon (FOPEN_DIRECT_IO).
	for _, t := range r.targets() {
		r.log.Printf("[read] writing a second %s file on %s and cloning it", sizeLabel(size), t.name)
		src := filepath.Join(t.dir(w), "shared")
		if err := writeSequential(ctx, src, size, seedRead+1); err != nil {
			return err
		}
		if _, _, err := t.cloneFile(src, filepath.Join(t.dir(w), "shared-clone")); err != nil {
			return err
		}
	}
	if err := r.syncAll(); err != nil {
		return err
	}
	ceiling := r.startCeiling(size)
	defer r.stopCeiling(ceiling)
	for i := 0; i < r.cfg.Runs; i++ {
		for _, bs := range r.cfg.ReadBlockSizes {
			cs := readCase(bs)
			if err := r.env.ColdData(ctx); err != nil {
				return err
			}
			for j, t := range r.order(i) {
				if err := ctx.Err(); err != nil {
					return err
				}
				// The ceiling goes between the two file systems, so that
				// alternating their order leaves it in the same place.
				if j == 1 && ceiling != nil {
					if err := r.measureCeiling(ceiling, bs); err != nil {
						r.note("The FUSE ceiling was measured only in part: %v", err)
						r.stopCeiling(ceiling)
						ceiling = nil
					}
				}
				if err := r.measureRead(w, cs, bs, t.key, filepath.Join(t.dir(w), "file"), size); err != nil {
					return err
				}
			}
			// The shared file (a clone) on reflinkfs with passthrough, with
			// share=off, and on XFS; caches are still cold for it.
			for _, v := range rotate(r.shareVariants(), i) {
				if err := r.use(ctx, v); err != nil {
					return err
				}
				if err := r.measureRead(w, sharedReadCase(bs), bs, v.key, filepath.Join(v.t.dir(w), "shared-clone"), size); err != nil {
					return err
				}
			}
			if _, err := r.env.Share(ctx, ""); err != nil {
				return err
			}
			r.log.Printf("[read] %s run %d/%d: cached XFS %s, reflinkfs %s, FUSE ceiling %s; clone: XFS %s, reflinkfs %s, share=off %s", cs, i+1, r.cfg.Runs,
				fmtValue(unitBPS, lastSample(r.rec.Get(w, mCachedRead, cs, fsXFS))),
				fmtValue(unitBPS, lastSample(r.rec.Get(w, mCachedRead, cs, fsReflinkfs))),
				fmtValue(unitBPS, lastSample(r.rec.Get(w, mCachedRead, cs, fsFUSECeiling))),
				fmtValue(unitBPS, lastSample(r.rec.Get(w, mCachedRead, sharedReadCase(bs), fsXFS))),
				fmtValue(unitBPS, lastSample(r.rec.Get(w, mCachedRead, sharedReadCase(bs), fsReflinkfs))),
				fmtValue(unitBPS, lastSample(r.rec.Get(w, mCachedRead, sharedReadCase(bs), fsReflinkfsOff))))
		}
	}
	if r.cfg.Perf {
		r.profileReads(ctx, filepath.Join(r.rfs.dir(w), "file"))
	}
	return nil
}

// measureRead reads path twice with bs-byte reads (caches must be cold)
// and records the first (uncached) and second (cached) read as fs key; on
// reflinkfs also the daemon's CPU time.
func (r *run) measureRead(w, cs string, bs int, key, path string, size int64) error {
	gib := float64(size) / (1 << 30)
	pid := r.env.DaemonPID()
	rfs := key == fsReflinkfs || key == fsReflinkfsOff
	cpuU, err := processCPU(pid)
	if err != nil {
		return err
	}
	first, err := readFile(path, bs)
	if err != nil {
		return err
	}
	cpu0, err := processCPU(pid)
	if err != nil {
		return err
	}
	second, err := readFile(path, bs)
	if err != nil {
		return err
	}
	cpu1, err := processCPU(pid)
	if err != nil {
		return err
	}
	if first.Bytes != size || second.Bytes != size {
		return fmt.Errorf("%s: read %d and %d bytes, want %d", path, first.Bytes, second.Bytes, size)
	}
	x := float64(bs)
	r.rec.Add(w, mUncachedRead, cs, x, key, unitBPS, float64(size)/first.Elapsed.Seconds())
	r.rec.Add(w, mCachedRead, cs, x, key, unitBPS, float64(size)/second.Elapsed.Seconds())
	r.rec.Add(w, mCachedSecs, cs, x, key, unitSeconds, second.Elapsed.Seconds()/gib)
	r.rec.Add(w, mReaderCPU, cs, x, key, unitSeconds, second.CPU.Seconds()/gib)
	if rfs {
		r.rec.Add(w, mDaemonCPU, cs, x, key, unitSeconds, (cpu1-cpu0).Seconds()/gib)
		r.rec.Add(w, mDaemonCPUUnc, cs, x, key, unitSeconds, (cpu0-cpuU).Seconds()/gib)
	}
	return nil
}

// startCeiling mounts the FUSE ceiling server with a file of size bytes
// under the work directory, registered for teardown like every other
// mount. Failing to mount is a note, not an error: the read figures stand
// without it (the target is then judged on DESIGN.md's 4 GB/s alone).
func (r *run) startCeiling(size int64) *ceilingServer {
	mp := filepath.Join(r.env.Work, "fuse-ceiling")
	r.log.Printf("[read] mounting the FUSE ceiling server on %s (%s file from memory)", mp, sizeLabel(size))
	s, err := mountCeiling(mp, size, ceilingBufferLen(size))
	if err != nil {
		r.note("The FUSE ceiling was not measured: %v", err)
		return nil
	}
	r.env.onClose("unmount "+mp, s.Stop)
	return s
}

// stopCeiling unmounts the ceiling server (Env.Close would too, at the
// end of the run; this frees its buffer now).
func (r *run) stopCeiling(s *ceilingServer) {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		r.log.Printf("[read] %v", err)
	}
}

// measureCeiling reads the ceiling's file twice with bs-byte reads, as
// the cached figures are taken, and records the second read.
func (r *run) measureCeiling(s *ceilingServer, bs int) error {
	w, cs := WorkloadRead, readCase(bs)
	size := s.fs.size
	gib := float64(size) / (1 << 30)
	first, err := readFile(s.File(), bs)
	if err != nil {
		return err
	}
	second, err := readFile(s.File(), bs)
	if err != nil {
		return err
	}
	if first.Bytes != size || second.Bytes != size {
		return fmt.Errorf("%s: read %d and %d bytes, want %d", s.File(), first.Bytes, second.Bytes, size)
	}
	r.rec.Add(w, mCachedRead, cs, float64(bs), fsFUSECeiling, unitBPS, float64(size)/second.Elapsed.Seconds())
	r.rec.Add(w, mCachedSecs, cs, float64(bs), fsFUSECeiling, unitSeconds, second.Elapsed.Seconds()/gib)
	r.rec.Add(w, mReaderCPU, cs, float64(bs), fsFUSECeiling, unitSeconds, second.CPU.Seconds()/gib)
	return nil
}

func lastSample(m *Metric) float64 {
	if m == nil || len(m.Samples) == 0 {
		return 0
	}
	return m.Samples[len(m.Samples)-1]
}

// profileReads records the reflinkfs daemon with perf(1) during cached and
// uncached 1 MiB reads of path, and keeps the top of each report. Failing
// to profile is a note, not an error: perf is optional.
func (r *run) profileReads(ctx context.Context, path string) {
	if _, err := exec.LookPath("perf"); err != nil {
		r.note("perf(1) is not installed: no daemon profile was recorded (apt-get install linux-perf).")
		return
	}
	warm := func() error { _, err := readFile(path, 1<<20); return err }
	if err := warm(); err != nil {
		r.note("profile: %v", err)
		return
	}
	err := r.perfRecord(ctx, "perf-cached-read", func() error {
		for range 5 {
			if err := warm(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		r.note("profile of cached reads failed: %v", err)
	}
	if err := r.env.ColdData(ctx); err != nil {
		r.note("profile: %v", err)
		return
	}
	if err := r.perfRecord(ctx, "perf-uncached-read", warm); err != nil {
		r.note("profile of uncached reads failed: %v", err)
	}
}

// perfRecord runs fn while `perf record -g` samples the daemon, then
// writes `perf report` to OutDir/name.txt and keeps its top lines.
func (r *run) perfRecord(ctx context.Context, name string, fn func() error) error {
	data := filepath.Join(r.env.Work, name+".data")
	defer os.Remove(data)
	var stderr bytes.Buffer
	cmd := exec.Command("perf", "record", "-F", "1999", "-g", "-p", strconv.Itoa(r.env.DaemonPID()), "-o", data)
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	// perf creates its output once it is attached.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(data); err == nil {
			break
		}
	}
	time.Sleep(200 * time.Millisecond)
	ferr := fn()
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil && !strings.Contains(err.Error(), "interrupt") {
		return fmt.Errorf("perf record: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	if ferr != nil {
		return ferr
	}
	out, err := runCmd(ctx, "perf", "report", "-i", data, "--stdio", "--no-children",
		"--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.5")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.cfg.OutDir, name+".txt"), []byte(out), 0o644); err != nil {
		return err
	}
	r.profiles[name] = topPerfLines(out, 25)
	return nil
}

// topPerfLines keeps the first n sample lines of a flat perf report.
func topPerfLines(report string, n int) string {
	var keep []string
	for _, line := range strings.Split(report, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") || !strings.Contains(t, "%") {
			continue
		}
		keep = append(keep, strings.Join(strings.Fields(t), " "))
		if len(keep) == n {
			break
		}
	}
	return strings.Join(keep, "\n")
}
