// gw-energy-meter: the line's energy account. It takes the decoded meter
// values (n: u64, volts: f64, amps: f64, kw: f64, kwh: f64, pf: f64,
// bad_frames: u64) from meter-values, integrates the active power over
// time (trapezoids; gaps over 1 s, such as a restart, are not bridged)
// and every 10 readings publishes on energy
//
//	(kwh: f64, average_kw: f64, peak_kw: f64, readings: u64)
//
// for gw-historian and gw-reporter. The totals survive restarts through a
// snapshot: an energy account that forgot its kWh at every restart would
// be worthless.
package energymeter

import (
	"encoding/binary"
	"math"

	"edgeward.dev/edgeward"
)

const maxGapNs = 1e9

var (
	out              edgeward.Channel
	kwh, peakKW      float64
	readings         uint64
	lastKW           float64
	lastNs           int64
	sumKW            float64 // since the last publication
	sinceLastPublish uint64
	buf              [32]byte
)

func init() { edgeward.Module("gw-energy-meter", setup) }

// setup registers the handlers; it runs only in gw-energy-meter's worker.
func setup() {
	edgeward.OnInit(func() error {
		var err error
		out, err = edgeward.OpenChannel("energy")
		return err
	})
	edgeward.OnMessage(func(m edgeward.Message) error {
		kw, ok := m.Float64At(24)
		if !ok || math.IsNaN(kw) || kw < 0 {
			return nil
		}
		now := edgeward.NowNs()
		if lastNs != 0 && now-lastNs < maxGapNs {
			hours := float64(now-lastNs) / 3.6e12
			kwh += (kw + lastKW) / 2 * hours
		}
		lastNs, lastKW = now, kw
		peakKW = math.Max(peakKW, kw)
		readings++
		sumKW += kw
		sinceLastPublish++
		if sinceLastPublish < 10 {
			return nil
		}
		b := binary.LittleEndian.AppendUint64(buf[:0], math.Float64bits(kwh))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(sumKW/float64(sinceLastPublish)))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(peakKW))
		b = binary.LittleEndian.AppendUint64(b, readings)
		sumKW, sinceLastPublish = 0, 0
		return out.Send(b)
	})
	edgeward.OnSnapshot(func() []byte {
		b := binary.LittleEndian.AppendUint64(nil, math.Float64bits(kwh))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(peakKW))
		return binary.LittleEndian.AppendUint64(b, readings)
	})
	edgeward.OnRestore(func(state []byte) error {
		k, ok1 := edgeward.Float64At(state, 0)
		p, ok2 := edgeward.Float64At(state, 8)
		r, ok3 := edgeward.Uint64At(state, 16)
		if !ok1 || !ok2 || !ok3 {
			return edgeward.ErrInvalid
		}
		kwh, peakKW, readings = k, p, r
		edgeward.Infof("restored %.3f kWh over %d readings", kwh, readings)
		return nil
	})
}
