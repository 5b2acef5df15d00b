package cards

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
)

// The commands custos sends, each one function citing where it is
// specified: NIST SP 800-73-4 Part 2 section 3 for PIV, and Yubico's PIV
// extensions (https://developers.yubico.com/PIV/Introduction/Yubico_extensions.html)
// for the rest. Each returns the card's status word through mapError.

// Instructions.
const (
	insVerify      = 0x20 // SP 800-73-4 Part 2 section 3.2.1
	insChangeRef   = 0x24 // section 3.2.2
	insGenerate    = 0x47 // section 3.3.2
	insGeneralAuth = 0x87 // section 3.2.4
	insSelect      = 0xa4 // section 3.1.1
	insGetResponse = 0xc0 // ISO/IEC 7816-4:2020 section 11.5.6
	insGetData     = 0xcb // section 3.1.2
	insPutData     = 0xdb // section 3.3.1
	insGetMetadata = 0xf7 // Yubico, firmware 5.3 and later
	insGetSerial   = 0xf8 // Yubico, firmware 5.0 and later
	insAttest      = 0xf9 // Yubico, firmware 4.3 and later
	insGetVersion  = 0xfd // Yubico
	insSetMgmtKey  = 0xff // Yubico
	insOTPSerial   = 0x01 // Yubico OTP application, P1 10: the serial number
)

// Key references, SP 800-73-4 Part 1 section 5.1 and Table 4b.
const (
	keyPIN           = 0x80
	keyPUK           = 0x81
	keyManagementKey = 0x9b
)

// Algorithm identifiers, SP 800-78-4 Table 6-2.
const (
	alg3DES    = 0x03
	algAES128  = 0x08
	algAES192  = 0x0a
	algAES256  = 0x0c
	algECCP256 = 0x11
)

// Application identifiers: PIV's (SP 800-73-4 Part 1 section 2.2, in the
// truncated form every PIV client selects it by), and the YubiKey OTP
// application's, which holds the serial number of firmware before 5.
var (
	pivAID = []byte{0xa0, 0x00, 0x00, 0x03, 0x08}
	otpAID = []byte{0xa0, 0x00, 0x00, 0x05, 0x27, 0x20, 0x01, 0x01}
)

func (c *Card) send(a apdu) ([]byte, error) {
	b, err := c.tr.send(a)
	return b, mapError(c.reader, err)
}

// malformed is a *ResponseError for an answer to cmd that does not parse.
func (c *Card) malformed(cmd string, err error) error {
	return &ResponseError{Reader: c.reader, Detail: fmt.Sprintf("a malformed answer to %s (%v)", cmd, err)}
}

// selectPIV is SELECT of the PIV application, SP 800-73-4 Part 2 section
// 3.1.1. A card without it answers 6A82: ErrNotPIV.
func (c *Card) selectPIV() error {
	b, err := c.send(apdu{ins: insSelect, p1: 0x04, data: pivAID, le: true})
	clear(b)
	if errors.Is(err, errNotFound) {
		return ErrNotPIV
	}
	return err
}

// getVersion is Yubico's GET VERSION: major, minor, patch.
func (c *Card) getVersion() ([3]byte, error) {
	b, err := c.send(apdu{ins: insGetVersion, le: true})
	if err != nil {
		return [3]byte{}, err
	}
	if len(b) != 3 {
		return [3]byte{}, c.malformed("GET VERSION", fmt.Errorf("%d bytes, want 3", len(b)))
	}
	return [3]byte(b), nil
}

// getSerial is Yubico's GET SERIAL (firmware 5 and later); on older
// firmware, which answers 6D00, it reads the serial from the YubiKey OTP
// application (SELECT it, its command 01 10) and selects PIV again, as
// yubico-piv-tool does. A card that tells neither way has serial 0.
func (c *Card) getSerial() (uint32, error) {
	b, err := c.send(apdu{ins: insGetSerial, le: true})
	if errors.Is(err, errNotSupported) {
		return c.otpSerial()
	}
	if err != nil {
		return 0, err
	}
	if len(b) != 4 {
		return 0, c.malformed("GET SERIAL", fmt.Errorf("%d bytes, want 4", len(b)))
	}
	return binary.BigEndian.Uint32(b), nil
}

func (c *Card) otpSerial() (uint32, error) {
	var serial uint32
	b, err := c.send(apdu{ins: insSelect, p1: 0x04, data: otpAID, le: true})
	clear(b)
	if err == nil {
		b, err = c.send(apdu{ins: insOTPSerial, p1: 0x10, le: true})
		if err == nil && len(b) != 4 {
			err = c.malformed("the OTP application's serial", fmt.Errorf("%d bytes, want 4", len(b)))
		}
		if err == nil {
			serial = binary.BigEndian.Uint32(b)
		}
	}
	var st statusError
	if err != nil && !errors.As(err, &st) && !errors.Is(err, errNotFound) && !errors.Is(err, errNotSupported) {
		return 0, err // the transport failed, not the OTP application
	}
	if err := c.selectPIV(); err != nil {
		return 0, err
	}
	return serial, nil
}

