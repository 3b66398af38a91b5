package faultnet

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"time"
)

// DialFunc has the shape of net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Dialer dials connections that apply Rules. A nil Rules (or Resolve) makes
// it a plain dialer, so faultnet can stay wired in with faults off.
type Dialer struct {
	Rules *Rules
	// Local is the dialling node.
	Local Endpoint
	// Resolve names the node behind a dialled address; addresses it does
	// not know are dialled without faults or preamble.
	Resolve Resolver
	// Dial makes the real connection; nil means a zero net.Dialer.
	Dial DialFunc
}

// DialContext dials addr. To a partitioned endpoint it fails at once with
// ErrPartitioned; otherwise it waits one round trip of added latency (or
// until ctx ends), dials, and sends the preamble naming d.Local.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	dial := d.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	var remote Endpoint
	ok := false
	if d.Rules != nil && d.Resolve != nil {
		remote, ok = d.Resolve(addr)
	}
	if !ok {
		return dial(ctx, network, addr)
	}
	if d.Rules.Partitioned(d.Local, remote) {
		return nil, fmt.Errorf("faultnet: dial %s (%s -> %s): %w", addr, d.Local, remote, ErrPartitioned)
	}
	pre, err := appendPreamble(nil, d.Local)
	if err != nil {
		return nil, err
	}
	if rtt := d.Rules.Latency(d.Local, remote) + d.Rules.Latency(remote, d.Local); rtt > 0 {
		t := time.NewTimer(rtt)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("faultnet: dial %s: %w", addr, ctx.Err())
		}
	}
	under, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := newConn(under, d.Rules, d.Local)
	c.peer.Store(&remote)
	if err := d.Rules.track(c); err != nil {
		under.Close()
		return nil, fmt.Errorf("faultnet: dial %s: %w", addr, err)
	}
	if _, err := c.Write(pre); err != nil {
		c.Close()
		return nil, fmt.Errorf("faultnet: dial %s: preamble: %w", addr, err)
	}
	return c, nil
}

// DialTimeout dials TCP with a timeout, the shape a raft StreamLayer's Dial
// needs (convert raft.ServerAddress to string).
func (d *Dialer) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, "tcp", addr)
}

// Listener accepts connections that apply Rules. Each accepted connection
// learns its peer from the Dialer's preamble on its first Read, or failing
// that from Resolve on its remote address (useful when every node has its
// own IP); connections it cannot label pass through untouched, so clients
// and unwrapped peers can share the port. Until the first Read an accepted
// connection's writes are not delayed.
type Listener struct {
	net.Listener
	rules   *Rules
	local   Endpoint
	resolve Resolver
}

// NewListener wraps inner for the node local. resolve may be nil. A nil
// rules means no faults, but the listener still strips the preamble, so a
// node with faults off keeps talking to peers that have them on: keep the
// node-to-node port wrapped always and switch faults with the Dialer's Rules.
func NewListener(inner net.Listener, rules *Rules, local Endpoint, resolve Resolver) *Listener {
	if rules == nil {
		rules = NewRules()
	}
	return &Listener{Listener: inner, rules: rules, local: local, resolve: resolve}
}

// Accept waits for the next connection. It never reads from it, so a slow
// peer cannot hold up the accept loop.
func (l *Listener) Accept() (net.Conn, error) {
	under, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := newConn(under, l.rules, l.local)
	c.reader = bufio.NewReader(under)
	c.resolve = l.resolve
	c.unlabeled.Store(true)
	return c, nil
}
