package vcard

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"time"
)

// maxChain bounds the data a chain of commands may accumulate: the
// largest object plus its tag list and headers, with room to spare.
const maxChain = maxObjectSize + 64

// touchCacheTime is how long a cached touch lasts (Yubico: 15 seconds).
const touchCacheTime = 15 * time.Second

// session is what a card forgets at power off or reset: security status,
// command chaining and pending response bytes.
type session struct {
	pinVerified bool
	// pinFresh is set by a successful VERIFY and cleared by the next
	// command, whatever it is: a key with PIN policy "always" is usable
	// only by the command right after VERIFY (see generalAuthenticate).
	pinFresh bool
	// afterVerify is pinFresh as it was before the command in progress.
	afterVerify bool
	mgmtAuthed  bool

	// otp is set while the YubiKey OTP application is selected instead of
	// PIV.
	otp bool

	// Management key authentication in progress.
	witness   []byte // the witness sent, expected back decrypted
	challenge []byte // the challenge sent, expected back encrypted

	chainHeader [4]byte // CLA&^0x10, INS, P1, P2 of the chain in progress
	chain       []byte
	chaining    bool

	pending []byte // response bytes left for GET RESPONSE

	lastTouch time.Time
}

// applet is the PIV application: persistent state plus the session.
type applet struct {
	st  *state
	s   session
	now func() time.Time

	dirty   bool // st changed by the current command
	touches uint64
}

func (a *applet) powerCycle() { a.s = session{} }

// process answers one command APDU.
func (a *applet) process(raw []byte) []byte {
	cmd, err := parseAPDU(raw)
	if err != nil {
		a.s.chaining, a.s.chain, a.s.pending = false, nil, nil
		a.s.pinFresh = false
		return response(nil, err.(*apduError).sw)
	}
	if cmd.ins != insGetResponse {
		a.s.pending = nil
	}
	if cmd.cla&^claChaining != 0x00 {
		a.s.chaining, a.s.chain = false, nil
		a.s.pinFresh = false
		return response(nil, swClassNotSupported)
	}

	// Command chaining, ISO/IEC 7816-4:2020 section 5.4.1.
	header := [4]byte{cmd.cla &^ claChaining, cmd.ins, cmd.p1, cmd.p2}
	if a.s.chaining && header != a.s.chainHeader {
		a.s.chaining, a.s.chain = false, nil
		a.s.pinFresh = false
		return response(nil, swLastChainExpected)
	}
	if cmd.cla&claChaining != 0 {
		if len(a.s.chain)+len(cmd.data) > maxChain {
			a.s.chaining, a.s.chain = false, nil
			return response(nil, swWrongLength)
		}
		a.s.chaining, a.s.chainHeader = true, header
		a.s.chain = append(a.s.chain, cmd.data...)
		return response(nil, swOK)
	}
	if a.s.chaining {
		if len(a.s.chain)+len(cmd.data) > maxChain {
			a.s.chaining, a.s.chain = false, nil
			return response(nil, swWrongLength)
		}
		cmd.data = append(a.s.chain, cmd.data...)
		a.s.chaining, a.s.chain = false, nil
	}

	// A whole command (its chained pieces gathered): it consumes the
	// verification of the VERIFY right before it, if any.
	a.s.afterVerify, a.s.pinFresh = a.s.pinFresh, false
	if cmd.ins == insGetResponse {
		return a.getResponse(cmd)
	}
	if a.s.otp && cmd.ins != insSelect {
		data, sw := a.otpCommand(cmd)
		if sw != swOK {
			return response(nil, sw)
		}
		return a.send(data, cmd.ne)
	}
	data, sw := a.dispatch(cmd)
	if sw != swOK {
		return response(nil, sw)
	}
	return a.send(data, cmd.ne)
}

// send returns at most ne bytes of data, keeping the rest for GET
// RESPONSE (61xx), ISO/IEC 7816-4:2020 section 5.3.4.
func (a *applet) send(data []byte, ne int) []byte {
	if len(data) <= ne {
		a.s.pending = nil
		return response(data, swOK)
	}
	a.s.pending = data[ne:]
	left := len(a.s.pending)
	if left > 0xff {
		left = 0 // 6100: 256 or more
	}
	return response(data[:ne], swBytesAvailable|uint16(left))
}

