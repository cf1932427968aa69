// AlertOnHighTemp in Go: subscribes to the sensor's readings (n: u64,
// celsius: f64, start: u64), warns above --threshold (default 85), and
// keeps its alert count across restarts in a snapshot.
package main

import (
	"encoding/binary"

	"edgeward.dev/edgeward"
)

var threshold = edgeward.ArgFloat64("--threshold", 85)
var alerts uint64

func init() {
	edgeward.OnMessage(func(m edgeward.Message) error {
		if celsius, ok := m.Float64At(8); ok && celsius > threshold {
			alerts++
			edgeward.Warnf("ALERT: temperature %.1f > %.1f (alert %d)", celsius, threshold, alerts)
		}
		return nil
	})
	edgeward.OnSnapshot(func() []byte { return binary.LittleEndian.AppendUint64(nil, alerts) })
	edgeward.OnRestore(func(state []byte) error {
		var ok bool
		if alerts, ok = edgeward.Uint64At(state, 0); !ok {
			return edgeward.ErrInvalid
		}
		edgeward.Infof("restored %d alerts", alerts)
		return nil
	})
}

func main() {}
