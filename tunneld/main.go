// ecliptic-tunneld: the SSH endpoint of Ecliptic's tunnel gateway.
//
// One unprivileged process terminates every tunnel connection with Go's
// golang.org/x/crypto/ssh (memory-safe; the SSH server of gitlab-sshd, Gitea and
// Teleport). A tunnel is a stock `ssh -N -R 0:localhost:PORT tunnel@gateway`:
// public-key login only, then one remote forward to loopback; the endpoint opens a
// 127.0.0.1 listener for it and sends every connection made there down the tunnel as a
// forwarded-tcpip channel. Nothing else is served: every channel the client opens
// (session, direct-tcpip, ...) is refused, and so is every global request but
// tcpip-forward and cancel-tcpip-forward.
//
// The Python control plane (ecliptic.tunnel.tunneld) starts it, already listening:
//
//   - an inherited fd (listen_fd in the configuration) is the listening TCP socket, bound
//     by the parent, so this process needs no privilege at all and runs as the tunnel
//     account;
//   - stdin carries one JSON object per line: first the configuration (with the host
//     key), then commands: {"cmd":"keys","keys":[...]}, {"cmd":"kill","id":..,"why":..},
//     {"cmd":"kill_key","fp":..,"why":..}; end of stdin stops the endpoint;
//   - stdout carries one JSON event per line: ready, up, down;
//   - stderr carries human log lines.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

type config struct {
	HostKey           string   `json:"host_key"`
	User              string   `json:"user"`
	KeepaliveInterval float64  `json:"keepalive_interval_s"`
	KeepaliveCount    int      `json:"keepalive_count"`
	LoginGrace        float64  `json:"login_grace_s"`
	ForwardTimeout    float64  `json:"forward_timeout_s"`
	MaxConnections    int      `json:"max_connections"`
	MaxUnauthPerIP    int      `json:"max_unauthenticated_per_ip"`
	Keys              []string `json:"keys"`
	ListenFD          int      `json:"listen_fd"`
	TunnelHost        string   `json:"tunnel_host"`
}

type command struct {
	Cmd  string   `json:"cmd"`
	Keys []string `json:"keys"`
	ID   string   `json:"id"`
	FP   string   `json:"fp"`
	Why  string   `json:"why"`
}

type event struct {
	Ev     string  `json:"ev"`
	ID     string  `json:"id,omitempty"`
	FP     string  `json:"fp,omitempty"`
	Client string  `json:"client,omitempty"`
	Port   int     `json:"port,omitempty"`
	At     float64 `json:"at,omitempty"`
	Why    string  `json:"why,omitempty"`
}

// Loopback names a client may ask to listen on; the endpoint always binds the loopback
// address the control plane chose (tunnel_host, 127.0.0.1 by default), on a port it picks.
var loopbackNames = map[string]bool{"localhost": true, "127.0.0.1": true, "": true}

type server struct {
	cfg      config
	sshCfg   *ssh.ServerConfig
	mu       sync.Mutex
	keys     map[string]bool // SHA256 fingerprints allowed to log in
	conns    map[string]*conn
	pending  map[string]int // unauthenticated connections per IP
	closing  bool
	outMu    sync.Mutex
	out      *bufio.Writer
	refused  int
	refusedT time.Time
}