// getResponse is GET RESPONSE, ISO/IEC 7816-4:2020 section 11.5.6.
func (a *applet) getResponse(cmd command) []byte {
	if cmd.p1 != 0 || cmd.p2 != 0 {
		return response(nil, swIncorrectP1P2)
	}
	if a.s.pending == nil {
		return response(nil, swConditionsNotMet)
	}
	return a.send(a.s.pending, cmd.ne)
}

func (a *applet) dispatch(cmd command) ([]byte, uint16) {
	switch cmd.ins {
	case insSelect:
		return a.selectApp(cmd)
	case insGetVersion:
		return a.st.version[:], swOK
	case insGetSerial:
		// Yubico's GET SERIAL came with firmware 5.0; a YubiKey 4 keeps its
		// serial in the OTP application only.
		if !versionAtLeast(a.st.version, 5, 0, 0) {
			return nil, swInsNotSupported
		}
		return binary.BigEndian.AppendUint32(nil, a.st.Serial), swOK
	case insGetMetadata:
		return a.getMetadata(cmd)
	case insVerify:
		return a.verify(cmd)
	case insChangeRef:
		return a.changeReference(cmd)
	case insResetRetry:
		return a.resetRetry(cmd)
	case insSetPINRetries:
		return a.setPINRetries(cmd)
	case insReset:
		return a.reset(cmd)
	case insGeneralAuth:
		return a.generalAuthenticate(cmd)
	case insSetMgmtKey:
		return a.setManagementKey(cmd)
	case insGenerate:
		return a.generate(cmd)
	case insImportKey:
		return a.importKey(cmd)
	case insGetData:
		return a.getData(cmd)
	case insPutData:
		return a.putData(cmd)
	case insAttest:
		if a.st.NoAttest {
			return nil, swInsNotSupported
		}
		return a.attest(cmd)
	}
	return nil, swInsNotSupported
}

// selectApp is SELECT, SP 800-73-4 Part 2 section 3.1.1: the answer is the
// application property template. Selecting clears the security status.
func (a *applet) selectApp(cmd command) ([]byte, uint16) {
	if cmd.p1 != 0x04 {
		return nil, swIncorrectP1P2
	}
	if len(cmd.data) >= len(otpAID)-1 && bytes.HasPrefix(otpAID, cmd.data) {
		// The YubiKey OTP application: its status (firmware version,
		// configuration sequence, touch level), as ykman reads it.
		a.s = session{lastTouch: a.s.lastTouch, otp: true}
		return append(a.st.version[:], 0x00, 0x00, 0x00), swOK
	}
	if len(cmd.data) < 5 || !bytes.HasPrefix(pivAID, cmd.data) {
		return nil, swFileNotFound
	}
	a.s = session{lastTouch: a.s.lastTouch}
	apt := tlvBytes(0x4f, pivAID[5:])
	apt = appendTLV(apt, 0x79, tlvBytes(0x4f, pivAID[:5]))
	return tlvBytes(0x61, apt), swOK
}

// otpCommand answers a command to the YubiKey OTP application: only its
// serial number (INS 01, P1 10), which yubico-piv-tool and piv-go read
// there on firmware before 5.
func (a *applet) otpCommand(cmd command) ([]byte, uint16) {
	if cmd.ins != insOTPConfig {
		return nil, swInsNotSupported
	}
	if cmd.p1 != otpSerialSlot || cmd.p2 != 0 {
		return nil, swIncorrectP1P2
	}
	return binary.BigEndian.AppendUint32(nil, a.st.Serial), swOK
}

