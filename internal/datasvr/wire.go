package datasvr

import "github.com/respawn-dev/respawn/internal/dataclient"

// The server answers the protocol that package dataclient defines; the
// names below let the server's code say LoadRequest rather than
// dataclient.LoadRequest. Clients import dataclient, never this package,
// so a scene process does not link the server, its store or nats-server.

// NATS subjects datasvr answers.
const (
	SubjectLoad     = dataclient.SubjectLoad
	SubjectSave     = dataclient.SubjectSave
	SubjectRelease  = dataclient.SubjectRelease
	SubjectHandover = dataclient.SubjectHandover
	SubjectCreate   = dataclient.SubjectCreate
	SubjectShow     = dataclient.SubjectShow
	SubjectGive     = dataclient.SubjectGive
	SubjectKick     = dataclient.SubjectKick
	SubjectFlush    = dataclient.SubjectFlush
	SubjectStats    = dataclient.SubjectStats
)

// Reply error codes.
const (
	CodeStaleEpoch  = dataclient.CodeStaleEpoch
	CodeOldVersion  = dataclient.CodeOldVersion
	CodeNotOwner    = dataclient.CodeNotOwner
	CodeNotFound    = dataclient.CodeNotFound
	CodeExists      = dataclient.CodeExists
	CodeUnavailable = dataclient.CodeUnavailable
	CodeBadRequest  = dataclient.CodeBadRequest
	CodeSceneFailed = dataclient.CodeSceneFailed
	CodeForbidden   = dataclient.CodeForbidden
)

// AuthHeader carries the operator token on GM changes.
const AuthHeader = dataclient.AuthHeader

// Sentinel errors, shared with the client so errors.Is works on both sides.
var (
	ErrStaleEpoch  = dataclient.ErrStaleEpoch
	ErrOldVersion  = dataclient.ErrOldVersion
	ErrNotOwner    = dataclient.ErrNotOwner
	ErrNotFound    = dataclient.ErrNotFound
	ErrExists      = dataclient.ErrExists
	ErrUnavailable = dataclient.ErrUnavailable
	ErrBadRequest  = dataclient.ErrBadRequest
	ErrSceneFailed = dataclient.ErrSceneFailed
	ErrForbidden   = dataclient.ErrForbidden

	ErrRequestConflict = dataclient.ErrRequestConflict
)

// Wire types.
type (
	Error            = dataclient.Error
	Owner            = dataclient.Owner
	LoadRequest      = dataclient.LoadRequest
	LoadReply        = dataclient.LoadReply
	SaveRequest      = dataclient.SaveRequest
	Ack              = dataclient.Ack
	ReleaseRequest   = dataclient.ReleaseRequest
	HandoverRequest  = dataclient.HandoverRequest
	CreateRequest    = dataclient.CreateRequest
	ShowRequest      = dataclient.ShowRequest
	ShowReply        = dataclient.ShowReply
	AdminGiveRequest = dataclient.AdminGiveRequest
	GiveRequest      = dataclient.GiveRequest
	GiveReply        = dataclient.GiveReply
	AdminKickRequest = dataclient.AdminKickRequest
	KickRequest      = dataclient.KickRequest
	KickReply        = dataclient.KickReply
	FlushReply       = dataclient.FlushReply
	StatsReply       = dataclient.StatsReply
)

// SceneGiveSubject and SceneKickSubject are where GM changes for an online
// player are forwarded to its owner scene.
func SceneGiveSubject(scene string) string { return dataclient.SceneGiveSubject(scene) }
func SceneKickSubject(scene string) string { return dataclient.SceneKickSubject(scene) }

func toError(err error) *Error { return dataclient.ErrorOf(err) }
