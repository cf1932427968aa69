// gw-line: the Go modules of the demo line (docs/gateway-32.md), built
// into one wasm. Each module is a package of its own that registers its
// handlers with edgeward.Module under its policy's name; every Go policy
// of policies/gateway-32 names this wasm, and each worker runs only the
// module its policy file is named after. The 14 workers then share
// one compiled artifact, the Go runtime's code included, instead of each
// mapping about 4 MiB of its own ("One wasm, many Go modules" in
// docs/guest-abi.md). Each module still runs in its own process, with its
// own linear memory, uid, cgroup and snapshots.
package main

import (
	_ "edgeward.dev/guests/gw-line/gw-current-alarm"
	_ "edgeward.dev/guests/gw-line/gw-current-sensor"
	_ "edgeward.dev/guests/gw-line/gw-current-stats"
	_ "edgeward.dev/guests/gw-line/gw-energy-meter"
	_ "edgeward.dev/guests/gw-line/gw-historian"
	_ "edgeward.dev/guests/gw-line/gw-meter-sim"
	_ "edgeward.dev/guests/gw-line/gw-oee"
	_ "edgeward.dev/guests/gw-line/gw-part-counter"
	_ "edgeward.dev/guests/gw-line/gw-pressure-filter"
	_ "edgeward.dev/guests/gw-line/gw-reporter"
	_ "edgeward.dev/guests/gw-line/gw-setpoint-scheduler"
	_ "edgeward.dev/guests/gw-line/gw-temp-alert"
	_ "edgeward.dev/guests/gw-line/gw-temp-sensor"
	_ "edgeward.dev/guests/gw-line/gw-temp-stats"
)

func main() {}
