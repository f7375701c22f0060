package bus

import (
	"fmt"
	"io"
	"strconv"

	"github.com/respawn-dev/respawn/internal/secret"
)

// WriteServerConfig writes the authorization block an external NATS server
// needs for this cluster (nats-server -c FILE): every role's user, its
// password derived from sec, and its permissions. It holds the passwords:
// write it where only the NATS server's user can read it.
func WriteServerConfig(w io.Writer, sec *secret.Secret) error {
	q := strconv.Quote
	list := func(s []string) string {
		out := "["
		for i, v := range s {
			if i > 0 {
				out += ", "
			}
			out += q(v)
		}
		return out + "]"
	}
	fmt.Fprintln(w, "# The respawn cluster's NATS users (respawn bus config). Every process")
	fmt.Fprintln(w, "# logs in as its role; passwords derive from the cluster secret, so")
	fmt.Fprintln(w, "# regenerate this file and reload the server when the secret changes.")
	fmt.Fprintln(w, "authorization {")
	fmt.Fprintln(w, "  users = [")
	for _, r := range Roles() {
		p, err := PermissionsOf(r)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "    {\n      user: %s\n      password: %s\n      permissions: {\n", q(string(r)), q(sec.NATSPassword(string(r))))
		fmt.Fprintf(w, "        publish: { allow: %s }\n", list(p.Publish))
		fmt.Fprintf(w, "        subscribe: { allow: %s }\n", list(p.Subscribe))
		if p.Responses {
			fmt.Fprintf(w, "        allow_responses: { max: %d, expires: %s }\n", MaxResponses, q(ResponseTTL.String()))
		}
		fmt.Fprintln(w, "      }\n    }")
	}
	fmt.Fprintln(w, "  ]")
	_, err := fmt.Fprintln(w, "}")
	return err
}