// getMetadata is Yubico's GET METADATA (0xF7) for the PIN, PUK,
// management key and key slots.
func (a *applet) getMetadata(cmd command) ([]byte, uint16) {
	if !versionAtLeast(a.st.version, 5, 3, 0) {
		return nil, swInsNotSupported
	}
	if cmd.p1 != 0 {
		return nil, swIncorrectP1P2
	}
	b2 := func(b bool) byte {
		if b {
			return 1
		}
		return 0
	}
	var out []byte
	switch slot := cmd.p2; {
	case slot == keyPIN || slot == keyPUK:
		s := &a.st.PIN
		if slot == keyPUK {
			s = &a.st.PUK
		}
		out = appendTLV(out, 0x01, []byte{0xff})
		out = appendTLV(out, 0x02, []byte{0x00, 0x00})
		out = appendTLV(out, 0x05, []byte{b2(s.Default)})
		out = appendTLV(out, 0x06, []byte{byte(s.Total), byte(s.Remaining)})
	case slot == keyManagementKey:
		touch := touchPolicyNever
		if a.st.MgmtTouch {
			touch = touchPolicyAlways
		}
		out = appendTLV(out, 0x01, []byte{a.st.MgmtAlg})
		out = appendTLV(out, 0x02, []byte{0x00, touch})
		out = appendTLV(out, 0x05, []byte{b2(a.st.MgmtDefault)})
	case isKeySlot(slot) || slot == keyAttestation:
		k := a.st.Keys[slot]
		if slot == keyAttestation {
			k = &slotKey{Alg: algECCP256, PINPolicy: pinPolicyNever, TouchPolicy: touchPolicyNever, Origin: originImported, priv: a.st.attest}
		}
		if k == nil {
			return nil, swFileNotFound
		}
		out = appendTLV(out, 0x01, []byte{k.Alg})
		out = appendTLV(out, 0x02, []byte{k.PINPolicy, k.TouchPolicy})
		out = appendTLV(out, 0x03, []byte{k.Origin})
		out = appendTLV(out, 0x04, publicKeyTLV(&k.priv.PublicKey))
	default:
		return nil, swIncorrectP1P2
	}
	return out, swOK
}

// publicKeyTLV is an EC point in tag 0x86, SP 800-73-4 Part 2 Table 25.
func publicKeyTLV(pub *ecdsa.PublicKey) []byte {
	p, err := pub.Bytes()
	if err != nil {
		panic(err) // keys come from ecdsa.GenerateKey or a checked state file
	}
	return tlvBytes(0x86, p)
}

// authResult answers a wrong PIN or PUK: 63Cx with the retries left (at
// most 15 fit), or 6983 once blocked.
func authResult(s *secret) uint16 {
	if s.Remaining == 0 {
		return swAuthBlocked
	}
	n := s.Remaining
	if n > 15 {
		n = 15
	}
	return swVerifyFail | uint16(n)
}

// checkSecret compares a padded reference value, counting a failure.
func (a *applet) checkSecret(s *secret, padded []byte) uint16 {
	if s.Remaining == 0 {
		return swAuthBlocked
	}
	if !s.matches(padded) {
		s.Remaining--
		a.dirty = true
		return authResult(s)
	}
	if s.Remaining != s.Total {
		s.Remaining = s.Total
		a.dirty = true
	}
	return swOK
}

// validNewPIN checks a new PIN or PUK: 6 to 8 bytes, padded with 0xFF.
func validNewPIN(padded []byte) ([]byte, bool) {
	v := bytes.TrimRight(padded, "\xff")
	return v, len(v) >= 6 && len(v) <= 8 && !bytes.Contains(v, []byte{0xff})
}

// verify is VERIFY, SP 800-73-4 Part 2 section 3.2.1. Without data it
// reports the status: 9000 when verified, else the retries left. P1 0xFF
// resets the verification.
func (a *applet) verify(cmd command) ([]byte, uint16) {
	if cmd.p2 != keyPIN {
		return nil, swIncorrectP1P2
	}
	switch cmd.p1 {
	case 0xff:
		if len(cmd.data) != 0 {
			return nil, swWrongLength
		}
		a.s.pinVerified, a.s.pinFresh = false, false
		return nil, swOK
	case 0x00:
	default:
		return nil, swIncorrectP1P2
	}
	if len(cmd.data) == 0 {
		if a.s.pinVerified {
			return nil, swOK
		}
		return nil, authResult(&a.st.PIN)
	}
	if len(cmd.data) != 8 {
		return nil, swIncorrectData
	}
	sw := a.checkSecret(&a.st.PIN, cmd.data)
	a.s.pinVerified = sw == swOK
	a.s.pinFresh = a.s.pinVerified // for the next command only
	return nil, sw
}

// changeReference is CHANGE REFERENCE DATA, SP 800-73-4 Part 2 section
// 3.2.2, for the PIN (80) and the PUK (81).
func (a *applet) changeReference(cmd command) ([]byte, uint16) {
	if cmd.p1 != 0 || (cmd.p2 != keyPIN && cmd.p2 != keyPUK) {
		return nil, swIncorrectP1P2
	}
	if len(cmd.data) != 16 {
		return nil, swIncorrectData
	}
	s := &a.st.PIN
	def := defaultPIN
	if cmd.p2 == keyPUK {
		s, def = &a.st.PUK, defaultPUK
	}
	newValue, ok := validNewPIN(cmd.data[8:])
	if !ok {
		return nil, swIncorrectData
	}
	if sw := a.checkSecret(s, cmd.data[:8]); sw != swOK {
		if cmd.p2 == keyPIN {
			a.s.pinVerified, a.s.pinFresh = false, false
		}
		return nil, sw
	}
	s.set(newValue, bytes.Equal(newValue, def))
	a.dirty = true
	return nil, swOK
}

