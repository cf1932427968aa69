// gw-pressure-filter: spike rejection and smoothing for the pump's
// discharge pressure. It takes readings (n: u64, bar: f64, t_ns: i64)
// from pressure-raw and publishes the same layout on pressure-filtered,
// one for each reading, which the 1 ms pressure loop, the pressure alarm
// and the statistics use.
//
//   - A reading more than 0.8 bar away from the last accepted one is a
//     spike (water hammer, a glitch) and is held over, unless three in a
//     row are that far: then the pressure really moved, and it is
//     accepted.
//   - Readings outside 0–20 bar or not numbers are rejected outright.
//   - Accepted readings are smoothed (exponential moving average, α 0.5).
//
// The count of rejected readings survives restarts through a snapshot.
package pressurefilter

import (
	"encoding/binary"
	"math"

	"edgeward.dev/edgeward"
)

const (
	spikeBar = 0.8
	confirm  = 3 // readings in a row that make a jump real
	alpha    = 0.5
)

var (
	out      edgeward.Channel
	smoothed float64
	started  bool
	far      int // readings in a row more than spikeBar away
	rejected uint64
	buf      [24]byte
)

func init() { edgeward.Module("gw-pressure-filter", setup) }

// setup registers the handlers; it runs only in gw-pressure-filter's worker.
func setup() {
	edgeward.OnInit(func() error {
		var err error
		out, err = edgeward.OpenChannel("pressure-filtered")
		return err
	})
	edgeward.OnMessage(func(m edgeward.Message) error {
		n, ok1 := m.Uint64At(0)
		bar, ok2 := m.Float64At(8)
		t, ok3 := m.Int64At(16)
		if !ok1 || !ok2 || !ok3 {
			return nil
		}
		switch {
		case math.IsNaN(bar) || bar < 0 || bar > 20:
			rejected++
		case !started:
			smoothed, started = bar, true
		case math.Abs(bar-smoothed) > spikeBar && far+1 < confirm:
			far++
			rejected++
		default:
			far = 0
			smoothed += alpha * (bar - smoothed)
		}
		if !started {
			return nil
		}
		b := binary.LittleEndian.AppendUint64(buf[:0], n)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(smoothed))
		b = binary.LittleEndian.AppendUint64(b, uint64(t))
		return out.Send(b)
	})
	edgeward.OnSnapshot(func() []byte { return binary.LittleEndian.AppendUint64(nil, rejected) })
	edgeward.OnRestore(func(state []byte) error {
		var ok bool
		if rejected, ok = edgeward.Uint64At(state, 0); !ok {
			return edgeward.ErrInvalid
		}
		return nil
	})
}
