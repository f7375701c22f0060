package gateway

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/gwproto"
)

// tcpPair is a real loopback TCP connection: the gateway's side (direct
// writes work on it) and the peer's.
func tcpPair(t *testing.T) (server, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	peer, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); peer.Close() })
	return server, peer
}

// Frames sent from several goroutines at once, some written directly and
// some queued behind a full socket, arrive whole and each sender's in the
// order it sent them.
func TestOutboxKeepsEachSendersOrder(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.OutQueue = 1 << 20 })
	server, peer := tcpPair(t)
	// A small send buffer: the socket fills, so writes go partial and
	// queue. (A small receive buffer too would make loopback crawl.)
	_ = server.(*net.TCPConn).SetWriteBuffer(4096)
	c := newClientConn(g, server, "tcp", g.log)
	if c.out.raw == nil {
		t.Fatal("no direct writes on a TCP connection")
	}
	wdone := make(chan struct{})
	go func() { defer close(wdone); c.writeLoop() }()

	const senders, each = 4, 2000
	body := make([]byte, 300) // a few frames fill the small buffer
	// The peer reads only once every sender has sent half: the socket
	// fills and writes go partial; then it reads while they send the rest.
	var wg, half sync.WaitGroup
	half.Add(senders)
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				if i == each/2 {
					half.Done()
				}
				id := uint64(s)<<32 | uint64(i)
				c.send(gwproto.TypePush, gwproto.CodeOK, id, body)
			}
		})
	}
	half.Wait()
	c.out.mu.Lock()
	queued := len(c.out.pend)
	c.out.mu.Unlock()
	if queued == 0 {
		t.Fatal("nothing queued behind the full socket: the test does not test the queue")
	}
	next := make([]uint64, senders)
	r := gwproto.NewReader(bufio.NewReader(peer), 1<<20)
	_ = peer.SetReadDeadline(time.Now().Add(30 * time.Second))
	for n := 0; n < senders*each; n++ {
		f, err := r.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", n, err)
		}
		s, i := f.ID>>32, f.ID&(1<<32-1)
		if i != next[s] {
			t.Fatalf("sender %d: frame %d after %d", s, i, next[s])
		}
		next[s]++
	}
	wg.Wait()
	c.closeWith(gwproto.CodeOK, "")
	<-wdone
}

// A TCP client that stops reading is cut alone: direct writes fill its
// socket, the rest queues, and the full queue closes it, without blocking
// the sender.
func TestSlowTCPReaderIsCutWithoutBlockingTheSender(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.OutQueue = 8; c.WriteTimeout = 200 * time.Millisecond })
	server, peer := tcpPair(t)
	c := newClientConn(g, server, "tcp", g.log)
	wdone := make(chan struct{})
	go func() { defer close(wdone); c.writeLoop() }()
	body := make([]byte, 32<<10)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range 10000 {
			select {
			case <-c.closing:
				return
			default:
			}
			c.send(gwproto.TypePush, gwproto.CodeOK, uint64(i), body)
		}
	}()
	select {
	case <-sent:
	case <-time.After(5 * time.Second):
		t.Fatal("the sender blocked on a client that does not read")
	}
	select {
	case <-c.closing:
	case <-time.After(2 * time.Second):
		t.Fatal("a client that never reads was not cut")
	}
	if c.code != gwproto.CodeSlowConsumer {
		t.Fatalf("closed with %s, want slow_consumer", c.code)
	}
	select {
	case <-wdone:
	case <-time.After(3 * time.Second):
		t.Fatal("the writer is still blocked on the slow client")
	}
	// The peer sees the connection end.
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, peer); err != nil {
		t.Fatalf("the connection did not end: %v", err)
	}
}

// A direct write the socket takes only part of queues the rest first:
// the peer reads every frame whole and in order.
func TestOutboxPartialWriteQueuesTheRest(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.OutQueue = 1 << 20 })
	server, peer := tcpPair(t)
	_ = server.(*net.TCPConn).SetWriteBuffer(4096)
	c := newClientConn(g, server, "tcp", g.log)
	body := make([]byte, 1000)
	var sent uint64
	direct := 0
	// The peer does not read yet: direct writes fill the socket until one
	// is taken in part.
	for {
		b, err := gwproto.AppendMsg(nil, gwproto.TypePush, gwproto.CodeOK, sent, body)
		if err != nil {
			t.Fatal(err)
		}
		r := c.out.put(b)
		sent++
		if r == putQueued {
			break
		}
		if r != putWritten {
			t.Fatalf("frame %d: %v", sent, r)
		}
		direct++
		if sent > 100000 {
			t.Fatal("the socket never filled")
		}
	}
	c.out.mu.Lock()
	partial := len(c.out.pend)%len(body) != 0 // a frame is 1000 bytes + header: a cut one is not a whole number of them
	c.out.mu.Unlock()
	if !partial {
		t.Log("the first queued frame went whole (the socket took none of it)")
	}
	// More frames queue behind it; then the writer runs and the peer reads.
	for range 50 {
		c.send(gwproto.TypePush, gwproto.CodeOK, sent, body)
		sent++
	}
	wdone := make(chan struct{})
	go func() { defer close(wdone); c.writeLoop() }()
	r := gwproto.NewReader(bufio.NewReader(peer), 1<<20)
	_ = peer.SetReadDeadline(time.Now().Add(30 * time.Second))
	for want := range sent {
		f, err := r.Next()
		if err != nil {
			t.Fatalf("frame %d of %d (%d written directly): %v", want, sent, direct, err)
		}
		if f.ID != want {
			t.Fatalf("frame %d arrived as %d", want, f.ID)
		}
	}
	c.closeWith(gwproto.CodeOK, "")
	<-wdone
}
