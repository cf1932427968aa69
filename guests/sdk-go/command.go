package edgeward

// Command modules: a plain Go program (func main, built without
// -buildmode=c-shared) that runs as a long-lived service and receives
// messages itself, with goroutines and timers that keep running between
// messages:
//
//	func main() {
//		readings, err := edgeward.OpenChannel("readings")
//		if err != nil {
//			edgeward.Errorf("%v", err)
//			os.Exit(1)
//		}
//		go func() {
//			for range time.Tick(10 * time.Millisecond) {
//				// periodic work, also while no message arrives
//			}
//		}()
//		for {
//			m, err := readings.Recv()
//			if err != nil {
//				edgeward.Errorf("%v", err)
//				os.Exit(1)
//			}
//			// handle m
//		}
//	}
//
// Built with
//
//	GOOS=wasip1 GOARCH=wasm go build -trimpath -buildvcs=false -o ticker.wasm .
//
// How waiting works: Recv never blocks the wasm thread. It takes a message
// that is already there (the host's recv_wait with timeout 0); otherwise it
// parks the goroutine on the channel's fd (the host's channel_fd), a
// non-blocking fd in Go's netpoller. When every goroutine waits, the Go
// runtime sleeps in WASI poll_oneoff until its next timer is due or the fd
// becomes readable, whichever comes first. So a time.Ticker fires on time
// while no message arrives, a message wakes its receiver at once, and an
// idle module uses no CPU. Go on wasm has one thread and no preemption: a
// goroutine that computes without blocking delays the others (and the
// messages) until it blocks.
//
// Delivery is at least once, as with the host's recv: a message is
// committed (its ring space released) when the module's next Recv starts,
// so a crash while handling one delivers it again after the restart. The
// host keeps one uncommitted message per module: with several goroutines
// receiving (one per channel, say), one's Recv commits the message
// another may still be handling.

import (
	"errors"
	"os"
	"strconv"
	"sync"
	"time"
)

// receiver is what Recv keeps per channel.
type receiver struct {
	mu     sync.Mutex
	wake   *os.File // the channel's fd, in Go's netpoller
	buffer []byte
	one    [1]byte
}

var receivers struct {
	mu sync.Mutex
	by map[Channel]*receiver
}

// Receive buffers start at 4 KiB and double when a message is larger, up
// to this (the largest max_message_kib a policy allows is far below).
const maxBuffer = 64 << 20

func (c Channel) receiver() (*receiver, error) {
	receivers.mu.Lock()
	defer receivers.mu.Unlock()
	if r, ok := receivers.by[c]; ok {
		return r, nil
	}
	fd := sysChannelFd(int32(c))
	if fd < 0 {
		return nil, Error(fd)
	}
	if receivers.by == nil {
		receivers.by = map[Channel]*receiver{}
	}
	// The host reports the fd non-blocking, so os.NewFile hands it to the
	// netpoller. It is never closed: it stays in the map.
	r := &receiver{
		wake:   os.NewFile(uintptr(fd), "edgeward channel "+strconv.Itoa(int(c))),
		buffer: make([]byte, 4096),
	}
	receivers.by[c] = r
	return r, nil
}

// Recv waits for the next message of the channel (command modules only),
// parking only the calling goroutine. m.Bytes stays valid until the next
// Recv of the same channel (copy what you keep). Errors: ErrDenied (the
// policy does not subscribe the module to the channel), ErrUnsupported (in
// a reactor, which gets messages in its OnMessage handler).
func (c Channel) Recv() (Message, error) { return c.recv(time.Time{}) }

// RecvTimeout is Recv waiting at most d (0: only takes a message that is
// already there); ErrTimeout when none came.
func (c Channel) RecvTimeout(d time.Duration) (Message, error) {
	return c.recv(time.Now().Add(d))
}

// recv is Recv until deadline (zero: no deadline).
func (c Channel) recv(deadline time.Time) (Message, error) {
	r, err := c.receiver()
	if err != nil {
		return Message{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		n := sysRecvWait(int32(c), &r.buffer[0], int32(len(r.buffer)), 0)
		switch {
		case n >= 0:
			return Message{Channel: c, Bytes: r.buffer[:n:n], Seq: sysMessageSeq()}, nil
		case Error(n) == ErrTooLarge && len(r.buffer) < maxBuffer:
			r.buffer = make([]byte, 2*len(r.buffer))
			continue
		case Error(n) != ErrTimeout:
			return Message{}, Error(n)
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return Message{}, ErrTimeout
		}
		// Parks this goroutine until a message may be there (the fd reads
		// one byte then, and consumes nothing) or the deadline passes.
		if err := r.wake.SetReadDeadline(deadline); err != nil {
			return Message{}, err
		}
		if _, err := r.wake.Read(r.one[:]); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return Message{}, ErrTimeout
			}
			return Message{}, err
		}
	}
}

// Receive starts a goroutine that receives the channel's messages and
// delivers them on the Go channel it returns, for a select beside timers
// and other channels. Each message is a copy (its Bytes are the
// receiver's to keep). The next message is fetched once the previous one
// was taken, which commits the previous one: a crash while it is being
// handled loses it (Recv, which fetches only when asked, does not). On an
// error (ErrDenied, ErrUnsupported) it logs it and closes the channel.
// Its goroutine owns the channel: a Recv of the same channel waits for
// ever.
func (c Channel) Receive() <-chan Message {
	out := make(chan Message)
	go func() {
		defer close(out)
		for {
			m, err := c.Recv()
			if err != nil {
				Errorf("edgeward: receiving from %v: %v", c, err)
				return
			}
			m.Bytes = append([]byte(nil), m.Bytes...)
			out <- m
		}
	}()
	return out
}

// PutSnapshot keeps state as the module's latest state (command modules;
// a reactor returns its state from its OnSnapshot handler). Call it when
// the state changes: the next snapshot round (periodic, `edgeward
// snapshot`, or the final one at stop) saves the latest state put since
// the previous round. At most 16 MiB (ErrTooLarge).
func PutSnapshot(state []byte) error {
	var first *byte
	if len(state) > 0 {
		first = &state[0]
	}
	return check(sysSnapshotPut(first, int32(len(state))))
}

// RestoredSnapshot is the state restored for this run (command modules):
// the newest durable snapshot taken by this same wasm, or nil when there
// is none. ErrUnsupported in a reactor (it gets OnRestore).
func RestoredSnapshot() ([]byte, error) {
	n := sysSnapshotGet(nil, 0)
	if n <= 0 {
		return nil, check(n)
	}
	state := make([]byte, n)
	if got := sysSnapshotGet(&state[0], n); got != n {
		return nil, check(got)
	}
	return state, nil
}
