// gw-reporter: the line's one-line summary in the log, every tick (5 s):
//
//	summary: temp-filtered=150 stats=12 meter-values=150 energy=15 parts=40
//	oee=3 alarm-events=4 line-state=5 maintenance=1 | alarms seen 2, active 1
//	| line WARNING | 64.2 C, 2.4 mm/s, 4.0 bar, 10.0 A | oee 83.1 %,
//	0.052 kWh, 39 parts good, 1 rejected, 11 bad frames, health 100
//
// (one line): how many messages came from each upstream channel since the
// line first started, then what the last ones said: the barrel
// temperature (its last reading), the last statistics windows' means of
// the vibration, the pump pressure and the motor current (which the two
// 1 ms loops hold at the recipe's setpoints), and the plant figures. The
// upstream channels are the line's last stages, so counts above zero mean
// readings went all the way through (docs/gateway-32.md). The counts
// survive restarts through a snapshot.
package reporter

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"

	"edgeward.dev/edgeward"
)

// upstream are the channels counted, in the summary's order.
var upstream = [...]string{
	"temp-filtered", "stats", "meter-values", "energy", "parts", "oee",
	"alarm-events", "line-state", "maintenance",
}

const (
	tempFiltered = iota
	statsIn
	meterValues
	energyIn
	partsIn
	oeeIn
	alarmEvents
	lineState
	maintenanceIn
)

var lineStates = [...]string{"RUNNING", "WARNING", "ALARM"}

var (
	handles       [len(upstream)]edgeward.Channel
	counts        [len(upstream)]uint64
	alarmsSeen    uint64
	activeAlarms  uint32
	state         uint32
	celsius       = nan
	oee           float64
	kwh, health   float64
	haveHealth    bool                                  // a maintenance message came since this start
	means         = [5]float64{nan, nan, nan, nan, nan} // the last window's mean per stats source 1–4
	good, rejects uint64
	badFrames     uint64
)

func index(ch edgeward.Channel) int {
	for i, h := range handles {
		if h == ch {
			return i
		}
	}
	return -1
}

var nan = math.NaN()

// number formats x with the given decimals, or "-" before it is known.
func number(x float64, decimals int) string {
	if math.IsNaN(x) {
		return "-"
	}
	return strconv.FormatFloat(x, 'f', decimals, 64)
}

func summary() string {
	var b strings.Builder
	b.WriteString("summary:")
	for i, name := range upstream {
		fmt.Fprintf(&b, " %s=%d", name, counts[i])
	}
	lineName := "UNKNOWN"
	if int(state) < len(lineStates) {
		lineName = lineStates[state]
	}
	fmt.Fprintf(&b, " | alarms seen %d, active %d | line %s | %s C, %s mm/s, %s bar, %s A",
		alarmsSeen, activeAlarms, lineName, number(celsius, 1), number(means[2], 1),
		number(means[3], 2), number(means[4], 1))
	fmt.Fprintf(&b, " | oee %.1f %%, %.3f kWh, %d parts good, %d rejected, %d bad frames",
		oee*100, kwh, good, rejects, badFrames)
	if haveHealth {
		fmt.Fprintf(&b, ", health %.0f", health)
	}
	return b.String()
}

func init() { edgeward.Module("gw-reporter", setup) }

// setup registers the handlers; it runs only in gw-reporter's worker.
func setup() {
	edgeward.OnInit(func() error {
		for i, name := range upstream {
			var err error
			if handles[i], err = edgeward.OpenChannel(name); err != nil {
				return err
			}
		}
		return nil
	})
	edgeward.OnMessage(func(m edgeward.Message) error {
		i := index(m.Channel)
		if i < 0 {
			return nil
		}
		counts[i]++
		switch i {
		case tempFiltered:
			celsius, _ = m.Float64At(8)
		case statsIn:
			if source, ok := m.Uint32At(0); ok && source >= 1 && source <= 4 {
				means[source], _ = m.Float64At(24)
			}
		case meterValues:
			badFrames, _ = m.Uint64At(48)
		case energyIn:
			kwh, _ = m.Float64At(0)
		case partsIn:
			good, _ = m.Uint64At(0)
			rejects, _ = m.Uint64At(8)
		case oeeIn:
			oee, _ = m.Float64At(24)
		case alarmEvents:
			if active, ok := m.Uint32At(0); ok && active == 1 {
				alarmsSeen++
			}
			activeAlarms, _ = m.Uint32At(16)
		case lineState:
			state, _ = m.Uint32At(0)
		case maintenanceIn:
			health, haveHealth = m.Float64At(8)
		}
		return nil
	})
	edgeward.OnTick(func(nowNs int64) error {
		edgeward.Log(edgeward.LevelInfo, summary())
		return nil
	})
	edgeward.OnSnapshot(func() []byte {
		b := binary.LittleEndian.AppendUint64(nil, alarmsSeen)
		for _, c := range counts {
			b = binary.LittleEndian.AppendUint64(b, c)
		}
		return b
	})
	edgeward.OnRestore(func(saved []byte) error {
		if len(saved) != 8*(1+len(counts)) {
			return edgeward.ErrInvalid
		}
		alarmsSeen, _ = edgeward.Uint64At(saved, 0)
		for i := range counts {
			counts[i], _ = edgeward.Uint64At(saved, 8*(i+1))
		}
		return nil
	})
}
