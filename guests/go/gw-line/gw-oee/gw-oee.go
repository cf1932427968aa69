// gw-oee: overall equipment effectiveness of the line, the figure a plant
// manager asks for. From the conveyor speed (n: u64, m_per_s: f64, t_ns:
// i64) on conveyor-speed it counts planned time and run time (moving
// faster than 0.05 m/s); from the part totals (good: u64, rejects: u64) on
// parts it counts parts made and good parts. Every tick (5 s) it publishes
// on oee
//
//	(availability: f64, performance: f64, quality: f64, oee: f64)
//
// as fractions: availability = run time / planned time, performance =
// parts / (run time × --ideal-rate parts/s, default 0.5 m/s over a 0.6 m
// pitch), quality = good / parts, oee = their product.
//
// The counters survive restarts through a snapshot (a restart loses at
// most the gap it was down).
package oee

import (
	"encoding/binary"
	"math"

	"edgeward.dev/edgeward"
)

const (
	movingMPerS = 0.05
	maxStepNs   = 5e8 // a longer gap (a restart) is not counted
)

var (
	idealRate           = edgeward.ArgFloat64("--ideal-rate", 0.5/0.6)
	parts, speed, out   edgeward.Channel
	plannedNs, runNs    int64
	made, good          uint64
	lastT               int64
	lastTotal, lastGood uint64
	haveTotals          bool
	buf                 [32]byte
)

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return math.Min(a/b, 1)
}

func init() { edgeward.Module("gw-oee", setup) }

// setup registers the handlers; it runs only in gw-oee's worker.
func setup() {
	edgeward.OnInit(func() error {
		var err error
		if parts, err = edgeward.OpenChannel("parts"); err != nil {
			return err
		}
		if speed, err = edgeward.OpenChannel("conveyor-speed"); err != nil {
			return err
		}
		out, err = edgeward.OpenChannel("oee")
		return err
	})
	edgeward.OnMessage(func(m edgeward.Message) error {
		switch m.Channel {
		case speed:
			v, ok1 := m.Float64At(8)
			t, ok2 := m.Int64At(16)
			if !ok1 || !ok2 {
				return nil
			}
			if lastT != 0 && t > lastT && t-lastT < maxStepNs {
				plannedNs += t - lastT
				if v > movingMPerS {
					runNs += t - lastT
				}
			}
			lastT = t
		case parts:
			g, ok1 := m.Uint64At(0)
			r, ok2 := m.Uint64At(8)
			if !ok1 || !ok2 {
				return nil
			}
			// The counter's totals are its own (since its first start):
			// count what changed since the last message.
			if haveTotals && g+r > lastTotal && g >= lastGood {
				made += g + r - lastTotal
				good += g - lastGood
			}
			lastTotal, lastGood, haveTotals = g+r, g, true
		}
		return nil
	})
	edgeward.OnTick(func(nowNs int64) error {
		availability := ratio(float64(runNs), float64(plannedNs))
		performance := ratio(float64(made), float64(runNs)/1e9*idealRate)
		quality := ratio(float64(good), float64(made))
		b := buf[:0]
		for _, v := range [...]float64{availability, performance, quality, availability * performance * quality} {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
		return out.Send(b)
	})
	edgeward.OnSnapshot(func() []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(plannedNs))
		b = binary.LittleEndian.AppendUint64(b, uint64(runNs))
		b = binary.LittleEndian.AppendUint64(b, made)
		return binary.LittleEndian.AppendUint64(b, good)
	})
	edgeward.OnRestore(func(state []byte) error {
		p, ok1 := edgeward.Int64At(state, 0)
		r, ok2 := edgeward.Int64At(state, 8)
		mk, ok3 := edgeward.Uint64At(state, 16)
		g, ok4 := edgeward.Uint64At(state, 24)
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return edgeward.ErrInvalid
		}
		plannedNs, runNs, made, good = p, r, mk, g
		return nil
	})
}
