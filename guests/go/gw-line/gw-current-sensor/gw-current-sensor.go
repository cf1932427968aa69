// gw-current-sensor: the main drive motor's current transducer, with the
// motor simulated. Every tick (20 ms) it publishes one reading (n: u64,
// amps: f64, t_ns: i64) on current-raw. The motor answers the duty cycle
// gw-motor-pid publishes on drive-cmd (n, duty %, t_ns): its current
// settles at 0.2 A per % of duty, times the load, with a 150 ms time
// constant. So the 1 ms current loop really closes through this module.
//
// Deterministic, as a function of the reading number n:
//   - commutation ripple (a 5-sample pattern) and a little noise;
//   - a jam every 2250 readings (45 s), 150 readings long (3 s, from
//     reading 1500 on): the load rises 35 %, and the current loop must
//     pull the duty back;
//   - a fieldbus dropout every 3000 readings (60 s), 20 readings long
//     (400 ms, from reading 1200 on): nothing is published, and
//     gw-watchdog raises "stale:current-raw".
//
// n survives restarts through a snapshot.
package currentsensor

import (
	"encoding/binary"
	"math"

	"edgeward.dev/edgeward"
	"edgeward.dev/guests/gw-line/noise"
)

const (
	ampsPerDuty = 0.2  // A per % of duty at nominal load
	tauS        = 0.15 // the motor's electrical/mechanical time constant
)

var (
	out, drive edgeward.Channel
	n          uint64
	duty       float64 // the last duty cycle gw-motor-pid asked for
	amps       float64 // the simulated motor's current
	lastNs     int64
	buf        [24]byte
)

func load(n uint64) float64 {
	if k := n % 2250; k >= 1500 && k < 1650 {
		return 1.35 // jam: material builds up on the screw
	}
	return 1.0
}

func dropout(n uint64) bool {
	k := n % 3000
	return k >= 1200 && k < 1220
}

func init() { edgeward.Module("gw-current-sensor", setup) }

// setup registers the handlers; it runs only in gw-current-sensor's worker.
func setup() {
	edgeward.OnInit(func() error {
		var err error
		if out, err = edgeward.OpenChannel("current-raw"); err != nil {
			return err
		}
		drive, err = edgeward.OpenChannel("drive-cmd")
		return err
	})
	edgeward.OnMessage(func(m edgeward.Message) error {
		if d, ok := m.Float64At(8); ok && m.Channel == drive && d >= 0 && d <= 100 {
			duty = d
		}
		return nil
	})
	edgeward.OnTick(func(nowNs int64) error {
		// The motor's physics runs on real time (a late tick simulates the
		// whole gap), capped so a long pause does not jump.
		dt := 0.02
		if lastNs != 0 {
			dt = math.Min(float64(nowNs-lastNs)/1e9, 0.5)
		}
		lastNs = nowNs
		target := ampsPerDuty * duty * load(n)
		amps += (target - amps) * (1 - math.Exp(-dt/tauS))
		ripple := 0.3 * math.Sin(2*math.Pi*float64(n%5)/5)
		measured := amps + ripple + 0.1*noise.At(n^0x5A5A)
		number := n
		n++
		if dropout(number) {
			return nil
		}
		b := binary.LittleEndian.AppendUint64(buf[:0], number)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(math.Max(measured, 0)))
		b = binary.LittleEndian.AppendUint64(b, uint64(nowNs))
		return out.Send(b)
	})
	edgeward.OnSnapshot(func() []byte { return binary.LittleEndian.AppendUint64(nil, n) })
	edgeward.OnRestore(func(state []byte) error {
		var ok bool
		if n, ok = edgeward.Uint64At(state, 0); !ok {
			return edgeward.ErrInvalid
		}
		edgeward.Infof("resuming at reading %d", n)
		return nil
	})
}
