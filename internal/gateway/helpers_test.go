package gateway

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/respawn-dev/respawn/internal/scenelink"
)

func jsonMarshal(v any) ([]byte, error)   { return json.Marshal(v) }
func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
func pushOf(scene, id string, x, y int) scenelink.Push {
	return scenelink.Push{Scene: scene, Kind: "position", Body: []byte(fmt.Sprintf(`{"kind":"player","id":%q,"x":%d,"y":%d}`, id, x, y))}
}

// liveSession is a session whose client has had its SESSION frame.
func liveSession(g *Gateway, player, id, scene string, c *clientConn) *Session {
	s := g.reg.newSession(player, id, scene, c)
	s.ready = c
	return s
}

// popQueued takes the first frame queued for c's writer (tests whose
// connection has no socket: every frame is queued).
func (c *clientConn) popQueued() ([]byte, bool) {
	o := &c.out
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.pend) < 4 {
		return nil, false
	}
	n := 4 + int(binary.BigEndian.Uint32(o.pend))
	b := append([]byte(nil), o.pend[:n]...)
	o.pend = o.pend[n:]
	o.frames--
	return b, true
}
