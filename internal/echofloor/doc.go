// Package echofloor measures what this machine allows a one-hop game
// server: the gateway's own frames echoed by a bare Go TCP server of
// nano's shape (per connection a reader goroutine and a writer goroutine
// fed by a channel), with closed-loop clients in another process on the
// same cores. nano itself cannot be fetched here; this is its floor, with
// no handler, codec, hop to a scene or log behind it. The benchmark is in
// echofloor_test.go; the package has no code of its own.
package echofloor