// resetRetry is RESET RETRY COUNTER, SP 800-73-4 Part 2 section 3.2.3: the
// PUK sets a new PIN and unblocks it.
func (a *applet) resetRetry(cmd command) ([]byte, uint16) {
	if cmd.p1 != 0 || cmd.p2 != keyPIN {
		return nil, swIncorrectP1P2
	}
	if len(cmd.data) != 16 {
		return nil, swIncorrectData
	}
	newPIN, ok := validNewPIN(cmd.data[8:])
	if !ok {
		return nil, swIncorrectData
	}
	if sw := a.checkSecret(&a.st.PUK, cmd.data[:8]); sw != swOK {
		return nil, sw
	}
	a.st.PIN.set(newPIN, bytes.Equal(newPIN, defaultPIN))
	a.dirty = true
	return nil, swOK
}

// setPINRetries is Yubico's SET PIN RETRIES (0xFA): it needs the
// management key and the PIN, and resets PIN and PUK to their defaults.
func (a *applet) setPINRetries(cmd command) ([]byte, uint16) {
	if !a.s.mgmtAuthed || !a.s.pinVerified {
		return nil, swSecurityStatus
	}
	if cmd.p1 == 0 || cmd.p2 == 0 {
		return nil, swIncorrectP1P2
	}
	a.st.PIN.Total, a.st.PUK.Total = int(cmd.p1), int(cmd.p2)
	a.st.PIN.set(defaultPIN, true)
	a.st.PUK.set(defaultPUK, true)
	a.s.pinVerified, a.s.pinFresh = false, false
	a.dirty = true
	return nil, swOK
}

// reset is Yubico's RESET (0xFB): only with PIN and PUK both blocked.
func (a *applet) reset(cmd command) ([]byte, uint16) {
	if a.st.PIN.Remaining != 0 || a.st.PUK.Remaining != 0 {
		return nil, swConditionsNotMet
	}
	if err := a.st.factoryReset(); err != nil {
		return nil, swMemoryFailure
	}
	a.s = session{}
	a.dirty = true
	return nil, swOK
}

// mgmtCipher is the management key's block cipher.
func (a *applet) mgmtCipher() cipher.Block {
	var (
		b   cipher.Block
		err error
	)
	if a.st.MgmtAlg == alg3DES {
		b, err = des.NewTripleDESCipher(a.st.MgmtKey)
	} else {
		b, err = aes.NewCipher(a.st.MgmtKey)
	}
	if err != nil {
		panic(err) // key length is checked when set and when loaded
	}
	return b
}

