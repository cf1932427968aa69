// gw-temp-stats: rolling statistics of the filtered barrel temperature
// (n: u64, celsius: f64, t_ns: i64) from temp-filtered, over windows of
// --window-s seconds (default 10) of the readings' own time stamps. At the
// end of each window it publishes on stats
//
//	(source: u32 = 1, count: u32, min: f64, max: f64, mean: f64,
//	 stddev: f64, name "temperature")
//
// (Welford's algorithm: one pass, no stored samples) for gw-maintenance,
// gw-historian and gw-reporter. A window starts over after a restart, so
// there is no snapshot.
package tempstats

import (
	"encoding/binary"
	"math"

	"edgeward.dev/edgeward"
)

const source = 1

var (
	windowNs = int64(edgeward.ArgFloat64("--window-s", 10) * 1e9)
	stats    edgeward.Channel
	start    int64 // the window's first time stamp, 0 before one
	count    uint32
	mean, m2 float64
	lo, hi   float64
	buf      [64]byte
)

func add(x float64) {
	if count == 0 {
		lo, hi = x, x
	}
	count++
	d := x - mean
	mean += d / float64(count)
	m2 += d * (x - mean)
	lo, hi = math.Min(lo, x), math.Max(hi, x)
}

func publish() error {
	std := 0.0
	if count > 1 {
		std = math.Sqrt(m2 / float64(count-1))
	}
	b := binary.LittleEndian.AppendUint32(buf[:0], source)
	b = binary.LittleEndian.AppendUint32(b, count)
	for _, v := range [...]float64{lo, hi, mean, std} {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	}
	b = append(b, "temperature"...)
	count, mean, m2 = 0, 0, 0
	return stats.Send(b)
}

func init() { edgeward.Module("gw-temp-stats", setup) }

// setup registers the handlers; it runs only in gw-temp-stats's worker.
func setup() {
	edgeward.OnInit(func() error {
		var err error
		stats, err = edgeward.OpenChannel("stats")
		return err
	})
	edgeward.OnMessage(func(m edgeward.Message) error {
		celsius, ok1 := m.Float64At(8)
		t, ok2 := m.Int64At(16)
		if !ok1 || !ok2 || math.IsNaN(celsius) {
			return nil
		}
		var err error
		if start != 0 && t-start >= windowNs && count > 0 {
			err = publish()
			start = 0
		}
		if start == 0 {
			start = t
		}
		add(celsius)
		return err
	})
}
