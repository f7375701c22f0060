package datasvr

import "github.com/respawn-dev/respawn/internal/version"

// VersionInfo is the data server binary's build (its wire, dataclient's
// JSON over NATS, is versioned by its fields, not by a number).
func VersionInfo() version.Info { return version.New(version.Info{}) }
