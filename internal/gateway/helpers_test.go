package gateway

import (
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
