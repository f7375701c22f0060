package gwproto

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Message bodies. Every body is one JSON object (UTF-8); a client may
// ignore fields it does not know, so later versions can add fields.

// Hello is the client's first frame.
type Hello struct {
	Version int    `json:"version"`
	Client  string `json:"client,omitempty"` // free text for logs, e.g. "unity/1.4"
}

// Welcome answers Hello with the limits the client must respect.
type Welcome struct {
	Version      int     `json:"version"`
	Gateway      string  `json:"gateway"`        // this gateway's id
	MaxFrame     int     `json:"max_frame"`      // bytes, header included, both directions
	Window       int     `json:"window"`         // unanswered requests a session may have
	Rate         float64 `json:"rate"`           // requests per second per session
	Burst        int     `json:"burst"`          // requests allowed at once above Rate
	SessionTTLMS int64   `json:"session_ttl_ms"` // how long a dropped session waits for RESUME
	IdleMS       int64   `json:"idle_ms"`        // silence after which the gateway closes; PING before it
}

// Login carries a login token (`respawn token issue`).
type Login struct {
	Token string `json:"token"`
}

// Resume carries the resume token of a session this client had.
type Resume struct {
	Token string `json:"token"`
}

// Session says the client is logged in (or resumed) as Player.
type Session struct {
	Player      string `json:"player"`
	Session     string `json:"session"`
	ResumeToken string `json:"resume_token"`
	Scene       string `json:"scene"`
	// LastSeq is the highest seq the scene applied for this session: 0
	// after a login. After a resume, resend every unanswered request, in
	// seq order, with its original seq: the ones <= LastSeq are answered
	// from the scene's record without being applied again.
	LastSeq uint64          `json:"last_seq"`
	Resumed bool            `json:"resumed"`
	State   json.RawMessage `json:"state,omitempty"` // the player's view (position, hp, gold, items)
}

// ErrorBody is the body of CLOSE, and of a REPLY whose code is not OK.
// Reason is the game's own code for CodeGameError (e.g. "not_enough").
type ErrorBody struct {
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error"`
	// MoveTo, on CLOSE shutting_down: another gateway of the cluster to
	// RESUME on (its TCP address), so the clients of a gateway being
	// replaced move instead of waiting for it to come back.
	MoveTo string `json:"move_to,omitempty"`
}

// Push is something the server tells a client unasked.
type Push struct {
	Kind  string          `json:"kind"` // notice, chat, positions, trade_offered, ... (docs/protocol.md)
	Scene string          `json:"scene"`
	Data  json.RawMessage `json:"data"`
}

// Positions is the Data of a "positions" push: nearby players that moved
// since the last batch, and the ones that left the client's view.
type Positions struct {
	Players []Pos    `json:"players"`
	Gone    []string `json:"gone,omitempty"`
}

// Pos is one player's position.
type Pos struct {
	ID string `json:"id"`
	X  int    `json:"x"`
	Y  int    `json:"y"`
}

// AppendMsg appends a frame whose body is v encoded as JSON (v nil: empty
// body; v []byte or json.RawMessage: used as is).
func AppendMsg(dst []byte, t Type, code Code, id uint64, v any) ([]byte, error) {
	var body []byte
	switch b := v.(type) {
	case nil:
	case []byte:
		body = b
	case json.RawMessage:
		body = b
	default:
		var err error
		if body, err = json.Marshal(v); err != nil {
			return dst, fmt.Errorf("gwproto: encode %s: %w", t, err)
		}
	}
	return AppendFrame(dst, Frame{Type: t, Code: code, ID: id, Body: body}), nil
}

// DecodeBody decodes f's body into v. A body that is not one JSON object
// of v's shape is a CodeBadFrame error naming the message type.
func DecodeBody(f Frame, v any) error {
	b := bytes.TrimSpace(f.Body)
	if len(b) == 0 || b[0] != '{' {
		return &Error{Code: CodeBadFrame, Msg: fmt.Sprintf("%s body must be a JSON object", f.Type)}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return &Error{Code: CodeBadFrame, Msg: fmt.Sprintf("%s body: %v", f.Type, err)}
	}
	if dec.More() {
		return &Error{Code: CodeBadFrame, Msg: fmt.Sprintf("%s body: data after the JSON object", f.Type)}
	}
	return nil
}

// ValidOp checks that a REQUEST body is one JSON object naming an op; the
// scene validates the rest. It does not decode the body (the gateway
// passes it through), so it costs one scan.
func ValidOp(body []byte) error {
	b := bytes.TrimSpace(body)
	if len(b) == 0 || b[0] != '{' || !json.Valid(b) {
		return &Error{Code: CodeBadRequest, Msg: "REQUEST body must be one JSON object"}
	}
	if !bytes.Contains(b, []byte(`"op"`)) {
		return &Error{Code: CodeBadRequest, Msg: `REQUEST body needs "op"`}
	}
	return nil
}
