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
	"math"

	"edgeward.dev/edgeward"
	"edgeward.dev/guests/gw-line/welford"
)

const source = 1

var (
	windowNs = int64(edgeward.ArgFloat64("--window-s", 10) * 1e9)
	stats    edgeward.Channel
	start    int64 // the window's first time stamp, 0 before one
	window   welford.Window
	buf      [64]byte
)

func publish() error {
	return stats.Send(window.Record(buf[:0], source, "temperature"))
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
		if start != 0 && t-start >= windowNs && window.Count() > 0 {
			err = publish()
			start = 0
		}
		if start == 0 {
			start = t
		}
		window.Add(celsius)
		return err
	})
}
