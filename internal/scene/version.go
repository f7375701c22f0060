package scene

import (
	"fmt"

	"github.com/respawn-dev/respawn/internal/ctlproto"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/scenelink"
	"github.com/respawn-dev/respawn/internal/shmlog"
	"github.com/respawn-dev/respawn/internal/version"
)

// VersionInfo is what a scene binary speaks and reads: snapshots of every
// version game.Restore still decodes (older ones are migrated as they are
// read), events of the one encoding.
func VersionInfo() version.Info {
	return version.New(version.Info{
		Control: ctlproto.Version, Link: scenelink.Version, ShmLog: shmlog.FormatVersion,
		Snapshot: int(game.SnapshotVersion), SnapshotMin: 1,
		Event: game.EventFormat, EventMin: 1,
	})
}

// checkSnapshotFormat refuses a snapshot this binary does not read, naming
// both versions, before the decoder sees it.
func checkSnapshotFormat(info version.Info, snap []byte) error {
	if len(snap) == 0 {
		return nil
	}
	if v := int(snap[0]); v < info.SnapshotMin || v > info.Snapshot {
		return fmt.Errorf("snapshot format %d cannot be read by build %s, which reads snapshot formats %d..%d and carries no migration from %d",
			v, info.Build, info.SnapshotMin, info.Snapshot, v)
	}
	return nil
}
