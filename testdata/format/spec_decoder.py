#!/usr/bin/python3
"""An independent decoder of docs/FORMAT.md, written from that text alone.

It shares no code with custos: it checks custos's vectors a second time, so
that a format and its reader cannot drift apart unnoticed.

    /usr/bin/python3 testdata/format/spec_decoder.py testdata/format

checks every vector file present in the directory (vectors.json: sections
1-6; records.json: sections 7-12), runs its own cases from the text, prints
one line per file with its counts, and exits non-zero on any mismatch.

Needs Python 3.9+ and python3-cryptography (Debian 12: 38.x). Where the
text leaves a choice open, the choice made here is marked "SPEC:".
"""

import base64
import hashlib
import hmac
import json
import os
import re
import sys
import unicodedata

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class Reject(Exception):
    """Input refused; path names the member (or character) at fault."""

    def __init__(self, path, msg):
        super().__init__(f"{path}: {msg}")
        self.path = path
        self.msg = msg


def child(path, name):
    return f"{path}.{name}" if path else name


# ---------------------------------------------------------------- section 1

MODHEX = "cbdefghijklnrtuv"


def key_text(key):
    s = "".join(MODHEX[b >> 4] + MODHEX[b & 15] for b in key)
    return "-".join(s[i:i + 8] for i in range(0, len(s), 8))


def parse_key_text(text):
    """Returns the 32 key bytes. SPEC: a reject names the 0-based index of
    the offending character in the text as given (before trimming); a text
    that ends too early names the index just past its last character."""
    i, j = 0, len(text)
    while i < j and text[i] in " \t\r\n":
        i += 1
    while j > i and text[j - 1] in " \t\r\n":
        j -= 1
    nib = []
    for p in range(i, j):
        c = text[p]
        if c == "-":
            if len(nib) % 8 == 0 and 0 < len(nib) < 64 and text[p - 1] != "-":
                continue
            raise Reject(f"character {p}", "dash not between two groups")
        v = MODHEX.find(c.lower()) if c.isascii() else -1
        if v < 0:
            raise Reject(f"character {p}", f"{c!r} is not a modhex letter")
        if len(nib) == 64:
            raise Reject(f"character {p}", "more than 64 letters")
        nib.append(v)
    if len(nib) != 64 or text[j - 1] == "-":
        raise Reject(f"character {j}", "fewer than 64 letters")
    return bytes(nib[a] << 4 | nib[a + 1] for a in range(0, 64, 2))


# ---------------------------------------------------------------- section 2


def gf_mul(a, b):
    p = 0
    while b:
        if b & 1:
            p ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return p


def gf_inv(a):
    r, e = 1, 254  # a^254 = a^-1 in GF(2^8)
    while e:
        if e & 1:
            r = gf_mul(r, a)
        a = gf_mul(a, a)
        e >>= 1
    return r


def shamir_combine(values):
    """values: share values (y_1..y_L || x); returns the L-byte secret."""
    xs = [v[-1] for v in values]
    if len(values) < 2 or len(set(len(v) for v in values)) != 1:
        raise Reject("shares", "need two or more shares of one length")
    if 0 in xs or len(set(xs)) != len(xs):
        raise Reject("shares", "evaluation points must be distinct and not 0")
    # Lagrange basis at 0: l_j = prod_{m != j} x_m / (x_m - x_j); minus is xor.
    basis = []
    for j, xj in enumerate(xs):
        num = den = 1
        for m, xm in enumerate(xs):
            if m != j:
                num, den = gf_mul(num, xm), gf_mul(den, xm ^ xj)
        basis.append(gf_mul(num, gf_inv(den)))
    out = bytearray(len(values[0]) - 1)
    for v, l in zip(values, basis):
        for i in range(len(out)):
            out[i] ^= gf_mul(v[i], l)
    return bytes(out)


def shamir_split(secret, k, xs, coeffs):
    """Test helper: coeffs[i] are the k-1 higher coefficients for byte i."""
    vals = []
    for x in xs:
        y = bytearray()
        for i, s in enumerate(secret):
            acc = 0
            for c in reversed([s] + list(coeffs[i])):  # Horner
                acc = gf_mul(acc, x) ^ c
            y.append(acc)
        vals.append(bytes(y) + bytes([x]))
    return vals


# ---------------------------------------------------------------- section 3


def check_header(b, path):
    """b: the 35 bytes ceremony ID, volume ID, index, k, n."""
    index, k, n = b[32], b[33], b[34]
    if not 2 <= k <= 255:
        raise Reject(path, f"k {k} out of range")
    if not k <= n <= 255:
        raise Reject(path, f"n {n} out of range")
    if not 1 <= index <= n:
        raise Reject(path, f"index {index} out of range")
    return {"ceremony": b[:16], "volume": b[16:32], "index": index, "k": k, "n": n}


def parse_envelope(b, path="envelope"):
    if len(b) < 41:
        raise Reject(path, "short")
    if b[:3] != b"CSH" or b[3] != 1:
        raise Reject(path, "wrong magic or version")
    h = check_header(b[4:39], path)
    ln = int.from_bytes(b[39:41], "big")
    if not 2 <= ln <= 256:
        raise Reject(path, f"value length {ln} out of range")
    if len(b) != 41 + ln:
        raise Reject(path, "length does not match the value")
    h["value"] = b[41:]
    if h["value"][-1] == 0:
        raise Reject(path, "x is 0")
    return h


def make_envelope(cid, vol, index, k, n, value):
    return b"CSH\x01" + cid + vol + bytes([index, k, n]) + len(value).to_bytes(2, "big") + value


# ---------------------------------------------------------------- sections 4, 5


def commitment(cid, index, value):
    return hashlib.sha256(b"custos share commitment v1\x00" + cid + bytes([index]) + value).digest()


def secret_digest(secret, cid):
    return hmac.new(secret, b"custos secret digest v1\x00" + cid, hashlib.sha256).digest()


# ---------------------------------------------------------------- section 6

SPKI_P256_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")


def spki(point):
    """DER SubjectPublicKeyInfo of an uncompressed P-256 point."""
    return SPKI_P256_PREFIX + point


def point_of(pub):
    return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def parse_sealed(b, path="sealed"):
    """SPEC: C must be 18..272 (L+1 in 2..256, plus the tag), no byte may
    follow the ciphertext, and E must be a point of P-256."""
    if len(b) < 138:
        raise Reject(path, "short")
    if b[:3] != b"CSS" or b[3] != 1:
        raise Reject(path, "wrong magic or version")
    s = check_header(b[4:39], path)
    s["fingerprint"], s["ephemeral"] = b[39:71], b[71:136]
    c = int.from_bytes(b[136:138], "big")
    if not 18 <= c <= 272 or len(b) != 138 + c:
        raise Reject(path, "ciphertext length")
    if b[71] != 4:
        raise Reject(path, "ephemeral key not uncompressed")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b[71:136])
    except ValueError:
        raise Reject(path, "ephemeral key not on P-256") from None
    s["ciphertext"] = b[138:]
    return s


def ecdh(private_scalar, point):
    priv = ec.derive_private_key(int.from_bytes(private_scalar, "big"), ec.SECP256R1())
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    return priv.exchange(ec.ECDH(), peer)


def seal_key(z, e_point, r_point):
    return HKDF(hashes.SHA256(), 32, e_point + r_point, b"custos sealed share v1").derive(z)


def open_sealed(b, r_point, z=None, private=None):
    """Opens a sealed share for recipient point R with the shared secret z,
    or with the recipient's private scalar. Returns the share value."""
    s = parse_sealed(b)
    if hashlib.sha256(spki(r_point)).digest() != s["fingerprint"]:
        raise Reject("sealed", "sealed to another key")
    if z is None:
        z = ecdh(private, s["ephemeral"])
    try:
        value = ChaCha20Poly1305(seal_key(z, s["ephemeral"], r_point)).decrypt(bytes(12), s["ciphertext"], b[:136])
    except InvalidTag:
        raise Reject("sealed", "does not open") from None
    if value[-1] == 0:
        raise Reject("sealed", "x is 0")
    return value


def seal(header35, r_point, value, e_private):
    e_point = point_of(ec.derive_private_key(int.from_bytes(e_private, "big"), ec.SECP256R1()).public_key())
    z = ecdh(e_private, r_point)
    fp = hashlib.sha256(spki(r_point)).digest()
    ad = b"CSS\x01" + header35 + fp + e_point
    ct = ChaCha20Poly1305(seal_key(z, e_point, r_point)).encrypt(bytes(12), value, ad)
    return ad + len(ct).to_bytes(2, "big") + ct


# ---------------------------------------------------------------- section 7

# Characters that Unicode 15.0 assigns to L, M, N, P or S and Unicode 14.0
# (Python 3.11's unicodedata, Debian 12) left unassigned: Go's unicode
# tables are 15.0, the text says 15.0.
UNICODE_15_NEW = (
    (0xCF3, 0xCF3), (0xECE, 0xECE), (0x10EFD, 0x10EFF), (0x1123F, 0x11241), (0x11B00, 0x11B09),
    (0x11F00, 0x11F10), (0x11F12, 0x11F3A), (0x11F3E, 0x11F59), (0x1342F, 0x1342F), (0x13440, 0x13455),
    (0x1B132, 0x1B132), (0x1B155, 0x1B155), (0x1D2C0, 0x1D2D3), (0x1DF25, 0x1DF2A), (0x1E030, 0x1E06D),
    (0x1E08F, 0x1E08F), (0x1E4D0, 0x1E4F9), (0x1F6DC, 0x1F6DC), (0x1F774, 0x1F776), (0x1F77B, 0x1F77F),
    (0x1F7D9, 0x1F7D9), (0x1FA75, 0x1FA77), (0x1FA87, 0x1FA88), (0x1FAAD, 0x1FAAF), (0x1FABB, 0x1FABD),
    (0x1FABF, 0x1FABF), (0x1FACE, 0x1FACF), (0x1FADA, 0x1FADB), (0x1FAE8, 0x1FAE8), (0x1FAF7, 0x1FAF8),
    (0x2B739, 0x2B739), (0x31350, 0x323AF),
)
if unicodedata.unidata_version not in ("14.0.0", "15.0.0"):
    print(f"spec_decoder: warning: Unicode {unicodedata.unidata_version}, the text says 15.0", file=sys.stderr)


