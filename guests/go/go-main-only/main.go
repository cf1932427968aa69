// The classic mistake, kept as a test: handlers registered in main, which
// a reactor (-buildmode=c-shared) never runs. The SDK refuses to start
// with a message that says so instead of idling silently.
package main

import "edgeward.dev/edgeward"

func main() {
	edgeward.OnTick(func(nowNs int64) error {
		edgeward.Infof("tick")
		return nil
	})
}
