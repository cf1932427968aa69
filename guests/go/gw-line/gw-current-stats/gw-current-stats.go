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
	"math"

	"edgeward.dev/edgeward"
	"edgeward.dev/guests/gw-line/welford"
)

const source = 4

var (
	windowSize = uint32(edgeward.ArgInt("--window", 250))
	stats      edgeward.Channel
	window     welford.Window
	buf        [64]byte
)

func publish() error {
	return stats.Send(window.Record(buf[:0], source, "motor-current"))
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
		window.Add(amps)
		if window.Count() >= windowSize {
			return publish()
		}
		return nil
	})
}