type conn struct {
	id       string
	ip       string
	client   string
	at       time.Time
	nc       net.Conn
	sc       *ssh.ServerConn
	fp       string
	once     sync.Once
	done     chan struct{}
	mu       sync.Mutex
	ln       net.Listener
	port     int
	up       bool
	why      string
	pending  bool
	active   map[net.Conn]struct{}
	fwdAddr  string
	fwdTimer *time.Timer
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "--version") {
		fmt.Println("ecliptic-tunneld: started by `ecliptic serve` / `ecliptic gateway`, not by hand")
		return
	}
	if path := os.Getenv("ECLIPTIC_TUNNELD_CPU_PROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fatal("cannot write the CPU profile: %v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fatal("cannot start the CPU profile: %v", err)
		}
		defer pprof.StopCPUProfile()
	}
	in := bufio.NewReaderSize(os.Stdin, 1<<16)
	line, err := in.ReadBytes('\n')
	if err != nil {
		fatal("reading the configuration from stdin: %v", err)
	}
	var cfg config
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		fatal("bad configuration: %v", err)
	}
	signer, err := ssh.ParsePrivateKey([]byte(cfg.HostKey))
	if err != nil {
		fatal("bad host key: %v", err)
	}
	if err := keyPolicy(signer.PublicKey()); err != nil {
		fatal("host key refused: %v", err)
	}
	cfg.HostKey = ""
	if ip := net.ParseIP(cfg.TunnelHost); cfg.TunnelHost != "" && (ip == nil || ip.To4() == nil || !ip.IsLoopback()) {
		fatal("tunnel_host %q is not an IPv4 loopback address", cfg.TunnelHost)
	}

	s := newServer(cfg, signer, os.Stdout)

	lf := os.NewFile(uintptr(cfg.ListenFD), "listener")
	ln, err := net.FileListener(lf)
	if err != nil {
		fatal("fd %d is not a listening socket: %v", cfg.ListenFD, err)
	}
	lf.Close() // FileListener holds its own duplicate
	s.emit(event{Ev: "ready"})
	go s.serve(ln)
	s.commands(in)
	// stdin closed: the control plane is gone or stopping. End everything.
	s.mu.Lock()
	s.closing = true
	all := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		all = append(all, c)
	}
	s.mu.Unlock()
	ln.Close()
	for _, c := range all {
		c.close(s, "endpoint stopping") // each down event is flushed as it is written
	}
}

// Client key algorithms the endpoint accepts: Ed25519, ECDSA (and their FIDO security-key
// forms) and RSA with SHA-2 signatures. No DSA, and no SHA-1 ("ssh-rsa") signatures. The
// library refuses any other algorithm before it parses the key or checks a signature.
var pubKeyAuthAlgorithms = []string{
	ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKECDSA256,
	ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512,
}

// minRSABits is the smallest RSA modulus a client key may have.
const minRSABits = 2048

// maxAuthTries bounds the keys one connection may try before it is disconnected.
const maxAuthTries = 6

// keyPolicy says why a client key may not log in, or nil when its type and size are
// acceptable (whether it is bound to a service is a separate check).
func keyPolicy(key ssh.PublicKey) error {
	switch key.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519,
		ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKECDSA256:
		return nil
	case ssh.KeyAlgoRSA:
		ck, ok := key.(ssh.CryptoPublicKey)
		if !ok {
			return errors.New("unreadable RSA key")
		}
		rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey)
		if !ok {
			return errors.New("unreadable RSA key")
		}
		if bits := rk.N.BitLen(); bits < minRSABits {
			return fmt.Errorf("RSA key of %d bits: at least %d are needed", bits, minRSABits)
		}
		return nil
	}
	return fmt.Errorf("key type %s is not accepted (Ed25519, ECDSA or RSA >= %d bits)", key.Type(), minRSABits)
}

// newServer is the endpoint for cfg with host key signer, writing its events to out.
func newServer(cfg config, signer ssh.Signer, out io.Writer) *server {
	if cfg.TunnelHost == "" {
		cfg.TunnelHost = "127.0.0.1"
	}
	s := &server{
		cfg:     cfg,
		keys:    map[string]bool{},
		conns:   map[string]*conn{},
		pending: map[string]int{},
		out:     bufio.NewWriter(out),
	}
	s.setKeys(cfg.Keys)
	s.sshCfg = &ssh.ServerConfig{
		Config: ssh.Config{
			// x/crypto reads random padding for every packet it sends: one getrandom(2)
			// per packet unless the kernel's random bytes are fetched in bulk.
			Rand:         &bulkRandom{r: bufio.NewReaderSize(rand.Reader, 4096)},
			Ciphers:      []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com"},
			KeyExchanges: []string{"curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256"},
		},
		PublicKeyAuthAlgorithms: pubKeyAuthAlgorithms,
		MaxAuthTries:            maxAuthTries,
		ServerVersion:           "SSH-2.0-Ecliptic_tunneld",
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if meta.User() != s.cfg.User {
				return nil, errors.New("unknown user")
			}
			if err := keyPolicy(key); err != nil {
				return nil, err
			}
			fp := ssh.FingerprintSHA256(key)
			s.mu.Lock()
			ok := s.keys[fp]
			s.mu.Unlock()
			if !ok {
				return nil, errors.New("unknown key")
			}
			// The permissions of the key whose signature verified become the connection's.
			return &ssh.Permissions{Extensions: map[string]string{"fp": fp}}, nil
		},
	}
	s.sshCfg.AddHostKey(signer)
	return s
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ecliptic-tunneld: "+format+"\n", args...)
	os.Exit(2)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func (s *server) emit(e event) {
	b, _ := json.Marshal(e)
	s.outMu.Lock()
	s.out.Write(b)
	s.out.WriteByte('\n')
	s.out.Flush()
	s.outMu.Unlock()
}

