package faultnet

import (
	"bufio"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxQueued bounds the bytes waiting out their delay on one connection,
	// like a socket's send buffer: a writer beyond it waits for room (or its
	// write deadline).
	maxQueued = 4 << 20
	// closeLinger bounds how long Close keeps delivering delayed bytes.
	closeLinger = 5 * time.Second
)

// Conn is a connection that applies Rules to its link. Dialer and Listener
// return it for every connection they can label.
type Conn struct {
	net.Conn // the real connection

	rules  *Rules
	local  Endpoint
	reader io.Reader // Conn, or a bufio.Reader holding the preamble's tail

	// peer is nil until an accepted connection has read its preamble.
	peer      atomic.Pointer[Endpoint]
	labelMu   sync.Mutex
	unlabeled atomic.Bool // an accepted connection before its first Read
	resolve   Resolver    // accepted connections only

	delay  atomic.Pointer[cachedDelay]
	broken atomic.Bool

	mu          sync.Mutex
	queue       []chunk
	queued      int
	pumping     bool
	closed      bool
	lingerUntil time.Time
	writeErr    error
	writeDL     time.Time
	space       chan struct{} // closed when queued bytes drop
	kick        chan struct{} // wakes the pump after Close or a break
}

type chunk struct {
	due time.Time
	b   []byte
}

type cachedDelay struct {
	version uint64
	d       time.Duration
}

func newConn(under net.Conn, rules *Rules, local Endpoint) *Conn {
	return &Conn{Conn: under, rules: rules, local: local, reader: under, kick: make(chan struct{}, 1)}
}

// Peer returns the endpoint at the other end, once known.
func (c *Conn) Peer() (Endpoint, bool) {
	if p := c.peer.Load(); p != nil {
		return *p, true
	}
	return Endpoint{}, false
}

// Local returns this end's endpoint.
func (c *Conn) Local() Endpoint { return c.local }

func (c *Conn) currentDelay() time.Duration {
	peer := c.peer.Load()
	if peer == nil {
		return 0
	}
	v := c.rules.version.Load()
	if cd := c.delay.Load(); cd != nil && cd.version == v {
		return cd.d
	}
	d := c.rules.Latency(c.local, *peer)
	c.delay.Store(&cachedDelay{version: v, d: d})
	return d
}

// Read reads from the connection; on a partitioned link it fails with
// ErrPartitioned.
func (c *Conn) Read(p []byte) (int, error) {
	if c.broken.Load() {
		return 0, c.opErr("read", ErrPartitioned)
	}
	if c.unlabeled.Load() {
		if err := c.label(); err != nil {
			return 0, err
		}
	}
	n, err := c.reader.Read(p)
	if err != nil {
		err = c.mapErr("read", err)
	}
	return n, err
}

// Write queues p for delivery after the link's delay and returns without
// waiting for it; bytes are delivered in the order written. With no delay
// and nothing queued it writes straight through.
func (c *Conn) Write(p []byte) (int, error) {
	if c.broken.Load() {
		return 0, c.opErr("write", ErrPartitioned)
	}
	d := c.currentDelay()

	c.mu.Lock()
	if err := c.writeErrLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	if d == 0 && len(c.queue) == 0 && !c.pumping {
		c.mu.Unlock()
		n, err := c.Conn.Write(p)
		if err != nil {
			err = c.mapErr("write", err)
		}
		return n, err
	}
	for c.queued > 0 && c.queued+len(p) > maxQueued {
		if c.space == nil {
			c.space = make(chan struct{})
		}
		space, deadline := c.space, c.writeDL
		c.mu.Unlock()
		if err := waitUntil(space, deadline); err != nil {
			return 0, c.opErr("write", err)
		}
		c.mu.Lock()
		if err := c.writeErrLocked(); err != nil {
			c.mu.Unlock()
			return 0, err
		}
	}
	c.queue = append(c.queue, chunk{due: time.Now().Add(d), b: append([]byte(nil), p...)})
	c.queued += len(p)
	if !c.pumping {
		c.pumping = true
		go c.pump()
	}
	c.mu.Unlock()
	return len(p), nil
}

func (c *Conn) writeErrLocked() error {
	switch {
	case c.broken.Load():
		return c.opErr("write", ErrPartitioned)
	case c.closed:
		return c.opErr("write", net.ErrClosed)
	case c.writeErr != nil:
		return c.writeErr
	}
	return nil
}

