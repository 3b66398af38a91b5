package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/shopspring/decimal"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
	"github.com/capstanhq/capstan/internal/raftgroup"
)

// testLogger logs to stderr when CAPSTAN_TEST_LOG is set: at the level it
// names (debug, info, warn, error), debug for any other value.
func testLogger() *slog.Logger {
	v := os.Getenv("CAPSTAN_TEST_LOG")
	if v == "" {
		return slog.New(slog.DiscardHandler)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(v)); err != nil {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, msg)
		}
		time.Sleep(5 * time.Millisecond) // poll interval, not synchronisation
	}
}

func newTestMux(t *testing.T) *Mux {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMux(ln, "", nil, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func TestMuxRoutesByGroup(t *testing.T) {
	a, b := newTestMux(t), newTestMux(t)
	la1, _ := a.Layer(1)
	lb1, _ := b.Layer(1)
	lb2, _ := b.Layer(2)
	if _, err := b.Layer(2); err == nil {
		t.Fatal("a group registered twice")
	}

	accepted := make(chan string, 2)
	for _, l := range []raft.StreamLayer{lb1, lb2} {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				buf := make([]byte, 5)
				if _, err := io.ReadFull(c, buf); err == nil {
					accepted <- fmt.Sprintf("%p:%s", l, buf)
				}
				c.Close()
			}
		}()
	}
	c, err := la1.Dial(raft.ServerAddress(b.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-accepted:
		if want := fmt.Sprintf("%p:hello", lb1); got != want {
			t.Fatalf("accepted %q, want %q (group 1's layer)", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("group 1 never got the connection")
	}

	// A group that is not open on b: the connection is closed.
	la9, _ := a.Layer(9)
	c9, err := la9.Dial(raft.ServerAddress(b.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c9.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c9.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection for an unknown group: read %v, want EOF", err)
	}

	// Closing a layer unregisters it so the group can open again.
	_ = lb2.Close()
	if _, err := lb2.Accept(); err == nil {
		t.Fatal("closed layer accepted")
	}
	if _, err := b.Layer(2); err != nil {
		t.Fatalf("reopen group 2: %v", err)
	}
}

func TestMuxRefusesUnspecifiedAdvertise(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := NewMux(ln, "0.0.0.0:7946", nil, testLogger()); err == nil {
		t.Fatal("an unspecified advertise address was accepted")
	}
}

// TestMuxRaftGroups runs two raft groups of three voters each, all six raft
// instances on three ports (one per "node"), and checks both replicate.
func TestMuxRaftGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("raft cluster test")
	}
	muxes := []*Mux{newTestMux(t), newTestMux(t), newTestMux(t)}
	type member struct {
		f *fsm.FSM
		g *raftgroup.Group
	}
	groups := map[uint16][]member{}
	for _, gid := range []uint16{3, 7} {
		var peers []raft.Server
		for i, m := range muxes {
			peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(fmt.Sprint("n", i)), Address: raft.ServerAddress(m.Addr().String())})
		}
		for i, m := range muxes {
			layer, err := m.Layer(gid)
			if err != nil {
				t.Fatal(err)
			}
			trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: layer, MaxPool: 2, Timeout: 5 * time.Second,
				Logger: raftgroup.NewHCLogger(testLogger(), "raft-net")})
			f := fsm.New(fsm.Options{Shard: int(gid), Logger: testLogger()})
			g, err := raftgroup.Open(raftgroup.Config{
				ID: fmt.Sprint("n", i), GroupID: fmt.Sprint("g", gid), Dir: filepath.Join(t.TempDir(), fmt.Sprint(gid, "-", i)),
				Transport: trans, FSM: f, Logger: testLogger(), Bootstrap: true, Peers: peers,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = g.Close() })
			groups[gid] = append(groups[gid], member{f, g})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for gid, ms := range groups {
		// Leadership can move under a loaded machine: every command carries a
		// request id, so one sent again after an unknown outcome applies once.
		seq := 0
		apply := func(c *fsm.Command) {
			t.Helper()
			seq++
			c.RequestID = fmt.Sprint("g", gid, "-", seq)
			data, err := fsm.EncodeCommand(c)
			if err != nil {
				t.Fatal(err)
			}
			for {
				var leader *raftgroup.Group
				waitFor(t, 30*time.Second, fmt.Sprint("a leader of group ", gid), func() string {
					for _, m := range ms {
						if m.g.IsLeader() {
							leader = m.g
							return ""
						}
					}
					return "none"
				})
				r, err := leader.Apply(ctx, data)
				if errors.Is(err, raftgroup.ErrNotApplied) || errors.Is(err, raftgroup.ErrUnknownOutcome) {
					if ctx.Err() != nil {
						t.Fatalf("group %d: %v", gid, err)
					}
					continue
				}
				if err != nil || r.(*fsm.Result).Err != nil {
					t.Fatalf("group %d: %v %+v", gid, err, r)
				}
				return
			}
		}
		apply(&fsm.Command{SetPolicy: &fsm.PolicyOp{Text: testPolicy, Format: "json", Version: 1}})
		apply(&fsm.Command{CreateCustomer: &engine.CreateCustomerRequest{ID: "c1"}})
		for range int(gid) {
			apply(&fsm.Command{Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "api", Value: decimal.New(1, 0)}})
		}
	}
	for gid, ms := range groups {
		waitFor(t, time.Minute, fmt.Sprint("group ", gid, " to converge"), func() string {
			h := ms[0].f.StateHash()
			for i, m := range ms {
				if m.f.Info().Customers != 1 || m.f.StateHash() != h {
					return fmt.Sprintf("member %d: %+v", i, m.f.Info())
				}
			}
			return ""
		})
		err := ms[0].f.Read(func(e *engine.Engine, _ int64) error {
			if v := e.Customer("c1").Meters["api"].Value; !v.Equal(decimal.New(int64(gid), 0)) {
				return fmt.Errorf("group %d meter %s", gid, v)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