def text_char_ok(c):
    if c == " ":
        return True
    if c in '"\\<>&':
        return False
    cat = unicodedata.category(c)
    if cat[0] in "LMNPS":
        return True
    return cat == "Cn" and unicodedata.unidata_version == "14.0.0" and \
        any(a <= ord(c) <= b for a, b in UNICODE_15_NEW)


def check_text(s, path):
    if not 1 <= len(s.encode()) <= 64:
        raise Reject(path, "text must be 1 to 64 bytes")
    if s[0] == " " or s[-1] == " ":
        raise Reject(path, "text starts or ends with a space")
    for c in s:
        if not text_char_ok(c):
            raise Reject(path, f"character U+{ord(c):04X} not allowed in text")
    return s


def check_hex(s, path, digits):
    if not re.fullmatch("[0-9a-f]{%d}" % digits, s):
        raise Reject(path, f"want {digits} lower-case hex digits")
    return s


def b64url(s, path):
    if not re.fullmatch(r"[A-Za-z0-9_-]*", s) or len(s) % 4 == 1:
        raise Reject(path, "not unpadded base64url")
    b = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    if base64.urlsafe_b64encode(b).rstrip(b"=").decode() != s:
        raise Reject(path, "base64url with non-zero unused bits")
    return b


def b64std(s, path):
    """Standard base64 with padding (version 1 and the card event)."""
    if not isinstance(s, str) or not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", s) or len(s) % 4:
        raise Reject(path, "not padded standard base64")
    b = base64.b64decode(s)
    if base64.b64encode(b).decode() != s:
        raise Reject(path, "non-canonical base64")
    return b


UUID_RE = re.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ANCHOR_RE = re.compile("([1-9][0-9]*):([0-9a-f]{64})")


def check_anchor(s, path):
    m = ANCHOR_RE.fullmatch(s)
    if not m or int(m.group(1)) >= 1 << 64:  # SPEC: SEQ fits 64 bits
        raise Reject(path, "not SEQ:HASH")
    return s


class Canon:
    """Reads section 7's canonical form, checking each value as it is read:
    the first fault in text order is the one reported."""

    INT = re.compile(rb"0|[1-9][0-9]*")

    def __init__(self, data):
        if not isinstance(data, bytes):
            data = data.encode()
        self.d, self.p = data, 0

    def peek(self):
        return self.d[self.p:self.p + 1]

    def expect(self, ch, path):
        if self.peek() != ch:
            got = self.peek().decode("latin-1") or "end of text"
            raise Reject(path, f"expected {ch.decode()!r} at byte {self.p}, found {got!r}")
        self.p += 1

    def end(self, path):
        if self.p != len(self.d):
            raise Reject(path, f"data after the closing brace at byte {self.p}")

    def string(self, path):
        self.expect(b'"', path)
        e = self.d.find(b'"', self.p)
        if e < 0:
            raise Reject(path, "unterminated string")
        raw = self.d[self.p:e]
        if b"\\" in raw:
            raise Reject(path, "escape in string")
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Reject(path, "invalid UTF-8") from None
        if any(ord(c) < 0x20 for c in s):
            raise Reject(path, "control character in string")
        self.p = e + 1
        return s

    def integer(self, path, lo=0, hi=None):
        m = self.INT.match(self.d, self.p)
        nxt = self.d[m.end():m.end() + 1] if m else b""
        if not m or (nxt and nxt in b".eE0123456789"):
            raise Reject(path, "not a canonical unsigned integer")
        self.p = m.end()
        v = int(m.group())
        if v < lo or (hi is not None and v > hi):
            raise Reject(path, f"{v} out of range {lo}..{hi}")
        return v

    def true(self, path):
        if not self.d.startswith(b"true", self.p):
            raise Reject(path, "expected true")
        self.p += 4
        return True

    def obj(self, path, members, ctx=None):
        """members: [(name, required, read(self, path, out))] in order.
        SPEC: a member is out of order when it appears after a member
        listed after it; the fault is the later-appearing one. A missing
        required member is reported, by its own path, at the closing brace.
        Unknown, repeated and case-variant names are faults at path.name."""
        self.expect(b"{", path)
        names = [m[0] for m in members]
        out, pos = {}, 0
        if self.peek() != b"}":
            while True:
                key = self.string(path)
                kp = child(path, key)
                if key in out:
                    raise Reject(kp, "member repeated")
                if key not in names:
                    if key.lower() in (x.lower() for x in names):
                        raise Reject(kp, "member name differs in case")
                    raise Reject(kp, "unknown member")
                i = names.index(key)
                if i < pos:
                    raise Reject(kp, "member out of order")
                pos = i + 1
                self.expect(b":", kp)
                out[key] = members[i][2](self, kp, out)
                if self.peek() != b",":
                    break
                self.p += 1
        self.expect(b"}", path)
        for name, required, _ in members:
            if required and name not in out:
                raise Reject(child(path, name), "missing")
        return out

    def array(self, path, read):
        self.expect(b"[", path)
        out = []
        if self.peek() != b"]":
            while True:
                out.append(read(self, f"{path}[{len(out)}]", out))
                if self.peek() != b",":
                    break
                self.p += 1
        self.expect(b"]", path)
        return out


def S(check=None):
    return lambda r, path, out: check(r.string(path), path) if check else r.string(path)


def I(lo=0, hi=None):
    return lambda r, path, out: r.integer(path, lo, hi)


def H(digits):
    return S(lambda s, p: check_hex(s, p, digits))


# ---------------------------------------------------------------- section 8


def read_record(r, path, ctx=None):
    """Reads a version 2 record; returns its members, with the cards'
    text spans under "_raw" and the frame's text under "_frame"."""
    start = r.p

    def n_check(r, p, out):
        return r.integer(p, out.get("k", 2), 255)

    def salt(r, p, out):
        s = r.string(p)
        if not re.fullmatch("([0-9a-f]{2}){1,256}", s):
            raise Reject(p, "want 2 to 512 lower-case hex digits, even")
        return s

    def not_zero_id(s, p):
        check_hex(s, p, 32)
        if s == "0" * 32:
            raise Reject(p, "ceremony ID all zero")
        return s

    def replaces(r, p, out):
        s = check_hex(r.string(p), p, 32)
        if s == out.get("id"):
            raise Reject(p, "a ceremony cannot replace itself")
        return s

    def set_name(s, p):
        if not re.fullmatch("[a-z0-9][a-z0-9._-]{0,63}", s):
            raise Reject(p, "set name: 1-64 of a-z 0-9 . _ -, starting with a letter or digit")
        return s

    def set_obj(r, p, out):
        return r.obj(p, [("name", True, S(set_name)), ("version", True, I(1)),
                         ("fingerprint", True, H(64))])

    def uuid(s, p):
        if not UUID_RE.fullmatch(s):
            raise Reject(p, "not a lower-case LUKS UUID")
        return s

    def cards(r, p, out):
        raw = []

        def card(r, cp, done):
            if len(done) >= out.get("n", 255):
                raise Reject(cp, "more than n cards")
            s = r.p
            c = read_card(r, cp, out, done)
            raw.append(r.d[s:r.p])
            return c
        v = r.array(p, card)
        out["_raw"] = raw
        return v

    members = [
        ("v", True, I(2, 2)), ("id", True, S(not_zero_id)), ("volume", True, S(uuid)),
        ("k", True, I(2, 255)), ("n", True, n_check), ("keyslot", True, I(0, 31)),
        ("salt", False, salt), ("digest", True, H(64)), ("replaces", False, replaces),
        ("set", False, set_obj), ("allow_unattested", False, lambda r, p, o: r.true(p)),
        ("cards", True, cards),
    ]
    rec = r.obj(path, members)
    rec["_text"] = r.d[start:r.p]
    return rec


def serial_ok(s, p):
    if not re.fullmatch("[1-9][0-9]{0,9}", s) or int(s) > 4294967295:
        raise Reject(p, "serial: decimal, 1-10 digits, no leading zero, at most 4294967295")
    return s


def slot_ok(s, p):
    if not re.fullmatch("[0-9a-f]{2}", s) or not 0x82 <= int(s, 16) <= 0x95:
        raise Reject(p, "slot: two lower-case hex digits, 82 to 95")
    return s


def read_card(r, path, rec, done):
    def index(r, p, out):
        i = r.integer(p, 1, rec.get("n", 255))
        if done and i <= done[-1]["index"]:
            raise Reject(p, "indexes not strictly increasing")
        return i

    def unique(field, check):
        def read(r, p, out):
            s = check(r.string(p), p)
            if any(c.get(field) == s for c in done):
                raise Reject(p, f"two cards with the same {field}")
            return s
        return read

    def sealed(r, p, out):
        b = b64url(r.string(p), p)
        s = parse_sealed(b, p)
        want = (rec.get("id"), rec.get("volume"), rec.get("k"), rec.get("n"), out.get("index"))
        got = (s["ceremony"].hex(), uuid_text(s["volume"]), s["k"], s["n"], s["index"])
        if want != got:
            raise Reject(p, f"sealed share header {got} does not name the record's {want}")
        if s["fingerprint"].hex() != out.get("key"):
            raise Reject(p, "sealed share's recipient is not the card's key")
        return b

    members = [
        ("index", True, index), ("serial", True, unique("serial", serial_ok)),
        ("slot", True, S(slot_ok)), ("custodian", False, S(check_text)),
        ("key", True, unique("key", lambda s, p: check_hex(s, p, 64))),
        ("attestation", False, H(64)), ("commitment", True, H(64)), ("sealed", True, sealed),
    ]
    card = r.obj(path, members)
    if "attestation" not in card and not rec.get("allow_unattested"):
        raise Reject(child(path, "attestation"), "missing, and the record does not allow unattested cards")
    return card