func (s *server) setKeys(lines []string) {
	keys := map[string]bool{}
	for _, line := range lines {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			logf("skipping a key that does not parse: %v", err)
			continue
		}
		if err := keyPolicy(key); err != nil {
			logf("skipping key %s: %v", ssh.FingerprintSHA256(key), err)
			continue
		}
		keys[ssh.FingerprintSHA256(key)] = true
	}
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

func (s *server) commands(in *bufio.Reader) {
	for {
		line, err := in.ReadBytes('\n')
		if len(line) > 0 {
			var cmd command
			if jerr := json.Unmarshal(line, &cmd); jerr != nil {
				logf("bad command: %v", jerr)
			} else {
				s.do(cmd)
			}
		}
		if err != nil {
			return
		}
	}
}

func (s *server) do(cmd command) {
	switch cmd.Cmd {
	case "keys":
		s.setKeys(cmd.Keys)
	case "kill":
		s.mu.Lock()
		c := s.conns[cmd.ID]
		s.mu.Unlock()
		if c != nil {
			go c.close(s, cmd.Why)
		}
	case "kill_key":
		s.mu.Lock()
		var matching []*conn
		for _, c := range s.conns {
			c.mu.Lock()
			if c.fp == cmd.FP {
				matching = append(matching, c)
			}
			c.mu.Unlock()
		}
		s.mu.Unlock()
		for _, c := range matching {
			go c.close(s, cmd.Why)
		}
	default:
		logf("unknown command %q", cmd.Cmd)
	}
}

func (s *server) serve(ln net.Listener) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			logf("accept: %v; pausing 100 ms", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		s.admit(nc)
	}
}

func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *server) admit(nc net.Conn) {
	addr, _ := nc.RemoteAddr().(*net.TCPAddr)
	ip, client := "?", nc.RemoteAddr().String()
	if addr != nil {
		ip = addr.IP.String()
		if v4 := addr.IP.To4(); v4 != nil {
			ip = v4.String()
			client = fmt.Sprintf("%s:%d", ip, addr.Port)
		}
	}
	s.mu.Lock()
	why := ""
	switch {
	case s.closing || len(s.conns) >= s.cfg.MaxConnections:
		why = "too many connections"
	case s.pending[ip] >= s.cfg.MaxUnauthPerIP:
		why = "too many unauthenticated connections from this address"
	}
	if why != "" {
		s.refused++
		report := time.Since(s.refusedT) >= 10*time.Second
		n := s.refused
		if report {
			s.refused, s.refusedT = 0, time.Now()
		}
		s.mu.Unlock()
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetLinger(0) // reset, not FIN: nothing to linger for
		}
		nc.Close()
		if report {
			logf("refused %d connection(s) at accept, latest from %s: %s", n, ip, why)
		}
		return
	}
	c := &conn{
		id: newID(), ip: ip, client: client, at: time.Now(), nc: nc,
		done: make(chan struct{}), pending: true, active: map[net.Conn]struct{}{},
	}
	s.conns[c.id] = c
	s.pending[ip]++
	s.mu.Unlock()
	go c.run(s)
}

