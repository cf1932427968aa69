// gw-current-alarm: motor protection on the filtered motor current (n:
// u64, amps: f64, t_ns: i64) from current-filtered. Two alarms go to
// gw-alarm-manager on alarms, as (active: u32, severity: u32, value: f64,
// tag):
//
//   - "motor-overload": a thermal image of the winding (the I²t model of
//     an overload relay): θ follows (I/In)² with a 20 s time constant, In
//     = --rated-amps (default 12 A). Warning above θ 1.1, alarm above
//     1.3, cleared below 1.0. The recipe's 14 A step makes it warn after
//     about 20 s.
//   - "motor-overcurrent": the current above 25 A (alarm), cleared below
//     22 A.
//
// θ and the number of overloads survive restarts through a snapshot: a
// restarted relay must not forget that the motor is hot.
package currentalarm

import (
	"encoding/binary"
	"math"

	"edgeward.dev/edgeward"
)

const (
	tauS          = 20.0
	warnTheta     = 1.1
	alarmTheta    = 1.3
	clearTheta    = 1.0
	overcurrentA  = 25.0
	overClearedA  = 22.0
	maxStepS      = 1.0 // a gap longer than this is not integrated
	severityAlarm = 2
)

var (
	ratedAmps   = edgeward.ArgFloat64("--rated-amps", 12)
	alarms      edgeward.Channel
	theta       float64
	lastT       int64
	overloadSev uint32 // 0 none, 1 warning, 2 alarm
	overcurrent bool
	overloads   uint64
	buf         [48]byte
)

func send(on bool, severity uint32, value float64, tag string) error {
	var flag uint32
	if on {
		flag = 1
	}
	b := binary.LittleEndian.AppendUint32(buf[:0], flag)
	b = binary.LittleEndian.AppendUint32(b, severity)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(value))
	b = append(b, tag...)
	return alarms.Send(b)
}

// overloadLevel is the severity θ calls for, with hysteresis around the
// current one.
func overloadLevel() uint32 {
	switch {
	case theta > alarmTheta:
		return 2
	case theta > warnTheta:
		return max(overloadSev, 1)
	case theta < clearTheta:
		return 0
	}
	return overloadSev
}

func init() { edgeward.Module("gw-current-alarm", setup) }

// setup registers the handlers; it runs only in gw-current-alarm's worker.
func setup() {
	edgeward.OnInit(func() error {
		var err error
		alarms, err = edgeward.OpenChannel("alarms")
		return err
	})
	edgeward.OnMessage(func(m edgeward.Message) error {
		amps, ok1 := m.Float64At(8)
		t, ok2 := m.Int64At(16)
		if !ok1 || !ok2 || math.IsNaN(amps) {
			return nil
		}
		if lastT != 0 && t > lastT {
			dt := math.Min(float64(t-lastT)/1e9, maxStepS)
			load := (amps / ratedAmps) * (amps / ratedAmps)
			theta += (load - theta) * (1 - math.Exp(-dt/tauS))
		}
		lastT = t
		if level := overloadLevel(); level != overloadSev {
			if level > overloadSev {
				overloads++
				edgeward.Warnf("motor thermal image %.2f at %.1f A: overload level %d", theta, amps, level)
			}
			overloadSev = level
			if err := send(level > 0, max(level, 1), theta, "motor-overload"); err != nil {
				return err
			}
		}
		if !overcurrent && amps > overcurrentA || overcurrent && amps < overClearedA {
			overcurrent = !overcurrent
			return send(overcurrent, severityAlarm, amps, "motor-overcurrent")
		}
		return nil
	})
	edgeward.OnSnapshot(func() []byte {
		b := binary.LittleEndian.AppendUint64(nil, math.Float64bits(theta))
		return binary.LittleEndian.AppendUint64(b, overloads)
	})
	edgeward.OnRestore(func(state []byte) error {
		th, ok1 := edgeward.Float64At(state, 0)
		count, ok2 := edgeward.Uint64At(state, 8)
		if !ok1 || !ok2 {
			return edgeward.ErrInvalid
		}
		theta, overloads = th, count
		return nil
	})
}