// getMetadata is Yubico's GET METADATA (firmware 5.3 and later) of a key
// slot or of the PIN, PUK or management key. Older firmware answers 6D00:
// errNotSupported.
func (c *Card) getMetadata(ref byte) (slotMetadata, error) {
	b, err := c.send(apdu{ins: insGetMetadata, p2: ref, le: true})
	if err != nil {
		return slotMetadata{}, err
	}
	m, err := parseMetadata(b)
	if err != nil {
		return slotMetadata{}, c.malformed("GET METADATA", err)
	}
	return m, nil
}

// pad8 is a PIN or PUK as VERIFY and CHANGE REFERENCE DATA carry it: padded
// with FF to 8 bytes, SP 800-73-4 Part 2 section 2.4.3.
func pad8(dst, pin []byte) []byte {
	dst = append(dst, pin...)
	for i := len(pin); i < 8; i++ {
		dst = append(dst, 0xff)
	}
	return dst
}

// verify is VERIFY of the PIN, SP 800-73-4 Part 2 section 3.2.1. A wrong
// PIN gives a *PINError, a blocked one ErrPINBlocked.
func (c *Card) verify(pin []byte) error {
	if err := checkPINLength(pin); err != nil {
		return err
	}
	data := pad8(make([]byte, 0, 8), pin)
	defer clear(data)
	_, err := c.send(apdu{ins: insVerify, p2: keyPIN, data: data, secret: true})
	return err
}

// pinTries is VERIFY without data, SP 800-73-4 Part 2 section 3.2.1: the
// card answers 63CX with the retries left, or 9000 when the PIN is already
// verified (then the count is unknown: -1).
func (c *Card) pinTries() (int, error) {
	_, err := c.send(apdu{ins: insVerify, p2: keyPIN})
	var pe *PINError
	switch {
	case err == nil:
		return -1, nil
	case errors.As(err, &pe):
		return pe.Retries, nil
	case errors.Is(err, ErrPINBlocked):
		return 0, nil
	}
	return 0, err
}

// changeReference is CHANGE REFERENCE DATA of the PIN (80) or PUK (81),
// SP 800-73-4 Part 2 section 3.2.2.
func (c *Card) changeReference(ref byte, old, new []byte) error {
	if err := checkPINLength(old); err != nil {
		return err
	}
	if err := checkPINLength(new); err != nil {
		return err
	}
	data := pad8(pad8(make([]byte, 0, 16), old), new)
	defer clear(data)
	_, err := c.send(apdu{ins: insChangeRef, p2: ref, data: data, secret: true})
	return err
}

// objectTag is the tag list 5C naming a data object, SP 800-73-4 Part 2
// sections 3.1.2 and 3.3.1.
func objectTag(tag uint32) []byte {
	return tlvBytes(0x5c, []byte{byte(tag >> 16), byte(tag >> 8), byte(tag)})
}

// getData is GET DATA of a data object, SP 800-73-4 Part 2 section 3.1.2:
// the content of the answer's tag 53. A missing object gives errNotFound.
func (c *Card) getData(tag uint32) ([]byte, error) {
	b, err := c.send(apdu{ins: insGetData, p1: 0x3f, p2: 0xff, data: objectTag(tag), le: true})
	if err != nil {
		return nil, err
	}
	v, err := onlyTLV(b, 0x53)
	if err != nil {
		clear(b)
		return nil, c.malformed(fmt.Sprintf("GET DATA %06x", tag), err)
	}
	return v, nil
}

// putData is PUT DATA of a data object, SP 800-73-4 Part 2 section 3.3.1,
// in chained pieces when long. It needs the management key authenticated.
func (c *Card) putData(tag uint32, value []byte, secret bool) error {
	data := appendTLV(objectTag(tag), 0x53, value)
	if secret {
		defer clear(data)
	}
	_, err := c.send(apdu{ins: insPutData, p1: 0x3f, p2: 0xff, data: data, secret: secret})
	return err
}

// mgmtCipher is the management key's block cipher.
func mgmtCipher(alg byte, key []byte) (cipher.Block, error) {
	switch alg {
	case alg3DES:
		return des.NewTripleDESCipher(key)
	case algAES128, algAES192, algAES256:
		return aes.NewCipher(key)
	}
	return nil, fmt.Errorf("unknown management key algorithm %#x", alg)
}

