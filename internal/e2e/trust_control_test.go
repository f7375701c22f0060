package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/ctlproto"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
	"github.com/respawn-dev/respawn/internal/process/processtest"
	"github.com/respawn-dev/respawn/internal/secret"
)

// holdFor checks fn every 50 ms for d; the first error fails the test.
func holdFor(t *testing.T, d time.Duration, fn func() error) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err := fn(); err != nil {
			t.Fatal(err)
		}
	}
}

// sameTable compares what a fault must not change: pid, epoch, state,
// restarts and address of every scene.
func sameTable(before, after []modules.SceneRow) error {
	if len(before) != len(after) {
		return fmt.Errorf("table has %d rows, had %d", len(after), len(before))
	}
	for i, b := range before {
		a := after[i]
		if a.ID != b.ID || a.PID != b.PID || a.Epoch != b.Epoch || a.State != b.State || a.Restarts != b.Restarts || a.Addr != b.Addr {
			return fmt.Errorf("row changed:\n before %+v\n after  %+v", b, a)
		}
	}
	return nil
}

// rawHello is a v1-style forged hello, as issue 10 describes the attack:
// a 4-byte length, version and type bytes, then the hello JSON.
func rawHello(version byte, h ctlproto.Hello) []byte {
	body, _ := json.Marshal(h)
	b := binary.BigEndian.AppendUint32(nil, uint32(2+len(body)))
	b = append(b, version, byte(ctlproto.TypeHello))
	return append(b, body...)
}

// signedHello runs the handshake with sec and returns what the manager
// answered: a type and exit reason, or the error that closed it.
func signedHello(t *testing.T, addr string, sec *secret.Secret, h ctlproto.Hello) (ctlproto.Type, string, error) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	conn := ctlproto.NewConn(nc)
	f, err := conn.Receive(3 * time.Second)
	if err != nil {
		return 0, "", err
	}
	nm, err := ctlproto.DecodeChallenge(f)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := conn.SendHello(sec, nm, h, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f, err = conn.Receive(3 * time.Second)
	if err != nil {
		return 0, "", err
	}
	var e ctlproto.Exit
	if err := ctlproto.OpenSigned(ctlproto.Session{Secret: sec, Scene: ns, Manager: nm}, f, &e); err != nil {
		t.Fatal(err)
	}
	return f.Type, e.Reason, nil
}

// challengedThenClosed writes raw to the manager's control port at addr and
// checks what a refused peer sees: the manager speaks first (its
// challenge), then closes the connection on raw; nothing else comes back.
func challengedThenClosed(addr string, raw []byte) error {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	if _, err := nc.Write(raw); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if f, err := ctlproto.ReadFrame(nc); err != nil || f.Type != ctlproto.TypeChallenge {
		return fmt.Errorf("first frame %v, %v; want the challenge", f.Type, err)
	}
	if rest, err := io.ReadAll(nc); err != nil || len(rest) > 0 {
		return fmt.Errorf("answered %q (%v); want a close", rest, err)
	}
	return nil
}

