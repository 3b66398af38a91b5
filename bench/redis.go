package bench

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// redisScript is the seed's capped counter in one Lua script, atomic in Redis: the
// customer's hash holds usage in tokens (u), overage spent in millionths of a dollar
// (o) and the cap (c). A call is denied when the overage it adds past the soft limit
// would take the spend over the cap, as the seed's overage-only caps do.
var redisScript = fmt.Sprintf(`local h = redis.call('HMGET', KEYS[1], 'u', 'o', 'c')
if not h[3] then return -1 end
local u, o, c = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
local add = tonumber(ARGV[1])
local cost = (math.max(0, u + add - %d) - math.max(0, u - %d)) * %d
if o + cost > c then return 0 end
redis.call('HSET', KEYS[1], 'u', u + add, 'o', o + cost)
return 1`, SeedLimitTokens, SeedLimitTokens, SeedPriceMicroUSD)

// Redis is the Redis baseline: a redis-server the harness starts on a free port,
// deciding with redisScript over one connection per worker.
type Redis struct {
	// Fsync is the appendfsync setting: "everysec" (Redis's own recommendation, up
	// to a second of acknowledged writes lost on a crash), "always" or "no".
	Fsync   string
	Timeout time.Duration

	dir  string
	proc *process
	addr string
	sha  string
	f    *Fixture
}

func (t *Redis) Name() string { return "redis" }
func (t *Redis) Describe() string {
	return fmt.Sprintf("redis-server, one node, Lua capped counter (EVALSHA), appendfsync %s; no replication", t.Fsync)
}
func (t *Redis) Regions() []string      { return []string{"local"} }
func (t *Redis) Supports(k OpKind) bool { return k == OpAllow }
func (t *Redis) timeout() time.Duration { return cmp.Or(t.Timeout, 5*time.Second) }

func (t *Redis) Start(ctx context.Context) error {
	bin, err := lookBin("redis-server", "apt-get install redis-server")
	if err != nil {
		return err
	}
	if t.Fsync == "" {
		t.Fsync = "everysec"
	}
	if t.dir, err = os.MkdirTemp("", "capstan-bench-redis-"); err != nil {
		return err
	}
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	t.addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	t.proc, err = startProcess(t.dir, "redis", bin, []string{
		"--port", strconv.Itoa(ports[0]), "--bind", "127.0.0.1", "--dir", t.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", t.Fsync, "--daemonize", "no",
	}, nil)
	if err != nil {
		return err
	}
	err = waitFor(ctx, t.proc, 10*time.Second, func(ctx context.Context) error {
		c, err := t.dial()
		if err != nil {
			return err
		}
		defer c.close()
		_, err = c.do("PING")
		return err
	})
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	c, err := t.dial()
	if err != nil {
		return err
	}
	defer c.close()
	sha, err := c.do("SCRIPT", "LOAD", redisScript)
	if err != nil {
		return fmt.Errorf("redis: load script: %w", err)
	}
	t.sha = sha
	return nil
}

func (t *Redis) Setup(ctx context.Context, f *Fixture) error {
	t.f = f
	c, err := t.dial()
	if err != nil {
		return err
	}
	defer c.close()
	// One pipeline of HSETs: the baseline's setup is not what is measured.
	var b strings.Builder
	for i, id := range f.IDs() {
		writeCommand(&b, "HSET", id, "u", strconv.FormatInt(f.Prime, 10), "o", "0", "c", strconv.FormatInt(f.CapMicroUSD(i), 10))
	}
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.conn.Write([]byte(b.String())); err != nil {
		return err
	}
	for range f.IDs() {
		if _, err := c.read(); err != nil {
			return fmt.Errorf("redis: setup: %w", err)
		}
	}
	return nil
}

func (t *Redis) Client(int, int) (Client, error) {
	c, err := t.dial()
	if err != nil {
		return nil, err
	}
	return &redisClient{t: t, c: c}, nil
}

func (t *Redis) Close() error {
	t.proc.stop(5 * time.Second)
	if t.dir != "" {
		os.RemoveAll(t.dir)
	}
	return nil
}

type redisClient struct {
	t   *Redis
	c   *respConn
	buf []byte
}

func (rc *redisClient) Do(_ context.Context, op *Op) (Outcome, error) {
	t := rc.t
	id, val := t.f.ID(op.Customer), t.f.ValueString(op.Value)
	b := rc.buf[:0]
	b = append(b, "*5\r\n$7\r\nEVALSHA\r\n$40\r\n"...)
	b = append(b, t.sha...)
	b = append(b, "\r\n$1\r\n1\r\n$"...)
	b = strconv.AppendInt(b, int64(len(id)), 10)
	b = append(b, "\r\n"...)
	b = append(b, id...)
	b = append(b, "\r\n$"...)
	b = strconv.AppendInt(b, int64(len(val)), 10)
	b = append(b, "\r\n"...)
	b = append(b, val...)
	b = append(b, "\r\n"...)
	rc.buf = b
	rc.c.conn.SetDeadline(time.Now().Add(t.timeout()))
	if _, err := rc.c.conn.Write(b); err != nil {
		return Failed, err
	}
	line, err := rc.c.r.ReadSlice('\n')
	switch {
	case err != nil:
		return Failed, err
	case string(line) == ":1\r\n":
		return Allowed, nil
	case string(line) == ":0\r\n":
		return Denied, nil
	default:
		return Failed, fmt.Errorf("redis: script answered %q", line)
	}
}

// respConn is the little of the RESP protocol the baseline needs: commands out,
// simple, integer, bulk and error replies in.
type respConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func (t *Redis) dial() (*respConn, error) {
	conn, err := net.DialTimeout("tcp", t.addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	return &respConn{conn: conn, r: bufio.NewReader(conn)}, nil
}

func (c *respConn) close() { c.conn.Close() }

func (c *respConn) do(args ...string) (string, error) {
	var b strings.Builder
	writeCommand(&b, args...)
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return c.read()
}

func writeCommand(b *strings.Builder, args ...string) {
	fmt.Fprintf(b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(b, "$%d\r\n%s\r\n", len(a), a)
	}
}

// read returns one reply as text (an error reply as an error).
func (c *respConn) read() (string, error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return "", err
	}
	if len(line) < 3 {
		return "", errors.New("redis: short reply")
	}
	body := string(line[1 : len(line)-2])
	switch line[0] {
	case '+', ':':
		return body, nil
	case '-':
		return "", errors.New("redis: " + body)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	default:
		return "", fmt.Errorf("redis: unexpected reply %q", line)
	}
}

// ServerCPU is the CPU time of the processes the target started.
func (t *Redis) ServerCPU() time.Duration { return processesCPU(t.proc) }
