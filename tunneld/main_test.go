package main

// Tests of the endpoint's policy with a real SSH client (x/crypto's) over loopback TCP:
// which keys may log in, which channels and requests are refused, and when the
// keepalive ends a client that went silent.

import (
	"bufio"
	"bytes"
	"crypto/dsa"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// syncBuffer collects the endpoint's JSON events.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) events() []event {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []event
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

type endpoint struct {
	s      *server
	ln     net.Listener
	addr   string
	events *syncBuffer
}

func signerOf(t *testing.T, key any) ssh.Signer {
	t.Helper()
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatalf("signer: %v", err)
	}
	return s
}

func ed25519Signer(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signerOf(t, priv)
}

func rsaSigner(t *testing.T, bits int) ssh.Signer {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return signerOf(t, priv)
}

func authorized(s ssh.Signer) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))
}

// start runs an endpoint on a loopback port that lets the given client keys log in.
func start(t *testing.T, mod func(*config), clients ...ssh.Signer) *endpoint {
	t.Helper()
	cfg := config{
		User: "tunnel", KeepaliveInterval: 15, KeepaliveCount: 3, LoginGrace: 5,
		ForwardTimeout: 5, MaxConnections: 100, MaxUnauthPerIP: 10,
	}
	for _, c := range clients {
		cfg.Keys = append(cfg.Keys, authorized(c))
	}
	if mod != nil {
		mod(&cfg)
	}
	events := &syncBuffer{}
	s := newServer(cfg, ed25519Signer(t), events)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.serve(ln)
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		all := make([]*conn, 0, len(s.conns))
		for _, c := range s.conns {
			all = append(all, c)
		}
		s.mu.Unlock()
		for _, c := range all {
			c.close(s, "test over")
		}
	})
	return &endpoint{s: s, ln: ln, addr: ln.Addr().String(), events: events}
}

func dial(addr string, user string, key ssh.Signer) (*ssh.Client, error) {
	return ssh.Dial("tcp4", addr, &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         5 * time.Second,
	})
}

