package datasvr_test

// Integration tests against the real datasvr binary: kill -9 right after
// acknowledged saves, fencing across restarts, and a handover whose source
// scene and datasvr both die in the middle. They run against SQLite always,
// and against PostgreSQL / MariaDB when RESPAWN_TEST_POSTGRES_DSN /
// RESPAWN_TEST_MYSQL_DSN are set.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/freeport"
	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/secret"
)

var datasvrBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		tmp, err := os.MkdirTemp("", "datasvr-it-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		datasvrBin = filepath.Join(tmp, "datasvr")
		build := exec.Command("go", "build", "-o", datasvrBin, "github.com/respawn-dev/respawn/cmd/datasvr")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build datasvr:", err)
			return 1
		}
		return m.Run()
	}())
}

// backends are the databases the suite runs against.
func backends() map[string]string {
	b := map[string]string{"sqlite": "sqlite:respawn.db"}
	if dsn := os.Getenv("RESPAWN_TEST_POSTGRES_DSN"); dsn != "" {
		b["postgres"] = dsn
	}
	if dsn := os.Getenv("RESPAWN_TEST_MYSQL_DSN"); dsn != "" {
		if !strings.HasPrefix(dsn, "mysql://") {
			dsn = "mysql://" + dsn
		}
		b["mysql"] = dsn
	}
	return b
}

// daemon is one datasvr process; its ports and data dir survive restarts.
type daemon struct {
	t         *testing.T
	dir, dsn  string
	natsAddr  string
	adminAddr string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	logs   *bytes.Buffer
}

func newDaemon(t *testing.T, dsn string) *daemon {
	d := &daemon{t: t, dir: t.TempDir(), dsn: dsn, natsAddr: freeport.Addr(t), adminAddr: freeport.Addr(t)}
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			t.Logf("datasvr log tail:\n%s", tail(d.logs.String(), 4000))
		}
	})
	d.start()
	return d
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (d *daemon) url() string { return "nats://" + d.natsAddr }

// start launches datasvr and waits until /healthz says it is ready.
func (d *daemon) start() {
	d.t.Helper()
	d.mu.Lock()
	if d.logs == nil {
		d.logs = &bytes.Buffer{}
	}
	cmd := exec.Command(datasvrBin, "--data-dir", d.dir, "--nats.listen", d.natsAddr, "--datasvr.admin", d.adminAddr,
		"--datasvr.database", d.dsn, "--log.format", "json", "--log.level", "info")
	cmd.Stdout, cmd.Stderr = d.logs, d.logs
	if err := cmd.Start(); err != nil {
		d.mu.Unlock()
		d.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()

	client := http.Client{Timeout: time.Second}
	err := poll.Within(context.Background(), 30*time.Second, func() error {
		select {
		case <-exited:
			return poll.Stop(errors.New("datasvr exited during start"))
		default:
		}
		return admin.Healthy(&client, d.adminAddr)
	})
	if err != nil {
		d.t.Fatalf("datasvr not healthy: %v\n%s", err, tail(d.logs.String(), 4000))
	}
}

// kill sends SIGKILL to the process (by pid) and waits for it.
func (d *daemon) kill() { d.signal(syscall.SIGKILL) }

// stop sends SIGTERM (graceful: flush, then exit) and waits.
func (d *daemon) stop() { d.signal(syscall.SIGTERM) }

func (d *daemon) signal(sig syscall.Signal) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return
	}
	_ = syscall.Kill(d.cmd.Process.Pid, sig)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.exited
	}
	d.cmd = nil
}