def uuid_text(b16):
    h = b16.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def frame_of(rec):
    return {k: v for k, v in rec.items() if k not in ("cards", "_raw", "_text")}


def decode_record(data, root="record"):
    r = Canon(data)
    rec = read_record(r, root)
    r.end(root)
    return rec


# ---------------------------------------------------------------- section 10


def strip_ws(data):
    """Removes whitespace outside strings (the indented form of luksDump)."""
    out, i, instr = bytearray(), 0, False
    while i < len(data):
        c = data[i]
        if instr:
            out.append(c)
            if c == 0x5C and i + 1 < len(data):
                out.append(data[i + 1])
                i += 1
            elif c == 0x22:
                instr = False
        elif c == 0x22:
            instr = True
            out.append(c)
        elif c not in b" \t\r\n":
            out.append(c)
        i += 1
    return bytes(out)


def decode_token(data, root="token", indented=False):
    """SPEC: keyslots ["S"] must name the record's keyslot (fault at
    keyslots[0], found once the record is read), and the record holds no
    card or all n (fault at record.cards)."""
    if isinstance(data, str):
        data = data.encode()
    if indented:
        data = strip_ws(data)
    r = Canon(data)

    def typ(s, p):
        if s != "custos":
            raise Reject(p, "type is not custos")
        return s

    def keyslot_str(r, p, done):
        if done:
            raise Reject(p, "more than one keyslot")
        s = r.string(p)
        if not re.fullmatch("0|[1-9][0-9]?", s):
            raise Reject(p, "keyslot not a canonical decimal")
        return s

    def record(r, p, out):
        rec = read_record(r, p)
        if rec["cards"] and len(rec["cards"]) != rec["n"]:
            raise Reject(child(p, "cards"), "a token holds no card or all n")
        return rec

    tok = r.obj(root, [("type", True, S(typ)), ("keyslots", True, lambda r, p, o: r.array(p, keyslot_str)),
                       ("record", True, record), ("anchor", True, S(check_anchor))])
    r.end(root)
    if tok["keyslots"] and tok["keyslots"][0] != str(tok["record"]["keyslot"]):
        raise Reject(child(root, "keyslots[0]"), "names another keyslot than the record")
    return tok


# ---------------------------------------------------------------- section 11


def go_escape(s):
    """A string as Go's encoding/json writes it (Go 1.22 and later write
    \\b and \\f; the text lists only \\n, \\r, \\t)."""
    short = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
    out = []
    for ch in s:
        if ch in short:
            out.append(short[ch])
        elif ord(ch) < 0x20 or ch in "<>&\u2028\u2029":
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _gostring(self, path):
    """A string in encoding/json's exact escaping; returns its value."""
    start = self.p
    self.expect(b'"', path)
    while True:
        if self.p >= len(self.d):
            raise Reject(path, "unterminated string")
        c = self.d[self.p]
        self.p += 2 if c == 0x5C else 1
        if c == 0x22:
            break
    raw = self.d[start:self.p]
    try:
        v = json.loads(raw.decode("utf-8"))
        if go_escape(v).encode("utf-8") != raw:
            raise ValueError
    except (ValueError, UnicodeError):
        raise Reject(path, "string not as encoding/json writes it") from None
    return v


GO_NUM = re.compile(rb"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def _govalue(self, path):
    """Any compact JSON value in encoding/json's escaping. SPEC: the text
    does not say more about bodies of other types; repeated names are
    refused."""
    c = self.peek()
    if c == b"{":
        self.p += 1
        out = {}
        if self.peek() != b"}":
            while True:
                key = self.gostring(path)
                if key in out:
                    raise Reject(child(path, key), "member repeated")
                self.expect(b":", child(path, key))
                out[key] = self.govalue(child(path, key))
                if self.peek() != b",":
                    break
                self.p += 1
        self.expect(b"}", path)
        return out
    if c == b"[":
        return self.array(path, lambda r, p, done: r.govalue(p))
    if c == b'"':
        return self.gostring(path)
    for word, val in ((b"true", True), (b"false", False), (b"null", None)):
        if self.d.startswith(word, self.p):
            self.p += len(word)
            return val
    m = GO_NUM.match(self.d, self.p)
    if not m:
        raise Reject(path, f"not a JSON value at byte {self.p}")
    self.p = m.end()
    return json.loads(m.group())


Canon.gostring = _gostring
Canon.govalue = _govalue

TIME_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{0,8}[1-9])?Z")
STATUSES = ("open", "active", "abandoned", "retired")
NEXT_STATUS = {"open": ("open", "active", "abandoned"), "active": ("active", "retired")}


