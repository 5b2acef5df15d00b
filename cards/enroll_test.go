package cards

import (
	"bytes"
	"crypto/des"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"testing"
	"time"
)

// fakeCard is a PIV card in memory for the transport: just what
// WriteShare sends, with a switch for the one behaviour custos guards
// against without a card that has it (vcard follows a YubiKey).
type fakeCard struct {
	t        *testing.T
	key      *ecdsa.PrivateKey
	mgmt     []byte // 3DES
	objects  map[uint32][]byte
	verified bool
	authed   bool
	witness  []byte
	chain    []byte
	pending  []byte
	verifies int
	// spendsPIN makes the "always" key's use end the PIN's verification
	// for everything.
	spendsPIN bool
}

func (f *fakeCard) answer(data []byte, sw uint16) []byte {
	if len(data) > 256 {
		f.pending = data[256:]
		n := len(f.pending)
		if n > 255 {
			n = 0
		}
		return append(append([]byte(nil), data[:256]...), 0x61, byte(n))
	}
	return binary.BigEndian.AppendUint16(append([]byte(nil), data...), sw)
}

func (f *fakeCard) xfer(cmd []byte, _ time.Time) ([]byte, error) {
	ins, p2 := cmd[1], cmd[3]
	var data []byte
	if len(cmd) > 5 {
		data = cmd[5 : 5+int(cmd[4])]
	}
	if cmd[0] == 0x10 {
		f.chain = append(f.chain, data...)
		return []byte{0x90, 0x00}, nil
	}
	data = append(f.chain, data...)
	f.chain = nil
	sw := func(s uint16) ([]byte, error) { return f.answer(nil, s), nil }
	switch ins {
	case insGetResponse:
		p := f.pending
		f.pending = nil
		return f.answer(p, 0x9000), nil
	case insGetMetadata:
		if p2 == keyManagementKey {
			return f.answer([]byte{0x01, 0x01, alg3DES}, 0x9000), nil
		}
		point, _ := f.key.PublicKey.Bytes()
		m := appendTLV([]byte{0x01, 0x01, algECCP256, 0x02, 0x02, 0x03, 0x01, 0x03, 0x01, 0x01}, 0x04, tlvBytes(0x86, point))
		return f.answer(m, 0x9000), nil
	case insVerify:
		f.verifies++
		f.verified = bytes.Equal(data, pad8(nil, testPIN))
		if !f.verified {
			return sw(0x63c2)
		}
		return sw(0x9000)
	case insGeneralAuth:
		inner, err := parseTLVs(data[2:])
		if err != nil {
			return sw(0x6a80)
		}
		if p2 == keyManagementKey {
			block, _ := des.NewTripleDESCipher(f.mgmt)
			if w, ok := findTLV(inner, 0x80); ok && len(w) == 0 {
				f.witness = make([]byte, 8)
				rand.Read(f.witness)
				enc := make([]byte, 8)
				block.Encrypt(enc, f.witness)
				return f.answer(tlvBytes(0x7c, tlvBytes(0x80, enc)), 0x9000), nil
			}
			w, _ := findTLV(inner, 0x80)
			ch, _ := findTLV(inner, 0x81)
			if !bytes.Equal(w, f.witness) || len(ch) != 8 {
				return sw(0x6982)
			}
			enc := make([]byte, 8)
			block.Encrypt(enc, ch)
			f.authed = true
			return f.answer(tlvBytes(0x7c, tlvBytes(0x82, enc)), 0x9000), nil
		}
		if !f.verified {
			return sw(0x6982)
		}
		if f.spendsPIN {
			f.verified = false
		}
		point, _ := findTLV(inner, 0x85)
		priv, _ := f.key.ECDH()
		peer, err := ecdh.P256().NewPublicKey(point)
		if err != nil {
			return sw(0x6a80)
		}
		z, _ := priv.ECDH(peer)
		return f.answer(tlvBytes(0x7c, tlvBytes(0x82, z)), 0x9000), nil
	case insGetData:
		tag := uint32(data[2])<<16 | uint32(data[3])<<8 | uint32(data[4])
		if tag == objPrinted && !f.verified {
			return sw(0x6982)
		}
		obj, ok := f.objects[tag]
		if !ok {
			return sw(0x6a82)
		}
		return f.answer(tlvBytes(0x53, obj), 0x9000), nil
	case insPutData:
		if !f.authed {
			return sw(0x6982)
		}
		t, rest, err := readTLV(data)
		if err != nil {
			return sw(0x6a80)
		}
		v, err := onlyTLV(rest, 0x53)
		if err != nil {
			return sw(0x6a80)
		}
		f.objects[uint32(t.value[0])<<16|uint32(t.value[1])<<8|uint32(t.value[2])] = append([]byte(nil), v...)
		return sw(0x9000)
	}
	return sw(0x6d00)
}

// TestWriteShareOneVerify: WriteShare verifies the PIN once on a card
// that keeps the PIN verified after the "always" key's use (a YubiKey, the
// virtual card), and a second time, with no prompt and no retry spent, on
// one that does not, instead of failing.
func TestWriteShareOneVerify(t *testing.T) {
	for _, spends := range []bool{false, true} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		mgmt := bytes.Repeat([]byte{0x5a, 0xa5, 0x3c}, 8)
		p := &pivmanObject{outer: 0x88}
		p.set(protectedMgmKey, mgmt)
		f := &fakeCard{t: t, key: key, mgmt: mgmt, spendsPIN: spends, objects: map[uint32][]byte{objPrinted: p.marshal()}}
		c := &Card{reader: "Fake Reader", tr: &transport{reader: "Fake Reader", timeout: time.Second, xfer: f.xfer}}
		_, _, scs := ceremony(t, &key.PublicKey, &key.PublicKey)
		sh, err := c.WriteShare(0x82, testPIN, scs[0].Sealed, scs[0].Payload)
		if err != nil {
			t.Fatalf("spends %v: WriteShare: %v", spends, err)
		}
		if sh.Header != scs[0].Sealed.Header {
			t.Errorf("spends %v: opened %+v", spends, sh.Header)
		}
		want := 1
		if spends {
			want = 2
		}
		if f.verifies != want {
			t.Errorf("spends %v: %d VERIFY, want %d", spends, f.verifies, want)
		}
		obj, ok := f.objects[retiredCertObject(0x82)]
		if !ok {
			t.Errorf("spends %v: no certificate written", spends)
			continue
		}
		der, err := parseCertObject(obj)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if sc, err := slotCertOf(cert); err != nil || !carries(sc, scs[0]) {
			t.Errorf("spends %v: the certificate written carries %+v, %v", spends, sc, err)
		}
	}
}
