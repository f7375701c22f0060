// Package bus is the cluster's NATS as every process must use it: the
// roles it connects as, the subject permissions each role has (roles.go;
// the embedded server enforces them, an external one is configured with
// them), and Connect, which dials with the role's credentials, without
// waiting for the server, and reconnecting forever, so a process keeps
// serving while datasvr (and the NATS server it embeds) restarts.
package bus

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/secret"
)

// Auth returns the options that authenticate as role: user name = role,
// password = sec.NATSPassword(role), and the role's own inbox prefix (the
// only inbox its permissions let it subscribe).
func Auth(role Role, sec *secret.Secret) ([]nats.Option, error) {
	if sec == nil {
		return nil, errors.New("bus: no cluster secret")
	}
	if _, err := PermissionsOf(role); err != nil {
		return nil, err
	}
	return []nats.Option{
		nats.UserInfo(string(role), sec.NATSPassword(string(role))),
		nats.CustomInboxPrefix(InboxPrefix(role)),
	}, nil
}

// Connect returns a connection to url as role that retries in the
// background. A refused login (another cluster's secret) is logged as a
// disconnect, and so is every permission violation (a subject this role
// may not use): the server reports both asynchronously.
func Connect(url, name string, role Role, sec *secret.Secret, log *zap.Logger) (*nats.Conn, error) {
	auth, err := Auth(role, sec)
	if err != nil {
		return nil, err
	}
	opts := append(auth,
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("bus disconnected; reconnecting", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("bus reconnected") }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			fields := []zap.Field{zap.String("role", string(role)), zap.Error(err)}
			if sub != nil {
				fields = append(fields, zap.String("subject", sub.Subject))
			}
			log.Warn("bus error", fields...)
		}),
	)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %s as %s: %w", url, role, err)
	}
	return nc, nil
}
