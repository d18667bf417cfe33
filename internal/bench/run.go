package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// run is the state of one benchmark run.
type run struct {
	cfg      *Config
	env      *Env
	log      *progress
	rec      *Recorder
	xfs, rfs *target
	notes    []string
	libText  string
	profiles map[string]string
}

// order returns both targets for repetition i, alternating which goes
// first so that drift in machine load falls on both.
func (r *run) order(i int) []*target {
	if i%2 == 0 {
		return []*target{r.xfs, r.rfs}
	}
	return []*target{r.rfs, r.xfs}
}

func (r *run) targets() []*target { return []*target{r.xfs, r.rfs} }

func (r *run) note(format string, a ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, a...))
}

// workDirs creates the workload's directory on both file systems and
// returns a function removing them again.
func (r *run) workDirs(id string) (func(), error) {
	for _, t := range r.targets() {
		if err := os.MkdirAll(t.dir(id), 0o755); err != nil {
			return func() {}, err
		}
	}
	return func() {
		for _, t := range r.targets() {
			if err := os.RemoveAll(t.dir(id)); err != nil {
				r.log.Printf("[%s] cleaning %s: %v", id, t.dir(id), err)
			}
			if err := t.settle(); err != nil {
				r.log.Printf("[%s] sync %s: %v", id, t.name, err)
			}
		}
	}, nil
}

// syncAll syncs both file systems.
func (r *run) syncAll() error {
	for _, t := range r.targets() {
		if err := t.syncFS(); err != nil {
			return fmt.Errorf("sync %s: %w", t.name, err)
		}
	}
	return nil
}

func (r *run) workload(ctx context.Context, id string) error {
	switch id {
	case WorkloadClone:
		return r.cloneBySize(ctx)
	case WorkloadExtents:
		return r.cloneByExtents(ctx)
	case WorkloadMemory:
		return r.memoryOfClones(ctx)
	case WorkloadRead:
		return r.readThroughput(ctx)
	case WorkloadMapped:
		return r.mappedSharing(ctx)
	case WorkloadOpen:
		return r.firstOpen(ctx)
	case WorkloadCoW:
		return r.cowOverwrites(ctx)
	case WorkloadTree:
		return r.smallFilesTree(ctx)
	case WorkloadMetadata:
		return r.metadataOps(ctx)
	case WorkloadLibrary:
		return r.library(ctx)
	}
	return fmt.Errorf("unknown workload %q", id)
}

// Run measures the selected workloads and writes the report: markdown on
// cfg.Stdout, results.json and PNG plots in cfg.OutDir. The environment is
// torn down before Run returns, whatever happens. An interrupted run
// (ctx cancelled) still writes what it measured and returns ctx's error.
func Run(ctx context.Context, cfg Config) (err error) {
	if cfg.Runs < 1 {
		return fmt.Errorf("runs must be at least 1")
	}
	if cfg.Exe == "" && cfg.needsMounts() {
		return fmt.Errorf("no reflinkfs binary given")
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	log := newProgress(cfg.Stderr)
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	res := &Results{
		Command: cfg.CommandLine, Mode: cfg.mode(), Runs: cfg.Runs, Started: time.Now(),
		Config: cfg, Errors: map[string]string{}, Profiles: map[string]string{},
	}
	res.Machine = describeMachine(ctx, &cfg)

	env, err := Setup(ctx, &cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		log.Printf("tearing down")
		if cerr := env.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	res.Setup = env.describe()
	r := &run{cfg: &cfg, env: env, log: log, rec: newRecorder(), profiles: res.Profiles}
	r.xfs = &target{key: fsXFS, name: "XFS", root: env.XFSMount, env: env}
	r.rfs = &target{key: fsReflinkfs, name: "reflinkfs", root: env.RFSMount, env: env}

	for _, id := range Workloads {
		if !cfg.selected(id) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		if id != WorkloadLibrary {
			// A workload that measured share=off leaves the default behind.
			if _, err := env.Share(ctx, ""); err != nil {
				res.Errors[id] = "reflinkfs could not be remounted with the default share=: " + err.Error()
				continue
			}
			if remounted, err := env.EnsureReflinkfs(ctx); err != nil {
				res.Errors[id] = "reflinkfs is not mounted and could not be remounted: " + err.Error()
				continue
			} else if remounted {
				r.note("The reflinkfs daemon had exited before workload %s; the image was remounted.", id)
			}
		}
		log.Printf("== %s", id)
		start := time.Now()
		if err := r.workload(ctx, id); err != nil {
			if ctx.Err() != nil {
				res.Errors[id] = "interrupted"
				break
			}
			res.Errors[id] = err.Error()
			log.Printf("== %s FAILED after %v: %v", id, time.Since(start).Round(time.Second), err)
			continue
		}
		log.Printf("== %s done in %v", id, time.Since(start).Round(time.Second))
	}

	res.Finished = time.Now()
	res.Metrics = r.rec.Metrics()
	res.Tables = buildTables(r.rec, &cfg)
	res.Targets = checkTargets(r.rec, &cfg)
	res.Notes = r.notes
	res.LibraryText = r.libText
	plots, perr := drawPlots(r.rec, &cfg, cfg.OutDir)
	for _, p := range plots {
		res.Plots = append(res.Plots, filepath.Base(p))
	}
	if perr != nil {
		res.Errors["plots"] = perr.Error()
	}
	path, jerr := writeJSON(cfg.OutDir, res)
	writeMarkdown(cfg.Stdout, res)
	if jerr != nil {
		return jerr
	}
	log.Printf("results: %s; plots: %s", path, strings.Join(plots, ", "))
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	if len(res.Errors) > 0 {
		var ids []string
		for id := range res.Errors {
			ids = append(ids, id)
		}
		return fmt.Errorf("some workloads failed: %s (see the report)", strings.Join(ids, ", "))
	}
	return nil
}

// describe records how the file systems were set up.
func (e *Env) describe() map[string]string {
	m := map[string]string{"work_dir": e.Work}
	if e.LoopDev != "" {
		m["xfs"] = fmt.Sprintf("mkfs.xfs -m reflink=1 on %s (losetup --direct-io=on, sparse %s backing file)", e.LoopDev, fmtBytes(float64(e.cfg.ImageSize)))
	}
	if e.Image != "" {
		m["reflinkfs"] = fmt.Sprintf("reflinkfs mount -d --size %d --cache-size %d (%s cache)", e.cfg.ImageSize, e.cfg.CacheSize, fmtBytes(float64(e.cfg.CacheSize)))
	}
	return m
}