// generalAuthenticate is GENERAL AUTHENTICATE, SP 800-73-4 Part 2 section
// 3.2.4: with the management key (9B) a challenge-response, with a slot key
// an ECDSA signature (tag 81) or an ECDH key agreement (tag 85, SP 800-73-4
// Part 2 Appendix A.5).
func (a *applet) generalAuthenticate(cmd command) ([]byte, uint16) {
	outer, rest, err := readTLV(cmd.data)
	if err != nil || outer.tag != 0x7c || len(rest) != 0 {
		return nil, swIncorrectData
	}
	inner, err := parseTLVs(outer.value)
	if err != nil {
		return nil, swIncorrectData
	}
	if cmd.p2 == keyManagementKey {
		return a.mgmtAuthenticate(cmd.p1, inner)
	}
	if !isKeySlot(cmd.p2) {
		return nil, swIncorrectP1P2
	}
	k := a.st.Keys[cmd.p2]
	if k == nil {
		return nil, swFileNotFound
	}
	if cmd.p1 != k.Alg {
		return nil, swIncorrectP1P2
	}
	if v, ok := findTLV(inner, 0x82); !ok || len(v) != 0 {
		return nil, swIncorrectData
	}
	digest, isSign := findTLV(inner, 0x81)
	point, isECDH := findTLV(inner, 0x85)
	if isSign == isECDH {
		return nil, swIncorrectData
	}
	// PIN policies, as a YubiKey applies them: "once" needs the PIN
	// verified in this session; "always" needs this command to come right
	// after a successful VERIFY, any command in between (GET DATA,
	// management-key authentication, an empty VERIFY) ending that
	// verification for the key (SP 800-73-4 Part 1's "PIN Always":
	// the PIN "must be submitted and verified every time immediately
	// before" the key's use; Yubico, yubico-piv-tool issue 234). The session's PIN
	// status itself stays, for "once" keys and the protected data.
	switch k.PINPolicy {
	case pinPolicyOnce:
		if !a.s.pinVerified {
			return nil, swSecurityStatus
		}
	case pinPolicyAlways:
		if !a.s.pinVerified || !a.s.afterVerify {
			return nil, swSecurityStatus
		}
	}
	a.touch(k.TouchPolicy)
	var out []byte
	if isSign {
		size := (k.priv.Curve.Params().BitSize + 7) / 8
		if len(digest) == 0 || len(digest) > size {
			return nil, swIncorrectData
		}
		sig, err := ecdsa.SignASN1(rand.Reader, k.priv, digest)
		if err != nil {
			return nil, swIncorrectData
		}
		out = sig
	} else {
		out, err = ecdhShared(k.priv, point)
		if err != nil {
			return nil, swIncorrectData
		}
	}
	return tlvBytes(0x7c, tlvBytes(0x82, out)), swOK
}

// touch confirms a touch when the policy asks for one.
func (a *applet) touch(policy byte) {
	now := a.now()
	switch policy {
	case touchPolicyAlways:
	case touchPolicyCached:
		if !a.s.lastTouch.IsZero() && now.Sub(a.s.lastTouch) < touchCacheTime {
			return
		}
	default:
		return
	}
	a.s.lastTouch = now
	a.touches++
}

func ecdhShared(priv *ecdsa.PrivateKey, point []byte) ([]byte, error) {
	k, err := priv.ECDH()
	if err != nil {
		return nil, err
	}
	peer, err := k.Curve().NewPublicKey(point)
	if err != nil {
		return nil, err
	}
	return k.ECDH(peer)
}

func (a *applet) mgmtAuthenticate(alg byte, inner []tlv) ([]byte, uint16) {
	witness, hasWitness := findTLV(inner, 0x80)
	challenge, hasChallenge := findTLV(inner, 0x81)
	resp, hasResponse := findTLV(inner, 0x82)
	if alg != a.st.MgmtAlg {
		a.s.witness, a.s.challenge = nil, nil
		return nil, swIncorrectP1P2
	}
	block := a.mgmtCipher()
	bs := block.BlockSize()
	fail := func() ([]byte, uint16) {
		a.s.witness, a.s.challenge, a.s.mgmtAuthed = nil, nil, false
		return nil, swSecurityStatus
	}
	switch {
	case hasWitness && len(witness) == 0 && !hasChallenge && !hasResponse:
		// Step 1 of mutual authentication: send an encrypted witness.
		a.s.witness = make([]byte, bs)
		rand.Read(a.s.witness)
		enc := make([]byte, bs)
		block.Encrypt(enc, a.s.witness)
		return tlvBytes(0x7c, tlvBytes(0x80, enc)), swOK
	case hasWitness && hasChallenge && !hasResponse:
		// Step 2: the decrypted witness proves the client; encrypt its
		// challenge to prove the card.
		if a.s.witness == nil || len(witness) != bs || len(challenge) != bs ||
			subtle.ConstantTimeCompare(witness, a.s.witness) != 1 {
			return fail()
		}
		a.s.witness = nil
		enc := make([]byte, bs)
		block.Encrypt(enc, challenge)
		a.s.mgmtAuthed = true
		return tlvBytes(0x7c, tlvBytes(0x82, enc)), swOK
	case hasChallenge && len(challenge) == 0 && !hasWitness && !hasResponse:
		// External authentication: send a challenge to be encrypted.
		a.s.challenge = make([]byte, bs)
		rand.Read(a.s.challenge)
		return tlvBytes(0x7c, tlvBytes(0x81, a.s.challenge)), swOK
	case hasResponse && !hasWitness && !hasChallenge:
		if a.s.challenge == nil || len(resp) != bs {
			return fail()
		}
		want := make([]byte, bs)
		block.Encrypt(want, a.s.challenge)
		a.s.challenge = nil
		if subtle.ConstantTimeCompare(want, resp) != 1 {
			return fail()
		}
		a.s.mgmtAuthed = true
		return nil, swOK
	}
	return fail()
}

