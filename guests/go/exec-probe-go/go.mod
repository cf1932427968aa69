module edgeward.dev/guests/exec-probe-go

go 1.24
