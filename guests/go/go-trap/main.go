// Fault injection in Go: fails in a function of its own on the tick after
// --after ticks (default 3), so a test can check what the report says.
// --fault panic (default): a Go panic, which the Go runtime prints with
// its goroutine trace and ends with a trap in runtime.abort. --fault
// memory: a load outside the linear memory, a wasm trap in the Go
// function itself.
package main

import (
	"unsafe"

	"edgeward.dev/edgeward"
)

var after, ticks int
var fault string

// outside is an address past any linear memory a policy allows (4 GiB).
var outside uintptr = 0xffff_fff0

//go:noinline
func checkValvePosition() byte {
	if fault == "memory" {
		return *(*byte)(unsafe.Add(nil, outside))
	}
	panic("valve position out of range")
}

func init() {
	edgeward.OnInit(func() error {
		after = edgeward.ArgInt("--after", 3)
		fault, _ = edgeward.Arg("--fault")
		return nil
	})
	edgeward.OnTick(func(nowNs int64) error {
		if ticks++; ticks > after {
			checkValvePosition()
		}
		return nil
	})
}

func main() {}
