package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The node-to-node port carries every raft group (and, later, other node-to-node
// protocols). The dialling side starts each connection with a 3-byte header:
//
//	kind (1 byte) | group id (2 bytes, big endian)
//
// kind muxRaft routes the connection to that group's raft transport. Unknown
// kinds and groups not open on this node are closed. The kind byte is small, so
// it cannot be confused with faultnet's preamble (0xFA...), HTTP or TLS.
const (
	muxRaft byte = 1

	muxHeaderLen = 3
	// muxHeaderTimeout bounds how long an accepted connection may take to send
	// its header, so a silent peer cannot hold a goroutine forever.
	muxHeaderTimeout = 10 * time.Second
	// muxHandoffTimeout bounds how long an accepted connection waits for its
	// group's transport to take it.
	muxHandoffTimeout = 5 * time.Second
	// MaxGroups is the number of raft groups one port can carry.
	MaxGroups = 1 << 16
)

// DialFunc dials a node-to-node connection (net.Dialer.DialContext's shape), so a
// fault-injecting dialer can be plugged in.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Mux serves one listener for many raft groups.
type Mux struct {
	ln        net.Listener
	advertise net.Addr
	dial      DialFunc
	logger    *slog.Logger

	mu     sync.Mutex
	groups map[uint16]*muxLayer
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup
}

// NewMux starts accepting on ln. advertise is the address peers dial (ln's own
// address when empty); dial defaults to a plain net.Dialer.
func NewMux(ln net.Listener, advertise string, dial DialFunc, logger *slog.Logger) (*Mux, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	addr := ln.Addr()
	if advertise != "" {
		host, _, err := net.SplitHostPort(advertise)
		if err != nil {
			return nil, fmt.Errorf("cluster: advertise address %q: %w", advertise, err)
		}
		if ip := net.ParseIP(host); ip != nil {
			addr = &net.TCPAddr{IP: ip, Port: ln.Addr().(*net.TCPAddr).Port}
			if a, err := net.ResolveTCPAddr("tcp", advertise); err == nil {
				addr = a
			}
		} else {
			// A host name stays a name: peers resolve it on every dial, so a
			// node whose address changes under a stable name (containers)
			// keeps its place in every raft configuration.
			if host == "" {
				return nil, fmt.Errorf("cluster: advertise address %q has no host", advertise)
			}
			addr = hostAddr(advertise)
		}
	}
	if ta, ok := addr.(*net.TCPAddr); ok && (ta.IP == nil || ta.IP.IsUnspecified()) {
		return nil, fmt.Errorf("cluster: raft address %s is not one peers can dial: give a host (e.g. 127.0.0.1:7946)", addr)
	}
	m := &Mux{ln: ln, advertise: addr, dial: dial, logger: logger, groups: map[uint16]*muxLayer{}, done: make(chan struct{})}
	m.wg.Add(1)
	go m.serve()
	return m, nil
}

// Addr is the advertised address.
func (m *Mux) Addr() net.Addr { return m.advertise }

// hostAddr is an advertised "host:port" kept as written.
type hostAddr string

func (a hostAddr) Network() string { return "tcp" }
func (a hostAddr) String() string  { return string(a) }

func (m *Mux) serve() {
	defer m.wg.Done()
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			m.logger.Warn("raft mux accept", "err", err)
			select {
			case <-m.done:
				return
			case <-time.After(50 * time.Millisecond): // back off on fd exhaustion
			}
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.route(conn)
		}()
	}
}

// route reads a connection's header and hands it to its group.
func (m *Mux) route(conn net.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(muxHeaderTimeout))
	var hdr [muxHeaderLen]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		m.logger.Debug("raft mux: no header", "remote", conn.RemoteAddr(), "err", err)
		conn.Close()
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	if hdr[0] != muxRaft {
		m.logger.Warn("raft mux: unknown connection kind", "remote", conn.RemoteAddr(), "kind", hdr[0])
		conn.Close()
		return
	}
	id := binary.BigEndian.Uint16(hdr[1:])
	m.mu.Lock()
	l := m.groups[id]
	m.mu.Unlock()
	if l == nil {
		// Not open here (yet): the peer's transport retries.
		m.logger.Debug("raft mux: connection for a group not open here", "remote", conn.RemoteAddr(), "group", id)
		conn.Close()
		return
	}
	t := time.NewTimer(muxHandoffTimeout)
	defer t.Stop()
	select {
	case l.conns <- conn:
	case <-l.closed:
		conn.Close()
	case <-m.done:
		conn.Close()
	case <-t.C:
		m.logger.Warn("raft mux: group did not accept a connection in time", "group", id)
		conn.Close()
	}
}

// Layer registers group id and returns its raft.StreamLayer. Closing the layer
// (raft does on shutdown) unregisters it, so the group can be opened again.
func (m *Mux) Layer(id uint16) (raft.StreamLayer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("cluster: mux closed")
	}
	if m.groups[id] != nil {
		return nil, fmt.Errorf("cluster: raft group %d already open on this port", id)
	}
	l := &muxLayer{m: m, id: id, conns: make(chan net.Conn), closed: make(chan struct{})}
	m.groups[id] = l
	return l, nil
}

// Close stops accepting, closes every layer and waits for the mux's goroutines.
func (m *Mux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	layers := make([]*muxLayer, 0, len(m.groups))
	for _, l := range m.groups {
		layers = append(layers, l)
	}
	m.mu.Unlock()
	err := m.ln.Close()
	for _, l := range layers {
		_ = l.Close()
	}
	m.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// muxLayer is one group's view of the port: a net.Listener fed by the mux and a
// dialer that writes the group's header.
type muxLayer struct {
	m      *Mux
	id     uint16
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *muxLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *muxLayer) Close() error {
	l.once.Do(func() {
		close(l.closed)
		l.m.mu.Lock()
		if l.m.groups[l.id] == l {
			delete(l.m.groups, l.id)
		}
		l.m.mu.Unlock()
	})
	return nil
}

func (l *muxLayer) Addr() net.Addr { return l.m.advertise }

func (l *muxLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := l.m.dial(ctx, "tcp", string(address))
	if err != nil {
		return nil, err
	}
	var hdr [muxHeaderLen]byte
	hdr[0] = muxRaft
	binary.BigEndian.PutUint16(hdr[1:], l.id)
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(hdr[:]); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cluster: raft mux header to %s: %w", address, err)
	}
	_ = conn.SetWriteDeadline(time.Time{})
	return conn, nil
}