def check_time(s, p):
    m = TIME_RE.fullmatch(s)
    if not m:
        raise Reject(p, "not RFC 3339 UTC as time.RFC3339Nano writes it")
    y, mo, d, h, mi, sec = (int(x) for x in m.groups()[:6])
    mdays = [31, 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    if not (1 <= mo <= 12 and 1 <= d <= mdays[mo - 1] and h < 24 and mi < 60 and sec < 60):
        raise Reject(p, "no such time")
    return s


def check_actor(r, p, out):
    s = r.gostring(p)
    if not 1 <= len(s.encode("utf-8", "surrogatepass")) <= 256 or any(unicodedata.category(c) == "Cc" for c in s):
        raise Reject(p, "actor: 1-256 bytes of UTF-8 without control characters")
    return s


def check_type(s, p):
    if not re.fullmatch("[a-z][a-z0-9.-]{0,63}", s):
        raise Reject(p, "type: 1-64 of a-z 0-9 . - starting with a letter")
    return s


def GV():
    return lambda r, p, out: r.govalue(p)


def read_body(r, p, out):
    t = out.get("type")
    if t == "ceremony":
        if r.d.startswith(b'{"id":', r.p):
            v = r.govalue(p)
            check_v1_ceremony_body(v, p)
            return {"v1": v}
        return r.obj(p, [("status", True, S(lambda s, q: s if s in STATUSES else _bad(q, "unknown status"))),
                         ("record", True, read_record)])
    if t == "log.created":
        return r.obj(p, [("schema", True, GV())])
    if t == "log.migrated":
        return r.obj(p, [("from", True, GV()), ("to", True, GV())])
    if t == "card":  # SPEC: custodian and attestation optional, other types unsaid
        return r.obj(p, [("serial", True, GV()), ("custodian", False, GV()), ("slot", True, GV()),
                         ("fingerprint", True, GV()),
                         ("attestation", False, lambda r, q, o: b64std(r.gostring(q), q))])
    if t == "rollcall":  # SPEC: reason optional
        def ok(r, q, o):
            v = r.govalue(q)
            return v if isinstance(v, bool) else _bad(q, "ok is not true or false")
        return r.obj(p, [("ceremony", True, GV()), ("serial", True, GV()), ("fingerprint", True, GV()),
                         ("ok", True, ok), ("reason", False, GV())])
    if r.peek() != b"{":
        raise Reject(p, "body is not an object")
    return r.govalue(p)


def _bad(p, msg):
    raise Reject(p, msg)


def decode_event(line, root="event"):
    """SPEC: a ceremony event's `ceremony` member is present and names its
    record's id (the text does not say so)."""
    if isinstance(line, str):
        line = line.encode("utf-8")
    r = Canon(line)
    ev = r.obj(root, [("seq", True, I(1, (1 << 64) - 1)), ("time", True, S(check_time)),
                      ("actor", True, check_actor), ("type", True, S(check_type)),
                      ("ceremony", False, H(32)), ("body", True, read_body), ("prev", True, H(64))])
    r.end(root)
    rec = ev["body"].get("record") if ev["type"] == "ceremony" else None
    if rec is not None and ev.get("ceremony") != rec["id"]:
        raise Reject(child(root, "ceremony"), "does not name the record's id")
    ev["hash"] = hashlib.sha256(line).hexdigest()
    return ev


def check_step(held, ev, p):
    """Section 11's rules for a ceremony event against the log before it;
    held maps ceremony id to (status, record) as the log now stands."""
    body, bp = ev["body"], child(p, "body")
    rec, rp = body["record"], child(child(p, "body"), "record")
    st = body["status"]
    if st == "active" and len(rec["cards"]) < rec["n"]:
        raise Reject(child(rp, "cards"), "active with fewer than n cards")
    if "replaces" in rec:
        old = held.get(rec["replaces"])
        if old is None or old[1]["volume"] != rec["volume"]:
            raise Reject(child(rp, "replaces"), "names no ceremony of this volume in the log")
    prev = held.get(rec["id"])
    if prev is None:
        if st not in ("open", "active"):
            raise Reject(child(bp, "status"), "a first record is open or active")
        return
    pst, prec = prev
    if st not in NEXT_STATUS.get(pst, ()):
        raise Reject(child(bp, "status"), f"status {pst} cannot become {st}")
    a, b = frame_of(prec), frame_of(rec)
    if "salt" not in a:
        b = {k: v for k, v in b.items() if k != "salt"}
    for name in list(dict.fromkeys(list(a) + list(b))):
        if a.get(name) != b.get(name):
            raise Reject(child(rp, name), "the frame changed")
    for j, raw in enumerate(prec["_raw"]):
        if j >= len(rec["_raw"]) or rec["_raw"][j] != raw:
            raise Reject(f"{rp}.cards[{j}]", "a card was removed or changed")


def verify_chain(lines, root="log"):
    """Checks a log; returns its events. A fault names root[i], i the
    0-based position (SPEC)."""
    events, prev, held = [], "0" * 64, {}
    for i, line in enumerate(lines):
        p = f"{root}[{i}]"
        ev = decode_event(line, p)
        if ev["seq"] != i + 1:
            raise Reject(child(p, "seq"), f"want {i + 1}")
        if ev["prev"] != prev:
            raise Reject(child(p, "prev"), "not the hash of the event before")
        if ev["type"] == "ceremony" and "record" in ev["body"]:
            check_step(held, ev, p)
            held[ev["ceremony"]] = (ev["body"]["status"], ev["body"]["record"])
        prev = ev["hash"]
        events.append(ev)
    return events


def agrees(a, b):
    """Section 8: same frame, byte-identical entries for each index both have."""
    if frame_of(a) != frame_of(b):
        return False
    ca = {c["index"]: raw for c, raw in zip(a["cards"], a["_raw"])}
    return all(ca.get(c["index"], raw) == raw for c, raw in zip(b["cards"], b["_raw"]))


def anchor_good(events, anchor, rec):
    """Section 9, over events already checked by verify_chain. SPEC: the
    text asks for *a* ceremony event up to SEQ that agrees; the first one
    (no cards) agrees with any card, so this reader asks it of the
    ceremony's last event at or before SEQ."""
    seq, h = anchor.split(":")
    seq = int(seq)
    if seq > len(events) or events[seq - 1]["hash"] != h:
        return False
    mine = [ev["body"]["record"] for ev in events[:seq]
            if ev["type"] == "ceremony" and ev["body"].get("record", {}).get("id") == rec["id"]]
    return bool(mine) and agrees(mine[-1], rec)


# ---------------------------------------------------------------- section 12

CUSTOS_OID = "2.25.1981978833"


def oid_der(dotted):
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for a in [arcs[0] * 40 + arcs[1]] + arcs[2:]:
        enc = [a & 0x7F]
        while a > 0x7F:
            a >>= 7
            enc.append(0x80 | (a & 0x7F))
        body += bytes(reversed(enc))
    return bytes([6, len(body)]) + body


def der(b, p, want=None, path="certificate"):
    """One DER TLV at p: (tag, content start, end). Definite minimal lengths."""
    if p + 2 > len(b):
        raise Reject(path, "truncated DER")
    tag, ln, q = b[p], b[p + 1], p + 2
    if ln & 0x80:
        nb = ln & 0x7F
        if not 1 <= nb <= 3 or q + nb > len(b) or b[q] == 0:
            raise Reject(path, "bad DER length")
        ln = int.from_bytes(b[q:q + nb], "big")
        if ln < 0x80:
            raise Reject(path, "bad DER length")
        q += nb
    if q + ln > len(b) or (want is not None and tag != want):
        raise Reject(path, "bad DER")
    return tag, q, q + ln


def cert_parts(cert):
    """(SubjectPublicKeyInfo DER, {extension OID DER: value}) of an X.509
    certificate. python3-cryptography 38 cannot load a certificate with
    this OID (an arc above 2^28), so the walk is done here."""
    _, s, e = der(cert, 0, 0x30)
    if e != len(cert):
        raise Reject("certificate", "data after the certificate")
    _, p, tbs_end = der(cert, s, 0x30)
    if cert[p] == 0xA0:
        p = der(cert, p)[2]
    for _ in range(5):  # serial, signature, issuer, validity, subject
        p = der(cert, p)[2]
    _, _, e = der(cert, p, 0x30)
    key, p = cert[p:e], e
    exts = {}
    while p < tbs_end:
        tag, s, p = der(cert, p)
        if tag != 0xA3:
            continue
        _, q, qe = der(cert, s, 0x30)
        while q < qe:
            _, x, q = der(cert, q, 0x30)
            _, o, oe = der(cert, x, 6)
            nxt = oe
            if cert[nxt] == 0x01:
                nxt = der(cert, nxt)[2]
            _, v, ve = der(cert, nxt, 4)
            exts[cert[x:oe]] = cert[v:ve]
    return key, exts


def decode_cert_extension(value, key_spki=None, root="extension"):
    """Section 12's extension value; key_spki, when given, is the slot
    key the certificate is for."""
    r = Canon(value)

    def record(r, p, out):
        rec = read_record(r, p)
        if len(rec["cards"]) != 1:
            raise Reject(child(p, "cards"), "a certificate's record holds exactly one card")
        if key_spki is not None and rec["cards"][0]["key"] != hashlib.sha256(key_spki).hexdigest():
            raise Reject(f"{p}.cards[0].key", "not the slot key's fingerprint")
        return rec
    ext = r.obj(root, [("record", True, record), ("anchor", True, S(check_anchor))])
    r.end(root)
    return ext


def decode_cert(cert, root="extension"):
    key, exts = cert_parts(cert)
    if key[:len(SPKI_P256_PREFIX)] != SPKI_P256_PREFIX or len(key) != 91:
        raise Reject("certificate", "not a P-256 key")
    value = exts.get(oid_der(CUSTOS_OID))
    if value is None:
        raise Reject("certificate", "no custos extension")
    if value[:1] == b"\x30":
        return {"v1": decode_v1_cert_extension(value, key), "key": key}
    out = decode_cert_extension(value, key, root)
    out["key"] = key
    return out


# ---------------------------------------------------------------- section 13


def utf8_at(b, i):
    """The character at b[i] and its length, or (None, 1) as Go's
    utf8.DecodeRune gives for invalid bytes."""
    lead = b[i]
    n = 1 if lead < 0x80 else 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else \
        4 if 0xF0 <= lead <= 0xF4 else 0
    if n == 0:
        return None, 1
    try:
        return b[i:i + n].decode("utf-8"), n
    except UnicodeDecodeError:
        return None, 1


def show_text(b):
    """SPEC: the filter maps character by character (a leading or trailing
    space stays); the 64-byte limit applies to the filtered text, cut at a
    character boundary to at most 61 bytes, then "..." (64 in all)."""
    if isinstance(b, str):
        b = b.encode("utf-8", "surrogateescape")
    out, i = [], 0
    while i < len(b):
        c, n = utf8_at(b, i)
        out.append(c if c is not None and text_char_ok(c) else "?")
        i += n
    s = "".join(out)
    if len(s.encode()) <= 64:
        return s
    while len(s.encode()) > 61:
        s = s[:-1]
    return s + "..."


# ---------------------------------------------------------------- appendix, version 1


def decode_v1_token(data, root="token"):
    """SPEC: whitespace and standard JSON escapes are accepted (the text
    lists what is refused); serial may be a decimal string or integer,
    slot two hex digits; the sealed header is checked as in section 8."""
    if isinstance(data, str):
        data = data.encode()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Reject(root, "invalid UTF-8") from None

    def pairs(kv):
        out = {}
        for k, v in kv:
            if k in out:
                raise Reject(child(root, k), "member repeated")
            out[k] = v
        return out
    try:
        tok = json.loads(text, object_pairs_hook=pairs, parse_constant=lambda c: _bad(root, c))
    except json.JSONDecodeError as e:
        raise Reject(root, f"not JSON: {e}") from None
    if not isinstance(tok, dict):
        raise Reject(root, "not an object")
    want = {"type": True, "keyslots": True, "custos_version": True, "ceremony": True, "volume": True,
            "k": True, "n": True, "keyslot": True, "digest": True, "status": True, "replaces": False,
            "anchor": False, "cards": True}
    cwant = {"index": True, "serial": True, "slot": True, "fingerprint": True, "custodian": False,
             "commitment": True, "sealed": True}
    isint = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    isstr = lambda v: isinstance(v, str)  # noqa: E731

    def members(o, spec, p):
        if not isinstance(o, dict):
            raise Reject(p, "not an object")
        for k, v in o.items():
            if v is None:
                raise Reject(child(p, k), "null")
            if k not in spec:
                raise Reject(child(p, k), "member name differs in case" if k.lower() in spec else "unknown member")
        for k, req in spec.items():
            if req and k not in o:
                raise Reject(child(p, k), "missing")

    def need(cond, p, msg):
        if not cond:
            raise Reject(p, msg)

    members(tok, want, root)
    P = lambda k: child(root, k)  # noqa: E731
    need(tok["type"] == "custos", P("type"), "not custos")
    need(tok["custos_version"] == 1 and isint(tok["custos_version"]), P("custos_version"), "not 1")
    need(isstr(tok["ceremony"]) and re.fullmatch("[0-9a-f]{32}", tok["ceremony"]), P("ceremony"), "32 hex")
    need(isstr(tok["volume"]) and UUID_RE.fullmatch(tok["volume"]), P("volume"), "not a UUID")
    need(isint(tok["k"]) and 2 <= tok["k"] <= 255, P("k"), "out of range")
    need(isint(tok["n"]) and tok["k"] <= tok["n"] <= 255, P("n"), "out of range")
    need(isint(tok["keyslot"]) and 0 <= tok["keyslot"] <= 31, P("keyslot"), "out of range")
    need(tok["keyslots"] in ([], [str(tok["keyslot"])]), P("keyslots"), "not [] or the keyslot")
    need(isstr(tok["digest"]) and re.fullmatch("[0-9a-f]{64}", tok["digest"]), P("digest"), "64 hex")
    need(tok["status"] == "active", P("status"), "not active")
    if "replaces" in tok:
        need(isstr(tok["replaces"]) and re.fullmatch("[0-9a-f]{32}", tok["replaces"]), P("replaces"), "32 hex")
    if "anchor" in tok:
        need(isstr(tok["anchor"]), P("anchor"), "not a string")
        check_anchor(tok["anchor"], P("anchor"))
    need(isinstance(tok["cards"], list), P("cards"), "not an array")
    last = 0
    for i, c in enumerate(tok["cards"]):
        cp = f"{root}.cards[{i}]"
        C = lambda k: child(cp, k)  # noqa: E731
        members(c, cwant, cp)
        need(isint(c["index"]) and last < c["index"] <= tok["n"], C("index"), "out of range or order")
        last = c["index"]
        need((isint(c["serial"]) and 0 <= c["serial"] <= 4294967295) or
             (isstr(c["serial"]) and re.fullmatch("[1-9][0-9]{0,9}", c["serial"])), C("serial"), "bad serial")
        need(isstr(c["slot"]) and re.fullmatch("[0-9a-f]{2}", c["slot"]) and 0x82 <= int(c["slot"], 16) <= 0x95,
             C("slot"), "bad slot")
        need(isstr(c["fingerprint"]) and re.fullmatch("[0-9a-f]{64}", c["fingerprint"]), C("fingerprint"), "64 hex")
        need(isstr(c["commitment"]) and re.fullmatch("[0-9a-f]{64}", c["commitment"]), C("commitment"), "64 hex")
        if "custodian" in c:
            need(isstr(c["custodian"]), C("custodian"), "not a string")
        s = parse_sealed(b64std(c["sealed"], C("sealed")), C("sealed"))
        need((s["ceremony"].hex(), uuid_text(s["volume"]), s["k"], s["n"], s["index"], s["fingerprint"].hex()) ==
             (tok["ceremony"], tok["volume"], tok["k"], tok["n"], c["index"], c["fingerprint"]),
             C("sealed"), "sealed share header does not match")
    return tok


def decode_v1_cert_extension(value, key_spki=None, path="extension"):
    _, p, e = der(value, 0, 0x30, path)
    if e != len(value):
        raise Reject(path, "data after ShareCert")
    out = []
    for name, tag in (("version", 2), ("keyslot", 2), ("digest", 4), ("commitment", 4), ("anchor", 4), ("sealed", 4)):
        _, s, p = der(value, p, tag, child(path, name))
        v = value[s:p]
        if tag == 2:
            if len(v) != 1 or v[0] > 0x7F:  # (1) and (0..31): one content byte
                raise Reject(child(path, name), "bad INTEGER")
            v = v[0]
        out.append((name, v))
    if p != e:
        raise Reject(path, "extra fields")
    d = dict(out)
    if d["version"] != 1 or d["keyslot"] > 31:
        raise Reject(path, "bad version or keyslot")
    for name in ("digest", "commitment", "anchor"):
        if len(d[name]) != 32:
            raise Reject(child(path, name), "not 32 bytes")
    s = parse_sealed(d["sealed"], child(path, "sealed"))
    if key_spki is not None and s["fingerprint"] != hashlib.sha256(key_spki).digest():
        raise Reject(child(path, "sealed"), "sealed to another key than the slot's")
    return d


V1_BODY = ["id", "volume_uuid", "k", "n", "keyslot", "keyslot_salt", "cards", "digest", "status", "replaces",
           "replaced_by"]
V1_CARD = ["index", "serial", "fingerprint", "slot", "custodian", "commitment", "sealed_share"]


def check_v1_ceremony_body(v, p):
    """SPEC: the appendix gives member names and order only; types are not
    given (a [16]byte ID would be a JSON array of numbers in encoding/json,
    a []byte a base64 string), so only names and their order are checked."""
    def order(o, names, q):
        if not isinstance(o, dict):
            raise Reject(q, "not an object")
        pos = 0
        for k in o:
            if k not in names or names.index(k) < pos:
                raise Reject(child(q, k), "unknown or out of order")
            pos = names.index(k) + 1
    order(v, V1_BODY, p)
    for i, c in enumerate(v.get("cards") or []):
        order(c, V1_CARD, f"{p}.cards[{i}]")


# ---------------------------------------------------------------- writers (for the cases below)


def canon(v):
    """Section 7's form of a value built from dicts (in member order),
    lists, ints, True and strings."""
    if v is True:
        return "true"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, list):
        return "[" + ",".join(canon(x) for x in v) + "]"
    return "{" + ",".join(f'"{k}":{canon(x)}' for k, x in v.items() if not k.startswith("_")) + "}"


