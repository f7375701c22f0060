package dataclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/respawn-dev/respawn/internal/validate"
)

// AdminClient is the GM / operations side of datasvr (the respawn CLI and
// the bot). Requests without a deadline in ctx time out after 15 s.
type AdminClient struct {
	nc      *nats.Conn
	token   string
	timeout time.Duration
}

// NewAdminClient returns an admin client over nc. token is the operator
// token (admin.OperatorToken) that create, give, take and kick need; ""
// limits the client to show, stats and flush.
func NewAdminClient(nc *nats.Conn, token string) *AdminClient {
	return &AdminClient{nc: nc, token: token, timeout: 15 * time.Second}
}

// authed sends an admin request that changes a player, with the token.
func (a *AdminClient) authed(ctx context.Context, subject string, req, rep any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%w: encode %s: %v", ErrBadRequest, subject, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.timeout)
		defer cancel()
	}
	msg := nats.NewMsg(subject)
	msg.Data = b
	if a.token != "" {
		msg.Header.Set(AuthHeader, "Bearer "+a.token)
	}
	out, err := a.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, subject, err)
	}
	if err := json.Unmarshal(out.Data, rep); err != nil {
		return fmt.Errorf("%w: decode reply on %s: %v", ErrBadRequest, subject, err)
	}
	return nil
}

// Create makes a new player (a GM test character).
func (a *AdminClient) Create(ctx context.Context, id, name string) error {
	return a.CreateReq(ctx, "", id, name)
}

// CreateReq is Create with an operator request id: a repeat of reqID is
// answered with the original result (not "exists"), so a retry is safe.
func (a *AdminClient) CreateReq(ctx context.Context, reqID, id, name string) error {
	var ack Ack
	if err := a.authed(ctx, SubjectCreate, CreateRequest{ReqID: reqID, Player: id, Name: name}, &ack); err != nil {
		return fmt.Errorf("create player %s: %w", validate.Short(id), err)
	}
	if err := ack.Error.Err(); err != nil {
		return fmt.Errorf("create player %s: %w", validate.Short(id), err)
	}
	return nil
}

// Show returns a player as datasvr holds it (the newest acknowledged data).
func (a *AdminClient) Show(ctx context.Context, id string) (ShowReply, error) {
	var rep ShowReply
	if err := request(ctx, a.nc, a.timeout, SubjectShow, ShowRequest{Player: id}, &rep); err != nil {
		return rep, fmt.Errorf("show player %s: %w", validate.Short(id), err)
	}
	if err := rep.Error.Err(); err != nil {
		return rep, fmt.Errorf("show player %s: %w", validate.Short(id), err)
	}
	return rep, nil
}

// Give adds count of item (negative: takes) and returns once the change
// is durable: in datasvr's journal for an offline player, in the owner
// scene's acknowledged save for an online one.
func (a *AdminClient) Give(ctx context.Context, reqID, id, item string, count int64) (GiveReply, error) {
	var rep GiveReply
	if err := a.authed(ctx, SubjectGive, AdminGiveRequest{ReqID: reqID, Player: id, Item: item, Count: count}, &rep); err != nil {
		return rep, fmt.Errorf("give player %s %d %s: %w", validate.Short(id), count, validate.Short(item), err)
	}
	if rep.Error != "" {
		return rep, fmt.Errorf("give player %s %d %s: %w", validate.Short(id), count, validate.Short(item), codeErr(rep.Code, rep.Error))
	}
	return rep, nil
}

// Kick asks the owner scene to save and drop the player. With force, a
// scene that does not answer loses the lease anyway.
func (a *AdminClient) Kick(ctx context.Context, reqID, id string, force bool) error {
	var rep KickReply
	if err := a.authed(ctx, SubjectKick, AdminKickRequest{ReqID: reqID, Player: id, Force: force}, &rep); err != nil {
		return fmt.Errorf("kick player %s: %w", validate.Short(id), err)
	}
	if rep.Error != "" {
		return fmt.Errorf("kick player %s: %w", validate.Short(id), codeErr(rep.Code, rep.Error))
	}
	return nil
}

// Flush returns once the database holds everything datasvr acknowledged
// before the call.
func (a *AdminClient) Flush(ctx context.Context) (int, error) {
	var rep FlushReply
	if err := request(ctx, a.nc, a.timeout, SubjectFlush, FlushRequest{}, &rep); err != nil {
		return 0, fmt.Errorf("flush: %w", err)
	}
	if err := rep.Error.Err(); err != nil {
		return 0, fmt.Errorf("flush: %w", err)
	}
	return rep.Players, nil
}

// Stats returns datasvr's counters.
func (a *AdminClient) Stats(ctx context.Context) (StatsReply, error) {
	var rep StatsReply
	if err := request(ctx, a.nc, a.timeout, SubjectStats, StatsRequest{}, &rep); err != nil {
		return rep, fmt.Errorf("stats: %w", err)
	}
	return rep, rep.Error.Err()
}

func codeErr(code, msg string) error {
	if code == "" {
		return errors.New(msg)
	}
	return (&Error{Code: code, Message: msg}).Err()
}
