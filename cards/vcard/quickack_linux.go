package vcard

import (
	"net"
	"syscall"
)

// quickAck makes the kernel acknowledge what conn received at once
// (TCP_QUICKACK, tcp(7)). Errors are ignored: a missed ACK costs time, not
// correctness.
func quickAck(conn net.Conn) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}