def event_line(seq, typ, body, prev, ceremony=None, actor="alice@host", time="2026-03-14T09:26:54.000000589Z"):
    c = f',"ceremony":"{ceremony}"' if ceremony else ""
    return (f'{{"seq":{seq},"time":"{time}","actor":{go_escape(actor)},"type":"{typ}"{c},'
            f'"body":{body},"prev":"{prev}"}}').encode()


def tlv(tag, content):
    n = len(content)
    ln = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + ln + content


def make_cert(point, ext_value, cn="custos share", signer_scalar=b"\x07" * 32):
    """A certificate as section 12 describes, built by hand (python3-
    cryptography 38 cannot encode this OID)."""
    alg = tlv(0x30, oid_der("1.2.840.10045.4.3.2"))
    name = tlv(0x30, tlv(0x31, tlv(0x30, oid_der("2.5.4.3") + tlv(0x0C, cn.encode()))))
    validity = tlv(0x30, tlv(0x17, b"260101000000Z") + tlv(0x17, b"360101000000Z"))
    ku = tlv(0x30, oid_der("2.5.29.15") + tlv(0x01, b"\xff") + tlv(0x04, tlv(0x03, b"\x03\x08")))
    ext = tlv(0x30, oid_der(CUSTOS_OID) + tlv(0x04, ext_value.encode() if isinstance(ext_value, str) else ext_value))
    tbs = tlv(0x30, tlv(0xA0, tlv(0x02, b"\x02")) + tlv(0x02, b"\x01") + alg + name + validity + name +
              spki(point) + tlv(0xA3, tlv(0x30, ku + ext)))
    signer = ec.derive_private_key(int.from_bytes(signer_scalar, "big"), ec.SECP256R1())
    sig = signer.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return tlv(0x30, tbs + alg + tlv(0x03, b"\x00" + sig))


def scalar(label):
    return hashlib.sha256(label.encode()).digest()


def fixture(k=2, n=3):
    """A complete ceremony built from the text: its secret, recipients,
    records, token, certificates and log."""
    cid, vol = bytes(range(0x10, 0x20)), "6a0e3f6c-2b4e-4d3a-9c1f-5e7d8a9b0c1d"
    secret = bytes(range(0x40, 0x60))
    coeffs = [[(i * 37 + j * 11 + 5) % 255 + 1 for j in range(k - 1)] for i in range(32)]
    xs = [(0x21 + 0x4D * j) % 255 + 1 for j in range(n)]
    values = shamir_split(secret, k, xs, coeffs)
    names = ["Ada Lovelace", "Émile Borel", "李雷", "Zoë (ops) #4", "Ωmega"]
    privs = [scalar(f"recipient {j + 1}") for j in range(n)]
    points = [point_of(ec.derive_private_key(int.from_bytes(p, "big"), ec.SECP256R1()).public_key()) for p in privs]
    frame = {"v": 2, "id": cid.hex(), "volume": vol, "k": k, "n": n, "keyslot": 1, "salt": "5a" * 32,
             "digest": secret_digest(secret, cid).hex()}
    cards = []
    for j in range(n):
        idx = j + 1
        header = cid + bytes.fromhex(vol.replace("-", "")) + bytes([idx, k, n])
        sealed = seal(header, points[j], values[j], scalar(f"ephemeral {idx}"))
        cards.append({"index": idx, "serial": str(10000001 + j), "slot": ["82", "83", "8a", "95", "90"][j % 5],
                      "custodian": names[j % len(names)], "key": hashlib.sha256(spki(points[j])).hexdigest(),
                      "attestation": hashlib.sha256(b"att %d" % idx).hexdigest(),
                      "commitment": commitment(cid, idx, values[j]).hex(),
                      "sealed": base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()})
    nosalt = {x: v for x, v in frame.items() if x != "salt"}
    lines, prev = [], "0" * 64

    def add(typ, body, cer=None):
        nonlocal prev
        line = event_line(len(lines) + 1, typ, body, prev, cer)
        lines.append(line)
        prev = hashlib.sha256(line).hexdigest()
        return f"{len(lines)}:{prev}"
    add("log.created", '{"schema":2}')
    add("ceremony", canon({"status": "open", "record": dict(nosalt, cards=[])}), cid.hex())
    anchors = {"open": add("ceremony", canon({"status": "open", "record": dict(frame, cards=[])}), cid.hex())}
    for j in range(n):
        anchors[f"card{j + 1}"] = anchors.get(f"after{j}", anchors["open"])
        anchors[f"after{j + 1}"] = add("ceremony", canon({"status": "open", "record": dict(frame, cards=cards[:j + 1])}),
                                       cid.hex())
    anchors["complete"] = anchors[f"after{n}"]
    add("ceremony", canon({"status": "active", "record": dict(frame, cards=cards)}), cid.hex())
    add("recover", '{"note":"a \\u003cstep\\u003e \\u0026 more"}', cid.hex())
    certs = [make_cert(points[j], canon({"record": dict(frame, cards=[cards[j]]), "anchor": anchors[f"card{j + 1}"]}))
             for j in range(n)]
    return {
        "secret": secret, "values": values, "privs": privs, "points": points, "frame": frame, "cards": cards,
        "record": canon(dict(frame, cards=cards)),
        "token_open": canon({"type": "custos", "keyslots": ["1"], "record": dict(frame, cards=[]),
                             "anchor": anchors["open"]}),
        "token": canon({"type": "custos", "keyslots": ["1"], "record": dict(frame, cards=cards),
                        "anchor": anchors["complete"]}),
        "certs": certs, "log": lines, "anchors": anchors,
    }


def indent(text):
    """An indented form like json-c's pretty printer (for section 10)."""
    return json.dumps(json.loads(text), indent=2, ensure_ascii=False).encode()


# ---------------------------------------------------------------- checks


