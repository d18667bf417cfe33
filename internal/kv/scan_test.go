package kv

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/sstable"

	"github.com/reflinkfs/reflinkfs/internal/damage"
)

// storeWithBlocks makes an on-disk store of n keys in one table of many
// data blocks and returns its directory, the table's path and layout.
func storeWithBlocks(t *testing.T, n int) (string, string, *sstable.Layout) {
	t.Helper()
	dir := t.TempDir()
	s, err := OpenPebble(dir, PebbleOptions{CreateIfMissing: true})
	if err != nil {
		t.Fatal(err)
	}
	tx := s.NewTxn()
	for i := range n {
		mustSet(t, tx, fmt.Sprintf("key%06d", i), string(bytes.Repeat([]byte{byte(i)}, 100)))
	}
	if err := s.Commit(tx, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) != 1 {
		t.Fatalf("want one table, have %q", tables)
	}
	return dir, tables[0], damage.TableLayout(t, tables[0])
}

func scanKeys(t *testing.T, s Store) ([]string, error) {
	var keys []string
	err := Scan(s, nil, nil, func(k, v []byte) error {
		keys = append(keys, string(k))
		return nil
	})
	return keys, err
}

// A damaged data block in the middle of a table: Scan reports it as an error
// (the bug was a loop ending there as if the records ended), ScanReadable
// reads every record of the other blocks and names the damaged range.
func TestScanOverDamagedDataBlock(t *testing.T) {
	const n = 2000
	dir, table, layout := storeWithBlocks(t, n)
	if len(layout.Data) < 8 {
		t.Fatalf("the table has %d data blocks; the test needs several", len(layout.Data))
	}
	mid := layout.Data[len(layout.Data)/2]
	damage.FlipByte(t, table, int64(mid.Offset+mid.Length/2))

	s, err := OpenPebble(dir, PebbleOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	keys, err := scanKeys(t, s)
	if err == nil {
		t.Fatalf("Scan read %d of %d keys and reported no error", len(keys), n)
	}
	if !IsCorruption(err) {
		t.Errorf("Scan's error is not a corruption error: %v", err)
	}

	var got []string
	lost, err := ScanReadable(s, nil, nil, func(k, v []byte) error {
		got = append(got, string(k))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) != 1 {
		t.Fatalf("ScanReadable reports %d lost ranges, want 1: %+v", len(lost), lost)
	}
	// Every key is either read or inside the lost range, and the lost range
	// is no bigger than about one block.
	inLost := 0
	seen := map[string]bool{}
	for _, k := range got {
		seen[k] = true
	}
	for i := range n {
		k := fmt.Sprintf("key%06d", i)
		inRange := bytes.Compare([]byte(k), lost[0].Start) >= 0 && (lost[0].End == nil || bytes.Compare([]byte(k), lost[0].End) < 0)
		switch {
		case inRange && seen[k]:
			t.Errorf("%s is in the lost range %q..%q but was read", k, lost[0].Start, lost[0].End)
		case inRange:
			inLost++
		case !seen[k]:
			t.Errorf("%s is outside the lost range %q..%q and was not read", k, lost[0].Start, lost[0].End)
		}
	}
	if perBlock := n / len(layout.Data); inLost == 0 || inLost > 2*perBlock {
		t.Errorf("%d keys lost; a block holds about %d", inLost, perBlock)
	}
	if lost[0].Err == nil {
		t.Error("the lost range carries no error")
	}
}

// A table whose index or footer is damaged cannot be read at all: Scan
// fails, and ScanReadable reports the whole table's range lost and still
// returns (the keys of other tables are read).
func TestScanOverUnreadableTable(t *testing.T) {
	for _, region := range []string{"index", "footer"} {
		t.Run(region, func(t *testing.T) {
			dir, table, layout := storeWithBlocks(t, 500)
			// A second table, with keys after the first's.
			s, err := OpenPebble(dir, PebbleOptions{})
			if err != nil {
				t.Fatal(err)
			}
			commit(t, s, true, "zz1", "a", "zz2", "b")
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			s.Close()
			// The middle of the index block; the footer's last byte (its
			// magic number: the middle may be padding).
			if region == "index" {
				damage.FlipByte(t, table, int64(layout.Index[0].Offset+layout.Index[0].Length/2))
			} else {
				damage.FlipByte(t, table, int64(layout.Footer.Offset+layout.Footer.Length-1))
			}

			s, err = OpenPebble(dir, PebbleOptions{ReadOnly: true})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.Close()
			if keys, err := scanKeys(t, s); err == nil {
				t.Fatalf("Scan read %d keys of a store with an unreadable table and reported no error", len(keys))
			}
			var got []string
			lost, err := ScanReadable(s, nil, nil, func(k, v []byte) error {
				got = append(got, string(k))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(lost) != 1 || fmt.Sprint(got) != "[zz1 zz2]" {
				t.Errorf("lost %+v, read %q; want one lost range and the other table's keys", lost, got)
			}
		})
	}
}
