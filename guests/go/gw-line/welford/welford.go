// Package welford is the rolling statistics window the line's stats
// modules share (gw-temp-stats, gw-current-stats): Welford's one-pass
// mean and variance with min and max, no stored samples, and the stats
// channel's record
//
//	(source: u32, count: u32, min: f64, max: f64, mean: f64, stddev: f64)
//
// followed by the statistic's name (docs/gateway-32.md, Messages).
package welford

import (
	"encoding/binary"
	"math"
)

// Window accumulates readings until Record ends it.
type Window struct {
	count    uint32
	mean, m2 float64
	lo, hi   float64
}

// Add takes one reading.
func (w *Window) Add(x float64) {
	if w.count == 0 {
		w.lo, w.hi = x, x
	}
	w.count++
	d := x - w.mean
	w.mean += d / float64(w.count)
	w.m2 += d * (x - w.mean)
	w.lo, w.hi = math.Min(w.lo, x), math.Max(w.hi, x)
}

// Count is the number of readings so far.
func (w *Window) Count() uint32 { return w.count }

// Record appends the window's stats record for source and name to b[:0],
// and starts a new window.
func (w *Window) Record(b []byte, source uint32, name string) []byte {
	std := 0.0
	if w.count > 1 {
		std = math.Sqrt(w.m2 / float64(w.count-1))
	}
	b = binary.LittleEndian.AppendUint32(b[:0], source)
	b = binary.LittleEndian.AppendUint32(b, w.count)
	for _, v := range [...]float64{w.lo, w.hi, w.mean, std} {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	}
	*w = Window{}
	return append(b, name...)
}