// Issue 10: a forged hello on the control port naming a victim process
// made the manager drop the real scene and later SIGKILL the victim. Now:
// a forger without the secret is closed, logged with its address and
// counted; one with the secret still cannot name a pid that is not a scene
// process. The victim lives and the table does not change.
func TestForgedHelloLeavesVictimAlive(t *testing.T) {
	c := newCluster(t)
	mgr := c.start("worldmgr")
	before := c.waitRunning(15 * time.Second)
	forest := find(t, before, "forest")
	v, vdone := processtest.Sleep(t) // the process a forger would like the manager to kill
	forged := ctlproto.Hello{Process: "forest", PID: v.Process.Pid, Addr: "127.0.0.1:1", Epoch: forest.Epoch + 1,
		Started: time.Now(), Scenes: []ctlproto.SceneReport{{ID: "forest", Epoch: forest.Epoch + 1, State: modules.SceneRunning}}}

	// Unsigned, in the old protocol and in this one.
	for _, raw := range [][]byte{rawHello(1, forged), rawHello(ctlproto.Version, forged)} {
		if err := challengedThenClosed(c.ports["worldmgr.listen"], raw); err != nil {
			t.Fatalf("forged hello: %v", err)
		}
	}
	// Signed with the cluster's secret, but the pid is a `sleep`.
	sec, err := secret.Load("", c.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := process.ReadIdentity(v.Process.Pid); err == nil {
		forged.Exe, forged.StartTicks, forged.Cmdline = id.Exe, id.StartTicks, id.Cmdline
	}
	if typ, reason, err := signedHello(t, c.ports["worldmgr.listen"], sec, forged); typ != ctlproto.TypeExit || !strings.Contains(reason, "cannot be verified") {
		t.Fatalf("signed hello for a sleep: %s %q %v", typ, reason, err)
	}
	// ... nor borrow a real scene's identity for another pid.
	forged.Exe, forged.Cmdline = "/bin/scene", []string{"scene", "--process", "forest"}
	if typ, reason, err := signedHello(t, c.ports["worldmgr.listen"], sec, forged); typ != ctlproto.TypeExit || !strings.Contains(reason, "cannot be verified") {
		t.Fatalf("signed hello with a borrowed identity: %s %q %v", typ, reason, err)
	}

	// Longer than a heartbeat timeout: "later" is when the old manager
	// killed the victim.
	holdFor(t, 2500*time.Millisecond, func() error {
		select {
		case <-vdone:
			return fmt.Errorf("the victim pid %d was killed", v.Process.Pid)
		default:
		}
		after, err := c.scenes()
		if err != nil {
			return err
		}
		return sameTable(before, after)
	})
	poll.Until(t, 5*time.Second, func() error {
		var m string
		if err := getText("http://"+c.ports["worldmgr.admin"]+"/metrics", &m); err != nil {
			return err
		}
		if !strings.Contains(m, "respawn_worldmgr_control_auth_failures_total 2") {
			return fmt.Errorf("auth failures not counted")
		}
		if !strings.Contains(mgr.output(), "control connection refused: not authenticated") || !strings.Contains(mgr.output(), `"remote":"127.0.0.1:`) {
			return fmt.Errorf("no log line naming the forger's address")
		}
		return nil
	})
}

// An epoch of 2^64-1 (or any jump of more than one) in a hello is refused:
// nothing wraps, nobody is locked out with a stale lease.
func TestHugeEpochInHelloIsRefused(t *testing.T) {
	c := newCluster(t)
	mgr := c.start("worldmgr")
	before := c.waitRunning(15 * time.Second)
	forest := find(t, before, "forest")
	sec, err := secret.Load("", c.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	h := ctlproto.Hello{Process: "forest", PID: forest.PID, Addr: forest.Addr, Epoch: 1<<64 - 1, Started: time.Now()}
	if id, err := process.ReadIdentity(forest.PID); err == nil {
		h.Exe, h.StartTicks, h.Cmdline = id.Exe, id.StartTicks, id.Cmdline
	}
	if typ, _, err := signedHello(t, c.ports["worldmgr.listen"], sec, h); err == nil {
		t.Fatalf("epoch 2^64-1 answered with %s", typ)
	}
	h.Epoch = forest.Epoch + 2
	if typ, reason, _ := signedHello(t, c.ports["worldmgr.listen"], sec, h); typ != ctlproto.TypeExit || !strings.Contains(reason, "ahead of the highest epoch") {
		t.Fatalf("epoch +2: %s %q", typ, reason)
	}
	holdFor(t, 1500*time.Millisecond, func() error {
		after, err := c.scenes()
		if err != nil {
			return err
		}
		return sameTable(before, after)
	})
	if !strings.Contains(mgr.output(), "epoch 18446744073709551615 outside 1..9007199254740992") {
		t.Errorf("no clear error for the huge epoch in the log:\n%s", mgr.output())
	}
}

func getText(url string, out *string) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	*out = string(b)
	return err
}
