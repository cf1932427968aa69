// Package edgeward is the Go SDK for edgeward modules. A reactor (below)
// exports handlers; a command module is a plain Go program whose
// goroutines and timers run between messages (see Channel.Recv and
// command.go). A reactor is a WASI preview 1 module built with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o alert.wasm .
//
// This package owns every export of docs/guest-abi.md (ew_init,
// ew_on_tick, ew_alloc, ew_on_message, ew_snapshot, ew_restore,
// ew_health). A module registers the handlers it needs in an init
// function; main is never run in a c-shared (reactor) build:
//
//	package main
//
//	import "edgeward.dev/edgeward"
//
//	func init() {
//		edgeward.OnMessage(func(m edgeward.Message) error {
//			if celsius, ok := m.Float64At(8); ok && celsius > 85 {
//				edgeward.Warnf("ALERT: temperature %.1f > 85.0", celsius)
//			}
//			return nil
//		})
//	}
//
//	func main() {}
//
// Handlers run one at a time, each to completion, on the host's call.
// Goroutines run only while a handler waits (a channel, time.Sleep), so
// handlers should not leave work to them; nothing runs between calls (a
// time.Ticker does not fire). For goroutines and timers that work between
// messages, write a command module. A handler that returns an error
// has it logged as "EXPORT: error" (unless its previous call failed the
// same way) and the host sees a non-zero code: the Error's code, else 1.
// A handler that panics ends the module: the Go runtime prints the panic
// and the goroutine trace (to stderr, so the log), then traps in
// runtime.abort, and the restart policy applies.
//
// The args ([wasi] args) are in os.Args during package initialisation
// already, so Arg and ArgFloat64 may initialise package variables.
//
// Go's garbage collector runs inside handler calls, which must return
// within the policy's [resources] call_budget_ms: see the SDKs section of
// docs/guest-abi.md for the budget and GOGC settings that suit Go.
package edgeward

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strconv"
)

// Error is a negative code returned by the host's imports.
type Error int32

// The host's error codes (docs/guest-abi.md, "Error codes").
const (
	ErrDenied      Error = -1 // the policy does not grant it
	ErrInvalid     Error = -2 // a pointer, length or handle is out of range
	ErrTooLarge    Error = -3 // the message is over max_message_kib
	ErrFull        Error = -4 // a subscriber's ring is full; nothing was sent
	ErrUnsupported Error = -5 // not available to this kind of module
	ErrTimeout     Error = -6 // no message arrived in time (RecvTimeout)
)

func (e Error) Error() string {
	switch e {
	case ErrDenied:
		return "edgeward: denied by the policy"
	case ErrInvalid:
		return "edgeward: invalid pointer, length or handle"
	case ErrTooLarge:
		return "edgeward: message too large"
	case ErrFull:
		return "edgeward: a subscriber's ring is full"
	case ErrUnsupported:
		return "edgeward: unsupported for this kind of module"
	case ErrTimeout:
		return "edgeward: no message in time"
	}
	return "edgeward: error " + strconv.Itoa(int(e))
}

func check(code int32) error {
	if code < 0 {
		return Error(code)
	}
	return nil
}

// Level is a log level.
type Level int32

// Log levels, as the host numbers them.
const (
	LevelError Level = 0
	LevelWarn  Level = 1
	LevelInfo  Level = 2
	LevelDebug Level = 3
)

// Log writes one line to the supervisor's output as "[module] level: text"
// (cut at 1 KiB by the host).
func Log(level Level, text string) { sysLog(int32(level), text) }

// Errorf logs at error level with fmt formatting.
func Errorf(format string, args ...any) { Log(LevelError, fmt.Sprintf(format, args...)) }

// Warnf logs at warn level with fmt formatting.
func Warnf(format string, args ...any) { Log(LevelWarn, fmt.Sprintf(format, args...)) }

// Infof logs at info level with fmt formatting.
func Infof(format string, args ...any) { Log(LevelInfo, fmt.Sprintf(format, args...)) }

// Debugf logs at debug level with fmt formatting.
func Debugf(format string, args ...any) { Log(LevelDebug, fmt.Sprintf(format, args...)) }

// NowNs is CLOCK_MONOTONIC in nanoseconds, the clock OnTick handlers get.
func NowNs() int64 { return sysNowNs() }

// Channel is the handle of a channel the policy grants.
type Channel int32

var channelNames = map[Channel]string{}

