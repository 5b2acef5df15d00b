//go:build race

package store

// raceDetector tells whether this test binary was built with -race, under
// which a test of a large volume scales its data down: the race detector
// finds the same races on a small log, and scripts/test runs the full
// size once more without -race.
const raceDetector = true