// authenticate proves the management key (9B) to the card by mutual
// authentication, SP 800-73-4 Part 2 section 3.2.4 and Appendix A.2 (the
// "witness" and "challenge" of the dynamic authentication template): the
// card sends an encrypted witness, custos returns it decrypted with a
// challenge of its own, and the card returns the challenge encrypted, which
// proves the card holds the key too. Two commands.
func (c *Card) authenticate(alg byte, key []byte) error {
	block, err := mgmtCipher(alg, key)
	if err != nil {
		return err
	}
	bs := block.BlockSize()
	b, err := c.send(apdu{ins: insGeneralAuth, p1: alg, p2: keyManagementKey, data: tlvBytes(0x7c, tlvBytes(0x80, nil)), le: true})
	if err != nil {
		return err
	}
	enc, err := parseDynAuth(b, 0x80)
	if err != nil || len(enc) != bs {
		return c.malformed("GENERAL AUTHENTICATE (witness)", fmt.Errorf("%v, %d bytes", err, len(enc)))
	}
	witness := make([]byte, bs)
	block.Decrypt(witness, enc)
	challenge := make([]byte, bs)
	if _, err := rand.Read(challenge); err != nil {
		return err
	}
	data := tlvBytes(0x7c, appendTLV(tlvBytes(0x80, witness), 0x81, challenge))
	b, err = c.send(apdu{ins: insGeneralAuth, p1: alg, p2: keyManagementKey, data: data, le: true, secret: true})
	clear(data)
	clear(witness)
	if errors.Is(err, ErrPINRequired) {
		return errManagementKey // 6982: the witness was wrong, so was the key
	}
	if err != nil {
		return err
	}
	got, err := parseDynAuth(b, 0x82)
	if err != nil || len(got) != bs {
		return c.malformed("GENERAL AUTHENTICATE (challenge)", fmt.Errorf("%v, %d bytes", err, len(got)))
	}
	want := make([]byte, bs)
	block.Encrypt(want, challenge)
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return &ResponseError{Reader: c.reader, Detail: "a wrong answer to the management key's challenge (it does not hold the key it accepted)"}
	}
	return nil
}

// generate is GENERATE ASYMMETRIC KEY PAIR of a P-256 key in slot, SP
// 800-73-4 Part 2 section 3.3.2, with Yubico's PIN (AA) and touch (AB)
// policy tags. It needs the management key authenticated.
func (c *Card) generate(slot, pinPolicy, touchPolicy byte) (*ecdsa.PublicKey, error) {
	tmpl := tlvBytes(0x80, []byte{algECCP256})
	tmpl = appendTLV(tmpl, 0xaa, []byte{pinPolicy})
	tmpl = appendTLV(tmpl, 0xab, []byte{touchPolicy})
	b, err := c.send(apdu{ins: insGenerate, p2: slot, data: tlvBytes(0xac, tmpl), le: true})
	if err != nil {
		c.forgetKey(slot) // the card may have replaced it before failing
		return nil, err
	}
	pub, err := parseGenerated(b)
	if err != nil {
		c.forgetKey(slot)
		return nil, c.malformed("GENERATE", err)
	}
	c.rememberKey(slot, pub, 0)
	return pub, nil
}

// attest is Yubico's ATTEST (firmware 4.3 and later): a certificate for the
// key generated in slot, signed by the card's attestation key. A slot with
// no key, or an imported one, is refused (6A80 or 6A88 on a YubiKey).
func (c *Card) attest(slot byte) (*x509.Certificate, error) {
	b, err := c.send(apdu{ins: insAttest, p1: slot, le: true})
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(b)
	if err != nil {
		return nil, c.malformed("ATTEST", err)
	}
	return cert, nil
}

// setManagementKey is Yubico's SET MANAGEMENT KEY: algorithm, 9B, length,
// key; P2 FF, no touch. It needs the management key authenticated; AES
// needs firmware 5.4.
func (c *Card) setManagementKey(alg byte, key []byte) error {
	data := append([]byte{alg, keyManagementKey, byte(len(key))}, key...)
	defer clear(data)
	_, err := c.send(apdu{ins: insSetMgmtKey, p1: 0xff, p2: 0xff, data: data, secret: true})
	return err
}

// ecdh is the key agreement of a P-256 slot key with peer (an uncompressed
// point), GENERAL AUTHENTICATE with an exponentiation (85) and an empty
// response (82), SP 800-73-4 Part 2 section 3.2.4 and Appendix A.5. The
// card applies the key's PIN policy: with "always", the command must come
// right after VERIFY.
func (c *Card) ecdh(slot byte, peer []byte) ([]byte, error) {
	data := tlvBytes(0x7c, appendTLV(tlvBytes(0x82, nil), 0x85, peer))
	b, err := c.send(apdu{ins: insGeneralAuth, p1: algECCP256, p2: slot, data: data, le: true})
	if err != nil {
		return nil, err
	}
	z, err := parseDynAuth(b, 0x82)
	if err != nil || len(z) != 32 {
		clear(b)
		return nil, c.malformed("GENERAL AUTHENTICATE (key agreement)", fmt.Errorf("%v, %d bytes", err, len(z)))
	}
	return z, nil
}

// checkPINLength refuses a PIN no PIV card accepts (SP 800-73-4 Part 2
// section 2.4.3: up to 8 bytes), before it could burn a retry.
func checkPINLength(pin []byte) error {
	if len(pin) == 0 || len(pin) > 8 {
		return errors.New("a PIN is 1 to 8 characters (6 to 8 on a YubiKey)")
	}
	return nil
}
