package crashtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/vfs"
	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/internal/device"
)

// RecordRecovery replays crash point p and records the recovery from it, so
// a second crash can be placed inside it: the crashed device becomes the
// starting contents of a new device.Recorder, the crashed metadata files
// the durable starting state of a new MetaFS, and the image is opened on
// them (write-ahead log replay, orphans freed or handed to the reaper, the
// label and recovery commit), left until the background freeing it resumed
// is done, and closed (a last commit).
//
// The result is a Recording like Record's: its Points are crash instants of
// the recovery, and its Check demands at every one of them the state the
// first crash must show. Recovery changes no file, so that is the state of
// every commit it makes; for a process kill whose last commit may or may not
// show, it is the one the recorded recovery showed.
//
// The first crash's metadata files are taken as durable: exact for a power
// cut (only synced data survived it); for a kill it assumes the host wrote
// the killed process's unsynced data out before the second crash.
func (r *Recording) RecordRecovery(p Point) (*Recording, error) {
	rr := &Recording{Name: r.Name + " recovering from " + p.String(), cfg: r.cfg, model: r.model,
		recovery: true, emptyFree: r.emptyFree}
	var err error
	if rr.dir, err = r.replayDir(); err != nil {
		return nil, err
	}
	metaDir := filepath.Join(rr.dir, "meta")
	crashed, err := r.meta.State(p.Events, p.PowerCut, filepath.Join(r.dir, "meta"), metaDir)
	if err != nil {
		return nil, err
	}
	rr.base = r.image(p)
	rr.dev = &countingDevice{Recorder: device.NewRecorderFrom(rr.base)}
	rr.meta = NewMetaFS(rr.dev.count)
	if err := rr.meta.load(crashed, metaDir); err != nil {
		return nil, fmt.Errorf("loading the crashed metadata files: %w", err)
	}
	rr.startOps, rr.startEvents = rr.dev.count(), rr.meta.Len()

	fsys, err := reflinkfs.Open(rr.dir, reflinkfs.Options{CacheSize: r.cfg.CacheSize, CommitInterval: -1, Logger: r.cfg.Logger,
		Storage: &reflinkfs.Storage{Device: rr.dev, MetaFS: rr.meta, OnCommit: rr.onCommit}})
	if err != nil {
		return nil, fmt.Errorf("open after crash: %w", err)
	}
	ks := r.expected(p)
	rr.initial = r.state(ks[0])
	if len(ks) > 1 {
		if got, _ := ReadState(fsys); r.state(ks[1]).Equal(got) {
			rr.initial = r.state(ks[1])
		}
	}
	fsys.WaitReaped()
	if err := fsys.Close(); err != nil {
		return nil, fmt.Errorf("close after recovery: %w", err)
	}
	return rr, nil
}

// load makes m hold the tree under root of src as its durable starting
// state, as logged events (directories made, files written and synced,
// every directory up to the filesystem root synced), so State rebuilds it
// at any later point.
func (m *MetaFS) load(src vfs.FS, root string) error {
	ok, err := vfs.Clone(src, m, root, root, vfs.CloneSync)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("no metadata directory")
	}
	for d := root; ; {
		parent := m.PathDir(d)
		if parent == d {
			return nil
		}
		f, err := m.OpenDir(parent)
		if err != nil {
			return err
		}
		err = errors.Join(f.Sync(), f.Close())
		if err != nil {
			return err
		}
		d = parent
	}
}

// afterCommits returns, for every commit, the crash points right after it
// was made durable (after its WAL sync; after the blocks it freed were
// punched, power cut and kill): where recovery finds the most to do (the
// orphans and partly freed files that commit left).
func (r *Recording) afterCommits() []Point {
	tags := r.meta.Tags()
	var pts []Point
	for _, c := range r.commits {
		if c.walSync < 0 {
			continue
		}
		_, hi := r.eventRange(tags, c.ops)
		pts = append(pts, Point{Ops: tags[c.walSync], Events: c.walSync + 1, PowerCut: true},
			Point{Ops: c.ops, Events: hi, PowerCut: true}, Point{Ops: c.ops, Events: hi})
	}
	return dedupPoints(pts)
}

// removeDir deletes the recovery recording's image directory.
func (r *Recording) removeDir() error { return os.RemoveAll(r.dir) }