// setManagementKey is Yubico's SET MANAGEMENT KEY (0xFF); P2 0xFE asks for
// touch.
func (a *applet) setManagementKey(cmd command) ([]byte, uint16) {
	if cmd.p1 != 0xff || (cmd.p2 != 0xff && cmd.p2 != 0xfe) {
		return nil, swIncorrectP1P2
	}
	if !a.s.mgmtAuthed {
		return nil, swSecurityStatus
	}
	d := cmd.data
	if len(d) < 3 || d[1] != keyManagementKey || int(d[2]) != len(d)-3 {
		return nil, swIncorrectData
	}
	alg, key := d[0], d[3:]
	if n := mgmtKeyLen(alg); n == 0 || n != len(key) {
		return nil, swIncorrectData
	}
	if alg != alg3DES && !versionAtLeast(a.st.version, 5, 4, 0) {
		return nil, swIncorrectData
	}
	a.st.MgmtAlg = alg
	a.st.MgmtKey = append([]byte(nil), key...)
	a.st.MgmtTouch = cmd.p2 == 0xfe
	a.st.MgmtDefault = bytes.Equal(key, defaultMgmtKey)
	a.dirty = true
	return nil, swOK
}

// keyPolicies reads the optional PIN (AA) and touch (AB) policy tags of
// GENERATE and IMPORT.
func keyPolicies(slot byte, ts []tlv) (pin, touch byte, ok bool) {
	pin, touch = defaultPINPolicy(slot), touchPolicyNever
	if v, found := findTLV(ts, 0xaa); found {
		if len(v) != 1 || v[0] > pinPolicyAlways {
			return 0, 0, false
		}
		if v[0] != pinPolicyDefault {
			pin = v[0]
		}
	}
	if v, found := findTLV(ts, 0xab); found {
		if len(v) != 1 || v[0] > touchPolicyCached {
			return 0, 0, false
		}
		if v[0] != touchPolicyDefault {
			touch = v[0]
		}
	}
	return pin, touch, true
}

func algCurve(alg byte) elliptic.Curve {
	switch alg {
	case algECCP256:
		return elliptic.P256()
	case algECCP384:
		return elliptic.P384()
	}
	return nil
}

// generate is GENERATE ASYMMETRIC KEY PAIR, SP 800-73-4 Part 2 section
// 3.3.2, with Yubico's policy tags.
func (a *applet) generate(cmd command) ([]byte, uint16) {
	if !a.s.mgmtAuthed {
		return nil, swSecurityStatus
	}
	if cmd.p1 != 0 || !isKeySlot(cmd.p2) {
		return nil, swIncorrectP1P2
	}
	outer, rest, err := readTLV(cmd.data)
	if err != nil || outer.tag != 0xac || len(rest) != 0 {
		return nil, swIncorrectData
	}
	ts, err := parseTLVs(outer.value)
	if err != nil {
		return nil, swIncorrectData
	}
	algv, ok := findTLV(ts, 0x80)
	if !ok || len(algv) != 1 {
		return nil, swIncorrectData
	}
	curve := algCurve(algv[0])
	if curve == nil {
		return nil, swIncorrectData
	}
	pin, touch, ok := keyPolicies(cmd.p2, ts)
	if !ok {
		return nil, swIncorrectData
	}
	priv, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return nil, swMemoryFailure
	}
	if sw := a.storeKey(cmd.p2, algv[0], pin, touch, originGenerated, priv); sw != swOK {
		return nil, sw
	}
	return tlvBytes(0x7f49, publicKeyTLV(&priv.PublicKey)), swOK
}

func (a *applet) storeKey(slot, alg, pin, touch, origin byte, priv *ecdsa.PrivateKey) uint16 {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return swMemoryFailure
	}
	a.st.Keys[slot] = &slotKey{Alg: alg, PINPolicy: pin, TouchPolicy: touch, Origin: origin, PKCS8: der, priv: priv}
	a.dirty = true
	return swOK
}

