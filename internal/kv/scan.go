package kv

import (
	"bytes"
	"math/big"
)

// Scan calls fn for every record in [lower, upper) in key order. It returns
// fn's first error, or the iterator's: a part of the store that cannot be
// read (a damaged table, block or index) is an error, never the end of the
// records. Key and value are only valid during the call.
//
// Every loop over records should go through Scan (or check Close's error),
// because a bare `for ok := it.First(); ok; ok = it.Next()` stops silently
// at the first unreadable block and takes the rest for absent.
func Scan(rd Reader, lower, upper []byte, fn func(k, v []byte) error) error {
	it := rd.NewIter(lower, upper)
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			it.Close()
			return err
		}
	}
	return it.Close()
}

// KeyRange is the half-open key range [Start, End); a nil End is open.
type KeyRange struct {
	Start, End []byte
	Err        error // why it could not be read
}

// ScanReadable is Scan for salvage: it calls fn for every record of
// [lower, upper) it can read, steps over the key ranges it cannot read, and
// returns those ranges. Only an error of fn stops it.
//
// Where the iterator fails after key k, the end of the unreadable range is
// found by bisection over the keys above k: the smallest key from which a
// fresh iterator reads without error. A damaged block or table covers one
// contiguous key range, so the bisection finds where it ends; readable
// records between two damaged ranges that bisection jumps over are lost
// with them (a salvage reads what it can, not everything).
func ScanReadable(rd Reader, lower, upper []byte, fn func(k, v []byte) error) ([]KeyRange, error) {
	var lost []KeyRange
	from := lower
	for {
		var last []byte
		it := rd.NewIter(from, upper)
		for ok := it.First(); ok; ok = it.Next() {
			last = append(last[:0], it.Key()...)
			if err := fn(it.Key(), it.Value()); err != nil {
				it.Close()
				return lost, err
			}
		}
		iterErr := it.Close()
		if iterErr == nil {
			return lost, nil
		}
		start := bytes.Clone(from)
		if last != nil {
			start = append(last, 0) // the smallest key after the last one read
		}
		end := readableFrom(rd, start, upper)
		lost = append(lost, KeyRange{Start: start, End: end, Err: iterErr})
		if end == nil {
			return lost, nil
		}
		from = end
	}
}

// readable reports whether an iterator over [from, upper) can be
// positioned on its first record (or find there is none) without error.
func readable(rd Reader, from, upper []byte) bool {
	it := rd.NewIter(from, upper)
	it.First()
	return it.Close() == nil
}

// readableFrom returns the smallest key x > start (to a precision of a few
// bytes beyond the longest key involved) such that [x, upper) reads without
// error at its start, or nil if none below upper does.
func readableFrom(rd Reader, start, upper []byte) []byte {
	// Keys are compared as numbers of width bytes (shorter keys padded with
	// zeros, which keeps their order).
	width := max(len(start), len(upper), 24) + 8
	lo := keyNum(start, width) // not readable from here
	var hi *big.Int            // readable from here
	if upper != nil {
		hi = keyNum(upper, width)
	} else {
		hi = new(big.Int).Lsh(big.NewInt(1), uint(8*width)) // above every key of width bytes
	}
	if upper == nil && !readable(rd, numKey(new(big.Int).Sub(hi, big.NewInt(1)), width), nil) {
		return nil
	}
	one := big.NewInt(1)
	for new(big.Int).Sub(hi, lo).Cmp(one) > 0 {
		mid := new(big.Int).Add(lo, hi)
		mid.Rsh(mid, 1)
		if readable(rd, numKey(mid, width), upper) {
			hi = mid
		} else {
			lo = mid
		}
	}
	if upper != nil && hi.Cmp(keyNum(upper, width)) == 0 {
		return nil
	}
	if hi.BitLen() > 8*width {
		return nil
	}
	return numKey(hi, width)
}

func keyNum(k []byte, width int) *big.Int {
	b := make([]byte, width)
	copy(b, k)
	return new(big.Int).SetBytes(b)
}

// numKey is keyNum's inverse, without the padding zeros.
func numKey(n *big.Int, width int) []byte {
	b := n.FillBytes(make([]byte, width))
	return bytes.TrimRight(b, "\x00")
}
