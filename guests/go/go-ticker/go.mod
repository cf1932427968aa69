module edgeward.dev/guests/go-ticker

go 1.24

require edgeward.dev/edgeward v0.0.0

replace edgeward.dev/edgeward => ../../sdk-go