// importKey is Yubico's IMPORT ASYMMETRIC KEY (0xFE) for EC keys: the
// private scalar in tag 06.
func (a *applet) importKey(cmd command) ([]byte, uint16) {
	if !a.s.mgmtAuthed {
		return nil, swSecurityStatus
	}
	if !isKeySlot(cmd.p2) {
		return nil, swIncorrectP1P2
	}
	curve := algCurve(cmd.p1)
	if curve == nil {
		return nil, swIncorrectP1P2
	}
	ts, err := parseTLVs(cmd.data)
	if err != nil {
		return nil, swIncorrectData
	}
	scalar, ok := findTLV(ts, 0x06)
	size := (curve.Params().BitSize + 7) / 8
	if !ok || len(scalar) != size {
		return nil, swIncorrectData
	}
	pin, touch, ok := keyPolicies(cmd.p2, ts)
	if !ok {
		return nil, swIncorrectData
	}
	priv, err := ecdsa.ParseRawPrivateKey(curve, scalar)
	if err != nil {
		return nil, swIncorrectData
	}
	return nil, a.storeKey(cmd.p2, cmd.p1, pin, touch, originImported, priv)
}

// objectTag reads the tag list 5C of GET DATA and PUT DATA, SP 800-73-4
// Part 2 sections 3.1.2 and 3.3.1.
func objectTag(t tlv) (uint32, bool) {
	if t.tag != 0x5c || len(t.value) == 0 || len(t.value) > 3 {
		return 0, false
	}
	var tag uint32
	for _, b := range t.value {
		tag = tag<<8 | uint32(b)
	}
	return tag, true
}

// getData is GET DATA, SP 800-73-4 Part 2 section 3.1.2.
func (a *applet) getData(cmd command) ([]byte, uint16) {
	if cmd.p1 != 0x3f || cmd.p2 != 0xff {
		return nil, swIncorrectP1P2
	}
	t, rest, err := readTLV(cmd.data)
	if err != nil || len(rest) != 0 {
		return nil, swIncorrectData
	}
	tag, ok := objectTag(t)
	if !ok {
		return nil, swIncorrectData
	}
	if tag == tagDiscovery {
		// SP 800-73-4 Part 1 section 3.3.2: the PIV AID and a PIN usage
		// policy of "PIV Application PIN only".
		d := tlvBytes(0x4f, pivAID)
		d = appendTLV(d, 0x5f2f, []byte{0x40, 0x00})
		return tlvBytes(0x7e, d), swOK
	}
	if tag == tagPrinted && !a.s.pinVerified {
		return nil, swSecurityStatus
	}
	obj, ok := a.st.Objects[tag]
	if !ok || (tag == tagAttestCert && a.st.NoAttest) {
		return nil, swFileNotFound
	}
	return tlvBytes(0x53, obj), swOK
}

// putData is PUT DATA, SP 800-73-4 Part 2 section 3.3.1: an empty object
// deletes it.
func (a *applet) putData(cmd command) ([]byte, uint16) {
	if !a.s.mgmtAuthed {
		return nil, swSecurityStatus
	}
	if cmd.p1 != 0x3f || cmd.p2 != 0xff {
		return nil, swIncorrectP1P2
	}
	t, rest, err := readTLV(cmd.data)
	if err != nil {
		return nil, swIncorrectData
	}
	tag, ok := objectTag(t)
	if !ok || !isObjectTag(tag) {
		return nil, swIncorrectData
	}
	obj, rest, err := readTLV(rest)
	if err != nil || obj.tag != 0x53 || len(rest) != 0 {
		return nil, swIncorrectData
	}
	if len(obj.value) > maxObjectSize {
		return nil, swNotEnoughMemory
	}
	if len(obj.value) == 0 {
		delete(a.st.Objects, tag)
	} else {
		a.st.Objects[tag] = append([]byte(nil), obj.value...)
	}
	a.dirty = true
	return nil, swOK
}

// attest is Yubico's ATTEST (0xF9): a certificate for a key generated on
// the card. Imported or missing keys give 6A80, as on a YubiKey.
func (a *applet) attest(cmd command) ([]byte, uint16) {
	if cmd.p2 != 0 || !isKeySlot(cmd.p1) {
		return nil, swIncorrectP1P2
	}
	k := a.st.Keys[cmd.p1]
	if k == nil || k.Origin != originGenerated {
		return nil, swIncorrectData
	}
	der, err := a.st.attestSlot(cmd.p1)
	if err != nil {
		return nil, swNoPreciseDiagnostic
	}
	return der, swOK
}
