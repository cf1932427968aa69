// gw-meter-sim: the line's three-phase power meter on an RS-485 bus,
// simulated. Every tick (100 ms) it publishes on modbus-rtu the raw bytes
// of the meter's Modbus RTU answer to "read holding registers 0..7"
// (function 0x03) from slave 1, which gw-modbus-decoder (C) checks and
// decodes:
//
//	01 03 10 <8 registers, big-endian> CRC-lo CRC-hi    (21 bytes)
//
// Registers: 0 voltage ×10 (V), 1 current ×100 (A), 2–3 active power (W,
// u32, high word first), 4–5 energy (Wh, u32), 6 frequency ×100 (Hz),
// 7 power factor ×1000. The CRC is CRC-16/MODBUS (reflected 0xA001,
// initial 0xFFFF), sent low byte first.
//
// A real bus is noisy; so is this one, deterministically by frame number n:
//   - every 13th frame has one bit flipped (the CRC no longer matches);
//   - every 41st is an exception answer, 01 83 02 (illegal data address),
//     with a good CRC;
//   - every 97th is cut short by 3 bytes (a framing gap).
//
// The frame number and the energy register survive restarts through a
// snapshot, as a meter's energy counter survives a power cut.
package metersim

import (
	"encoding/binary"
	"math"

	"edgeward.dev/edgeward"
	"edgeward.dev/guests/gw-line/noise"
)

const framePeriodS = 0.1 // the meter is polled every 100 ms

var (
	out      edgeward.Channel
	n        uint64
	energyWh float64
	frame    [32]byte
)

// crc16 is CRC-16/MODBUS of b.
func crc16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc ^= uint16(c)
		for i := 0; i < 8; i++ {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// withCRC appends the CRC of b, low byte first.
func withCRC(b []byte) []byte {
	return binary.LittleEndian.AppendUint16(b, crc16(b))
}

// answer builds frame n's bytes in frame.
func answer(n uint64) []byte {
	x := float64(n)
	volts := 400 + 3*math.Sin(2*math.Pi*x/300) + 0.5*noise.At(n)
	amps := 28 + 6*math.Sin(2*math.Pi*x/450) + 0.4*noise.At(n^0xA5)
	pf := 0.86 + 0.03*math.Sin(2*math.Pi*x/700)
	hz := 50 + 0.02*math.Sin(2*math.Pi*x/170)
	watts := math.Sqrt(3) * volts * amps * pf
	energyWh += watts * framePeriodS / 3600

	if n%41 == 20 {
		return withCRC(append(frame[:0], 0x01, 0x83, 0x02))
	}
	b := append(frame[:0], 0x01, 0x03, 16)
	b = binary.BigEndian.AppendUint16(b, uint16(math.Round(volts*10)))
	b = binary.BigEndian.AppendUint16(b, uint16(math.Round(amps*100)))
	b = binary.BigEndian.AppendUint32(b, uint32(math.Round(watts)))
	b = binary.BigEndian.AppendUint32(b, uint32(energyWh))
	b = binary.BigEndian.AppendUint16(b, uint16(math.Round(hz*100)))
	b = binary.BigEndian.AppendUint16(b, uint16(math.Round(pf*1000)))
	b = withCRC(b)
	switch {
	case n%13 == 5:
		b[3+n%16] ^= 1 << (n % 8) // a bit flipped on the wire
	case n%97 == 50:
		b = b[:len(b)-3] // cut short
	}
	return b
}

func init() { edgeward.Module("gw-meter-sim", setup) }

// setup registers the handlers; it runs only in gw-meter-sim's worker.
func setup() {
	edgeward.OnInit(func() error {
		var err error
		out, err = edgeward.OpenChannel("modbus-rtu")
		return err
	})
	edgeward.OnTick(func(nowNs int64) error {
		b := answer(n)
		n++
		return out.Send(b)
	})
	edgeward.OnSnapshot(func() []byte {
		b := binary.LittleEndian.AppendUint64(nil, n)
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(energyWh))
	})
	edgeward.OnRestore(func(state []byte) error {
		frames, ok1 := edgeward.Uint64At(state, 0)
		wh, ok2 := edgeward.Float64At(state, 8)
		if !ok1 || !ok2 {
			return edgeward.ErrInvalid
		}
		n, energyWh = frames, wh
		edgeward.Infof("resuming at frame %d, energy register %.0f Wh", n, energyWh)
		return nil
	})
}