class Tally:
    def __init__(self, name):
        self.name, self.ok, self.bad = name, 0, []

    def check(self, cond, what):
        if cond:
            self.ok += 1
        else:
            self.bad.append(what)

    def rejects(self, fn, path, what):
        """fn() must raise Reject at path (None: any path)."""
        try:
            fn()
        except Reject as e:
            self.check(path is None or e.path == path, f"{what}: rejected at {e.path!r} ({e.msg}), want {path!r}")
            return
        self.bad.append(f"{what}: accepted, want a reject at {path!r}")

    def accepts(self, fn, what):
        try:
            return fn()
        except Reject as e:
            self.bad.append(f"{what}: rejected at {e.path!r}: {e.msg}")


def check_vectors(v, t):
    """vectors.json, sections 1-6."""
    for c in v["recovery_keys"]:
        key, text = bytes.fromhex(c["key"]), c["text"]
        t.check(key_text(key) == text, f"key text of {c['key']}")
        for form in (text, text.upper(), text.replace("-", ""), f" \t{text}\r\n", text.replace("-", "", 3)):
            t.check(t.accepts(lambda: parse_key_text(form), f"read {form!r}") == key, f"read {form!r}")
    for c in v["shares"]:
        cid, vol, value = bytes.fromhex(c["ceremony"]), bytes.fromhex(c["volume"].replace("-", "")), bytes.fromhex(c["value"])
        env = make_envelope(cid, vol, c["index"], c["k"], c["n"], value)
        t.check(env.hex() == c["envelope"], f"envelope of share {c['index']}")
        got = t.accepts(lambda: parse_envelope(bytes.fromhex(c["envelope"])), "parse envelope")
        t.check(got == {"ceremony": cid, "volume": vol, "index": c["index"], "k": c["k"], "n": c["n"], "value": value},
                f"parsed envelope {c['index']}")
        t.check(commitment(cid, c["index"], value).hex() == c["commitment"], f"commitment {c['index']}")
    for c in v["digests"]:
        t.check(secret_digest(bytes.fromhex(c["secret"]), bytes.fromhex(c["ceremony"])).hex() == c["digest"], "digest")
    for c in v["sealed"]:
        env = parse_envelope(bytes.fromhex(c["share_envelope"]))
        sealed, R = bytes.fromhex(c["sealed"]), bytes.fromhex(c["recipient_public"])
        priv = bytes.fromhex(c["recipient_private"])
        s = t.accepts(lambda: parse_sealed(sealed), "parse sealed")
        t.check(point_of(ec.derive_private_key(int.from_bytes(priv, "big"), ec.SECP256R1()).public_key()) == R,
                "recipient public key of its private scalar")
        t.check(hashlib.sha256(spki(R)).hexdigest() == c["recipient_fingerprint"] == s["fingerprint"].hex(),
                "recipient fingerprint")
        t.check(sealed[4:39] == bytes.fromhex(c["share_envelope"])[4:39], "sealed header is the envelope's")
        z = ecdh(priv, s["ephemeral"])
        t.check(z.hex() == c["shared_secret"], "shared secret z")
        t.check(ecdh(bytes.fromhex(c["ephemeral_private"]), R) == z, "z from the ephemeral side")
        t.check(seal_key(z, s["ephemeral"], R).hex() == c["key"], "HKDF key")
        t.check(t.accepts(lambda: open_sealed(sealed, R, z=z), "open with z") == env["value"], "open with z")
        t.check(t.accepts(lambda: open_sealed(sealed, R, private=priv), "open") == env["value"], "open with scalar")
        t.check(seal(sealed[4:39], R, env["value"], bytes.fromhex(c["ephemeral_private"])) == sealed, "seal again")
        wrong = bytes.fromhex(c["wrong_recipient_private"])
        wR = point_of(ec.derive_private_key(int.from_bytes(wrong, "big"), ec.SECP256R1()).public_key())
        t.rejects(lambda: open_sealed(sealed, wR, private=wrong), "sealed", "open for the wrong recipient")
        t.rejects(lambda: open_sealed(sealed[:39] + hashlib.sha256(spki(wR)).digest() + sealed[71:], wR, private=wrong),
                  "sealed", "open for the wrong recipient, fingerprint forged")
        for off in (3, 4, 20, 36, 37, 39, 72, 137, 138, len(sealed) - 1):
            bad = bytearray(sealed)
            bad[off] ^= 1
            t.rejects(lambda: open_sealed(bytes(bad), R, private=priv), None, f"open with byte {off} changed")
        t.rejects(lambda: parse_sealed(sealed + b"\0"), "sealed", "byte after the ciphertext")
    for c in v["combine"]:
        cer = c["ceremony"]
        vals = []
        for e in c["share_envelopes"]:
            s = parse_envelope(bytes.fromhex(e))
            t.check((s["ceremony"].hex(), uuid_text(s["volume"]), s["k"], s["n"]) ==
                    (cer["id"], cer["volume"], cer["k"], cer["n"]), "envelope names the ceremony")
            t.check(commitment(s["ceremony"], s["index"], s["value"]).hex() == cer["commitments"][s["index"] - 1],
                    f"commitment of share {s['index']}")
            t.check(len(s["value"]) == cer["secret_size"] + 1, "value length")
            vals.append(s["value"])
        secret = shamir_combine(vals)
        t.check(secret.hex() == c["secret"], "combined secret")
        t.check(secret_digest(secret, bytes.fromhex(cer["id"])).hex() == cer["digest"], "digest of the secret")


def sub(text, old, new, count=1):
    if isinstance(text, bytes):
        text = text.decode()
    assert old in text, old
    return text.replace(old, new, count)


def rechain(lines):
    """Rewrites each event's prev after an edit, so that only the edit is at fault."""
    out, prev = [], "0" * 64
    for line in lines:
        line = re.sub(rb'"prev":"[0-9a-f]{64}"\}$', b'"prev":"' + prev.encode() + b'"}', line)
        out.append(line)
        prev = hashlib.sha256(line).hexdigest()
    return out