// OpenChannel returns the handle of a channel the policy grants (publish or
// subscribe), or ErrDenied (counted by the host as a denial).
func OpenChannel(name string) (Channel, error) {
	code := sysChannel(name)
	if code < 0 {
		return -1, fmt.Errorf("channel %q: %w", name, Error(code))
	}
	channelNames[Channel(code)] = name
	return Channel(code), nil
}

// String is the channel's name if it was opened with OpenChannel.
func (c Channel) String() string {
	if name, ok := channelNames[c]; ok {
		return name
	}
	return "channel " + strconv.Itoa(int(c))
}

// Send sends one message to every subscriber of the channel: nil, or
// ErrDenied (not published by this module), ErrTooLarge or ErrFull
// (nothing was sent).
func (c Channel) Send(message []byte) error {
	var first *byte
	if len(message) > 0 {
		first = &message[0]
	}
	return check(sysSend(int32(c), first, int32(len(message))))
}

// SendFloat64 sends one float64 as a message (8 bytes, little-endian).
func (c Channel) SendFloat64(v float64) error { return c.SendUint64(math.Float64bits(v)) }

// SendInt64 sends one int64 as a message (8 bytes, little-endian).
func (c Channel) SendInt64(v int64) error { return c.SendUint64(uint64(v)) }

// SendUint64 sends one uint64 as a message (8 bytes, little-endian).
func (c Channel) SendUint64(v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return c.Send(b[:])
}

// SendUint32 sends one uint32 as a message (4 bytes, little-endian).
func (c Channel) SendUint32(v uint32) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	return c.Send(b[:])
}

// Message is one message of a subscribed channel.
type Message struct {
	// Channel is the channel it came on.
	Channel Channel
	// Bytes is the message, in the receive buffer the host reuses for the
	// next message: valid only during the handler call. Copy what you keep
	// (bytes.Clone).
	Bytes []byte
	// Seq is its sequence number: consecutive per publisher and ring, and
	// the same when a crash makes the host deliver it again.
	Seq int64
}

// Float64At reads the little-endian float64 at byte offset of the message,
// if the message is long enough.
func (m Message) Float64At(offset int) (float64, bool) { return Float64At(m.Bytes, offset) }

// Uint64At reads the little-endian uint64 at byte offset of the message.
func (m Message) Uint64At(offset int) (uint64, bool) { return Uint64At(m.Bytes, offset) }

// Int64At reads the little-endian int64 at byte offset of the message.
func (m Message) Int64At(offset int) (int64, bool) { return Int64At(m.Bytes, offset) }

// Uint32At reads the little-endian uint32 at byte offset of the message.
func (m Message) Uint32At(offset int) (uint32, bool) { return Uint32At(m.Bytes, offset) }

// Float64At reads the little-endian float64 at byte offset of b (a message
// or a restored snapshot), if b is long enough.
func Float64At(b []byte, offset int) (float64, bool) {
	bits, ok := Uint64At(b, offset)
	return math.Float64frombits(bits), ok
}

// Uint64At reads the little-endian uint64 at byte offset of b.
func Uint64At(b []byte, offset int) (uint64, bool) {
	if offset < 0 || offset > len(b)-8 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b[offset:]), true
}

// Int64At reads the little-endian int64 at byte offset of b.
func Int64At(b []byte, offset int) (int64, bool) {
	v, ok := Uint64At(b, offset)
	return int64(v), ok
}

// Uint32At reads the little-endian uint32 at byte offset of b.
func Uint32At(b []byte, offset int) (uint32, bool) {
	if offset < 0 || offset > len(b)-4 {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b[offset:]), true
}

// Arg is the value after the flag name in the module's args ([wasi] args
// of its policy), e.g. Arg("--threshold").
func Arg(name string) (string, bool) {
	for i := 1; i+1 < len(os.Args); i++ {
		if os.Args[i] == name {
			return os.Args[i+1], true
		}
	}
	return "", false
}

// ArgFloat64 is the number after the flag name in the args, or otherwise
// when it is missing or not a number.
func ArgFloat64(name string, otherwise float64) float64 {
	if text, ok := Arg(name); ok {
		if v, err := strconv.ParseFloat(text, 64); err == nil {
			return v
		}
	}
	return otherwise
}

// ArgInt is the integer after the flag name in the args, or otherwise when
// it is missing or not an integer.
func ArgInt(name string, otherwise int) int {
	if text, ok := Arg(name); ok {
		if v, err := strconv.Atoi(text); err == nil {
			return v
		}
	}
	return otherwise
}
