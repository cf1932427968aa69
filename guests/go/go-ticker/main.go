// A Go command module whose goroutines and time.Ticker work between
// messages (docs/guest-abi.md, "Goroutines and timers"). One goroutine
// receives the sensor's readings (n: u64, celsius: f64, start: u64) and
// counts them; another, on a time.Ticker every --period-ms (default 10),
// publishes a heartbeat on channel `heartbeat` with the aggregate of the
// period: (ticks: u64, handled: u64, readings in the period: u64, their
// mean celsius: f64). Every 100th tick it logs
// "go-ticker: tick T, handled H messages", with or without messages
// arriving. Its counts survive restarts in a snapshot.
//
// With --latency, each message starts with the sender's now_ns (as
// bench-source sends them): after the first 100 messages (the warm-up),
// it measures --count more and logs
// "go-ticker: latency p50=X p99=Y ns over N messages".
package main

import (
	"encoding/binary"
	"math"
	"os"
	"slices"
	"sync"
	"time"

	"edgeward.dev/edgeward"
)

// warmUp messages are left out of the latency figures.
const warmUp = 100

// state is shared by the two goroutines. Go on wasm runs one goroutine at
// a time, but the mutex keeps the program correct anywhere.
var state struct {
	sync.Mutex
	ticks, handled  uint64
	windowN         uint64
	windowSum       float64
	latencies       []int64
	latencyCount    int
	latencyReported bool
}

func main() {
	readings := open(edgeward.Arg("--input"))
	heartbeat := open("heartbeat", true)
	period := time.Duration(edgeward.ArgInt("--period-ms", 10)) * time.Millisecond
	if slices.Contains(os.Args, "--latency") {
		state.latencyCount = edgeward.ArgInt("--count", 1000)
		state.latencies = make([]int64, 0, state.latencyCount)
	}
	restore()
	go tick(heartbeat, period)
	for {
		m, err := readings.Recv()
		if err != nil {
			edgeward.Errorf("go-ticker: %v", err)
			os.Exit(1)
		}
		handle(m)
	}
}

// open opens the channel name, or `readings` if no name is given.
func open(name string, given bool) edgeward.Channel {
	if !given {
		name = "readings"
	}
	c, err := edgeward.OpenChannel(name)
	if err != nil {
		edgeward.Errorf("go-ticker: %v", err)
		os.Exit(1)
	}
	return c
}

func handle(m edgeward.Message) {
	now := edgeward.NowNs()
	state.Lock()
	defer state.Unlock()
	state.handled++
	if celsius, ok := m.Float64At(8); ok {
		state.windowN++
		state.windowSum += celsius
	}
	sent, ok := m.Int64At(0)
	if ok && state.latencyCount > 0 && !state.latencyReported && state.handled > warmUp {
		state.latencies = append(state.latencies, now-sent)
		if len(state.latencies) == state.latencyCount {
			state.latencyReported = true
			slices.Sort(state.latencies)
			l := state.latencies
			edgeward.Infof("go-ticker: latency p50=%d p99=%d ns over %d messages",
				l[len(l)/2], l[len(l)*99/100], len(l))
		}
	}
	save()
}

// tick is the periodic work, on a time.Ticker: it runs between messages.
func tick(heartbeat edgeward.Channel, period time.Duration) {
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	for range ticker.C {
		state.Lock()
		state.ticks++
		ticks, handled := state.ticks, state.handled
		n, mean := state.windowN, 0.0
		if n > 0 {
			mean = state.windowSum / float64(n)
		}
		state.windowN, state.windowSum = 0, 0
		save()
		state.Unlock()
		b := binary.LittleEndian.AppendUint64(nil, ticks)
		b = binary.LittleEndian.AppendUint64(b, handled)
		b = binary.LittleEndian.AppendUint64(b, n)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(mean))
		// A full ring drops this heartbeat; the next one carries the totals.
		_ = heartbeat.Send(b)
		if ticks%100 == 0 {
			edgeward.Infof("go-ticker: tick %d, handled %d messages", ticks, handled)
		}
	}
}

// save puts (ticks, handled) as the module's state; the caller holds the
// lock.
func save() {
	b := binary.LittleEndian.AppendUint64(nil, state.ticks)
	b = binary.LittleEndian.AppendUint64(b, state.handled)
	if err := edgeward.PutSnapshot(b); err != nil {
		edgeward.Warnf("go-ticker: snapshot: %v", err)
	}
}

func restore() {
	b, err := edgeward.RestoredSnapshot()
	if err != nil {
		edgeward.Warnf("go-ticker: restoring: %v", err)
		return
	}
	ticks, ok1 := edgeward.Uint64At(b, 0)
	handled, ok2 := edgeward.Uint64At(b, 8)
	if !ok1 || !ok2 {
		return
	}
	state.ticks, state.handled = ticks, handled
	edgeward.Infof("go-ticker: restored %d ticks, %d messages", ticks, handled)
}
