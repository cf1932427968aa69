module edgeward.dev/guests/bench-echo

go 1.24

require edgeward.dev/edgeward v0.0.0

replace edgeward.dev/edgeward => ../../sdk-go
