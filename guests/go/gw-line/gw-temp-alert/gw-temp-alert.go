// gw-temp-alert: the field report's AlertOnHighTemp(temp) = temp > 85.0,
// on the line. It takes the filtered barrel temperature (n: u64, celsius:
// f64, t_ns: i64) from temp-filtered, and for every reading above
// --threshold (default 85.0) logs
//
//	ALERT: temperature 89.6 > 85.0 (alert 12)
//
// as guests/go/go-alert does. It also tells gw-alarm-manager on alarms
// when the excursion starts and when it is over (below the threshold
// minus 2 °C of hysteresis, so a reading hovering at 85 does not flap):
// (active: u32, severity: u32, celsius: f64, tag "temp-high").
//
// The alert count survives restarts through a snapshot.
package tempalert

import (
	"encoding/binary"
	"math"

	"edgeward.dev/edgeward"
)

const hysteresis = 2.0

var (
	threshold = edgeward.ArgFloat64("--threshold", 85)
	alarms    edgeward.Channel
	alerts    uint64
	active    bool
	buf       [32]byte
)

// raise tells gw-alarm-manager that the excursion started (or ended).
func raise(on bool, celsius float64) error {
	var flag uint32
	if on {
		flag = 1
	}
	b := binary.LittleEndian.AppendUint32(buf[:0], flag)
	b = binary.LittleEndian.AppendUint32(b, 2) // severity: alarm
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(celsius))
	b = append(b, "temp-high"...)
	return alarms.Send(b)
}

func init() { edgeward.Module("gw-temp-alert", setup) }

// setup registers the handlers; it runs only in gw-temp-alert's worker.
func setup() {
	edgeward.OnInit(func() error {
		var err error
		alarms, err = edgeward.OpenChannel("alarms")
		return err
	})
	edgeward.OnMessage(func(m edgeward.Message) error {
		celsius, ok := m.Float64At(8)
		if !ok {
			return nil
		}
		if celsius > threshold {
			alerts++
			edgeward.Warnf("ALERT: temperature %.1f > %.1f (alert %d)", celsius, threshold, alerts)
			if !active {
				active = true
				return raise(true, celsius)
			}
		} else if active && celsius < threshold-hysteresis {
			active = false
			return raise(false, celsius)
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
