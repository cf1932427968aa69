// gw-current-stats: rolling statistics of the filtered motor current (n:
// u64, amps: f64, t_ns: i64) from current-filtered, over windows of
// --window readings (default 250: 5 s at 20 ms). At the end of each window
// it publishes on stats
//
//	(source: u32 = 4, count: u32, min: f64, max: f64, mean: f64,
//	 stddev: f64, name "motor-current")
//
// for gw-maintenance, gw-historian and gw-reporter. Counted in readings,
// not time: a fieldbus dropout makes a window last longer instead of
// holding fewer readings. Welford's algorithm, no stored samples. A window
// starts over after a restart, so there is no snapshot.
package currentstats

import (
	"encoding/binary"
	"math"

	"edgeward.dev/edgeward"
)

const source = 4

var (
	window   = uint32(edgeward.ArgInt("--window", 250))
	stats    edgeward.Channel
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
	b = append(b, "motor-current"...)
	count, mean, m2 = 0, 0, 0
	return stats.Send(b)
}

func init() { edgeward.Module("gw-current-stats", setup) }

// setup registers the handlers; it runs only in gw-current-stats's worker.
func setup() {
	edgeward.OnInit(func() error {
		var err error
		stats, err = edgeward.OpenChannel("stats")
		return err
	})
	edgeward.OnMessage(func(m edgeward.Message) error {
		amps, ok := m.Float64At(8)
		if !ok || math.IsNaN(amps) {
			return nil
		}
		add(amps)
		if count >= window {
			return publish()
		}
		return nil
	})
}
