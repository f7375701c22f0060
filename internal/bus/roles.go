package bus

import (
	"fmt"
	"slices"
	"time"

	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/replica"
)

// Role is a NATS user of the cluster: every process of a kind connects as
// the same user, with the password secret.NATSPassword(role).
type Role string

// The bus's users.
const (
	RoleDataSvr  Role = "datasvr"
	RoleWorldMgr Role = "worldmgr"
	RoleScene    Role = "scene"
	RoleGateway  Role = "gateway"
	// RoleOperator reads: replicas, chat, player show and datasvr stats.
	// `respawn` commands that only look use it.
	RoleOperator Role = "operator"
	// RoleGM is the operator plus the GM commands that change player data
	// (create, give, take, kick, flush, save-all) and GM chat.
	RoleGM Role = "gm"
)

// Roles lists every role, in a fixed order.
func Roles() []Role {
	return []Role{RoleDataSvr, RoleWorldMgr, RoleScene, RoleGateway, RoleOperator, RoleGM}
}

// Subjects of the cluster, as permission patterns. They are spelled out
// here rather than imported so the rules of the bus read in one place; a
// test checks them against the subjects the code actually uses.
const (
	datasvrLoad     = "respawn.datasvr.load"
	datasvrSave     = "respawn.datasvr.save"
	datasvrRelease  = "respawn.datasvr.release"
	datasvrHandover = "respawn.datasvr.handover"
	datasvrAdmin    = "respawn.datasvr.admin.*" // create, show, give, kick, flush, stats
	datasvrShow     = "respawn.datasvr.admin.show"
	datasvrCreate   = "respawn.datasvr.admin.create"
	datasvrStats    = "respawn.datasvr.admin.stats"
	datasvrAll      = "respawn.datasvr.>"
	sceneEvent      = "respawn.scene.*.event" // TravelIn and TravelAck between scenes
	sceneGive       = "respawn.scene.*.give"  // GM give forwarded by datasvr
	sceneKick       = "respawn.scene.*.kick"  // GM kick forwarded by datasvr
	sceneSaveAll    = "respawn.scene.*.saveall"
	sceneAll        = "respawn.scene.>"
	chat            = "respawn.chat.>"
	gatewayAll      = "respawn.gateway.>" // gateways announce logins to each other
	inboxRoot       = "_INBOX"
	replicaPrefix   = replica.DefaultPrefix
)

// InboxPrefix is where a role's request replies arrive. Each role has its
// own, and may subscribe only there, so one role cannot read the replies
// another asked for (a player's data on its way to a scene).
func InboxPrefix(r Role) string { return inboxRoot + "." + string(r) }

// Permissions is what one role may publish and subscribe. Responses: the
// role may also publish replies to requests it received (NATS
// allow_responses), for up to MaxResponses messages per request within
// ResponseTTL; it needs no publish right on anyone's inbox for that.
type Permissions struct {
	Publish   []string
	Subscribe []string
	Responses bool
}

// Bounds on the replies a responder may send to one request: a replica
// snapshot is answered in chunks of 256 KiB, so 1024 replies carry a
// 256 MiB state; nothing answers later than a minute.
const (
	MaxResponses = 1024
	ResponseTTL  = time.Minute
)

// PermissionsOf returns the rules of role r. They enforce the design: only
// a replicated module's owner role publishes its updates; only datasvr
// answers data requests and forwards GM changes to scenes; only scenes
// (and the GM's save-all) publish on a scene's subjects; the operator role
// only reads.
func PermissionsOf(r Role) (Permissions, error) {
	var p Permissions
	pub := func(s ...string) { p.Publish = append(p.Publish, s...) }
	sub := func(s ...string) { p.Subscribe = append(p.Subscribe, s...) }
	sub(InboxPrefix(r) + ".>")
	switch r {
	case RoleDataSvr:
		sub(datasvrAll)
		pub(sceneGive, sceneKick)
		p.Responses = true
	case RoleWorldMgr, RoleScene, RoleGateway:
		replicas(replicaRole(r), pub, sub)
		p.Responses = true // snapshot answers to readers
		if r == RoleScene {
			pub(datasvrLoad, datasvrSave, datasvrRelease, datasvrHandover, sceneEvent, chat)
			sub(sceneAll, chat)
		}
		if r == RoleGateway {
			// Where a logging-in player is, and a new character for a
			// token naming a player the data server does not know.
			pub(datasvrShow, datasvrCreate, gatewayAll)
			sub(chat, gatewayAll)
		}
	case RoleOperator, RoleGM:
		replicas(replica.RoleCLI, pub, sub)
		sub(chat)
		pub(datasvrShow, datasvrStats)
		if r == RoleGM {
			pub(datasvrAdmin, sceneSaveAll, chat)
		}
	default:
		return Permissions{}, fmt.Errorf("bus: unknown role %q (known: %v)", r, Roles())
	}
	slices.Sort(p.Publish)
	p.Publish = slices.Compact(p.Publish)
	slices.Sort(p.Subscribe)
	p.Subscribe = slices.Compact(p.Subscribe)
	return p, nil
}

// replicaRole is the replica role a bus role reads and writes modules as.
func replicaRole(r Role) replica.Role {
	switch r {
	case RoleWorldMgr:
		return replica.RoleWorldMgr
	case RoleScene:
		return replica.RoleScene
	case RoleGateway:
		return replica.RoleGateway
	case RoleDataSvr:
		return replica.RoleDataSvr
	default:
		return replica.RoleCLI
	}
}

// replicas grants what the replica protocol needs for every declared
// module: the owner publishes updates and answers snapshot requests; an
// owner or subscriber receives updates and asks for snapshots.
func replicas(role replica.Role, pub, sub func(...string)) {
	for _, m := range modules.All() {
		upd, snap := replicaPrefix+"."+m.Name+".upd", replicaPrefix+"."+m.Name+".snap"
		if m.Owner == role {
			pub(upd)
			sub(snap)
		}
		if m.Owner == role || m.Subscribes(role) {
			sub(upd)
			pub(snap)
		}
	}
}
