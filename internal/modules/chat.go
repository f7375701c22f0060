package modules

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// ChatMessage is one world-chat line. Seq orders the messages of one sender
// (From); receivers drop a message whose Seq is not above the last one they
// delivered for that sender, so duplicates and reordered lines never show.
type ChatMessage struct {
	From  string `json:"from"`
	Scene string `json:"scene"`
	Text  string `json:"text"`
	Seq   uint64 `json:"seq"`
}

// DefaultChatSubject carries world chat. Chat is a stream of messages, not
// a key/value module, so it is plain NATS publish/subscribe and not a
// replica.Module: there is no state to snapshot.
const DefaultChatSubject = "respawn.chat.world"

// ChatOptions configure a Chat.
type ChatOptions struct {
	// Subject overrides DefaultChatSubject (tests use unique subjects).
	Subject string
	// Now overrides the clock (tests); nil = time.Now.
	Now func() time.Time
}

// Chat publishes and receives world chat.
type Chat struct {
	nc      *nats.Conn
	subject string
	now     func() time.Time

	mu   sync.Mutex
	last map[string]uint64 // last Seq published per sender
}

// NewChat returns a chat client on nc.
func NewChat(nc *nats.Conn, opts ChatOptions) (*Chat, error) {
	if nc == nil {
		return nil, errors.New("chat: nil NATS connection")
	}
	subj := opts.Subject
	if subj == "" {
		subj = DefaultChatSubject
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Chat{nc: nc, subject: subj, now: now, last: map[string]uint64{}}, nil
}

// Publish sends m. If m.Seq is zero it is assigned: one more than this
// client's last Seq for m.From, and at least the wall clock in microseconds,
// so a sender's sequence keeps increasing when its scene process restarts or
// the player moves to a scene served by another process.
func (c *Chat) Publish(m ChatMessage) error {
	if m.From == "" {
		return errors.New("chat: publish: empty sender")
	}
	c.mu.Lock()
	if m.Seq == 0 {
		m.Seq = max(c.last[m.From]+1, uint64(c.now().UnixMicro()))
	}
	c.last[m.From] = max(c.last[m.From], m.Seq)
	b, err := json.Marshal(m)
	if err == nil {
		// Publish under the lock so the wire order matches Seq order.
		err = c.nc.Publish(c.subject, b)
	}
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("chat: publish from %s seq %d: %w", m.From, m.Seq, err)
	}
	return nil
}

// ChatSubscription delivers chat in order per sender.
type ChatSubscription struct {
	sub     *nats.Subscription
	last    map[string]uint64 // only touched on the subscription's delivery goroutine
	dropped atomic.Uint64
}

// Subscribe calls fn for every message whose Seq is above the last one
// delivered for its sender, on a single delivery goroutine (so fn calls are
// sequential).
func (c *Chat) Subscribe(fn func(ChatMessage)) (*ChatSubscription, error) {
	s := &ChatSubscription{last: map[string]uint64{}}
	sub, err := c.nc.Subscribe(c.subject, func(msg *nats.Msg) {
		var m ChatMessage
		if json.Unmarshal(msg.Data, &m) != nil || m.Seq <= s.last[m.From] {
			s.dropped.Add(1)
			return
		}
		s.last[m.From] = m.Seq
		fn(m)
	})
	if err != nil {
		return nil, fmt.Errorf("chat: subscribe %s: %w", c.subject, err)
	}
	s.sub = sub
	return s, nil
}

// Dropped counts messages dropped as duplicate, out of order or undecodable.
func (s *ChatSubscription) Dropped() uint64 { return s.dropped.Load() }

// Close stops delivery.
func (s *ChatSubscription) Close() error {
	if err := s.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("chat: unsubscribe: %w", err)
	}
	return nil
}
