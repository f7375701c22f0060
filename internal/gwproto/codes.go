package gwproto

import (
	"errors"
	"fmt"
)

// Code is a numbered result code: 0 is success. 1-99 are connection-level
// (carried by CLOSE, or answering HELLO/LOGIN/RESUME); 100-199 answer one
// request (carried by REPLY). docs/protocol.md says what a client should do
// with each.
type Code uint16

// Result codes. Never renumber: clients in the field compare numbers.
const (
	CodeOK Code = 0

	CodeBadFrame           Code = 1  // malformed, truncated or garbage frame, or a body that is not the message's schema
	CodeFrameTooLarge      Code = 2  // frame over max_frame
	CodeUnknownType        Code = 3  // a message type this version does not know
	CodeUnsupportedVersion Code = 4  // HELLO asked for a version the gateway does not speak
	CodeProtocol           Code = 5  // a message out of order (REQUEST before SESSION, HELLO twice, ...)
	CodeHandshakeTimeout   Code = 6  // HELLO + LOGIN/RESUME not done within the login deadline
	CodeIdleTimeout        Code = 7  // nothing received within the read deadline
	CodeBadToken           Code = 8  // token malformed or forged
	CodeTokenExpired       Code = 9  // token past its expiry
	CodeSessionReplaced    Code = 10 // the same player logged in (or resumed) on another connection
	CodeResumeFailed       Code = 11 // the session is gone: log in again
	CodeTooManyConnections Code = 12 // per-address or total connection limit
	CodeSlowConsumer       Code = 13 // the client did not read its frames fast enough
	CodeFlood              Code = 14 // kept sending over its rate limit
	CodeShuttingDown       Code = 15 // the gateway is stopping: reconnect (resume) elsewhere
	CodeLoginFailed        Code = 16 // the cluster could not bring the player in now: retry later

	CodeGameError   Code = 100 // the game refused the request; body {"code","error"}; do not resend
	CodeBadRequest  Code = 101 // the request body is not a valid op; do not resend
	CodeUnavailable Code = 102 // the scene did not come back within the hold time: resend with the same seq
	CodeRateLimited Code = 103 // over the session's request rate: resend with the same seq later
	CodeWindowFull  Code = 104 // more unanswered requests than the window: wait for replies, resend
	CodeSeqReused   Code = 105 // this seq was used with another body
	CodeSeqTooOld   Code = 106 // this seq is older than the scene's window (or was skipped)
	CodeSeqTooFar   Code = 107 // this seq is more than a window ahead of the last applied
	CodeInternal    Code = 108 // a gateway bug; the request was not applied
)

var codeNames = map[Code]string{
	CodeOK:                 "ok",
	CodeBadFrame:           "bad_frame",
	CodeFrameTooLarge:      "frame_too_large",
	CodeUnknownType:        "unknown_type",
	CodeUnsupportedVersion: "unsupported_version",
	CodeProtocol:           "protocol",
	CodeHandshakeTimeout:   "handshake_timeout",
	CodeIdleTimeout:        "idle_timeout",
	CodeBadToken:           "bad_token",
	CodeTokenExpired:       "token_expired",
	CodeSessionReplaced:    "session_replaced",
	CodeResumeFailed:       "resume_failed",
	CodeTooManyConnections: "too_many_connections",
	CodeSlowConsumer:       "slow_consumer",
	CodeFlood:              "flood",
	CodeShuttingDown:       "shutting_down",
	CodeLoginFailed:        "login_failed",
	CodeGameError:          "game_error",
	CodeBadRequest:         "bad_request",
	CodeUnavailable:        "unavailable",
	CodeRateLimited:        "rate_limited",
	CodeWindowFull:         "window_full",
	CodeSeqReused:          "seq_reused",
	CodeSeqTooOld:          "seq_too_old",
	CodeSeqTooFar:          "seq_too_far",
	CodeInternal:           "internal",
}

// String is the code's name in docs/protocol.md.
func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code_%d", uint16(c))
}

// Retryable reports whether a request answered with c may be resent with
// the same seq and succeed.
func (c Code) Retryable() bool {
	return c == CodeUnavailable || c == CodeRateLimited || c == CodeWindowFull
}

// Error is a protocol error with its code.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d): %s", e.Code, uint16(e.Code), e.Msg) }

// CodeOf returns the code of the first *Error in err's chain, or fallback.
func CodeOf(err error, fallback Code) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return fallback
}
