// @NAME@: an edgeward module in Go. Every tick it counts, publishes the
// count on channel `@NAME@` and logs every 10th; the count survives
// restarts in a snapshot. sdk/ is the SDK (docs/guest-abi.md in the
// edgeward repository describes the ABI underneath). Handlers are
// registered in init: main never runs in a reactor.
package main

import (
	"encoding/binary"

	"edgeward.dev/edgeward"
)

var out edgeward.Channel
var ticks uint64

func init() {
	edgeward.OnInit(func() (err error) {
		out, err = edgeward.OpenChannel("@NAME@")
		return err
	})
	edgeward.OnTick(func(nowNs int64) error {
		ticks++
		if ticks%10 == 0 {
			edgeward.Infof("@NAME@: %d ticks", ticks)
		}
		return out.SendUint64(ticks)
	})
	edgeward.OnSnapshot(func() []byte { return binary.LittleEndian.AppendUint64(nil, ticks) })
	edgeward.OnRestore(func(state []byte) error {
		var ok bool
		if ticks, ok = edgeward.Uint64At(state, 0); !ok {
			return edgeward.ErrInvalid
		}
		edgeward.Infof("@NAME@: restored %d ticks", ticks)
		return nil
	})
}

func main() {}
