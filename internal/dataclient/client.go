package dataclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/logging"
	"github.com/respawn-dev/respawn/internal/player"
)

// DefaultRequestTimeout bounds one request to datasvr when the caller's
// context has no deadline.
const DefaultRequestTimeout = 5 * time.Second

// Client is a scene's connection to datasvr: one scene id and the epoch of
// this incarnation of it. Every method is safe for concurrent use.
//
// Errors wrap the sentinels in proto.go: ErrStaleEpoch, ErrOldVersion and
// ErrNotOwner mean "this scene must drop the player"; ErrUnavailable (also
// used for NATS timeouts and "no responders") means "retry later".
type Client struct {
	nc      *nats.Conn
	scene   string
	epoch   uint64
	log     *zap.Logger
	timeout time.Duration

	onResult   func(player string, version uint64, err error)
	queueLimit int
	senders    int
	rejects    *logging.Limiter

	qOnce sync.Once
	q     *saveQueue
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithRequestTimeout sets the per-request timeout (default 5 s).
func WithRequestTimeout(d time.Duration) ClientOption { return func(c *Client) { c.timeout = d } }

// WithOnResult sets the save queue's callback: it is called once per
// version that reached a final outcome, from a queue goroutine: err nil
// (acknowledged: durable in datasvr) or a rejection (ErrStaleEpoch,
// ErrOldVersion, ErrNotOwner, ErrNotFound, ErrBadRequest). Transient
// failures are retried, not reported. Versions replaced by a newer
// Enqueue before they were sent are not reported either: the newer
// version's outcome covers them. The callback must not block for long.
func WithOnResult(f func(player string, version uint64, err error)) ClientOption {
	return func(c *Client) { c.onResult = f }
}

// WithQueueLimit bounds how many players may wait in the save queue
// (default 100000). Enqueue of a further player fails with ErrQueueFull.
func WithQueueLimit(n int) ClientOption { return func(c *Client) { c.queueLimit = n } }

// WithSenders sets how many saves the queue keeps in flight at once
// (default 64; never two of one player).
func WithSenders(n int) ClientOption { return func(c *Client) { c.senders = n } }

// NewClient returns a client for scene at epoch over nc.
func NewClient(nc *nats.Conn, scene string, epoch uint64, log *zap.Logger, opts ...ClientOption) *Client {
	if log == nil {
		log = zap.NewNop()
	}
	c := &Client{nc: nc, scene: scene, epoch: epoch, timeout: DefaultRequestTimeout,
		log: log.With(zap.String("scene", scene), zap.Uint64("epoch", epoch)), queueLimit: 100000, senders: 64,
		rejects: logging.NewLimiter(time.Second, 64)}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Scene is the client's scene id.
func (c *Client) Scene() string { return c.scene }

// Epoch is the client's epoch.
func (c *Client) Epoch() uint64 { return c.epoch }

// Loaded is a player as datasvr returned it.
type Loaded struct {
	// Version is the stored version: the scene's next save must carry a
	// higher one.
	Version uint64
	Data    player.Data
	// HandedOver: see LoadReply.
	HandedOver bool
}

// Load fetches a player and takes its lease for this scene and epoch. A
// load by a higher epoch of the holding scene takes the lease over; a load
// while another scene holds it fails with ErrNotOwner.
func (c *Client) Load(ctx context.Context, id string) (Loaded, error) {
	return c.load(ctx, LoadRequest{Player: id, Scene: c.scene, Epoch: c.epoch})
}

// Claim takes the lease of a player handed over to this scene (Handover
// by the scene it travelled from) and returns the player as the handover
// stored it. It fails with ErrNotOwner unless the lease was handed over
// to this scene or is already held by it.
func (c *Client) Claim(ctx context.Context, id string) (Loaded, error) {
	return c.load(ctx, LoadRequest{Player: id, Scene: c.scene, Epoch: c.epoch, Transfer: true})
}

// LoadOrCreate is Load that creates a new player named name if none
// exists (a new character entering the world).
func (c *Client) LoadOrCreate(ctx context.Context, id, name string) (Loaded, error) {
	return c.load(ctx, LoadRequest{Player: id, Scene: c.scene, Epoch: c.epoch, Create: true, Name: name})
}

func (c *Client) load(ctx context.Context, req LoadRequest) (Loaded, error) {
	var rep LoadReply
	if err := c.request(ctx, SubjectLoad, req, &rep); err != nil {
		return Loaded{}, fmt.Errorf("load player %s by scene %s: %w", req.Player, c.scene, err)
	}
	if err := rep.Error.Err(); err != nil {
		return Loaded{}, fmt.Errorf("load player %s by scene %s: %w", req.Player, c.scene, err)
	}
	d, err := player.Decode(rep.Data)
	if err != nil {
		return Loaded{}, fmt.Errorf("load player %s: %w", req.Player, err)
	}
	return Loaded{Version: rep.Version, Data: d, HandedOver: rep.HandedOver}, nil
}

// Save stores data as version and returns once datasvr has it on disk.
// It blocks: game loops use Enqueue instead.
func (c *Client) Save(ctx context.Context, id string, version uint64, data player.Data) error {
	b, err := data.Encode()
	if err != nil {
		return err
	}
	return c.saveRaw(ctx, id, version, b)
}

func (c *Client) saveRaw(ctx context.Context, id string, version uint64, data []byte) error {
	var ack Ack
	err := c.request(ctx, SubjectSave, SaveRequest{Player: id, Version: version, Scene: c.scene, Epoch: c.epoch, Data: data}, &ack)
	if err == nil {
		err = ack.Error.Err()
	}
	if err != nil {
		return fmt.Errorf("save player %s version %d by scene %s: %w", id, version, c.scene, err)
	}
	return nil
}

// Release drops the lease. With data non-nil it is saved as version first,
// in the same journal record.
func (c *Client) Release(ctx context.Context, id string, version uint64, data *player.Data) error {
	req := ReleaseRequest{Player: id, Version: version, Scene: c.scene, Epoch: c.epoch}
	if data != nil {
		b, err := data.Encode()
		if err != nil {
			return err
		}
		req.Data = b
	}
	var ack Ack
	err := c.request(ctx, SubjectRelease, req, &ack)
	if err == nil {
		err = ack.Error.Err()
	}
	if err != nil {
		return fmt.Errorf("release player %s by scene %s: %w", id, c.scene, err)
	}
	return nil
}

// Handover saves data as version and moves the lease to scene to, in one
// journal record. After it returns nil this scene must forget the player;
// the destination claims it with Load. If it fails with ErrUnavailable
// the outcome is unknown: retry it (a retry of an applied handover
// succeeds), never continue as owner without asking.
func (c *Client) Handover(ctx context.Context, id, to string, version uint64, data player.Data) error {
	b, err := data.Encode()
	if err != nil {
		return err
	}
	var ack Ack
	err = c.request(ctx, SubjectHandover, HandoverRequest{Player: id, Version: version, Scene: c.scene, Epoch: c.epoch, To: to, Data: b}, &ack)
	if err == nil {
		err = ack.Error.Err()
	}
	if err != nil {
		return fmt.Errorf("handover player %s from scene %s to %s: %w", id, c.scene, to, err)
	}
	return nil
}

func (c *Client) request(ctx context.Context, subject string, req, rep any) error {
	return request(ctx, c.nc, c.timeout, subject, req, rep)
}

// request sends req and decodes the reply into rep. Transport failures
// (timeout, no responders, closed connection) wrap ErrUnavailable: the
// request may or may not have been applied, and retrying is safe.
func request(ctx context.Context, nc *nats.Conn, timeout time.Duration, subject string, req, rep any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%w: encode %s: %v", ErrBadRequest, subject, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	msg, err := nc.RequestWithContext(ctx, subject, b)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, subject, err)
	}
	if err := json.Unmarshal(msg.Data, rep); err != nil {
		return fmt.Errorf("%w: decode reply on %s: %v", ErrBadRequest, subject, err)
	}
	return nil
}

// isTransient says whether a failed request should be retried as is.
func isTransient(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}