def check_own(t):
    """Cases written from the text alone, with the paths this reader gives
    (see the SPEC: notes); they keep the reader honest until records.json
    comes, and keep checking what records.json does not cover."""
    f = fixture()
    key = bytes(range(32))
    text = key_text(key)
    for bad, at in ((text[:7] + "-" + text[7:], 7), (text.replace("-", "--", 1), 9), ("-" + text, 0),
                    (text + "-", 71), (text[:70], 70), (text + "c", 71), (text[:3] + "a" + text[4:], 3),
                    (text[:8] + " " + text[9:], 8), ("\u03bd" + text[1:], 0), (" " + text[:-1] + "x ", 71),
                    (text.replace("-", ""), None)):
        if at is None:
            t.check(parse_key_text(bad) == key, "no dashes")
        else:
            t.rejects(lambda: parse_key_text(bad), f"character {at}", f"key text {bad!r}")

    env = bytes.fromhex("43534801101112131415161718191a1b1c1d1e1f6a0e3f6c2b4e4d3a9c1f5e7d8a9b0c1d01020300020102")
    t.accepts(lambda: parse_envelope(env), "small envelope")
    for off, val, what in ((0, 0x44, "magic"), (3, 2, "version"), (36, 0, "index 0"), (36, 4, "index > n"),
                           (37, 1, "k 1"), (38, 1, "n < k"), (40, 1, "length 1"), (40, 3, "length past the end"),
                           (42, 0, "x 0")):
        bad = bytearray(env)
        bad[off] = val
        t.rejects(lambda: parse_envelope(bytes(bad)), "envelope", f"envelope {what}")
    t.rejects(lambda: parse_envelope(env + b"\0"), "envelope", "envelope with a trailing byte")
    t.rejects(lambda: parse_envelope(env[:40]), "envelope", "short envelope")

    # Sections 7 and 8: a record, then one fault at a time.
    rec = f["record"]
    t.accepts(lambda: decode_record(rec), "record")
    c0, c1 = f["cards"][0], f["cards"][1]
    bad_records = [
        (sub(rec, '"v":2', '"v": 2'), "record.v"), (rec + "\n", "record"), ("\ufeff" + rec, "record"),
        (sub(rec, '"v":2', '"v":1'), "record.v"), (sub(rec, '"v":2', '"v":"2"'), "record.v"),
        (sub(rec, f'"id":"{"10111213" * 1}', '"id":"1011121C'), "record.id"),
        (sub(rec, '"id":"101112131415161718191a1b1c1d1e1f"', '"id":"' + "0" * 32 + '"'), "record.id"),
        (sub(rec, '"6a0e3f6c', '"6A0E3F6C'), "record.volume"), (sub(rec, '"k":2', '"k":1'), "record.k"),
        (sub(rec, '"n":3', '"n":1'), "record.n"), (sub(rec, '"n":3', '"n":256'), "record.n"),
        (sub(rec, '"keyslot":1', '"keyslot":32'), "record.keyslot"),
        (sub(rec, '"keyslot":1', '"keyslot":01'), "record.keyslot"),
        (sub(rec, '"keyslot":1', '"keyslot":-1'), "record.keyslot"),
        (sub(rec, '"keyslot":1', '"keyslot":1.0'), "record.keyslot"),
        (sub(rec, '"keyslot":1', '"keyslot":1e0'), "record.keyslot"),
        (sub(rec, '"salt":"5a', '"salt":"a'), "record.salt"), (sub(rec, '"salt":"5a', '"salt":"5A'), "record.salt"),
        (sub(rec, '"salt":"', '"salt":"' + "00" * 256), "record.salt"),
        (sub(rec, '"digest":"7a', '"digest":"7'), "record.digest"),
        (sub(rec, '"digest"', '"replaces":"101112131415161718191a1b1c1d1e1f","digest"'), "record.replaces"),
        (sub(rec, ',"cards"', ',"set":{"name":"-x","version":1,"fingerprint":"' + "0" * 64 + '"},"cards"'),
         "record.set.name"),
        (sub(rec, ',"cards"', ',"set":{"name":"x","version":0,"fingerprint":"' + "0" * 64 + '"},"cards"'),
         "record.set.version"),
        (sub(rec, ',"cards"', ',"set":{"name":"x","fingerprint":"' + "0" * 64 + '","version":1},"cards"'),
         "record.set.version"),
        (sub(rec, ',"cards"', ',"allow_unattested":false,"cards"'), "record.allow_unattested"),
        (sub(rec, ',"cards"', ',"allow_unattested":null,"cards"'), "record.allow_unattested"),
        (sub(rec, ',"cards"', ',"x":1,"cards"'), "record.x"), (sub(rec, '"k":2', '"K":2'), "record.K"),
        (sub(rec, '"k":2', '"k":2,"k":2'), "record.k"),
        (sub(rec, '"id":"101112131415161718191a1b1c1d1e1f","volume":"6a0e3f6c-2b4e-4d3a-9c1f-5e7d8a9b0c1d"',
             '"volume":"6a0e3f6c-2b4e-4d3a-9c1f-5e7d8a9b0c1d","id":"101112131415161718191a1b1c1d1e1f"'), "record.id"),
        (re.sub('"digest":"[0-9a-f]{64}",', "", rec), "record.digest"),
        (sub(rec, '"custodian":"Ada', '"custodian":"\\u0041da'), "record.cards[0].custodian"),
        (sub(rec, '"custodian":"Ada', '"custodian":"<Ada'), "record.cards[0].custodian"),
        (sub(rec, '"custodian":"Ada', '"custodian":"\u202eAda'), "record.cards[0].custodian"),
        (sub(rec, '"custodian":"Ada', '"custodian":"\u200bAda'), "record.cards[0].custodian"),
        (sub(rec, '"custodian":"Ada', '"custodian":" Ada'), "record.cards[0].custodian"),
        (sub(rec, '"custodian":"Ada', '"custodian":"' + "é" * 28), "record.cards[0].custodian"),
        (sub(rec, '"custodian":"Ada', '"custodian":"\ue000Ada'), "record.cards[0].custodian"),
        (sub(rec, '"custodian":"Ada', '"custodian":"\U000e0001Ada'), "record.cards[0].custodian"),
        (sub(rec, '"index":1', '"index":0'), "record.cards[0].index"),
        (sub(rec, '"index":3', '"index":4'), "record.cards[2].index"),
        (sub(rec, '"index":2', '"index":1'), "record.cards[1].index"),
        (sub(rec, '"serial":"10000002"', '"serial":"10000001"'), "record.cards[1].serial"),
        (sub(rec, '"serial":"10000001"', '"serial":"010000001"'), "record.cards[0].serial"),
        (sub(rec, '"serial":"10000001"', '"serial":"4294967296"'), "record.cards[0].serial"),
        (sub(rec, '"serial":"10000001"', '"serial":"0"'), "record.cards[0].serial"),
        (sub(rec, '"serial":"10000001"', '"serial":10000001'), "record.cards[0].serial"),
        (sub(rec, '"slot":"82"', '"slot":"81"'), "record.cards[0].slot"),
        (sub(rec, '"slot":"8a"', '"slot":"8A"'), "record.cards[2].slot"),
        (sub(rec, '"slot":"82"', '"slot":"96"'), "record.cards[0].slot"),
        (sub(rec, c1["key"], c0["key"]), "record.cards[1].key"),
        (sub(rec, '"attestation":"' + c0["attestation"] + '",', ""), "record.cards[0].attestation"),
        (sub(rec, c0["commitment"], c0["commitment"][:-2]), "record.cards[0].commitment"),
        (sub(rec, c0["sealed"], c0["sealed"] + "="), "record.cards[0].sealed"),
        (sub(rec, c0["sealed"], c0["sealed"][:-1] + "R"), "record.cards[0].sealed"),
        (sub(rec, c0["sealed"], c0["sealed"].replace("_", "/").replace("-", "+")), "record.cards[0].sealed"),
        (sub(rec, c0["sealed"], c1["sealed"]), "record.cards[0].sealed"),
        (sub(rec, '"cards":[', '"cards":[ '), "record.cards[0]"),
        (rec + "{}", "record"),
        (rec.replace("}]}", "},{}]}"), "record.cards[3]"),
    ]
    assert c0["sealed"][-1] == "Q", "the unused-bits case needs a last character with zero low bits"
    for i, (bad, path) in enumerate(bad_records):
        t.rejects(lambda: decode_record(bad), path, f"record case {i}")
    open_rec = canon(dict(f["frame"], cards=[]))
    t.accepts(lambda: decode_record(open_rec), "open record")
    unatt = sub(sub(rec, '"attestation":"' + c0["attestation"] + '",', ""), ',"cards"', ',"allow_unattested":true,"cards"')
    t.accepts(lambda: decode_record(unatt), "unattested card in a record that allows it")
    t.accepts(lambda: decode_record(sub(rec, '"custodian":"Ada', '"custodian":"\U0001FA75 Ada')), "Unicode 15 symbol")
    t.accepts(lambda: decode_record(sub(rec, '"custodian":"Ada Lovelace"', '"custodian":"' + "é" * 32 + '"')),
              "64-byte name")
    t.accepts(lambda: decode_record(sub(rec, ',"cards"', ',"replaces":"' + "ab" * 16 + '","cards"')), "a rotation")
    full = sub(open_rec, ',"cards"', ',"replaces":"' + "ab" * 16 + '","set":{"name":"ops.eu-1","version":3,'
               '"fingerprint":"' + "cd" * 32 + '"},"allow_unattested":true,"cards"')
    t.accepts(lambda: decode_record(full), "record with every optional member")
    k2 = fixture(2, 2)
    extra = k2["record"].replace("}]}", "}," + canon(k2["cards"][1]).replace('"index":2', '"index":3') + "]}")
    t.rejects(lambda: decode_record(extra), "record.cards[2]", "more than n cards")

    # Section 10.
    tok = f["token"]
    t.accepts(lambda: decode_token(tok), "token")
    t.accepts(lambda: decode_token(f["token_open"]), "open token")
    t.accepts(lambda: decode_token(indent(tok), indented=True), "indented token")
    t.accepts(lambda: decode_token(sub(tok, '"keyslots":["1"]', '"keyslots":[]')), "token after luksKillSlot")
    for bad, path in ((sub(tok, '"custos"', '"Custos"'), "token.type"),
                      (sub(tok, '"keyslots":["1"]', '"keyslots":["2"]'), "token.keyslots[0]"),
                      (sub(tok, '"keyslots":["1"]', '"keyslots":["01"]'), "token.keyslots[0]"),
                      (sub(tok, '"keyslots":["1"]', '"keyslots":[1]'), "token.keyslots[0]"),
                      (sub(tok, '"keyslots":["1"]', '"keyslots":["1","2"]'), "token.keyslots[1]"),
                      (canon({"type": "custos", "keyslots": ["1"], "record": dict(f["frame"], cards=f["cards"][:2]),
                              "anchor": "1:" + "0" * 64}), "token.record.cards"),
                      (re.sub('"anchor":"[0-9]+:', '"anchor":"0:', tok), "token.anchor"),
                      (re.sub('"anchor":"[0-9]+:', '"anchor":"07:', tok), "token.anchor"),
                      (re.sub('"anchor":"([0-9]+):..', r'"anchor":"\1:AB', tok), "token.anchor"),
                      (sub(tok, '"custodian":"Ada', '"custodian":"\\u0041da'), "token.record.cards[0].custodian")):
        t.rejects(lambda: decode_token(bad), path, f"token {bad[:0]}{path}")
    t.rejects(lambda: decode_token(indent(sub(tok, '"custodian":"Ada', '"custodian":"<Ada')).replace(b"<", b"\\u003c"),
                                   indented=True), "token.record.cards[0].custodian", "indented token with an escape")

    # Section 12.
    for j, cert in enumerate(f["certs"]):
        d = t.accepts(lambda: decode_cert(cert), f"certificate {j + 1}")
        t.check(d and d["record"]["cards"][0]["index"] == j + 1, f"certificate {j + 1} holds card {j + 1}")
    ext1 = canon({"record": dict(f["frame"], cards=[f["cards"][0]]), "anchor": f["anchors"]["card1"]})
    t.rejects(lambda: decode_cert(make_cert(f["points"][1], ext1)), "extension.record.cards[0].key",
              "certificate for another key")
    t.rejects(lambda: decode_cert(make_cert(f["points"][0], canon({"record": dict(f["frame"], cards=f["cards"][:2]),
                                                                   "anchor": f["anchors"]["card1"]}))),
              "extension.record.cards", "certificate with two cards")
    t.rejects(lambda: decode_cert(make_cert(f["points"][0], ext1 + " ")), "extension", "extension with a space")
    t.rejects(lambda: decode_cert(make_cert(f["points"][0], sub(ext1, '"anchor"', '"Anchor"'))), "extension.Anchor",
              "extension with a case-variant name")

    # Sections 9 and 11.
    log = f["log"]
    events = t.accepts(lambda: verify_chain(log), "log")
    tokd, okd = decode_token(tok), decode_token(f["token_open"])
    t.check(anchor_good(events, tokd["anchor"], tokd["record"]), "complete token's anchor")
    t.check(anchor_good(events, okd["anchor"], okd["record"]), "open token's anchor")
    for j, cert in enumerate(f["certs"]):
        d = decode_cert(cert)
        t.check(anchor_good(events, d["anchor"], d["record"]), f"certificate {j + 1}'s anchor")
    t.check(not anchor_good(events, "1:" + events[0]["hash"], tokd["record"]), "anchor before the ceremony")
    t.check(not anchor_good(events, "9:" + events[0]["hash"], tokd["record"]), "anchor past the log")
    t.check(not anchor_good(events, "6:" + events[0]["hash"], tokd["record"]), "anchor with a wrong hash")
    forged = decode_token(sub(tok, '"serial":"10000002"', '"serial":"10000009"'))
    t.check(not anchor_good(events, tokd["anchor"], forged["record"]), "anchor of a token whose card differs")
    rolled = verify_chain(log[:4])
    t.check(not anchor_good(rolled, tokd["anchor"], tokd["record"]), "anchor against a log rolled back")

    def bad_log(i, old, new, path, what, chain=True):
        lines = list(log)
        lines[i] = sub(lines[i], old, new).encode()
        if chain:
            lines = rechain(lines)
        t.rejects(lambda: verify_chain(lines), path, what)
    bad_log(1, '"seq":2', '"seq":3', "log[1].seq", "seq gap")
    bad_log(2, '"prev":"', '"prev":"0', "log[2].prev", "prev of another event", chain=False)
    bad_log(0, '"prev":"0', '"prev":"1', "log[0].prev", "first prev not zero", chain=False)
    bad_log(0, "2026-03-14", "2026-02-30", "log[0].time", "no such date")
    bad_log(0, "00589Z", "005890Z", "log[0].time", "fraction with a trailing zero")
    bad_log(0, ".000000589Z", "+00:00", "log[0].time", "offset instead of Z")
    bad_log(0, '"alice@host"', '"alice<host"', "log[0].actor", "actor with an unescaped <")
    bad_log(0, '"alice@host"', '"\\u0061lice"', "log[0].actor", "actor with an escape Go would not write")
    bad_log(0, '"alice@host"', '"alice\\u0007"', "log[0].actor", "actor with a control character")
    bad_log(0, '"alice@host"', '""', "log[0].actor", "empty actor")
    bad_log(0, '"log.created"', '"Log.created"', "log[0].type", "type with upper case")
    bad_log(0, '"body":{', '"body": {', "log[0].body", "space before the body")
    bad_log(0, '"seq":1,', '"seq":1,"x":1,', "log[0].x", "unknown event member")
    bad_log(0, '"seq":1,"time":"2026-03-14T09:26:54.000000589Z"', '"time":"2026-03-14T09:26:54.000000589Z","seq":1',
            "log[0].seq", "members out of order")
    bad_log(2, '"keyslot":1', '"keyslot":2', "log[2].body.record.keyslot", "frame changed by adding the salt")
    bad_log(3, '"keyslot":1', '"keyslot":2', "log[3].body.record.keyslot", "frame changed after the salt")
    bad_log(4, '"serial":"10000001"', '"serial":"10000009"', "log[4].body.record.cards[0]", "a card changed")
    bad_log(5, '"status":"open"', '"status":"retired"', "log[5].body.status", "open to retired")
    bad_log(1, '"status":"open"', '"status":"abandoned"', "log[1].body.status", "first record abandoned")
    bad_log(4, '"status":"open"', '"status":"active"', "log[4].body.record.cards", "active with fewer than n cards")
    bad_log(1, '"ceremony":"1011', '"ceremony":"2011', "log[1].ceremony", "ceremony member not the record's id")
    bad_log(1, ',"cards"', ',"replaces":"' + "ab" * 16 + '","cards"', "log[1].body.record.replaces",
            "replaces a ceremony the log does not hold")
    t.accepts(lambda: verify_chain(rechain(log[:7] + [sub(log[6], '"status":"active"', '"status":"retired"')
                                                      .replace('"seq":7', '"seq":8').encode()])), "active to retired")
    v1body = '{"id":"EBESExQVFhcYGRobHB0eHw==","volume_uuid":"x","k":2,"n":3,"cards":[{"index":1,"serial":5}],"status":"active"}'
    t.accepts(lambda: verify_chain(rechain(log[:1] + [event_line(2, "ceremony", v1body, "0" * 64, "ab" * 16)])),
              "version 1 ceremony event")
    t.rejects(lambda: verify_chain(rechain(log[:1] + [event_line(2, "ceremony", v1body.replace('"k"', '"kk"'), "0" * 64)])),
              "log[1].body.kk", "version 1 ceremony event with an unknown member")
    t.accepts(lambda: decode_event(event_line(1, "card", '{"serial":"1","slot":"82","fingerprint":"ab",'
                                                         '"attestation":"AQID"}', "0" * 64)), "card event")
    t.rejects(lambda: decode_event(event_line(1, "card", '{"serial":"1","slot":"82","fingerprint":"ab",'
                                                         '"attestation":"AQI"}', "0" * 64)), "event.body.attestation",
              "card event with bad base64")
    t.rejects(lambda: decode_event(event_line(1, "rollcall", '{"ceremony":"x","serial":"1","fingerprint":"ab",'
                                                             '"ok":"yes"}', "0" * 64)), "event.body.ok", "rollcall ok")
    t.check(decode_event(event_line(1, "x", '{"a":"\\n\\t\\u003c\\u2028é"}', "0" * 64, actor='bob "b" \\ <x>'))
            ["actor"] == 'bob "b" \\ <x>', "actor in Go's escaping")
    t.rejects(lambda: decode_event(event_line(1, "x", '{"a":"\\u000a"}', "0" * 64)), "event.body.a",
              "body string not in Go's escaping")

    # Section 13.
    for raw, want in ((b"Ada \x1b[31mred", "Ada ?[31mred"), (b"\xe2\x82", "??"), (b"a\xffb", "a?b"),
                      ("\u202egnp.exe".encode(), "?gnp.exe"), (b"<b>&", "?b??"), ("é".encode() * 40, "é" * 30 + "..."),
                      (b"a" * 64, "a" * 64), (b"a" * 65, "a" * 61 + "..."), ("\U0001FA75".encode(), "\U0001FA75"),
                      (b"\xed\xa0\x80", "???"), (b"\xc0\xaf", "??"), (b"tab\there", "tab?here")):
        t.check(show_text(raw) == want, f"filter {raw!r}: {show_text(raw)!r}, want {want!r}")

    # Appendix: version 1 token and certificate extension.
    c = f["cards"][0]
    v1card = {"index": 1, "serial": 10000001, "slot": "82", "fingerprint": c["key"], "custodian": "Ada",
              "commitment": c["commitment"],
              "sealed": base64.b64encode(b64url(c["sealed"], "")).decode()}
    v1 = {"type": "custos", "keyslots": ["1"], "custos_version": 1, "ceremony": f["frame"]["id"],
          "volume": f["frame"]["volume"], "k": 2, "n": 3, "keyslot": 1, "digest": f["frame"]["digest"],
          "status": "active", "anchor": f["anchors"]["open"], "cards": [v1card]}
    v1t = json.dumps(v1)
    t.accepts(lambda: decode_v1_token(v1t), "version 1 token")
    t.accepts(lambda: decode_v1_token(json.dumps(dict(reversed(list(v1.items()))), indent=1)), "v1 token, any order")
    for bad, path in ((sub(v1t, '"status": "active"', '"status": null'), "token.status"),
                      (sub(v1t, '"k": 2', '"k": 2, "k": 2'), "token.k"),
                      (sub(v1t, '"k": 2', '"K": 2'), "token.K"), (sub(v1t, '"k": 2', '"z": 1, "k": 2'), "token.z"),
                      (v1t + "x", "token"), (sub(v1t, '"Ada"', '"A\xe9"').encode("latin-1"), "token"),
                      (sub(v1t, c["key"], c["key"].upper()), "token.cards[0].fingerprint"),
                      (sub(v1t, '"slot": "82"', '"slot": "82", "slot": "83"'), "token.slot"),
                      (sub(v1t, v1card["sealed"], v1card["sealed"].rstrip("=")), "token.cards[0].sealed"),
                      (sub(v1t, '"custos_version": 1', '"custos_version": true'), "token.custos_version")):
        t.rejects(lambda: decode_v1_token(bad), path, f"v1 token {path}")
    sealed0 = b64url(c["sealed"], "")
    share_cert = tlv(0x30, tlv(2, b"\x01") + tlv(2, b"\x01") + tlv(4, bytes(32)) + tlv(4, bytes(32)) +
                     tlv(4, bytes(32)) + tlv(4, sealed0))
    d = t.accepts(lambda: decode_cert(make_cert(f["points"][0], share_cert)), "v1 certificate")
    t.check(d and d["v1"]["sealed"] == sealed0, "v1 certificate's sealed share")
    t.rejects(lambda: decode_cert(make_cert(f["points"][1], share_cert)), "extension.sealed", "v1 cert, another key")
    t.rejects(lambda: decode_v1_cert_extension(share_cert + b"\0"), "extension", "v1 extension, trailing byte")
    short = tlv(0x30, tlv(2, b"\x01") + tlv(2, b"\x01") + tlv(4, bytes(31)) + tlv(4, bytes(32)) +
                tlv(4, bytes(32)) + tlv(4, sealed0))
    t.rejects(lambda: decode_v1_cert_extension(short), "extension.digest", "v1 extension, short digest")


# ---------------------------------------------------------------- records.json


def check_records(v, t):
    """records.json, sections 7-12: its layout is read in check_record_file."""
    check_record_file(v, t)


def check_record_file(v, t):
    raise NotImplementedError("records.json layout not known yet")


def main(argv):
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        print("usage: spec_decoder.py DIR (the directory holding vectors.json and records.json)", file=sys.stderr)
        return 2
    failed = 0
    runs = [("own cases (from the text)", None, check_own),
            ("vectors.json", os.path.join(argv[1], "vectors.json"), check_vectors),
            ("records.json", os.path.join(argv[1], "records.json"), check_records)]
    for name, path, fn in runs:
        t = Tally(name)
        if path is not None:
            if not os.path.exists(path):
                print(f"{name}: absent")
                failed += name == "vectors.json"
                continue
            with open(path, "rb") as fh:
                data = json.loads(fh.read().decode("utf-8"))
            fn(data, t)
        else:
            fn(t)
        for b in t.bad:
            print(f"{name}: MISMATCH: {b}")
        print(f"{name}: {t.ok} checks passed, {len(t.bad)} failed")
        failed += bool(t.bad)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
