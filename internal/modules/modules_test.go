package modules

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/replica"
)

func TestAllDeclarations(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range All() {
		if err := m.Validate(); err != nil {
			t.Error(err)
		}
		if seen[m.Name] {
			t.Errorf("module %s declared twice", m.Name)
		}
		seen[m.Name] = true
		if !m.Subscribes(replica.RoleCLI) {
			t.Errorf("module %s: the CLI must be able to show it", m.Name)
		}
	}
	if PlayerPositions.Mode != replica.Batched || PlayerPositions.Interval != 2*time.Second {
		t.Errorf("positions: %+v", PlayerPositions)
	}
	// All returns copies: changing them does not change the declarations.
	a := All()
	a[0].Subscribers[0] = "x"
	if All()[0].Subscribers[0] == "x" {
		t.Error("All() exposes the declarations' slices")
	}
	d, _ := json.Marshal(replica.Describe(SceneTable, replica.Stats{}))
	if string(d) != `{"module":"scene_table","owner":"worldmgr","subscribers":["gateway","cli"],"mode":"immediate","interval_ms":0,"keys":0,"lag_p99_ms":0}` {
		t.Errorf("describe: %s", d)
	}
}

func TestChatOrderPerSender(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	subj := "rtest." + nuid.Next() + ".chat"
	chat, err := NewChat(nc, ChatOptions{Subject: subj})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []ChatMessage
	sub, err := chat.Subscribe(func(m ChatMessage) {
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := chat.Publish(ChatMessage{From: "alice", Scene: "s1", Text: fmt.Sprint("a", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Explicit sequences from another sender, with a duplicate and a late
	// (out-of-order) message injected on the wire.
	raw := func(m ChatMessage) {
		b, _ := json.Marshal(m)
		_ = nc.Publish(subj, b)
	}
	raw(ChatMessage{From: "bob", Text: "b1", Seq: 1})
	raw(ChatMessage{From: "bob", Text: "b3", Seq: 3})
	raw(ChatMessage{From: "bob", Text: "b1 again", Seq: 1})
	raw(ChatMessage{From: "bob", Text: "b2 late", Seq: 2})
	raw(ChatMessage{From: "bob", Text: "b4", Seq: 4})
	poll.Until(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < 6 {
			return fmt.Errorf("%d messages so far", len(got))
		}
		return nil
	})
	// A restarted publisher (new Chat) keeps alice's sequence increasing.
	chat2, _ := NewChat(nc, ChatOptions{Subject: subj})
	_ = chat2.Publish(ChatMessage{From: "alice", Text: "after restart"})
	poll.Until(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		var texts []string
		for _, m := range got {
			texts = append(texts, m.Text)
		}
		want := []string{"a0", "a1", "a2", "b1", "b3", "b4", "after restart"}
		if !slices.Equal(texts, want) {
			return fmt.Errorf("got %q, want %q", texts, want)
		}
		return nil
	})
	if sub.Dropped() != 2 {
		t.Errorf("dropped %d, want 2", sub.Dropped())
	}
}