// connect logs in to d's bus as role, with the secret datasvr created in
// its data directory.
func connect(t *testing.T, d *daemon, role bus.Role) *nats.Conn {
	t.Helper()
	sec, err := secret.Load("", d.dir)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := bus.Auth(role, sec)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(d.url(), append(auth, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.RetryOnFailedConnect(true))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// retry repeats fn while datasvr is unavailable (restarting), until ctx ends.
func retry(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if err == nil || !errors.Is(err, dataclient.ErrUnavailable) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func forEachBackend(t *testing.T, fn func(t *testing.T, dsn, prefix string)) {
	for name, dsn := range backends() {
		t.Run(name, func(t *testing.T) {
			fn(t, dsn, fmt.Sprintf("it%x-", time.Now().UnixNano()))
		})
	}
}

func TestKill9AfterAcknowledgedSaves(t *testing.T) {
	forEachBackend(t, func(t *testing.T, dsn, prefix string) {
		d := newDaemon(t, dsn)
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		nc := connect(t, d, bus.RoleScene)
		town := dataclient.NewClient(nc, "town", 1, nil)
		const players, rounds = 40, 15
		acked := make([]uint64, players)
		base := make([]player.Data, players)
		var wg sync.WaitGroup
		for i := range players {
			wg.Go(func() {
				id := fmt.Sprintf("%sp%d", prefix, i)
				l, err := town.LoadOrCreate(ctx, id, "")
				if err != nil {
					t.Error(err)
					return
				}
				base[i] = l.Data
				for r := range rounds {
					v := l.Version + uint64(r) + 1
					data := l.Data.Clone()
					data.Gold = int64(v)
					data.Add("shard", int64(r+1))
					if err := town.Save(ctx, id, v, data); err != nil {
						t.Error(err)
						return
					}
					acked[i] = v
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		// Right after the last acknowledgement, well inside the 5 s flush
		// interval: most of it is only in the journal.
		d.kill()
		d.start()

		admin := dataclient.NewAdminClient(connect(t, d, bus.RoleGM), "")
		check := func(when string) {
			for i := range players {
				id := fmt.Sprintf("%sp%d", prefix, i)
				var show dataclient.ShowReply
				err := retry(ctx, func() (err error) { show, err = admin.Show(ctx, id); return err })
				if err != nil {
					t.Fatalf("%s: show %s: %v", when, id, err)
				}
				if show.Version != acked[i] || show.Gold != int64(acked[i]) || show.Items["shard"] != int64(rounds) {
					t.Fatalf("%s: player %s has version %d gold %d shards %d; acknowledged version %d",
						when, id, show.Version, show.Gold, show.Items["shard"], acked[i])
				}
			}
		}
		check("after kill -9")

		// The lease survived the crash too: a stale epoch is still fenced,
		// and a respawned town (epoch 2) takes over.
		id0 := prefix + "p0"
		town2 := dataclient.NewClient(nc, "town", 2, nil)
		var l2 dataclient.Loaded
		if err := retry(ctx, func() (err error) { l2, err = town2.Load(ctx, id0); return err }); err != nil {
			t.Fatal(err)
		}
		if err := town.Save(ctx, id0, l2.Version+1, l2.Data); !errors.Is(err, dataclient.ErrStaleEpoch) {
			t.Fatalf("save from stale epoch after restart: %v, want ErrStaleEpoch", err)
		}
		next := l2.Data.Clone()
		next.Gold = int64(l2.Version + 1)
		if err := town2.Save(ctx, id0, l2.Version+1, next); err != nil {
			t.Fatal(err)
		}
		acked[0] = l2.Version + 1

		// A graceful stop flushes everything; the next start serves it
		// from the database alone (empty journal, cold cache).
		d.stop()
		if segs, _ := filepath.Glob(filepath.Join(d.dir, "journal", "*.wal")); len(segs) != 0 {
			t.Fatalf("journal not empty after a graceful stop: %v", segs)
		}
		d.start()
		check("after restart from the database")
	})
}

func TestStaleEpochSaveRejected(t *testing.T) {
	forEachBackend(t, func(t *testing.T, dsn, prefix string) {
		d := newDaemon(t, dsn)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		nc := connect(t, d, bus.RoleScene)
		id := prefix + "stale"
		old := dataclient.NewClient(nc, "forest", 3, nil)
		l, err := old.LoadOrCreate(ctx, id, "")
		if err != nil {
			t.Fatal(err)
		}
		respawned := dataclient.NewClient(nc, "forest", 4, nil)
		l4, err := respawned.Load(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := old.Save(ctx, id, l4.Version+5, l.Data); !errors.Is(err, dataclient.ErrStaleEpoch) {
			t.Fatalf("stale epoch save: %v, want ErrStaleEpoch", err)
		}
		changed := l4.Data.Clone()
		changed.Gold++
		if err := respawned.Save(ctx, id, l4.Version, changed); !errors.Is(err, dataclient.ErrOldVersion) {
			t.Fatalf("old version save: %v, want ErrOldVersion", err)
		}
		if err := dataclient.NewClient(nc, "town", 9, nil).Save(ctx, id, l4.Version+1, l4.Data); !errors.Is(err, dataclient.ErrNotOwner) {
			t.Fatalf("other scene save: %v, want ErrNotOwner", err)
		}
	})
}

// TestHandoverWithSourceAndDatasvrKilled: scene A sends the handover and
// dies at once (its connection drops without waiting for the reply), and
// datasvr is killed -9 right after. Whichever side of the handover the
// crash fell on, recovery ends with the player in scene B holding exactly
// the items it had, once.
func TestHandoverWithSourceAndDatasvrKilled(t *testing.T) {
	forEachBackend(t, func(t *testing.T, dsn, prefix string) {
		// crashAfterApply: datasvr dies once the handover is journaled
		// (checked through show); otherwise right after it was sent.
		for _, crashAfterApply := range []bool{false, true} {
			t.Run(fmt.Sprintf("crash_after_apply=%v", crashAfterApply), func(t *testing.T) {
				handoverCrash(t, dsn, fmt.Sprintf("%s%v-", prefix, crashAfterApply), crashAfterApply)
			})
		}
	})
}

func handoverCrash(t *testing.T, dsn, prefix string, crashAfterApply bool) {
	{
		d := newDaemon(t, dsn)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		id := prefix + "traveller"

		ncA := connect(t, d, bus.RoleScene)
		a := dataclient.NewClient(ncA, "town", 1, nil)
		l, err := a.LoadOrCreate(ctx, id, "")
		if err != nil {
			t.Fatal(err)
		}
		want := l.Data.Clone()
		want.Add("potion", 3)
		want.Add(player.GoldItem, 250)
		want.Add("sword", 1)
		if err := a.Save(ctx, id, l.Version+1, want); err != nil {
			t.Fatal(err)
		}
		final := want.Clone()
		final.Scene = "forest"
		req := dataclient.HandoverRequest{Player: id, Version: l.Version + 2, Scene: "town", Epoch: 1, To: "forest", Data: mustEncode(t, final)}
		if err := ncA.PublishRequest(dataclient.SubjectHandover, nats.NewInbox(), mustJSON(t, req)); err != nil {
			t.Fatal(err)
		}
		ncA.Flush()
		ncA.Close() // scene A is gone
		if crashAfterApply {
			ncW := connect(t, d, bus.RoleGM)
			adm := dataclient.NewAdminClient(ncW, "")
			poll.Until(t, 10*time.Second, func() error {
				show, err := adm.Show(ctx, id)
				if err == nil && show.Owner != nil && show.Owner.Scene == "forest" {
					return nil
				}
				return fmt.Errorf("handover never applied: %+v %v", show, err)
			})
			ncW.Close()
		}
		d.kill() // and datasvr with it, maybe before, maybe after the handover
		d.start()

		nc := connect(t, d, bus.RoleScene)
		b := dataclient.NewClient(nc, "forest", 7, nil)
		var got dataclient.Loaded
		err = retry(ctx, func() (err error) { got, err = b.Load(ctx, id); return err })
		if errors.Is(err, dataclient.ErrNotOwner) {
			// The handover did not make it: A's respawn (epoch 2) owns the
			// player with its pre-handover data and hands it over again.
			t.Log("handover was lost with the crash; the respawned source redoes it")
			a2 := dataclient.NewClient(nc, "town", 2, nil)
			la, err := a2.Load(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if err := a2.Handover(ctx, id, "forest", la.Version+1, la.Data); err != nil {
				t.Fatal(err)
			}
			got, err = b.Load(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
		for _, item := range []string{"potion", player.GoldItem, "sword"} {
			if got.Data.Count(item) != want.Count(item) {
				t.Fatalf("after the crash forest has %d %s, want %d (data %+v)", got.Data.Count(item), item, want.Count(item), got.Data)
			}
		}
		if len(got.Data.Items) != 2 {
			t.Fatalf("items %v", got.Data.Items)
		}
		// The source, in any epoch it had, cannot write the player any more.
		for epoch := uint64(1); epoch <= 2; epoch++ {
			if err := dataclient.NewClient(nc, "town", epoch, nil).Save(ctx, id, got.Version+10, want); !errors.Is(err, dataclient.ErrNotOwner) {
				t.Fatalf("town epoch %d save after handover: %v, want ErrNotOwner", epoch, err)
			}
		}
		show, err := dataclient.NewAdminClient(connect(t, d, bus.RoleOperator), "").Show(ctx, id)
		if err != nil || show.Owner == nil || *show.Owner != (dataclient.Owner{Scene: "forest", Epoch: 7}) {
			t.Fatalf("owner after recovery: %+v %v", show.Owner, err)
		}
	}
}

func mustEncode(t *testing.T, d player.Data) []byte {
	b, err := d.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
