// gw-setpoint-scheduler: the production recipe. It steps through four
// product grades, 30 s each (--step-s), and gives the two 1 ms control
// loops their setpoints as readings (n: u64, value: f64, t_ns: i64): the
// discharge pressure in bar on pressure-setpoint (gw-pressure-pid) and the
// motor current in A on current-setpoint (gw-motor-pid). It publishes at
// every step change and again every 5 s, so a restarted loop has its
// setpoint within seconds. Ticks every second.
//
// The step and the time spent in it survive restarts through a snapshot:
// a restarted scheduler goes on with the grade being made.
package setpointscheduler

import (
	"encoding/binary"
	"math"

	"edgeward.dev/edgeward"
)

type step struct {
	grade    string
	bar, amp float64
}

var recipe = [...]step{
	{"A", 4.0, 10},
	{"B (high speed)", 4.5, 14},
	{"C", 4.2, 12},
	{"D (low speed)", 3.8, 9},
}

const republishNs = 5e9

var (
	stepNs              = int64(edgeward.ArgFloat64("--step-s", 30) * 1e9)
	pressure, current   edgeward.Channel
	index               int
	inStepNs, sinceSent int64
	lastNs              int64
	n                   uint64
	buf                 [24]byte
)

func send(ch edgeward.Channel, value float64, nowNs int64) error {
	b := binary.LittleEndian.AppendUint64(buf[:0], n)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(value))
	b = binary.LittleEndian.AppendUint64(b, uint64(nowNs))
	n++
	return ch.Send(b)
}

func publish(nowNs int64) error {
	s := recipe[index]
	if err := send(pressure, s.bar, nowNs); err != nil {
		return err
	}
	return send(current, s.amp, nowNs)
}

func init() { edgeward.Module("gw-setpoint-scheduler", setup) }

// setup registers the handlers; it runs only in gw-setpoint-scheduler's worker.
func setup() {
	edgeward.OnInit(func() error {
		var err error
		if pressure, err = edgeward.OpenChannel("pressure-setpoint"); err != nil {
			return err
		}
		current, err = edgeward.OpenChannel("current-setpoint")
		return err
	})
	edgeward.OnTick(func(nowNs int64) error {
		if lastNs == 0 {
			lastNs = nowNs
			s := recipe[index]
			edgeward.Infof("recipe grade %s: pressure %.1f bar, motor %.1f A", s.grade, s.bar, s.amp)
			return publish(nowNs)
		}
		elapsed := nowNs - lastNs
		lastNs = nowNs
		inStepNs += elapsed
		sinceSent += elapsed
		if inStepNs >= stepNs {
			inStepNs, sinceSent = 0, 0
			index = (index + 1) % len(recipe)
			s := recipe[index]
			edgeward.Infof("recipe grade %s: pressure %.1f bar, motor %.1f A", s.grade, s.bar, s.amp)
			return publish(nowNs)
		}
		if sinceSent >= republishNs {
			sinceSent = 0
			return publish(nowNs)
		}
		return nil
	})
	edgeward.OnSnapshot(func() []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(index))
		b = binary.LittleEndian.AppendUint64(b, uint64(inStepNs))
		return binary.LittleEndian.AppendUint64(b, n)
	})
	edgeward.OnRestore(func(state []byte) error {
		i, ok1 := edgeward.Uint64At(state, 0)
		in, ok2 := edgeward.Int64At(state, 8)
		sent, ok3 := edgeward.Uint64At(state, 16)
		if !ok1 || !ok2 || !ok3 || i >= uint64(len(recipe)) {
			return edgeward.ErrInvalid
		}
		index, inStepNs, n = int(i), in, sent
		return nil
	})
}
