package cards

import "errors"

// BER-TLV as PIV uses it, SP 800-73-4 Part 2 section 3 and ISO/IEC
// 7816-4:2020 section 6.3: tags of one to three bytes, definite lengths of
// one to four bytes (0x00-0x7F, or 0x81-0x83 and that many length bytes).
// Everything a card answers is parsed here, never trusted: a length past the
// end, an indefinite length or a truncated tag is an error.

var errMalformedTLV = errors.New("malformed tlv")

type tlv struct {
	tag   uint32
	value []byte
}

// readTLV splits the first TLV off b. The value aliases b.
func readTLV(b []byte) (t tlv, rest []byte, err error) {
	if len(b) < 2 {
		return tlv{}, nil, errMalformedTLV
	}
	i := 0
	tag := uint32(b[i])
	i++
	if tag&0x1f == 0x1f { // subsequent tag bytes, bit 8 set on all but the last
		for {
			if i >= len(b) || i > 2 {
				return tlv{}, nil, errMalformedTLV
			}
			tag = tag<<8 | uint32(b[i])
			i++
			if b[i-1]&0x80 == 0 {
				break
			}
		}
	}
	if i >= len(b) {
		return tlv{}, nil, errMalformedTLV
	}
	n := int(b[i])
	i++
	if n&0x80 != 0 {
		k := n & 0x7f
		if k == 0 || k > 3 || i+k > len(b) {
			return tlv{}, nil, errMalformedTLV
		}
		n = 0
		for j := 0; j < k; j++ {
			n = n<<8 | int(b[i+j])
		}
		i += k
	}
	if n > len(b)-i {
		return tlv{}, nil, errMalformedTLV
	}
	return tlv{tag, b[i : i+n]}, b[i+n:], nil
}

// parseTLVs splits b into its TLVs; it fails unless they cover b exactly.
func parseTLVs(b []byte) ([]tlv, error) {
	var out []tlv
	for len(b) > 0 {
		t, rest, err := readTLV(b)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
		b = rest
	}
	return out, nil
}

// onlyTLV parses b as exactly one TLV with the given tag and returns its
// value.
func onlyTLV(b []byte, tag uint32) ([]byte, error) {
	t, rest, err := readTLV(b)
	if err != nil {
		return nil, err
	}
	if t.tag != tag || len(rest) != 0 {
		return nil, errMalformedTLV
	}
	return t.value, nil
}

// findTLV returns the value of the first TLV in ts with tag.
func findTLV(ts []tlv, tag uint32) ([]byte, bool) {
	for _, t := range ts {
		if t.tag == tag {
			return t.value, true
		}
	}
	return nil, false
}

// appendTLV appends tag (one to three bytes), the shortest definite length
// and value.
func appendTLV(dst []byte, tag uint32, value []byte) []byte {
	switch {
	case tag > 0xffff:
		dst = append(dst, byte(tag>>16), byte(tag>>8), byte(tag))
	case tag > 0xff:
		dst = append(dst, byte(tag>>8), byte(tag))
	default:
		dst = append(dst, byte(tag))
	}
	n := len(value)
	switch {
	case n < 0x80:
		dst = append(dst, byte(n))
	case n < 0x100:
		dst = append(dst, 0x81, byte(n))
	case n < 0x10000:
		dst = append(dst, 0x82, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, value...)
}

func tlvBytes(tag uint32, value []byte) []byte { return appendTLV(nil, tag, value) }
