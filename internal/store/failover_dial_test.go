package store_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"widget-store/internal/store"
)

// cutProxy is a TCP proxy to a real Postgres server whose client-side
// connections can be cut at once, as a server's death cuts them (the
// kernel of a dead machine's peer sees the connection close).
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	// cutAfter, when > 0, cuts every client connection once that many more
	// bytes of the server's answer have been passed on: the connection
	// dies in the middle of a message.
	cutAfter atomic.Int64
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed at the end of the test
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }() // a copy ends when either side is cut
			go func() { p.pass(c, s); c.Close() }()
		}
	}()
	return p
}

// pass copies the server's bytes to the client until either side closes,
// or until cutAfter bytes have gone through once it is set.
func (p *cutProxy) pass(c, s net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := s.Read(buf)
		if budget := p.cutAfter.Load(); budget > 0 && int64(n) >= budget {
			_, _ = c.Write(buf[:budget]) // the last bytes before the cut; a write error ends the copy as the cut does
			return
		} else if budget > 0 {
			p.cutAfter.Add(-int64(n))
		}
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close() // closing a cut connection again is moot
	}
	p.conns = nil
}

// TestServerDeathIsARetryableNetworkError: a query whose connection dies
// under it fails with a net.Error. DBOS v1.8 retries a step's transaction
// on a net.Error or io.EOF (sysdb.PostgresDialect.IsRetryable), but pgx
// reports a connection closed mid-message as io.ErrUnexpectedEOF, which
// DBOS does not retry: the workflow's outcome is then never recorded and it
// stays PENDING with nobody running it (seen in the failover test). The
// store's dialer (dialForFailover) makes it a net.Error.
func TestServerDeathIsARetryableNetworkError(t *testing.T) {
	admin := os.Getenv("TEST_DATABASE_URL")
	if admin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("TEST_DATABASE_URL is not set: CI must test Postgres")
		}
		t.Skip("TEST_DATABASE_URL not set")
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	q := u.Query()
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := store.Open(ctx, u.String(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// A warm connection (the handshake is behind it), then a long answer
	// cut 100 bytes in: inside its first data row.
	if _, err := db.Q().Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	proxy.cutAfter.Store(100)
	var long string
	err = db.Q().QueryRow(ctx, `SELECT repeat('x', 100000)`).Scan(&long)
	if err == nil {
		t.Fatal("the answer came through the cut connection")
	}
	var netErr net.Error
	if !errors.As(err, &netErr) && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "conn closed") {
		t.Fatalf("a query cut by the server's death: %v (%T), want a net.Error, io.EOF or \"conn closed\", which DBOS retries", err, err)
	}
	if !store.IsUnavailable(err) {
		t.Errorf("IsUnavailable(%v) = false: the pages would answer 500, not 503", err)
	}
	t.Logf("a query cut mid-way fails with %v", err)
}