func (s *server) settle(c *conn) {
	s.mu.Lock()
	if c.pending {
		c.pending = false
		if s.pending[c.ip] <= 1 {
			delete(s.pending, c.ip)
		} else {
			s.pending[c.ip]--
		}
	}
	s.mu.Unlock()
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

func (c *conn) run(s *server) {
	defer c.close(s, "")
	if tc, ok := c.nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	c.nc.SetDeadline(time.Now().Add(seconds(s.cfg.LoginGrace)))
	wc := newCoalescer(newRawConn(c.nc))
	defer wc.stop()
	sc, chans, reqs, err := ssh.NewServerConn(wc, s.sshCfg)
	s.settle(c)
	if err != nil {
		c.setWhy("no login: " + err.Error())
		return
	}
	c.nc.SetDeadline(time.Time{})
	fp := sc.Permissions.Extensions["fp"]
	c.mu.Lock()
	c.sc, c.fp = sc, fp
	c.mu.Unlock()
	s.mu.Lock()
	allowed := s.keys[fp]
	s.mu.Unlock()
	if !allowed {
		c.setWhy("key " + fp + " was revoked while logging in")
		return
	}
	logf("conn %s from %s: key %s accepted", c.id, c.client, fp)
	timer := time.AfterFunc(seconds(s.cfg.ForwardTimeout), func() {
		c.mu.Lock()
		up := c.up
		c.mu.Unlock()
		if !up {
			c.close(s, fmt.Sprintf("no forward within %g s", s.cfg.ForwardTimeout))
		}
	})
	c.mu.Lock()
	c.fwdTimer = timer
	c.mu.Unlock()
	go c.keepalive(s, wc)
	for {
		select {
		case nch, ok := <-chans:
			if !ok {
				chans = nil
				break
			}
			nch.Reject(ssh.Prohibited, "this endpoint serves remote forwarding (ssh -R) only")
		case req, ok := <-reqs:
			if !ok {
				c.setWhy("client disconnected")
				return
			}
			c.request(s, req)
		case <-c.done:
			return
		}
	}
}

func (c *conn) setWhy(why string) {
	c.mu.Lock()
	if c.why == "" {
		c.why = why
	}
	c.mu.Unlock()
}

type forwardRequest struct {
	Addr string
	Port uint32
}

func (c *conn) request(s *server, req *ssh.Request) {
	switch req.Type {
	case "tcpip-forward":
		var fr forwardRequest
		if err := ssh.Unmarshal(req.Payload, &fr); err != nil {
			req.Reply(false, nil)
			return
		}
		if fr.Port != 0 {
			req.Reply(false, nil)
			go c.close(s, fmt.Sprintf("asked to listen on fixed port %d", fr.Port))
			return
		}
		c.mu.Lock()
		already := c.ln != nil
		c.mu.Unlock()
		if already || !loopbackNames[fr.Addr] {
			req.Reply(false, nil)
			return
		}
		ln, err := net.Listen("tcp4", net.JoinHostPort(s.cfg.TunnelHost, "0"))
		if err != nil {
			logf("conn %s: cannot listen on loopback: %v", c.id, err)
			req.Reply(false, nil)
			return
		}
		port := ln.Addr().(*net.TCPAddr).Port
		c.mu.Lock()
		if c.why != "" {
			c.mu.Unlock()
			ln.Close()
			req.Reply(false, nil)
			return
		}
		c.ln, c.port, c.fwdAddr, c.up = ln, port, fr.Addr, true
		c.mu.Unlock()
		req.Reply(true, ssh.Marshal(struct{ Port uint32 }{uint32(port)}))
		s.mu.Lock()
		allowed := s.keys[c.fp]
		s.mu.Unlock()
		if !allowed {
			go c.close(s, "key "+c.fp+" was revoked before the forward")
			return
		}
		s.emit(event{
			Ev: "up", ID: c.id, FP: c.fp, Client: c.client, Port: port,
			At: float64(c.at.UnixNano()) / 1e9,
		})
		go c.accept(s, ln)
	case "cancel-tcpip-forward":
		req.Reply(true, nil)
		go c.close(s, "client cancelled its forward")
	default:
		if req.WantReply {
			req.Reply(false, nil)
		}
	}
}

func (c *conn) accept(s *server, ln net.Listener) {
	for {
		tc, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		c.mu.Lock()
		if c.why != "" {
			c.mu.Unlock()
			tc.Close()
			return
		}
		tc = newRawConn(tc)
		c.active[tc] = struct{}{}
		c.mu.Unlock()
		go c.forward(tc)
	}
}

type forwardedTCPIP struct {
	Addr       string
	Port       uint32
	OriginAddr string
	OriginPort uint32
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

func (c *conn) forward(tc net.Conn) {
	defer func() {
		tc.Close()
		c.mu.Lock()
		delete(c.active, tc)
		c.mu.Unlock()
	}()
	origin, _ := tc.RemoteAddr().(*net.TCPAddr)
	payload := forwardedTCPIP{Addr: c.fwdAddr, Port: uint32(c.port), OriginAddr: "127.0.0.1"}
	if origin != nil {
		payload.OriginPort = uint32(origin.Port)
	}
	ch, reqs, err := c.sc.OpenChannel("forwarded-tcpip", ssh.Marshal(payload))
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	defer ch.Close()
	errs := make(chan error, 2)
	go func() {
		buf := copyBuffers.Get().(*[]byte)
		_, err := io.CopyBuffer(ch, onlyReader{tc}, *buf)
		copyBuffers.Put(buf)
		ch.CloseWrite()
		errs <- err
	}()
	go func() {
		buf := copyBuffers.Get().(*[]byte)
		_, err := io.CopyBuffer(onlyWriter{tc}, ch, *buf)
		copyBuffers.Put(buf)
		if t, ok := tc.(interface{ CloseWrite() error }); ok {
			t.CloseWrite()
		}
		errs <- err
	}()
	if err := <-errs; err != nil {
		return // one side failed: the deferred closes end the other
	}
	<-errs
}

// onlyReader and onlyWriter hide ReadFrom/WriteTo so io.CopyBuffer uses the pooled buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

// keepalive asks a silent client for a reply, as sshd's ClientAliveInterval does: only
// when nothing has arrived for interval, so a client that sends its own keepalives (every
// stock client told ServerAliveInterval) gets none. Each interval that passes with the
// request unanswered is a miss; count misses in a row (a client silent for (count+1) x
// interval) and it is dead. Sending nothing while the client talks also keeps the
// connection's send queue empty, so requests are not held behind retransmissions when a
// cut network comes back.
func (c *conn) keepalive(s *server, wc *coalescer) {
	interval := seconds(s.cfg.KeepaliveInterval)
	t := time.NewTimer(interval)
	defer t.Stop()
	replies := make(chan error, 1)
	waiting, missed := false, 0
	for {
		select {
		case <-c.done:
			return
		case err := <-replies:
			waiting = false
			if err != nil {
				return
			}
			missed = 0
		case <-t.C:
			if quiet := wc.silentFor(); quiet < interval {
				missed = 0
				t.Reset(interval - quiet)
				continue
			}
			t.Reset(interval)
			if !waiting {
				waiting = true
				go func() {
					_, _, err := c.sc.SendRequest("keepalive@openssh.com", true, nil)
					replies <- err
				}()
				continue
			}
			if missed++; missed >= s.cfg.KeepaliveCount {
				c.close(s, fmt.Sprintf("no keepalive reply for %g s", (time.Duration(missed+1)*interval).Seconds()))
				return
			}
		}
	}
}

func (c *conn) close(s *server, why string) {
	c.once.Do(func() {
		c.mu.Lock()
		if c.why == "" {
			c.why = why
		}
		if c.why == "" {
			c.why = "connection ended"
		}
		close(c.done)
		ln, sc, up, timer := c.ln, c.sc, c.up, c.fwdTimer
		active := make([]net.Conn, 0, len(c.active))
		for tc := range c.active {
			active = append(active, tc)
		}
		c.mu.Unlock()
		if timer != nil {
			timer.Stop()
		}
		if ln != nil {
			ln.Close()
		}
		for _, tc := range active {
			tc.Close()
		}
		if sc != nil {
			sc.Close()
		}
		c.nc.Close()
		s.settle(c)
		s.mu.Lock()
		delete(s.conns, c.id)
		s.mu.Unlock()
		if up {
			s.emit(event{Ev: "down", ID: c.id, Why: c.why})
		}
		logf("conn %s from %s: ended: %s", c.id, c.client, c.why)
	})
}

// coalescer batches the SSH connection's writes: x/crypto/ssh writes every packet with its
// own syscall, and sends a window adjustment after every read of a channel, so a small
// request through the tunnel cost three writes where sshd needs two. Packets queue here and
// one goroutine writes whatever has queued by the time it runs: under load, many packets
// (and every window adjustment) leave in one write. A packet that finds nothing queued and
// nobody writing is written at once by its own goroutine: handing it to the flusher cost a
// goroutine switch per packet, and the p99 at 2,000 req/s went from 1.01x the anchor's to
// 0.96x without it (docs/benchmarks.md, session 8). Order is kept (a packet only skips the
// queue when the queue is empty); a full queue is written synchronously.
type coalescer struct {
	net.Conn
	writeMu sync.Mutex // held while writing to the socket
	mu      sync.Mutex // guards pending, err
	pending []byte
	spare   []byte
	err     error
	wake    chan struct{}
	done    chan struct{}
	heard   atomic.Int64 // UnixNano of the latest read that returned data
}

const coalesceMax = 256 << 10

func newCoalescer(nc net.Conn) *coalescer {
	c := &coalescer{Conn: nc, wake: make(chan struct{}, 1), done: make(chan struct{})}
	c.heard.Store(time.Now().UnixNano())
	go c.flusher()
	return c
}

func (c *coalescer) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.heard.Store(time.Now().UnixNano())
	}
	return n, err
}

