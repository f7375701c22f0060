//go:build !race

package e2e

import "time"

// raceSlack: see race_on_test.go; none without the race detector.
const raceSlack time.Duration = 0
