module edgeward.dev/edgeward

go 1.24