// silentFor is how long the client has sent nothing.
func (c *coalescer) silentFor() time.Duration {
	return time.Duration(time.Now().UnixNano() - c.heard.Load())
}

func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if len(c.pending) == 0 && c.writeMu.TryLock() {
		// Nothing queued and nobody writing: write now, no hand-off.
		c.mu.Unlock()
		n, err := c.Conn.Write(p)
		c.writeMu.Unlock()
		if err != nil {
			c.fail(err)
		}
		return n, err
	}
	if len(c.pending)+len(p) <= coalesceMax {
		c.pending = append(c.pending, p...)
		c.mu.Unlock()
		select {
		case c.wake <- struct{}{}:
		default:
		}
		return len(p), nil
	}
	c.mu.Unlock()
	// Too much queued: write it and p now, in order.
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.fail(err)
	}
	return n, err
}

func (c *coalescer) flushLocked() error {
	c.mu.Lock()
	out := c.pending
	c.pending = c.spare[:0]
	err := c.err
	c.mu.Unlock()
	if err != nil || len(out) == 0 {
		c.spare = out[:0]
		return err
	}
	_, werr := c.Conn.Write(out)
	if cap(out) <= 64<<10 {
		c.spare = out[:0] // keep a small buffer; let a big one go
	} else {
		c.spare = nil
	}
	if werr != nil {
		c.fail(werr)
	}
	return werr
}

func (c *coalescer) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.pending = nil
	c.mu.Unlock()
}

func (c *coalescer) flusher() {
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		runtime.Gosched() // let the goroutines that are ready queue their packets too
		c.writeMu.Lock()
		err := c.flushLocked()
		c.writeMu.Unlock()
		if err != nil {
			c.Conn.Close()
			return
		}
	}
}

func (c *coalescer) stop() { close(c.done) }

func (c *coalescer) Close() error {
	c.writeMu.Lock()
	c.flushLocked()
	c.writeMu.Unlock()
	return c.Conn.Close()
}

// bulkRandom hands out the kernel's random bytes (crypto/rand) fetched 4 KiB at a time.
type bulkRandom struct {
	mu sync.Mutex
	r  *bufio.Reader
}

func (b *bulkRandom) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return io.ReadFull(b.r, p)
}
