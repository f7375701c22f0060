package bus_test

import (
	"slices"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/gateway"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/replica"
	"github.com/respawn-dev/respawn/internal/scene"
)

func allowed(patterns []string, subject string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return server.SubjectMatchesFilter(subject, p) })
}

func perms(t *testing.T, r bus.Role) bus.Permissions {
	t.Helper()
	p, err := bus.PermissionsOf(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append(slices.Clone(p.Publish), p.Subscribe...) {
		if !server.IsValidSubject(s) {
			t.Fatalf("role %s: %q is not a valid subject pattern", r, s)
		}
	}
	return p
}

// The permissions name the subjects the code really uses, and give each
// to the roles the design says, and to no other.
func TestPermissionsMatchTheDesign(t *testing.T) {
	pub := map[bus.Role][]string{}
	sub := map[bus.Role][]string{}
	for _, r := range bus.Roles() {
		p := perms(t, r)
		pub[r], sub[r] = p.Publish, p.Subscribe
	}
	// who may publish subject: exactly these roles.
	publishers := func(subject string, want ...bus.Role) {
		t.Helper()
		for _, r := range bus.Roles() {
			if got := allowed(pub[r], subject); got != slices.Contains(want, r) {
				t.Errorf("publish %s by %s: allowed=%v, want %v", subject, r, got, !got)
			}
		}
	}
	subscribers := func(subject string, want ...bus.Role) {
		t.Helper()
		for _, r := range bus.Roles() {
			if got := allowed(sub[r], subject); got != slices.Contains(want, r) {
				t.Errorf("subscribe %s by %s: allowed=%v, want %v", subject, r, got, !got)
			}
		}
	}

	for _, s := range []string{dataclient.SubjectLoad, dataclient.SubjectSave, dataclient.SubjectRelease, dataclient.SubjectHandover} {
		publishers(s, bus.RoleScene)
		subscribers(s, bus.RoleDataSvr)
	}
	for _, s := range []string{dataclient.SubjectGive, dataclient.SubjectKick, dataclient.SubjectFlush} {
		publishers(s, bus.RoleGM)
		subscribers(s, bus.RoleDataSvr)
	}
	publishers(dataclient.SubjectCreate, bus.RoleGM, bus.RoleGateway) // a token's new character
	publishers(dataclient.SubjectShow, bus.RoleOperator, bus.RoleGM, bus.RoleGateway)
	publishers(dataclient.SubjectStats, bus.RoleOperator, bus.RoleGM)
	publishers(dataclient.SceneGiveSubject("forest"), bus.RoleDataSvr)
	publishers(dataclient.SceneKickSubject("forest"), bus.RoleDataSvr)
	publishers(dataclient.SceneSaveAllSubject("forest"), bus.RoleGM)
	publishers(scene.EventSubject("forest"), bus.RoleScene)
	subscribers(scene.EventSubject("forest"), bus.RoleScene)
	subscribers(dataclient.SceneGiveSubject("forest"), bus.RoleScene)
	publishers(modules.DefaultChatSubject, bus.RoleScene, bus.RoleGM)
	publishers(gateway.SubjectSession, bus.RoleGateway)
	subscribers(gateway.SubjectSession, bus.RoleGateway)

	roleOf := map[replica.Role][]bus.Role{
		replica.RoleWorldMgr: {bus.RoleWorldMgr},
		replica.RoleScene:    {bus.RoleScene},
		replica.RoleGateway:  {bus.RoleGateway},
		replica.RoleDataSvr:  {bus.RoleDataSvr},
		replica.RoleCLI:      {bus.RoleOperator, bus.RoleGM},
	}
	for _, m := range modules.All() {
		upd, snap := replica.DefaultPrefix+"."+m.Name+".upd", replica.DefaultPrefix+"."+m.Name+".snap"
		publishers(upd, roleOf[m.Owner]...)
		subscribers(snap, roleOf[m.Owner]...)
		readers := slices.Clone(roleOf[m.Owner])
		for _, r := range m.Subscribers {
			readers = append(readers, roleOf[r]...)
		}
		subscribers(upd, readers...)
		publishers(snap, readers...)
	}

	// Each role reads only its own inbox.
	for _, r := range bus.Roles() {
		subscribers(bus.InboxPrefix(r)+".abc", r)
	}
	if _, err := bus.PermissionsOf("root"); err == nil {
		t.Fatal("an unknown role has permissions")
	}
}
