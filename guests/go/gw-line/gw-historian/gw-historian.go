// gw-historian: the line's short-term history, what an HMI trend screen
// would read. It keeps the last 64 records of each of seven streams in
// fixed rings (no allocation per message):
//
//   - stats (source: u32, count: u32, min, max, mean, stddev: f64, name)
//     from the four statistics modules, one stream per source 1–4;
//   - energy (kwh, average_kw, peak_kw: f64, readings: u64);
//   - oee (availability, performance, quality, oee: f64);
//   - maintenance (run_hours, health, vibration, alarms_per_hour: f64).
//
// Each record is its arrival time and four numbers. The whole history
// survives restarts through a snapshot (7 × 64 × 40 bytes, about 18 KB),
// which is the point of a historian. It publishes nothing.
package historian

import (
	"encoding/binary"
	"math"

	"edgeward.dev/edgeward"
)

const (
	depth   = 64
	streams = 7
	// Stream indices past the four statistics sources.
	energyStream = 4
	oeeStream    = 5
	maintStream  = 6
	recordBytes  = 40
)

type record struct {
	t      int64
	values [4]float64
}

type ring struct {
	next, len int
	records   [depth]record
}

var (
	history                   [streams]ring
	stats, energy, oee, maint edgeward.Channel
	total                     uint64
)

func (r *ring) add(rec record) {
	r.records[r.next] = rec
	r.next = (r.next + 1) % depth
	r.len = min(r.len+1, depth)
}

// numbers reads four f64 from offset of b.
func numbers(b []byte, offset int) (v [4]float64, ok bool) {
	for i := range v {
		if v[i], ok = edgeward.Float64At(b, offset+8*i); !ok {
			return v, false
		}
	}
	return v, true
}

func init() { edgeward.Module("gw-historian", setup) }

// setup registers the handlers; it runs only in gw-historian's worker.
func setup() {
	edgeward.OnInit(func() error {
		for _, c := range []struct {
			ch   *edgeward.Channel
			name string
		}{{&stats, "stats"}, {&energy, "energy"}, {&oee, "oee"}, {&maint, "maintenance"}} {
			var err error
			if *c.ch, err = edgeward.OpenChannel(c.name); err != nil {
				return err
			}
		}
		return nil
	})
	edgeward.OnMessage(func(m edgeward.Message) error {
		stream, offset := -1, 0
		switch m.Channel {
		case stats:
			if source, ok := m.Uint32At(0); ok && source >= 1 && source <= 4 {
				stream, offset = int(source-1), 8
			}
		case energy:
			stream = energyStream
		case oee:
			stream = oeeStream
		case maint:
			stream = maintStream
		}
		if stream < 0 {
			return nil
		}
		values, ok := numbers(m.Bytes, offset)
		if !ok {
			return nil
		}
		if stream == energyStream {
			// readings is a u64, not a float: keep it as a number.
			r, _ := m.Uint64At(24)
			values[3] = float64(r)
		}
		history[stream].add(record{t: edgeward.NowNs(), values: values})
		total++
		return nil
	})
	edgeward.OnSnapshot(func() []byte {
		b := make([]byte, 0, 8+streams*(8+depth*recordBytes))
		b = binary.LittleEndian.AppendUint64(b, total)
		for i := range history {
			r := &history[i]
			b = binary.LittleEndian.AppendUint32(b, uint32(r.next))
			b = binary.LittleEndian.AppendUint32(b, uint32(r.len))
			for _, rec := range r.records {
				b = binary.LittleEndian.AppendUint64(b, uint64(rec.t))
				for _, v := range rec.values {
					b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
				}
			}
		}
		return b
	})
	edgeward.OnRestore(func(state []byte) error {
		if len(state) != 8+streams*(8+depth*recordBytes) {
			return edgeward.ErrInvalid
		}
		total, _ = edgeward.Uint64At(state, 0)
		at := 8
		for i := range history {
			r := &history[i]
			next, _ := edgeward.Uint32At(state, at)
			n, _ := edgeward.Uint32At(state, at+4)
			if next >= depth || n > depth {
				return edgeward.ErrInvalid
			}
			r.next, r.len = int(next), int(n)
			at += 8
			for j := range r.records {
				t, _ := edgeward.Int64At(state, at)
				r.records[j].t = t
				r.records[j].values, _ = numbers(state, at+8)
				at += recordBytes
			}
		}
		edgeward.Infof("restored %d records", total)
		return nil
	})
}
