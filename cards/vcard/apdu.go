package vcard

import "fmt"

// ISO/IEC 7816-4:2020 section 5.6 (status bytes), with the values a
// YubiKey 5 gives for each condition.
const (
	swOK                  uint16 = 0x9000
	swBytesAvailable      uint16 = 0x6100 // 61xx: xx more bytes for GET RESPONSE
	swVerifyFail          uint16 = 0x63c0 // 63Cx: x retries left
	swMemoryFailure       uint16 = 0x6581
	swWrongLength         uint16 = 0x6700
	swLastChainExpected   uint16 = 0x6883
	swSecurityStatus      uint16 = 0x6982
	swAuthBlocked         uint16 = 0x6983
	swConditionsNotMet    uint16 = 0x6985
	swIncorrectData       uint16 = 0x6a80
	swFileNotFound        uint16 = 0x6a82
	swNotEnoughMemory     uint16 = 0x6a84
	swIncorrectP1P2       uint16 = 0x6a86
	swReferenceNotFound   uint16 = 0x6a88
	swInsNotSupported     uint16 = 0x6d00
	swClassNotSupported   uint16 = 0x6e00
	swNoPreciseDiagnostic uint16 = 0x6f00
)

// CLA bits, ISO/IEC 7816-4:2020 section 5.4.1.
const (
	claChaining byte = 0x10 // command chaining: more commands follow
)

// command is one parsed command APDU, ISO/IEC 7816-4:2020 section 5.1.
type command struct {
	cla, ins, p1, p2 byte
	data             []byte
	// ne is the maximum number of response bytes the client expects
	// (Le decoded: a short Le of 0 means 256, an extended Le of 0 means
	// 65536). When Le is absent it is the largest short response, 256.
	ne       int
	extended bool
}

// apduError is a command APDU that cannot be decoded; sw is the status word
// to answer it with.
type apduError struct {
	sw  uint16
	msg string
}

func (e *apduError) Error() string { return fmt.Sprintf("malformed apdu: %s (%04x)", e.msg, e.sw) }

// parseAPDU decodes the four cases of ISO/IEC 7816-4:2020 section 5.1, in
// short and extended form. The data field aliases b.
func parseAPDU(b []byte) (command, error) {
	if len(b) < 4 {
		return command{}, &apduError{swWrongLength, "shorter than a header"}
	}
	c := command{cla: b[0], ins: b[1], p1: b[2], p2: b[3], ne: 256}
	body := b[4:]
	switch {
	case len(body) == 0: // case 1
		return c, nil
	case len(body) == 1: // case 2 short
		c.ne = shortLe(body[0])
		return c, nil
	case body[0] != 0: // case 3 or 4 short
		lc := int(body[0])
		switch len(body) {
		case 1 + lc:
			c.data = body[1:]
			return c, nil
		case 2 + lc:
			c.data = body[1 : 1+lc]
			c.ne = shortLe(body[1+lc])
			return c, nil
		}
		return command{}, &apduError{swWrongLength, fmt.Sprintf("lc %d does not match %d data bytes", lc, len(body)-1)}
	}
	// body[0] == 0 and at least two bytes: extended length.
	c.extended = true
	if len(body) < 3 {
		return command{}, &apduError{swWrongLength, "truncated extended length"}
	}
	n := int(body[1])<<8 | int(body[2])
	if len(body) == 3 { // case 2 extended
		c.ne = extendedLe(n)
		return c, nil
	}
	if n == 0 {
		return command{}, &apduError{swWrongLength, "extended lc of zero"}
	}
	switch len(body) {
	case 3 + n: // case 3 extended
		c.data = body[3:]
		c.ne = 65536
		return c, nil
	case 5 + n: // case 4 extended
		c.data = body[3 : 3+n]
		c.ne = extendedLe(int(body[3+n])<<8 | int(body[4+n]))
		return c, nil
	}
	return command{}, &apduError{swWrongLength, fmt.Sprintf("extended lc %d does not match %d data bytes", n, len(body)-3)}
}

func shortLe(b byte) int {
	if b == 0 {
		return 256
	}
	return int(b)
}

func extendedLe(n int) int {
	if n == 0 {
		return 65536
	}
	return n
}

// response is the data field followed by the status word.
func response(data []byte, sw uint16) []byte {
	out := make([]byte, 0, len(data)+2)
	out = append(out, data...)
	return append(out, byte(sw>>8), byte(sw))
}
