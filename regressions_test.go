package reflinkfs_test

import (
	"testing"

	"github.com/reflinkfs/reflinkfs/internal/modeltest"
	mt "github.com/reflinkfs/reflinkfs/internal/modeltest"
)

// Sequences the model tester found; each once broke the engine.
var engineRegressions = map[string][]mt.Op{
	"empty punch range split a covering extent": {
		mt.Punch(1, 0, 0),
		mt.Write(5, 0, 0, 1),
		mt.Zero(5, 5*mt.B, 5*mt.B),
		mt.Read(3, 0, 0),
		mt.Write(1, 0, mt.B, 1),
		mt.Clone(1, 1, 0, 0, 0),
		mt.Clone(1, 5, 0, 0, 0),
		mt.Clone(5, 5, mt.B, 0, 11*mt.B),
		mt.Punch(5, 7*mt.B+1, mt.B),
		mt.Copy(1, 5, 0, mt.B, mt.B),
	},
	"write converting an unwritten run stored as two records": {
		mt.Write(1, 0, 0, 1),
		mt.Alloc(1, 0, 3*mt.B, false),
		mt.Punch(1, mt.B, 1),
		mt.Write(1, 0, 2*mt.B, 1),
	},
}

func TestEngineRegressions(t *testing.T) {
	for name, ops := range engineRegressions {
		t.Run(name, func(t *testing.T) {
			runChecked(t, ops)
		})
	}
}

func runChecked(t *testing.T, ops []mt.Op) {
	tgt, err := modeltest.NewLibTarget(t.TempDir(), modeltest.LibOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	if f := modeltest.Run(tgt, ops, modeltest.RunOptions{CheckEvery: 1, Log: t.Logf}); f != nil {
		t.Fatal(f)
	}
}