func waitUntil(ch <-chan struct{}, deadline time.Time) error {
	if deadline.IsZero() {
		<-ch
		return nil
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return os.ErrDeadlineExceeded
	}
}

// pump delivers queued chunks in order, each once it is due, and exits when
// the queue is empty; after Close it also closes the real connection.
func (c *Conn) pump() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		c.mu.Lock()
		if c.closed && time.Now().After(c.lingerUntil) && c.writeErr == nil {
			c.writeErr = c.opErr("write", net.ErrClosed)
		}
		if len(c.queue) == 0 || c.broken.Load() || c.writeErr != nil {
			c.queue, c.queued, c.pumping = nil, 0, false
			c.signalSpaceLocked()
			closed := c.closed
			c.mu.Unlock()
			if closed {
				c.Conn.Close()
			}
			return
		}
		next := c.queue[0]
		wait := time.Until(next.due)
		if c.closed {
			wait = min(wait, time.Until(c.lingerUntil))
		}
		c.mu.Unlock()

		if wait > 0 {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-c.kick:
			}
			continue // re-check: the due time, Close, a break
		}
		_, err := c.Conn.Write(next.b)
		c.mu.Lock()
		c.queue[0] = chunk{}
		c.queue = c.queue[1:]
		c.queued -= len(next.b)
		if err != nil && c.writeErr == nil {
			c.writeErr = c.mapErr("write", err)
		}
		c.signalSpaceLocked()
		c.mu.Unlock()
	}
}

func (c *Conn) signalSpaceLocked() {
	if c.space != nil {
		close(c.space)
		c.space = nil
	}
}

func (c *Conn) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Close closes the connection. Delayed bytes are still delivered, for at
// most closeLinger, before the real connection closes; reads fail at once.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opErr("close", net.ErrClosed)
	}
	c.closed = true
	broken := c.broken.Load()
	c.lingerUntil = time.Now().Add(closeLinger)
	pumping := c.pumping
	c.mu.Unlock()
	c.rules.untrack(c)
	if broken {
		return nil // the real connection is already closed
	}
	if !pumping {
		return c.Conn.Close()
	}
	// The pump closes the real connection once the queue drains; wake
	// readers now and bound a stuck write.
	c.Conn.SetReadDeadline(time.Unix(1, 0))
	c.Conn.SetWriteDeadline(c.lingerUntil)
	c.wake()
	return nil
}

// breakLink fails the connection because its link was partitioned: queued
// bytes are dropped and blocked reads and writes return ErrPartitioned.
func (c *Conn) breakLink() {
	c.broken.Store(true)
	c.Conn.Close()
	c.wake()
}

// SetDeadline sets the real connection's deadlines; the write deadline also
// bounds waiting for room in the delay queue.
func (c *Conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDL = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

// SetWriteDeadline is like SetDeadline for writes only.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDL = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *Conn) mapErr(op string, err error) error {
	if c.broken.Load() {
		return c.opErr(op, ErrPartitioned)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed && err != io.EOF {
		return c.opErr(op, net.ErrClosed)
	}
	return err
}

func (c *Conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// label reads the preamble of an accepted connection, or falls back to the
// resolver on the remote address, then registers the connection with Rules.
// It runs on the first Read so a slow peer never holds up Accept.
func (c *Conn) label() error {
	c.labelMu.Lock()
	defer c.labelMu.Unlock()
	if !c.unlabeled.Load() {
		return nil
	}
	br := c.reader.(*bufio.Reader)
	peer, found, err := readPreamble(br)
	if err != nil {
		// A deadline or EOF before the preamble was complete; nothing was
		// consumed, so a later Read can try again.
		return c.mapErr("read", err)
	}
	if !found {
		var ok bool
		if c.resolve != nil {
			peer, ok = c.resolve(c.RemoteAddr().String())
		}
		if !ok {
			// Not a node we know: pass its bytes through untouched.
			c.unlabeled.Store(false)
			return nil
		}
	}
	c.peer.Store(&peer)
	c.unlabeled.Store(false)
	if err := c.rules.track(c); err != nil {
		c.breakLink()
		return c.opErr("read", err)
	}
	return nil
}
