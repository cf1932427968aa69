// Package noise is the simulated sensors' deterministic noise
// (gw-temp-sensor, gw-current-sensor, gw-meter-sim): the same reading
// number gives the same value in every run, so a restored sensor goes on
// with the signal it had.
package noise

// At is a deterministic value in [-1, 1) for reading n (splitmix64).
func At(n uint64) float64 {
	z := n + 0x9E3779B97F4A7C15
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	z ^= z >> 31
	return float64(z>>11)/float64(1<<53)*2 - 1
}
