package faultnet

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// ioTimeout bounds every blocking step so a broken test fails instead of
// hanging; nothing waits for it to pass.
const ioTimeout = 10 * time.Second

var (
	client = Endpoint{Node: "n1", Region: "us-east"}
	server = Endpoint{Node: "n2", Region: "eu-west"}
)

type node struct {
	addr     string
	accepted chan net.Conn
}

// listen starts a wrapped listener on 127.0.0.1 for local and hands every
// accepted connection to the test.
func listen(t *testing.T, rules *Rules, local Endpoint, resolve Resolver) node {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewListener(inner, rules, local, resolve)
	n := node{addr: inner.Addr().String(), accepted: make(chan net.Conn, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.accepted <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-n.accepted:
				c.Close()
			default:
				return
			}
		}
	})
	return n
}

func dialer(rules *Rules, local Endpoint, n node, remote Endpoint) *Dialer {
	return &Dialer{Rules: rules, Local: local, Resolve: StaticResolver(map[string]Endpoint{n.addr: remote})}
}

func dial(t *testing.T, d *Dialer, n node) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", n.addr)
	if err != nil {
		t.Fatalf("dial %s: %v", n.addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func accept(t *testing.T, n node) net.Conn {
	t.Helper()
	select {
	case c := <-n.accepted:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(ioTimeout):
		t.Fatal("no connection accepted")
		return nil
	}
}

// pair dials n from client and returns both ends.
func pair(t *testing.T, rules *Rules) (cli, srv net.Conn) {
	t.Helper()
	n := listen(t, rules, server, nil)
	cli = dial(t, dialer(rules, client, n, server), n)
	return cli, accept(t, n)
}

func send(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
}

func recv(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %q: %v", want, err)
	}
	if string(got) != want {
		t.Fatalf("read %q, want %q", got, want)
	}
}

func TestLatencyDelaysBothDirections(t *testing.T) {
	const delay = 40 * time.Millisecond
	rules := NewRules()
	if err := rules.Set("us-east<->eu-west=40ms"); err != nil {
		t.Fatal(err)
	}
	n := listen(t, rules, server, nil)

	start := time.Now()
	cli := dial(t, dialer(rules, client, n, server), n)
	assertBetween(t, "dial (one round trip)", time.Since(start), 2*delay)
	srv := accept(t, n)

	start = time.Now()
	send(t, cli, "ping")
	recv(t, srv, "ping")
	assertBetween(t, "us-east -> eu-west", time.Since(start), delay)

	start = time.Now()
	send(t, srv, "pong")
	recv(t, cli, "pong")
	assertBetween(t, "eu-west -> us-east", time.Since(start), delay)

	if p, ok := srv.(*Conn).Peer(); !ok || p != client {
		t.Fatalf("server labelled its peer %v (%v), want %v", p, ok, client)
	}
}

func assertBetween(t *testing.T, what string, got, atLeast time.Duration) {
	t.Helper()
	if got < atLeast || got > atLeast+5*time.Second {
		t.Fatalf("%s took %s, want at least %s (and not seconds more)", what, got, atLeast)
	}
}

// Bytes arrive in the order written while the delay changes underneath,
// including from non-zero to zero with writes still queued.
func TestLatencyKeepsOrderAcrossRuleChanges(t *testing.T) {
	rules := NewRules()
	cli, srv := pair(t, rules)
	const n = 3000
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 4)
		for i := range n {
			if i%100 == 0 {
				d := time.Duration(i/100%3) * time.Millisecond // 0, 1ms, 2ms
				rules.SetLatency("us-east", "eu-west", d)
			}
			binary.BigEndian.PutUint32(buf, uint32(i))
			if _, err := cli.Write(buf); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	srv.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 4)
	for i := range n {
		if _, err := io.ReadFull(srv, buf); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := binary.BigEndian.Uint32(buf); got != uint32(i) {
			t.Fatalf("message %d arrived as number %d", i, got)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A long delay holds the bytes, not the writer; only a full queue makes a
// writer wait, and then its write deadline still applies.
func TestWriteDoesNotWaitForDelay(t *testing.T) {
	rules := NewRules()
	cli, srv := pair(t, rules)
	rules.SetLatency("n1", "n2", time.Hour)

	wrote := make(chan error, 1)
	go func() {
		_, err := cli.Write(make([]byte, maxQueued))
		wrote <- err
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Write waited for the delay")
	}

	cli.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := cli.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a full queue: %v, want a deadline error", err)
	}

	srv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := srv.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("server read %d bytes, %v; want nothing delivered yet", n, err)
	}
	rules.Partition("n1", "n2") // drops the queue instead of lingering on Close
}

func TestDialHonoursContextDuringHandshakeDelay(t *testing.T) {
	rules := NewRules()
	if err := rules.Set("us-east<->eu-west=1h"); err != nil {
		t.Fatal(err)
	}
	n := listen(t, rules, server, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := dialer(rules, client, n, server).DialContext(ctx, "tcp", n.addr)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial: %v, want context.DeadlineExceeded", err)
	}
}

func TestPartitionBreaksConnsRefusesDialsAndHeals(t *testing.T) {
	for _, cut := range [][2]string{
		{"us-east", "eu-west"},
		{"n2", "n1"},
		{"n1", Any},
		{Any, "eu-west"},
	} {
		t.Run(cut[0]+"<->"+cut[1], func(t *testing.T) {
			rules := NewRules()
			n := listen(t, rules, server, nil)
			d := dialer(rules, client, n, server)
			cli := dial(t, d, n)
			srv := accept(t, n)
			send(t, cli, "hello")
			recv(t, srv, "hello")

			// Both ends are blocked in Read when the partition lands.
			cliErr, srvErr := make(chan error, 1), make(chan error, 1)
			go func() { _, err := cli.Read(make([]byte, 1)); cliErr <- err }()
			go func() { _, err := srv.Read(make([]byte, 1)); srvErr <- err }()
			rules.Partition(cut[0], cut[1])
			for side, ch := range map[string]chan error{"client": cliErr, "server": srvErr} {
				select {
				case err := <-ch:
					if !errors.Is(err, ErrPartitioned) {
						t.Fatalf("%s read: %v, want ErrPartitioned", side, err)
					}
				case <-time.After(ioTimeout):
					t.Fatalf("%s read still blocked after the partition", side)
				}
			}
			if _, err := cli.Write([]byte("x")); !errors.Is(err, ErrPartitioned) {
				t.Fatalf("client write: %v, want ErrPartitioned", err)
			}
			if _, err := srv.Write([]byte("x")); !errors.Is(err, ErrPartitioned) {
				t.Fatalf("server write: %v, want ErrPartitioned", err)
			}
			if _, err := d.DialContext(context.Background(), "tcp", n.addr); !errors.Is(err, ErrPartitioned) {
				t.Fatalf("dial: %v, want ErrPartitioned", err)
			}
			select {
			case <-n.accepted:
				t.Fatal("a refused dial reached the listener")
			default:
			}

			rules.Heal(cut[0], cut[1])
			cli2 := dial(t, d, n)
			srv2 := accept(t, n)
			send(t, cli2, "again")
			recv(t, srv2, "again")
			send(t, srv2, "back")
			recv(t, cli2, "back")
			if _, err := cli.Write([]byte("x")); !errors.Is(err, ErrPartitioned) {
				t.Fatalf("healing revived a broken conn: %v", err)
			}
		})
	}
}

// Nodes in different processes have their own Rules: a partition in one
// breaks the connection there and the other end sees it closed; a
// partition only the listener knows about breaks the connection on arrival.
func TestPartitionWithRulesOnOneSideOnly(t *testing.T) {
	t.Run("dialler side", func(t *testing.T) {
		cliRules, srvRules := NewRules(), NewRules()
		n := listen(t, srvRules, server, nil)
		cli := dial(t, dialer(cliRules, client, n, server), n)
		srv := accept(t, n)
		send(t, cli, "hi")
		recv(t, srv, "hi")
		cliRules.Partition("us-east", "eu-west")
		srv.SetReadDeadline(time.Now().Add(ioTimeout))
		_, err := srv.Read(make([]byte, 1))
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ErrPartitioned) {
			t.Fatalf("server read: %v, want the connection closed by the peer", err)
		}
	})
	t.Run("listener side", func(t *testing.T) {
		cliRules, srvRules := NewRules(), NewRules()
		srvRules.Partition("us-east", "eu-west")
		n := listen(t, srvRules, server, nil)
		cli := dial(t, dialer(cliRules, client, n, server), n)
		srv := accept(t, n)
		send(t, cli, "hi")
		srv.SetReadDeadline(time.Now().Add(ioTimeout))
		if _, err := srv.Read(make([]byte, 2)); !errors.Is(err, ErrPartitioned) {
			t.Fatalf("server read: %v, want ErrPartitioned", err)
		}
		cli.SetReadDeadline(time.Now().Add(ioTimeout))
		if _, err := cli.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("client read: %v, want the connection closed by the peer", err)
		}
	})
}

