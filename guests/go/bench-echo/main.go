// The bench's echo (scripts/bench gateway, rtt_p99_us): sends every
// message of `ping` back unchanged on `pong`.
package main

import "edgeward.dev/edgeward"

var pong edgeward.Channel

func init() {
	edgeward.OnInit(func() (err error) {
		pong, err = edgeward.OpenChannel("pong")
		return err
	})
	edgeward.OnMessage(func(m edgeward.Message) error { return pong.Send(m.Bytes) })
}

func main() {}
