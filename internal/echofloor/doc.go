// Package echofloor measures what this machine allows a one-hop game
// server: the gateway's own frames echoed by a bare Go TCP server of
// nano's shape (per connection a reader goroutine and a writer goroutine
// fed by a channel), with closed-loop clients in another process on the
// same cores. nano itself cannot be fetched here; this is its floor, with
// no handler, codec, hop to a scene or log behind it (echofloor_test.go).
// relay_test.go measures the floor of respawn's own shape, two hops: the
// same clients through a bare relay process (the gateway's per-client
// reader and writer goroutines, two batched connections to the backend)
// to a bare echo process (a scene process without a scene). The package has
// no code of its own.
package echofloor
