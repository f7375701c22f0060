package gateway

import (
	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/scenelink"
	"github.com/respawn-dev/respawn/internal/version"
)

// VersionInfo is what the gateway binary speaks: the scene link and the
// client protocol.
func VersionInfo() version.Info {
	return version.New(version.Info{Link: scenelink.Version, Client: gwproto.Version})
}