func mustDial(t *testing.T, e *endpoint, key ssh.Signer) *ssh.Client {
	t.Helper()
	c, err := dial(e.addr, "tunnel", key)
	if err != nil {
		t.Fatalf("login refused: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// forward asks for a remote forward the way `ssh -R 0:...` does; it returns the port.
func forward(c *ssh.Client, port uint32) (uint32, bool, error) {
	ok, reply, err := c.SendRequest("tcpip-forward", true,
		ssh.Marshal(struct {
			Addr string
			Port uint32
		}{"localhost", port}))
	if err != nil || !ok {
		return 0, ok, err
	}
	var got struct{ Port uint32 }
	if err := ssh.Unmarshal(reply, &got); err != nil {
		return 0, ok, err
	}
	return got.Port, ok, nil
}

func TestKeyPolicy(t *testing.T) {
	ecdsaKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var params dsa.Parameters
	if err := dsa.GenerateParameters(&params, rand.Reader, dsa.L1024N160); err != nil {
		t.Fatal(err)
	}
	dsaKey := &dsa.PrivateKey{PublicKey: dsa.PublicKey{Parameters: params}}
	if err := dsa.GenerateKey(dsaKey, rand.Reader); err != nil {
		t.Fatal(err)
	}
	dsaPub, err := ssh.NewPublicKey(&dsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		key ssh.PublicKey
		ok  bool
	}{
		"ed25519":  {ed25519Signer(t).PublicKey(), true},
		"ecdsa":    {signerOf(t, ecdsaKey).PublicKey(), true},
		"rsa-2048": {rsaSigner(t, 2048).PublicKey(), true},
		"rsa-1024": {rsaSigner(t, 1024).PublicKey(), false},
		"dsa":      {dsaPub, false},
	} {
		err := keyPolicy(tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("%s: keyPolicy = %v, want ok=%v", name, err, tc.ok)
		}
	}
}

func TestWeakKeysCannotLogInEvenWhenBound(t *testing.T) {
	good, weak := ed25519Signer(t), rsaSigner(t, 1024)
	e := start(t, nil, good, weak)
	if _, err := dial(e.addr, "tunnel", weak); err == nil {
		t.Fatal("a 1024-bit RSA key logged in")
	}
	// The same endpoint lets the Ed25519 key in, and a 2048-bit RSA key once bound.
	mustDial(t, e, good)
	strong := rsaSigner(t, 2048)
	e.s.setKeys([]string{authorized(good), authorized(strong)})
	mustDial(t, e, strong)
}

func TestUnknownKeyAndUserRefused(t *testing.T) {
	bound, stranger := ed25519Signer(t), ed25519Signer(t)
	e := start(t, nil, bound)
	if _, err := dial(e.addr, "tunnel", stranger); err == nil {
		t.Fatal("a key that is not bound logged in")
	}
	if _, err := dial(e.addr, "root", bound); err == nil {
		t.Fatal("a bound key logged in as another user")
	}
}

func TestRevokedKeyIsRefused(t *testing.T) {
	key := ed25519Signer(t)
	e := start(t, nil, key)
	mustDial(t, e, key)
	e.s.setKeys(nil)
	if _, err := dial(e.addr, "tunnel", key); err == nil {
		t.Fatal("a revoked key logged in")
	}
}

func TestEveryChannelTheClientOpensIsRefused(t *testing.T) {
	key := ed25519Signer(t)
	e := start(t, nil, key)
	c := mustDial(t, e, key)
	for _, kind := range []string{"session", "direct-tcpip", "direct-streamlocal@openssh.com", "x11"} {
		_, _, err := c.OpenChannel(kind, nil)
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited {
			t.Errorf("%s: OpenChannel = %v, want a prohibited refusal", kind, err)
		}
	}
	ok, _, err := c.SendRequest("streamlocal-forward@openssh.com", true, ssh.Marshal(struct{ P string }{"/tmp/x"}))
	if err != nil || ok {
		t.Errorf("streamlocal-forward: ok=%v err=%v, want refused", ok, err)
	}
}

func TestOneForwardOnLoopbackOnly(t *testing.T) {
	key := ed25519Signer(t)
	e := start(t, nil, key)
	c := mustDial(t, e, key)
	ok, _, err := c.SendRequest("tcpip-forward", true, ssh.Marshal(struct {
		Addr string
		Port uint32
	}{"0.0.0.0", 0}))
	if err != nil || ok {
		t.Fatalf("forward on 0.0.0.0: ok=%v err=%v, want refused", ok, err)
	}
	port, ok, err := forward(c, 0)
	if err != nil || !ok || port == 0 {
		t.Fatalf("first -R 0: port=%d ok=%v err=%v", port, ok, err)
	}
	if _, ok, _ := forward(c, 0); ok {
		t.Fatal("a second -R 0 on the same connection was granted")
	}
	// The granted port is on loopback and reaches the client through a forwarded-tcpip channel.
	chans := c.HandleChannelOpen("forwarded-tcpip")
	go func() {
		for nch := range chans {
			ch, reqs, err := nch.Accept()
			if err != nil {
				continue
			}
			go ssh.DiscardRequests(reqs)
			ch.Write([]byte("hello from the backend"))
			ch.Close()
		}
	}()
	tc, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		t.Fatalf("dialling the granted port: %v", err)
	}
	got, _ := io.ReadAll(tc)
	tc.Close()
	if string(got) != "hello from the backend" {
		t.Fatalf("through the tunnel: %q", got)
	}
	var up int
	for _, ev := range e.events.events() {
		if ev.Ev == "up" && ev.Port == int(port) {
			up++
		}
	}
	if up != 1 {
		t.Fatalf("%d up events for port %d, want 1: %+v", up, port, e.events.events())
	}
}

func TestFixedPortIsNeverBound(t *testing.T) {
	key := ed25519Signer(t)
	e := start(t, nil, key)
	c := mustDial(t, e, key)
	probe, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fixed := uint32(probe.Addr().(*net.TCPAddr).Port)
	probe.Close()
	if _, ok, _ := forward(c, fixed); ok {
		t.Fatalf("a forward on fixed port %d was granted", fixed)
	}
	if ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(fixed)))); err != nil {
		t.Fatalf("port %d is held after the refusal: %v", fixed, err)
	} else {
		ln.Close()
	}
	// Asking for a fixed port ends the connection.
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection stayed open after asking for a fixed port")
	}
}

func TestNoForwardInTimeEndsTheConnection(t *testing.T) {
	key := ed25519Signer(t)
	e := start(t, func(c *config) { c.ForwardTimeout = 0.3 }, key)
	c := mustDial(t, e, key)
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a connection without a forward outlived the forward timeout")
	}
}

