package worldmgr

import (
	"github.com/respawn-dev/respawn/internal/ctlproto"
	"github.com/respawn-dev/respawn/internal/version"
)

// VersionInfo is what the world manager binary speaks.
func VersionInfo() version.Info { return version.New(version.Info{Control: ctlproto.Version}) }
