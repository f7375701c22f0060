// Package game is the reference game — a town, a forest with Hogger, dungeon
// rooms — written as deterministic state machines, one per scene or room.
//
// # The contract
//
// A Scene is like etcd raft's RawNode: events go in through Apply, effects
// come out as plain data, and the caller performs them. Apply does no I/O,
// reads no clock (time arrives as Tick events), uses no global random source
// (the scene's splitmix64 state is part of its state), starts no goroutines
// and never lets Go's map iteration order decide anything: players, sessions
// and ledger entries are always visited in id order. So the same events
// applied to the same starting state give the same state and the same
// effects, byte for byte, on any machine.
//
// # Ordering
//
// The scene process, for each event:
//
//  1. encodes it (EncodeEvent) and appends it to the scene's log;
//  2. applies it (Apply);
//  3. performs the returned effects, in order.
//
// Logging before applying means every applied event survives kill -9.
// Effects run after applying, so nothing leaves the process that a replay
// would not reproduce. On recovery the process restores the latest snapshot
// (Restore) and re-applies the logged events, discarding their effects — the
// clients got them or will resend — and then performs RecoveryEffects:
// rooms to create, unacknowledged transfers (PendingTransfers) to resend, and
// an EndRoom a finished room still owes.
//
// # Exactly once
//
// Each player's session record is state (session.go): the current session,
// the last applied Seq and the replies of the last SessionWindow requests. A
// resent request within the window gets its stored reply again and changes
// nothing; the same seq with another op is refused; GM commands
// are deduped by ReqID the same way; TravelIn is deduped by TransferID per
// source scene. Transfers stay in the source's outbox until TravelAck, so a
// player is always in exactly one scene or one outbox, never two scenes.
//
// docs/game.md describes the events, effects, encodings and rules.
package game
