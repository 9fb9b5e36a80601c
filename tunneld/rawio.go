package main

// Socket reads and writes without telling the scheduler.
//
// Go wraps every read(2) and write(2) in entersyscall/exitsyscall so that a blocking call
// cannot hold the process's only P (tunneld runs with GOMAXPROCS=1). sysmon then takes
// the P away from any call that spans one of its ticks (20 µs) and hands it to another
// thread. A write to a loopback socket runs the receiver's TCP stack inline and often takes
// longer than that, so under load every few requests cost a hand-off between threads
// and a wake-up of sysmon: measured, sysmon alone used about 3 µs of CPU per request and
// the process switched threads three times as often as sshd.
//
// These sockets are non-blocking (the runtime's poller waits for them), so a call
// never sleeps in the kernel: RawSyscall is safe, and the poller is still used through
// syscall.RawConn for readiness and deadlines.

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawConn is a TCP connection whose Read and Write go straight to the kernel. It embeds
// the net.Conn interface, not *net.TCPConn, so no ReadFrom/WriteTo bypasses them.
type rawConn struct {
	net.Conn
	tcp *net.TCPConn
	rc  syscall.RawConn
}

// newRawConn wraps a TCP connection; anything else is returned unchanged.
func newRawConn(nc net.Conn) net.Conn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nc
	}
	return &rawConn{Conn: tc, tcp: tc, rc: rc}
}

// CloseWrite shuts the sending side down (the peer reads end-of-file).
func (c *rawConn) CloseWrite() error { return c.tcp.CloseWrite() }

func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	// Always try the read first. Waiting in the poller first after a short read (to save
	// the read(2) that answers EAGAIN) loses data: RawRead clears the descriptor's
	// readiness before calling this function, so bytes that arrived since the last read
	// leave no event to wait for, and a lockstep exchange (the SSH handshake) stalls until
	// the peer sends again or the login grace ends.
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case 0:
				n = int(r)
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait in the poller
			default:
				errno = e
				return true
			}
		}
	})
	if err != nil {
		return 0, c.opError("read", err)
	}
	if errno != 0 {
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (c *rawConn) Write(p []byte) (int, error) {
	done := 0
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[done])), uintptr(len(p)-done))
			switch e {
			case 0:
				done += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // socket buffer full: wait in the poller
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err != nil {
		return done, c.opError("write", err)
	}
	if errno != 0 {
		return done, c.opError("write", os.NewSyscallError("write", errno))
	}
	return done, nil
}

func (c *rawConn) opError(op string, err error) error {
	if _, ok := err.(*net.OpError); ok {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
