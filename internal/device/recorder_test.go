package device

import (
	"bytes"
	"fmt"
	"testing"
)

// block returns one aligned block filled with c.
func block(c byte) []byte {
	b := AlignedBuffer(BlockSize)
	for i := range b {
		b[i] = c
	}
	return b
}

// contents summarises the first n blocks of m as one letter per block
// ('.' for zeros), assuming each block is uniformly filled.
func contents(m *Memory, n int) string {
	data := m.Bytes()
	var s []byte
	for i := range n {
		c := data[i*BlockSize]
		if c == 0 {
			c = '.'
		}
		s = append(s, c)
	}
	return string(s)
}

// recordScript runs a fixed sequence of operations on a new Recorder:
//
//	0 write A@0  1 write B@1  2 flush  3 write C@0  4 punch 1  5 flush  6 write D@2  7 write E@3
func recordScript(t *testing.T) *Recorder {
	t.Helper()
	r := NewRecorder(8 * BlockSize)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.WriteBlocks([][]byte{block('A')}, 0))
	must(r.WriteBlocks([][]byte{block('B')}, BlockSize))
	must(r.Flush())
	must(r.WriteBlocks([][]byte{block('C')}, 0))
	must(r.Punch(BlockSize, BlockSize))
	must(r.Flush())
	must(r.WriteBlocks([][]byte{block('D')}, 2*BlockSize))
	must(r.WriteBlocks([][]byte{block('E'), block('F')}, 3*BlockSize))
	// Rejected operations are not recorded.
	if r.WriteBlocks([][]byte{block('X')}, 8*BlockSize) == nil || r.Punch(1, BlockSize) == nil {
		t.Fatal("out-of-range operations succeeded")
	}
	return r
}

func TestRecorderLog(t *testing.T) {
	r := recordScript(t)
	ops := r.Ops()
	var kinds []string
	for _, op := range ops {
		kinds = append(kinds, fmt.Sprintf("%v@%d+%d", op.Kind, op.Off/BlockSize, op.Length/BlockSize))
	}
	want := "[write@0+1 write@1+1 flush@0+0 write@0+1 punch@1+1 flush@0+0 write@2+1 write@3+2]"
	if fmt.Sprint(kinds) != want {
		t.Errorf("ops = %v, want %v", kinds, want)
	}
	if !bytes.Equal(ops[7].Data[BlockSize:], block('F')) || int64(len(ops[7].Data)) != ops[7].Length {
		t.Error("a vectored write is not recorded as its concatenated data")
	}
	if fp := fmt.Sprint(r.FlushPoints()); fp != "[2 5]" {
		t.Errorf("FlushPoints = %v, want [2 5]", fp)
	}
	// Ops is a copy.
	ops[0].Kind = OpFlush
	if r.Ops()[0].Kind != OpWrite {
		t.Error("changing the result of Ops changed the log")
	}
	if got := contents(r.cur, 6); got != "C.DEF." {
		t.Errorf("live contents = %q", got)
	}
}

func TestRecorderImage(t *testing.T) {
	r := recordScript(t)
	n := len(r.Ops())
	for _, c := range []struct {
		upto int
		keep func(int) bool
		want string
	}{
		{0, nil, "......"},
		{-5, nil, "......"},
		{1, nil, "A....."},
		{2, nil, "AB...."},
		{2, func(int) bool { return false }, "......"}, // nothing flushed yet
		{3, func(int) bool { return false }, "AB...."}, // everything before the flush survives
		{5, nil, "C....."},
		{5, func(int) bool { return false }, "AB...."},
		{5, func(i int) bool { return i == 4 }, "A....."}, // the punch survived, the overwrite did not
		{5, func(i int) bool { return i == 3 }, "CB...."},
		{n, nil, "C.DEF."},
		{n + 10, nil, "C.DEF."},
		{n, func(i int) bool { return i != 6 }, "C..EF."},
		{n, func(i int) bool { return i != 7 }, "C.D..."}, // a write is lost as a whole
		{n, func(int) bool { return false }, "C....."},
	} {
		if got := contents(r.Image(c.upto, c.keep), 6); got != c.want {
			t.Errorf("Image(%d, keep=%v) = %q, want %q", c.upto, c.keep != nil, got, c.want)
		}
	}

	// keep is asked only about ops after the last flush before upto.
	var asked []int
	r.Image(n, func(i int) bool { asked = append(asked, i); return true })
	if fmt.Sprint(asked) != "[6 7]" {
		t.Errorf("keep asked about %v, want [6 7]", asked)
	}

	// The full image equals the live device, and is an independent device.
	img := r.Image(n, nil)
	if !bytes.Equal(img.Bytes(), r.cur.Bytes()) {
		t.Error("Image of the whole log differs from the live device")
	}
	if err := img.WriteBlocks([][]byte{block('Z')}, 0); err != nil {
		t.Fatal(err)
	}
	if contents(r.Image(n, nil), 1) != "C" {
		t.Error("writing to an Image changed the recorder")
	}
}

func TestRecorderFromImage(t *testing.T) {
	first := recordScript(t)
	crashed := first.Image(len(first.Ops()), func(i int) bool { return i == 7 }) // "C..EF."
	r := NewRecorderFrom(crashed)
	if err := r.WriteBlocks([][]byte{block('G')}, 5*BlockSize); err != nil {
		t.Fatal(err)
	}
	if got := contents(r.Image(0, nil), 6); got != "C..EF." {
		t.Errorf("Image(0) = %q; want the starting contents", got)
	}
	if got := contents(r.Image(1, nil), 6); got != "C..EFG" {
		t.Errorf("Image(1) = %q", got)
	}
	if got := contents(crashed, 6); got != "C..EF." {
		t.Errorf("the recorder changed its starting image: %q", got)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if len(r.Ops()) != 1 || contents(r.Image(1, nil), 6) != "C..EFG" {
		t.Error("log or Image unavailable after Close")
	}
}
