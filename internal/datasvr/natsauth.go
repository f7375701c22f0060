package datasvr

import (
	"github.com/nats-io/nats-server/v2/server"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/secret"
)

// natsUsers is the embedded NATS server's user table: one user per bus
// role, its password derived from the cluster secret, its subject
// permissions those of package bus. No other user exists, so an anonymous
// connection or a wrong password is refused at login.
func natsUsers(sec *secret.Secret) ([]*server.User, error) {
	var users []*server.User
	for _, r := range bus.Roles() {
		p, err := bus.PermissionsOf(r)
		if err != nil {
			return nil, err
		}
		perm := &server.Permissions{
			// Never nil: a nil Allow list would allow everything.
			Publish:   &server.SubjectPermission{Allow: append([]string{}, p.Publish...)},
			Subscribe: &server.SubjectPermission{Allow: append([]string{}, p.Subscribe...)},
		}
		if p.Responses {
			perm.Response = &server.ResponsePermission{MaxMsgs: bus.MaxResponses, Expires: bus.ResponseTTL}
		}
		users = append(users, &server.User{
			Username:    string(r),
			Password:    sec.NATSPassword(string(r)),
			Permissions: perm,
		})
	}
	return users, nil
}
