// gw-temp-sensor: the extruder barrel's thermocouple, simulated. Every tick
// (100 ms in policies/gateway-32) it publishes one reading (n: u64,
// celsius: f64, t_ns: i64) on temp-raw, the layout AlertOnHighTemp reads
// (docs/gateway-32.md).
//
// The signal is a function of the reading number n, so every run shows the
// same line: about 64 °C with a slow one-minute swing and a little noise,
// and three deterministic faults that the rest of the line must cope with:
//   - an overheat episode every 100 readings (8 readings of 86–90 °C, from
//     reading 50 on): a real excursion, which passes the median filter and
//     makes gw-temp-alert raise its ALERT;
//   - a full-scale glitch (250 °C, an open thermocouple) every 37 readings:
//     rejected by gw-temp-filter's range check;
//   - a dropout (NaN, no conversion) every 53 readings: held over by
//     gw-temp-filter.
//
// n survives restarts through a snapshot, so the pattern goes on where it
// was instead of starting over.
package tempsensor

import (
	"encoding/binary"
	"math"

	"edgeward.dev/edgeward"
	"edgeward.dev/guests/gw-line/noise"
)

var (
	out edgeward.Channel
	n   uint64
	// buf is reused for every reading: a handler that allocates nothing
	// never makes the Go collector run inside a call.
	buf [24]byte
)

// celsius is what the thermocouple reads at reading n.
func celsius(n uint64) float64 {
	switch {
	case n%53 == 7:
		return math.NaN() // dropout: the converter returned nothing
	case n%37 == 11:
		return 250.0 // open thermocouple: full scale
	}
	if k := n % 100; k >= 50 && k < 58 {
		// Overheat: a heater band overshoots for 0.8 s, peaking near 89.6.
		return 85.6 + 4*math.Sin(math.Pi*(float64(k-50)+0.5)/8)
	}
	return 64 + 6*math.Sin(2*math.Pi*float64(n)/600) + 0.3*noise.At(n)
}

func init() { edgeward.Module("gw-temp-sensor", setup) }

// setup registers the handlers; it runs only in gw-temp-sensor's worker.
func setup() {
	edgeward.OnInit(func() error {
		var err error
		out, err = edgeward.OpenChannel("temp-raw")
		return err
	})
	edgeward.OnTick(func(nowNs int64) error {
		b := binary.LittleEndian.AppendUint64(buf[:0], n)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(celsius(n)))
		b = binary.LittleEndian.AppendUint64(b, uint64(nowNs))
		n++
		// on_full = "drop": a full subscriber loses this reading, the
		// next one comes in 100 ms anyway.
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