func TestUnauthenticatedConnectionsPerAddressAreBounded(t *testing.T) {
	e := start(t, func(c *config) { c.MaxUnauthPerIP = 3; c.LoginGrace = 2 })
	// Three silent connections hold the address's allowance; a fourth is reset at once.
	var held []net.Conn
	for i := 0; i < 3; i++ {
		nc, err := net.Dial("tcp4", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, nc)
	}
	defer func() {
		for _, nc := range held {
			nc.Close()
		}
	}()
	waitFor(t, "three pending connections", func() bool {
		e.s.mu.Lock()
		defer e.s.mu.Unlock()
		return e.s.pending["127.0.0.1"] == 3
	})
	// (The reset can come before the dial returns.)
	if extra, err := net.Dial("tcp4", e.addr); err == nil {
		extra.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := extra.Read(make([]byte, 64))
		extra.Close()
		if err == nil {
			t.Fatalf("a fourth unauthenticated connection was served (%d bytes)", n)
		}
	}
	// A silent connection is dropped at the end of the login grace.
	held[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := io.ReadAll(held[0]); err != nil && !isClosed(err) {
		t.Fatalf("reading the held connection: %v", err)
	}
	if waited := time.Since(start); waited > 4*time.Second {
		t.Fatalf("a silent connection was kept %v, the login grace is 2 s", waited)
	}
}

// freezer relays a TCP connection and can stop relaying, as a cut network would.
type freezer struct {
	ln     net.Listener
	mu     sync.Mutex
	frozen bool
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp4", target)
			if err != nil {
				a.Close()
				continue
			}
			go f.pump(a, b)
			go f.pump(b, a)
		}
	}()
	return f
}

func (f *freezer) pump(from, to net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		f.mu.Lock()
		frozen := f.frozen
		f.mu.Unlock()
		if err != nil {
			if !frozen {
				to.Close()
			}
			return
		}
		if !frozen {
			to.Write(buf[:n])
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	f.frozen = true
	f.mu.Unlock()
}

func TestKeepaliveEndsASilentClient(t *testing.T) {
	key := ed25519Signer(t)
	e := start(t, func(c *config) { c.KeepaliveInterval = 0.2; c.KeepaliveCount = 2 }, key)
	f := newFreezer(t, e.addr)
	c, err := dial(f.ln.Addr().String(), "tunnel", key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok, err := forward(c, 0); !ok || err != nil {
		t.Fatalf("forward: ok=%v err=%v", ok, err)
	}
	// Answering keepalives keeps it up well past (count+1) x interval.
	time.Sleep(1200 * time.Millisecond)
	if n := e.s.connCount(); n != 1 {
		t.Fatalf("a client answering keepalives was dropped (%d connections)", n)
	}
	f.freeze()
	frozenAt := time.Now()
	waitFor(t, "the silent client to be dropped", func() bool { return e.s.connCount() == 0 })
	if took := time.Since(frozenAt); took < 400*time.Millisecond || took > 2*time.Second {
		t.Fatalf("dropped %v after the client went silent, want about (2+1) x 0.2 s", took)
	}
	var why string
	for _, ev := range e.events.events() {
		if ev.Ev == "down" {
			why = ev.Why
		}
	}
	if !strings.Contains(why, "no keepalive reply") {
		t.Fatalf("down event says %q", why)
	}
}

func TestNoKeepaliveWhileTheClientTalks(t *testing.T) {
	key := ed25519Signer(t)
	e := start(t, func(c *config) { c.KeepaliveInterval = 0.2; c.KeepaliveCount = 2 }, key)
	conn, err := net.Dial("tcp4", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	sc, chans, reqs, err := ssh.NewClientConn(conn, e.addr, &ssh.ClientConfig{
		User: "tunnel", Auth: []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	asked := 0
	go func() {
		for r := range reqs {
			mu.Lock()
			asked++
			mu.Unlock()
			r.Reply(true, nil)
		}
	}()
	go func() {
		for nch := range chans {
			nch.Reject(ssh.Prohibited, "")
		}
	}()
	c := ssh.NewClient(sc, make(chan ssh.NewChannel), make(chan *ssh.Request))
	defer c.Close()
	if _, ok, err := forward(c, 0); !ok || err != nil {
		t.Fatalf("forward: ok=%v err=%v", ok, err)
	}
	// The client's own keepalives every 100 ms: the endpoint has no reason to ask.
	for i := 0; i < 10; i++ {
		c.SendRequest("keepalive@openssh.com", true, nil)
		time.Sleep(100 * time.Millisecond)
	}
	mu.Lock()
	n := asked
	mu.Unlock()
	if n != 0 {
		t.Fatalf("the endpoint sent %d keepalive requests to a client that kept talking", n)
	}
	// Silent but answering: now it asks.
	waitFor(t, "a keepalive request", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return asked > 0
	})
}

func (s *server) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) ||
		strings.Contains(err.Error(), "connection reset")
}
