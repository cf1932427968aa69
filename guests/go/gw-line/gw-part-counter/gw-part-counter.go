// gw-part-counter: counts the parts leaving the line. It integrates the
// conveyor speed (n: u64, m_per_s: f64, t_ns: i64) from conveyor-speed
// into distance; every --pitch-m metres (default 0.6, one part on the
// belt) a part passes the vision check, and every 29th fails it
// (deterministic, so the quality figure is the same in every run). At
// each part it publishes the totals on parts as (good: u64, rejects: u64)
// for gw-oee and gw-reporter.
//
// The totals and the distance into the current part survive restarts
// through a snapshot: a shift's count must not start over.
package partcounter

import (
	"encoding/binary"
	"math"

	"edgeward.dev/edgeward"
)

const maxStepS = 0.5 // a longer gap (a restart) is not integrated

var (
	pitch         = edgeward.ArgFloat64("--pitch-m", 0.6)
	out           edgeward.Channel
	good, rejects uint64
	metres        float64 // travelled since the last part
	lastT         int64
	buf           [16]byte
)

func init() { edgeward.Module("gw-part-counter", setup) }

// setup registers the handlers; it runs only in gw-part-counter's worker.
func setup() {
	edgeward.OnInit(func() error {
		var err error
		out, err = edgeward.OpenChannel("parts")
		return err
	})
	edgeward.OnMessage(func(m edgeward.Message) error {
		speed, ok1 := m.Float64At(8)
		t, ok2 := m.Int64At(16)
		if !ok1 || !ok2 || math.IsNaN(speed) || speed < 0 {
			return nil
		}
		if lastT != 0 && t > lastT {
			metres += speed * math.Min(float64(t-lastT)/1e9, maxStepS)
		}
		lastT = t
		if metres < pitch {
			return nil
		}
		metres -= pitch
		if (good+rejects+1)%29 == 0 {
			rejects++
		} else {
			good++
		}
		b := binary.LittleEndian.AppendUint64(buf[:0], good)
		b = binary.LittleEndian.AppendUint64(b, rejects)
		return out.Send(b)
	})
	edgeward.OnSnapshot(func() []byte {
		b := binary.LittleEndian.AppendUint64(nil, good)
		b = binary.LittleEndian.AppendUint64(b, rejects)
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(metres))
	})
	edgeward.OnRestore(func(state []byte) error {
		g, ok1 := edgeward.Uint64At(state, 0)
		r, ok2 := edgeward.Uint64At(state, 8)
		d, ok3 := edgeward.Float64At(state, 16)
		if !ok1 || !ok2 || !ok3 {
			return edgeward.ErrInvalid
		}
		good, rejects, metres = g, r, d
		edgeward.Infof("restored %d good parts, %d rejects", good, rejects)
		return nil
	})
}
