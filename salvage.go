package reflinkfs

// Salvage of a metadata store that cannot be read in full (a damaged table,
// block or index): `fsck --repair` copies every record it can still read
// into a new store, keeps the damaged one aside as meta.damaged-<time> in
// the image directory, and then repairs references in the new store like
// in any image (entries naming lost inodes removed, inodes without entries
// reconnected under /lost+found, reference counts and free space rebuilt
// from the extent maps that survived).

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/vfs"

	"github.com/reflinkfs/reflinkfs/internal/alloc"
	"github.com/reflinkfs/reflinkfs/internal/kv"
	"github.com/reflinkfs/reflinkfs/internal/meta"
)

// salvageBatch is how many records go into one batch of the new store.
const salvageBatch = 4096

// salvageStore replaces the open store by a new one holding every record of
// it that can be read, and reloads the in-memory state from it. It returns
// what it did, for the repair report. Called from Check with the gate held
// exclusively and fs.mu held.
func (fsys *FS) salvageStore(found []kv.KeyRange) ([]string, error) {
	mfs := fsys.opt.metaFS()
	if mfs == nil {
		mfs = vfs.Default
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	metaPath := filepath.Join(fsys.dir, metaDir)
	newPath := filepath.Join(fsys.dir, metaDir+".salvage-"+stamp)
	damagedPath := filepath.Join(fsys.dir, metaDir+".damaged-"+stamp)

	dst, err := kv.OpenPebble(newPath, kv.PebbleOptions{FS: mfs, CreateIfMissing: true, Logger: fsys.log})
	if err != nil {
		return nil, fmt.Errorf("creating a new metadata store: %w", err)
	}
	copied := 0
	batch := dst.NewBatch()
	lost, err := kv.ScanReadable(fsys.store, nil, nil, func(k, v []byte) error {
		if err := batch.Set(k, v); err != nil {
			return err
		}
		if copied++; copied%salvageBatch == 0 {
			if err := dst.CommitBatch(batch, false); err != nil {
				return err
			}
			batch = dst.NewBatch()
		}
		return nil
	})
	if err == nil {
		err = dst.CommitBatch(batch, true)
	}
	if err == nil {
		err = dst.Flush() // the new store must not depend on its log
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		mfs.RemoveAll(newPath)
		return nil, fmt.Errorf("copying the readable records to a new metadata store: %w", err)
	}

	// Swap: the damaged store is kept (it may hold more than a later tool
	// can read), the new one takes its place.
	if err := fsys.store.Close(); err != nil {
		fsys.log.Warn("closing the damaged metadata store", "err", err)
	}
	fsys.store = nil
	if err := mfs.Rename(metaPath, damagedPath); err != nil {
		return nil, fmt.Errorf("moving the damaged metadata store aside: %w", err)
	}
	if err := mfs.Rename(newPath, metaPath); err != nil {
		return nil, fmt.Errorf("putting the salvaged metadata store in place (it is %s; the damaged one is %s): %w", newPath, damagedPath, err)
	}
	if d, err := mfs.OpenDir(fsys.dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return nil, fmt.Errorf("syncing the image directory: %w", err)
		}
	}
	if fsys.store, err = kv.OpenPebble(metaPath, kv.PebbleOptions{FS: mfs, Logger: fsys.log, CacheSize: metaCacheSize(fsys.opt.CacheSize)}); err != nil {
		return nil, fmt.Errorf("opening the salvaged metadata store: %w", err)
	}
	if err := fsys.reloadSalvaged(); err != nil {
		return nil, err
	}

	done := []string{fmt.Sprintf("the metadata store could not be read in full: copied its %d readable records into a new store; the damaged store is kept as %s", copied, filepath.Base(damagedPath))}
	if len(lost) == 0 {
		lost = found // read in full this time (a transient error?): report what the check met
	}
	for _, r := range lost {
		done = append(done, "lost the records "+describeKeyRange(r))
	}
	return done, nil
}

// reloadSalvaged reloads the superblock, device label check and in-memory
// state from a salvaged store, as a recovery open does.
func (fsys *FS) reloadSalvaged() error {
	v, err := fsys.store.Get(meta.SuperKey())
	var sb meta.Super
	if err == nil {
		sb, err = meta.DecodeSuper(v)
	}
	fsys.sbRebuilt = false
	if err != nil {
		// The superblock was among the records lost.
		if sb, err = fsys.rebuildSuper(); err != nil {
			return fmt.Errorf("rebuilding the superblock: %w", err)
		}
		fsys.sbRebuilt = true
	}
	fsys.sb = sb
	fsys.labelAhead, fsys.labelDamaged = 0, nil
	if err := fsys.checkLabel(); err != nil {
		return err
	}
	if a, err := alloc.Load(fsys.store, fsys.sb.DeviceBlocks); err == nil {
		fsys.alloc = a
	} else {
		fsys.alloc = alloc.Empty(fsys.sb.DeviceBlocks) // rebuilt by repair
	}
	fsys.refs = newRefTree()
	fsys.mappedBlocks, fsys.sharedBlocks, fsys.inodeCount = 0, 0, 0
	for _, in := range fsys.inodes {
		in.ext = nil // reloaded on use
	}
	fsys.txn = fsys.store.NewTxn()
	return fsys.loadCounters()
}