// Connections the listener cannot label keep every byte, including a first
// byte that starts the preamble's magic.
func TestUnlabelledConnsPassThrough(t *testing.T) {
	rules := NewRules()
	if err := rules.Set("*<->*=drop"); err != nil {
		t.Fatal(err)
	}
	n := listen(t, rules, server, nil)
	for _, first := range []string{"GET / HTTP/1.1\r\n", "\xfafnex", "\x01"} {
		c, err := net.DialTimeout("tcp", n.addr, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		srv := accept(t, n)
		send(t, srv, "server speaks first")
		recv(t, c, "server speaks first")
		send(t, c, first)
		recv(t, srv, first)
		if _, ok := srv.(*Conn).Peer(); ok {
			t.Fatalf("%q: an unknown peer got a label", first)
		}
	}

	// A dialer that cannot resolve the address dials plainly.
	d := &Dialer{Rules: rules, Local: client, Resolve: StaticResolver(nil)}
	c, err := d.DialContext(context.Background(), "tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*Conn); ok {
		t.Fatal("unresolved address got a faultnet conn")
	}
	srv := accept(t, n)
	send(t, c, "plain")
	recv(t, srv, "plain")
}

// Without a preamble the listener can still label a peer by its address
// (each node has its own IP under Docker).
func TestListenerLabelsByRemoteAddress(t *testing.T) {
	rules := NewRules()
	byHost := func(addr string) (Endpoint, bool) {
		host, _, _ := net.SplitHostPort(addr)
		return client, host == "127.0.0.1"
	}
	n := listen(t, rules, server, byHost)
	c, err := net.DialTimeout("tcp", n.addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := accept(t, n)
	send(t, c, "hi")
	recv(t, srv, "hi")
	if p, ok := srv.(*Conn).Peer(); !ok || p != client {
		t.Fatalf("peer %v (%v), want %v", p, ok, client)
	}
	rules.Partition("us-east", "eu-west")
	if _, err := srv.Write([]byte("x")); !errors.Is(err, ErrPartitioned) {
		t.Fatalf("write after partition: %v, want ErrPartitioned", err)
	}
}

// A Dialer without Rules dials plainly, and a Listener without Rules still
// understands peers whose faults are on.
func TestNilRulesIsPlainNetworking(t *testing.T) {
	n := listen(t, nil, server, nil)
	c := dial(t, dialer(nil, client, n, server), n)
	if _, ok := c.(*Conn); ok {
		t.Fatal("nil rules wrapped the dialled conn")
	}
	srv := accept(t, n)
	send(t, c, "plain")
	recv(t, srv, "plain")

	withFaults := NewRules()
	withFaults.SetLatency("us-east", "eu-west", time.Millisecond)
	c2 := dial(t, dialer(withFaults, client, n, server), n)
	srv2 := accept(t, n)
	send(t, c2, "through the preamble")
	recv(t, srv2, "through the preamble")
	send(t, srv2, "and back")
	recv(t, c2, "and back")
}

func TestCloseDeliversDelayedBytes(t *testing.T) {
	rules := NewRules()
	cli, srv := pair(t, rules)
	rules.SetLatency("n1", "n2", 20*time.Millisecond)
	send(t, cli, "last words")
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	recv(t, srv, "last words")
	srv.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := srv.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the delayed bytes: %v, want EOF", err)
	}
	if _, err := cli.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed", err)
	}
}
