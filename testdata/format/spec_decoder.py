#!/usr/bin/python3
"""An independent decoder of docs/FORMAT.md, written from that text alone.

It shares no code with custos: it checks custos's vectors a second time, so
that a format and its reader cannot drift apart unnoticed.

    /usr/bin/python3 testdata/format/spec_decoder.py testdata/format

checks the vector files of the directory (vectors.json: sections 1-6;
records.json: sections 7-12 and the appendix, with the paths of section
7's "Paths"; sets.json: section 14), runs its own cases written from the text (sections 1, 3, 11's
event records, 12's certificate as DER, 13 and the appendix's certificate,
which records.json does not cover), prints one line per set with its counts
and exits non-zero on any mismatch or a missing file.

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

    def __init__(self, path, msg, layer="codec"):
        super().__init__(f"{path or '(top)'}: {msg}")
        self.path, self.msg, self.layer = path, msg, layer


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
    """156 to 410 bytes (section 8), C = the bytes after the header. SPEC:
    E must be a point of P-256 (the text asks only for 0x04 || X || Y)."""
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


UUID_RE = re.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_uuid(s, p):
    if not UUID_RE.fullmatch(s):
        raise Reject(p, "not a lower-case LUKS UUID")
    return s


def not_zero(s, p):
    if set(s) == {"0"}:
        raise Reject(p, "all zero")
    return s


def check_anchor(s, path):
    """Section 9: SEQ:HASH, SEQ 1 to 2^64-1 without leading zeros."""
    seq, colon, h = s.partition(":")
    if not colon:
        raise Reject(path, "anchor without ':'")
    if not re.fullmatch("[1-9][0-9]*", seq) or int(seq) > (1 << 64) - 1:
        raise Reject(path, "anchor event number: 1 to 18446744073709551615, no leading zero")
    check_hex(h, path, 64)
    return s


class Canon:
    """Reads section 7's form byte by byte, checking each value as it is
    read, and names the first byte it cannot accept by the path section 7
    ("Paths") gives. loose=True reads a version 1 token (appendix):
    whitespace between tokens, members in any order."""

    def __init__(self, data, loose=False):
        self.d, self.p, self.loose = data if isinstance(data, bytes) else data.encode(), 0, loose

    def peek(self):
        if self.loose:
            while self.d[self.p:self.p + 1] in (b" ", b"\t", b"\r", b"\n"):
                self.p += 1
        return self.d[self.p:self.p + 1]

    def found(self):
        return repr(self.d[self.p:self.p + 1].decode("latin-1")) if self.p < len(self.d) else "end of input"

    def expect(self, ch, path, what=None):
        if self.peek() != ch:
            raise Reject(path, f"unexpected {self.found()}, want {what or repr(ch.decode())}")
        self.p += 1

    def begin(self, path):
        if self.d.startswith(b"\xef\xbb\xbf"):
            raise Reject(path, "byte order mark")

    def end(self, path):
        if self.peek():
            raise Reject(path, "trailing data")

    def string(self, path, escapes=False):
        """A string's value; escapes=True only where a member allows JSON escapes."""
        self.expect(b'"', path, "a string")
        i = self.p
        while True:
            if i >= len(self.d):
                raise Reject(path, "unterminated string")
            c = self.d[i]
            if c == 0x5C:
                if not escapes:
                    raise Reject(path, "escape in string")
                i += 2
                continue
            if c == 0x22:
                break
            i += 1
        raw, self.p = self.d[self.p:i], i + 1
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Reject(path, "invalid UTF-8") from None
        if any(ord(ch) < 0x20 for ch in s):
            raise Reject(path, "control character in string")
        if escapes and "\\" in s:
            try:
                s = json.loads(f'"{s}"')
                s.encode("utf-8")
            except (ValueError, UnicodeError):
                raise Reject(path, "bad escape") from None
        return s

    def key(self, path):
        start = self.p
        try:
            return self.string(path)
        except Reject as e:
            self.p = start
            raise Reject(path, "escape in member name" if "escape" in e.msg else e.msg) from None

    def integer(self, path, lo=0, hi=None, signed=False):
        self.peek()
        m = re.compile(rb"-?[0-9]+").match(self.d, self.p)
        if self.d[self.p:self.p + 1] == b"+" or (m and m.group().startswith(b"-") and not signed):
            raise Reject(path, "signed integer")
        if not m:
            raise Reject(path, f"unexpected {self.found()}, want an integer")
        digits, nxt = m.group().lstrip(b"-"), self.d[m.end():m.end() + 1]
        if nxt and nxt in b".eE":
            raise Reject(path, "not an integer (fraction or exponent)")
        if len(digits) > 1 and digits.startswith(b"0"):
            raise Reject(path, "leading zero")
        self.p, v = m.end(), int(m.group())
        if v < lo or (hi is not None and v > hi):
            raise Reject(path, f"{v} out of range {lo}-{hi}")
        return v

    def true(self, path):
        self.peek()
        if not self.d.startswith(b"true", self.p):
            raise Reject(path, f"unexpected {self.found()}, want true")
        self.p += 4
        return True

    def null(self):
        if self.peek() == b"n" and self.d.startswith(b"null", self.p):
            self.p += 4
            return True
        return False

    def obj(self, path, members, ordered=True):
        """members: [(name, required, read(reader, path, members so far))],
        in section 7's order when ordered."""
        self.expect(b"{", path, "an object")
        names = [m[0] for m in members]
        out, last = {}, -1
        if self.peek() == b"}":
            self.p += 1
        else:
            while True:
                if self.peek() != b'"':
                    raise Reject(path, f"unexpected {self.found()}, want a member name")
                key = self.key(path)
                if key not in names:
                    same = [n for n in names if n.encode().lower() == key.encode().lower()]
                    if same:
                        raise Reject(child(path, same[0]), f"member {key!r} differs from {same[0]!r} only in case")
                    raise Reject(path, f"unknown member {key!r}")
                kp, i = child(path, key), names.index(key)
                if key in out:
                    raise Reject(kp, "duplicate member")
                if ordered:
                    if i < last:
                        raise Reject(kp, "member out of order")
                    for name, required, _ in members[last + 1:i]:
                        if required:
                            raise Reject(child(path, name), "missing")
                    last = i
                self.expect(b":", kp)
                out[key] = members[i][2](self, kp, out)
                c = self.peek()
                if c == b",":
                    self.p += 1
                    continue
                if c != b"}":
                    raise Reject(kp, f"unexpected {self.found()}, want ',' or '}}' after the value")
                self.p += 1
                break
        for name, required, _ in members:
            if required and name not in out:
                raise Reject(child(path, name), "missing")
        return out

    def array(self, path, read):
        self.expect(b"[", path, "an array")
        out = []
        if self.peek() == b"]":
            self.p += 1
            return out
        while True:
            ep = f"{path}[{len(out)}]"
            out.append(read(self, ep, out))
            c = self.peek()
            if c == b",":
                self.p += 1
            elif c == b"]":
                self.p += 1
                return out
            else:
                raise Reject(ep, f"unexpected {self.found()}, want ',' or ']' after the element")


def S(check=None, escapes=False):
    return lambda r, path, out: check(r.string(path, escapes), path) if check else r.string(path, escapes)


def I(lo=0, hi=None):
    return lambda r, path, out: r.integer(path, lo, hi)


def H(digits, nonzero=False):
    return S(lambda s, p: not_zero(check_hex(s, p, digits), p) if nonzero else check_hex(s, p, digits))


def one_of(*values):
    def check(s, p):
        if s not in values:
            raise Reject(p, f"{s!r} is not one of {list(values)}")
        return s
    return S(check)


# ---------------------------------------------------------------- section 8


def serial_ok(s, p):
    if not re.fullmatch("[0-9]*", s):
        raise Reject(p, "serial is not decimal")
    if not 1 <= len(s) <= 10:
        raise Reject(p, f"serial of {len(s)} digits, want 1 to 10")
    if len(s) > 1 and s[0] == "0":
        raise Reject(p, "leading zero")
    if not 1 <= int(s) <= 4294967295:
        raise Reject(p, "serial out of range 1-4294967295")
    return s


def slot_ok(s, p):
    check_hex(s, p, 2)
    if not 0x82 <= int(s, 16) <= 0x95:
        raise Reject(p, f"slot {s}, want 82 to 95")
    return s


def sealed_b64url(s, p):
    b = b64url(s, p)
    if not 156 <= len(b) <= 410:
        raise Reject(p, f"sealed share of {len(b)} bytes, want 156 to 410")
    return b


def read_record(r, path, ctx=None):
    """A version 2 record. ctx: keyslots (a token's, checked at keyslot),
    cards ("token": none or all n; "certificate": exactly one)."""
    ctx = ctx or {}

    def keyslot(r, p, out):
        v = r.integer(p, 0, 31)
        if ctx.get("keyslots") and ctx["keyslots"][0] != v:
            raise Reject(p, f"keyslot {v}, but the token is bound to keyslot {ctx['keyslots'][0]}")
        return v

    def salt(r, p, out):
        s = r.string(p)
        if not re.fullmatch("[0-9a-f]*", s) or not 2 <= len(s) <= 512 or len(s) % 2:
            raise Reject(p, f"{len(s)} hex digits, want an even number from 2 to 512")
        return s

    def replaces(r, p, out):
        s = not_zero(check_hex(r.string(p), p, 32), p)
        if s == out.get("id"):
            raise Reject(p, "a ceremony cannot replace itself")
        return s

    def set_name(s, p):
        if not 1 <= len(s.encode()) <= 64:
            raise Reject(p, f"set name of {len(s.encode())} bytes, want 1 to 64")
        if not re.fullmatch("[a-z0-9][a-z0-9._-]*", s):
            raise Reject(p, "set name: want a-z 0-9 . _ - starting with a letter or digit")
        return s

    def set_obj(r, p, out):
        return r.obj(p, [("name", True, S(set_name)), ("version", True, I(1, 4294967295)),
                         ("fingerprint", True, H(64))])

    def cards(r, p, out):
        def card(r, cp, done):
            start = r.p
            c = read_card(r, cp, out, done)
            c["_raw"] = r.d[start:r.p]
            return c
        v = r.array(p, card)
        if ctx.get("cards") == "token" and v and len(v) != out.get("n"):
            raise Reject(p, f"{len(v)} cards, want none (open) or all {out.get('n')}")
        if ctx.get("cards") == "certificate" and len(v) != 1:
            raise Reject(p, f"{len(v)} cards, want exactly one")
        return v

    return r.obj(path, [
        ("v", True, I(2, 2)), ("id", True, H(32, nonzero=True)), ("volume", True, S(check_uuid)),
        ("k", True, I(2, 255)), ("n", True, lambda r, p, out: r.integer(p, max(2, out.get("k", 2)), 255)),
        ("keyslot", True, keyslot), ("salt", False, salt), ("digest", True, H(64, nonzero=True)),
        ("replaces", False, replaces), ("set", False, set_obj),
        ("allow_unattested", False, lambda r, p, o: r.true(p)), ("cards", True, cards)])


def read_card(r, path, rec, done):
    def index(r, p, out):
        i = r.integer(p, 1, rec.get("n", 255))
        if done and i <= done[-1]["index"]:
            raise Reject(p, f"index {i} after index {done[-1]['index']}: want increasing indexes")
        return i

    def unique(field, check):
        def read(r, p, out):
            s = check(r.string(p), p)
            if any(c.get(field) == s for c in done):
                raise Reject(p, f"{field} used by an earlier card")
            return s
        return read

    return r.obj(path, [
        ("index", True, index), ("serial", True, unique("serial", serial_ok)), ("slot", True, S(slot_ok)),
        ("custodian", False, S(check_text)), ("key", True, unique("key", lambda s, p: check_hex(s, p, 64))),
        # A card without attestation is refused where its absence is seen (section 7).
        ("attestation", not rec.get("allow_unattested"), H(64, nonzero=True)),
        ("commitment", True, H(64)), ("sealed", True, S(sealed_b64url))])


def uuid_text(b16):
    h = b16.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def check_use(rec, root):
    """Section 8's checks that need the sealed share (layer "use")."""
    for i, c in enumerate(rec["cards"]):
        p = f"{child(root, 'cards')}[{i}].sealed"
        try:
            s = parse_sealed(c["sealed"], p)
        except Reject as e:
            raise Reject(p, e.msg, "use") from None
        for field, got, want in (("ceremony id", s["ceremony"].hex(), rec["id"]),
                                 ("volume", uuid_text(s["volume"]), rec["volume"]),
                                 ("k", s["k"], rec["k"]), ("n", s["n"], rec["n"]), ("index", s["index"], c["index"])):
            if got != want:
                raise Reject(p, f"the sealed share's header names another {field}", "use")
        if c.get("key") is not None and s["fingerprint"].hex() != c["key"]:
            raise Reject(p, "the sealed share's recipient is not the card's key", "use")


def record_value(rec):
    """The decoded record, as records.json writes values."""
    if rec.get("v") == 1:
        return rec["value"]
    return {"version": 2, "id": rec["id"], "volume": rec["volume"], "k": rec["k"], "n": rec["n"],
            "keyslot": rec["keyslot"], "salt": rec.get("salt"), "digest": rec["digest"],
            "replaces": rec.get("replaces"), "set": rec.get("set"), "allow_unattested": "allow_unattested" in rec,
            "cards": [{"index": c["index"], "serial": c["serial"], "slot": c["slot"], "custodian": c.get("custodian"),
                       "key": c["key"], "attestation": c.get("attestation"), "commitment": c["commitment"],
                       "sealed": c["sealed"].hex()} for c in rec["cards"]]}


def decode_record(data, root="record"):
    r = Canon(data)
    r.begin(root)
    rec = read_record(r, root)
    r.end(root)
    check_use(rec, root)
    return rec


# ---------------------------------------------------------------- section 10


def strip_ws(data):
    """Removes whitespace outside strings (luksDump's indented form)."""
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


def top_level_names(data):
    """The member names of the outermost object, read leniently: how a
    version 1 token is told from a version 2 one (appendix)."""
    names, depth, i = [], 0, 0
    while i < len(data):
        c = data[i]
        if c == 0x22:
            j = i + 1
            while j < len(data) and data[j] != 0x22:
                j += 2 if data[j] == 0x5C else 1
            k = j + 1
            while k < len(data) and data[k] in b" \t\r\n":
                k += 1
            if depth == 1 and data[k:k + 1] == b":":
                names.append(data[i + 1:j])
            i = j + 1
            continue
        depth += c in b"{[" and 1 or (-1 if c in b"}]" else 0)
        i += 1
    return names


def keyslots(r, p, out):
    def one(r, q, done):
        if done:
            raise Reject(q, "more than one keyslot")
        s = r.string(q) if r.peek() == b'"' else r.expect(b'"', q, "a string")
        if not re.fullmatch("[0-9]+", s):
            raise Reject(q, "keyslot is not decimal")
        if len(s) > 1 and s[0] == "0":
            raise Reject(q, "leading zero")
        if int(s) > 31:
            raise Reject(q, f"{int(s)} out of range 0-31")
        return int(s)
    return r.array(p, one)


def decode_token(data, root=""):
    """Section 10 (version 2) or the appendix (version 1); returns
    {"v": record version, "keyslots", "record", "anchor"}."""
    data = data if isinstance(data, bytes) else data.encode()
    if b"custos_version" in top_level_names(data):
        return decode_v1_token(data, root)
    r = Canon(strip_ws(data))
    r.begin(root)
    ctx = {"cards": "token"}

    def ks(r, p, out):
        ctx["keyslots"] = keyslots(r, p, out)
        return ctx["keyslots"]
    tok = r.obj(root, [("type", True, one_of("custos")), ("keyslots", True, ks),
                       ("record", True, lambda r, p, out: read_record(r, p, ctx)),
                       ("anchor", True, S(check_anchor))])
    r.end(root)
    check_use(tok["record"], child(root, "record"))
    return tok


def token_value(tok):
    return {"version": tok["record"]["v"], "keyslots": tok["keyslots"], "record": record_value(tok["record"]),
            "anchor": tok.get("anchor")}


# ---------------------------------------------------------------- section 12 (the extension's JSON)


def decode_cert_extension(value, key_spki=None, root=""):
    """The extension's JSON; key_spki, when given, is the slot key the
    certificate is for (its fingerprint must be the card's key)."""
    r = Canon(value)
    r.begin(root)
    ext = r.obj(root, [("record", True, lambda r, p, out: read_record(r, p, {"cards": "certificate"})),
                       ("anchor", True, S(check_anchor))])
    r.end(root)
    rec = ext["record"]
    if key_spki is not None and rec["cards"][0]["key"] != hashlib.sha256(key_spki).hexdigest():
        raise Reject(child(root, "record.cards[0].key"), "not the slot key's fingerprint")
    check_use(rec, child(root, "record"))
    return ext


# ---------------------------------------------------------------- section 11


def go_escape(s):
    """A string as Go's encoding/json writes it (Go 1.22 and later also
    write \\b and \\f, which the text does not list)."""
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
    """A string in encoding/json's exact escaping."""
    start = self.p
    self.expect(b'"', path, "a string")
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
    """Any compact JSON value in encoding/json's escaping (bodies of other
    types: the text says no more of them)."""
    c = self.peek()
    if c == b"{":
        self.p += 1
        out = {}
        if self.peek() != b"}":
            while True:
                key = self.gostring(path)
                if key in out:
                    raise Reject(child(path, key), "duplicate member")
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
    leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
    mdays = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
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


def read_ceremony_body(r, p):
    """{"status":S,"record":R}, or a version 1 body (appendix). SPEC: the
    log's rules do not include section 8's sealed-share checks (records.json:
    "k changed" is a frame fault, not a malformed event)."""
    if r.d.startswith(b'{"id":', r.p):
        return read_v1_body(r, p)
    return r.obj(p, [("status", True, one_of(*STATUSES)), ("record", True, read_record)])


def read_body(r, p, out):
    t = out.get("type")
    if t == "ceremony":
        return read_ceremony_body(r, p)
    if t == "log.created":
        return r.obj(p, [("schema", True, I(1))])
    if t == "log.migrated":
        return r.obj(p, [("from", True, I(1)), ("to", True, I(1))])
    if t == "card":  # SPEC: custodian and attestation optional, the other members' types unsaid
        return r.obj(p, [("serial", True, GV()), ("custodian", False, GV()), ("slot", True, GV()),
                         ("fingerprint", True, GV()),
                         ("attestation", False, lambda r, q, o: b64std(r.gostring(q), q))])
    if t == "rollcall":  # SPEC: reason optional
        def ok(r, q, o):
            v = r.govalue(q)
            if not isinstance(v, bool):
                raise Reject(q, "ok is not true or false")
            return v
        return r.obj(p, [("ceremony", True, GV()), ("serial", True, GV()), ("fingerprint", True, GV()),
                         ("ok", True, ok), ("reason", False, GV())])
    if r.peek() != b"{":
        raise Reject(p, "body is not an object")
    return r.govalue(p)


def decode_event_body(data, root=""):
    """A ceremony event's body (the "event" copy of records.json)."""
    r = Canon(data)
    r.begin(root)
    body = read_ceremony_body(r, root)
    r.end(root)
    if "record" in body:
        check_use(body["record"], child(root, "record"))
    return body


def decode_event(line, root="event"):
    line = line if isinstance(line, bytes) else line.encode("utf-8")
    r = Canon(line)
    ev = r.obj(root, [("seq", True, I(1, (1 << 64) - 1)), ("time", True, S(check_time)),
                      ("actor", True, check_actor), ("type", True, S(check_type)),
                      ("ceremony", False, H(32)), ("body", True, read_body), ("prev", True, H(64))])
    r.end(root)
    ev["hash"] = hashlib.sha256(line).hexdigest()
    return ev


class ChainReject(Exception):
    def __init__(self, at, rule, msg):
        super().__init__(f"event {at}: {rule}: {msg}")
        self.at, self.rule, self.msg = at, rule, msg


FRAME = ("id", "volume", "k", "n", "keyslot", "salt", "digest", "replaces", "set", "allow_unattested")


def frame_faults(a, b):
    """Section 11's frame rule from value a to value b: the first member
    that breaks it, with its rule name, or None."""
    for m in FRAME:
        x, y = a.get(m), b.get(m)
        if a["version"] == 1 and ((m == "keyslot" and x == -1) or (m in ("digest", "salt") and x is None)):
            continue  # a version 1 record may gain what it left empty
        if m == "salt" and x is None:
            continue  # a salt may be added
        if x != y:
            return ("salt" if m == "salt" else "frame"), m
    return None


def check_step(held, seq, ev, schema):
    """Section 11's rules for one ceremony event, in the order the text
    lists them (SPEC: it does not say which is reported when several
    break; records.json's "a card removed" wants cards before complete);
    held maps ceremony ids to (status, value) as the log stands before it."""
    body = ev["body"]
    if "v1" in body and schema >= 3:
        raise ChainReject(seq, "version", "a version 1 body in a log of version 2")
    st, rec = body["status"], body["value"]
    if ev.get("ceremony") != rec["id"]:
        raise ChainReject(seq, "event", "the event names another ceremony than its record")
    prev = held.get(rec["id"])
    if prev is not None:
        fault = frame_faults(prev[1], rec)
        if fault:
            raise ChainReject(seq, fault[0], f"{fault[1]} changed")
        pc = prev[1]["cards"]
        if rec["cards"][:len(pc)] != pc:
            raise ChainReject(seq, "cards", "a card was removed or changed, or added before one already written")
        if st not in NEXT_STATUS.get(prev[0], ()):
            raise ChainReject(seq, "status", f"{prev[0]} cannot become {st}")
    if st == "active" and (len(rec["cards"]) < rec["n"] or
                           any(c["commitment"] is None or c["sealed"] is None for c in rec["cards"])):
        raise ChainReject(seq, "complete", "active with fewer than n cards")
    if rec.get("replaces") is not None:
        old = held.get(rec["replaces"])
        if old is None or old[1]["volume"] != rec["volume"]:
            raise ChainReject(seq, "replaces", "names no ceremony of this volume in the log")
    if prev is None and st not in ("open", "active"):
        raise ChainReject(seq, "first", f"a first record is open or active, not {st}")


def verify_chain(lines):
    """Checks a log (section 11); returns its events. Raises ChainReject
    naming the event (its seq) and the rule it breaks."""
    events, prev, held, schema = [], "0" * 64, {}, 0
    for i, line in enumerate(lines):
        seq = i + 1
        try:
            ev = decode_event(line)
        except Reject as e:
            raise ChainReject(seq, "event", str(e)) from None
        if ev["seq"] != seq or ev["prev"] != prev:
            raise ChainReject(seq, "chain", "seq or prev does not follow the event before")
        if ev["type"] == "log.created" and seq == 1:
            schema = ev["body"]["schema"]
        if ev["type"] == "log.migrated":
            schema = ev["body"]["to"]
        if ev["type"] == "ceremony":
            body = ev["body"]
            if "record" in body:
                body["value"] = record_value(body["record"])
            check_step(held, seq, ev, schema)
            held[body["value"]["id"]] = (body["status"], body["value"])
        prev = ev["hash"]
        events.append(ev)
    return events


def agrees(a, b):
    """Section 8: the same frame (v not compared; what a version 1 record
    leaves empty not compared), and equal entries for each index both hold."""
    for m in FRAME:
        x, y = a.get(m), b.get(m)
        empty = {"keyslot": -1, "salt": None, "digest": None}
        if m in empty and ((a["version"] == 1 and x == empty[m]) or (b["version"] == 1 and y == empty[m])):
            continue
        if x != y:
            return False
    ca = {c["index"]: c for c in a["cards"]}
    return all(ca.get(c["index"], c) == c for c in b["cards"])


def anchor_good(events, anchor, value):
    """Section 9. SPEC: the text asks for *a* ceremony event up to SEQ that
    agrees; the first one (no cards) would agree with any card, so this
    reader asks it of the ceremony's last event at or before SEQ."""
    seq, h = anchor.split(":")
    seq = int(seq)
    if seq > len(events) or events[seq - 1]["hash"] != h:
        return False
    mine = [ev["body"]["value"] for ev in events[:seq]
            if ev["type"] == "ceremony" and ev["body"]["value"]["id"] == value["id"]]
    return bool(mine) and agrees(mine[-1], value)


# ---------------------------------------------------------------- section 12 (the certificate)

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


def decode_cert(cert, root=""):
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


def b64std(s, path):
    """Standard base64, padded, the unused bits zero, no line breaks."""
    if not isinstance(s, str) or not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", s) or len(s) % 4:
        raise Reject(path, "not canonical base64")
    b = base64.b64decode(s)
    if base64.b64encode(b).decode() != s:
        raise Reject(path, "not canonical base64")
    return b


def decode_v1_token(data, root=""):
    """A version 1 token (appendix): members in any order, whitespace
    between them, escapes in custodian only; rules between members once
    the object is read."""
    r = Canon(data, loose=True)
    r.begin(root)

    def custodian(s, p):
        if not 1 <= len(s.encode()) <= 256 or any(unicodedata.category(c) == "Cc" for c in s):
            raise Reject(p, "custodian: 1-256 bytes of UTF-8 without control characters")
        return s

    def card(r, p, done):
        if r.null():
            raise Reject(p, "null")
        return r.obj(p, [
            ("index", True, I(0, None)), ("serial", True, S(serial_ok)), ("slot", True, S(slot_ok)),
            ("fingerprint", True, H(64)), ("custodian", False, S(custodian, escapes=True)),
            ("commitment", True, H(64)), ("sealed", True, S(b64std))], ordered=False)

    def anchor(r, p, out):
        if r.null():
            raise Reject(p, "null")
        return check_anchor(r.string(p), p)

    tok = r.obj(root, [
        ("type", True, one_of("custos")), ("keyslots", True, keyslots),
        ("custos_version", True, I(1, 1)), ("ceremony", True, H(32)), ("volume", True, S(check_uuid)),
        ("k", True, I(2, 255)), ("n", True, I(2, 255)), ("keyslot", True, I(0, 31)), ("digest", True, H(64)),
        ("status", True, one_of("active")), ("replaces", False, H(32)), ("anchor", False, anchor),
        ("cards", True, lambda r, p, out: r.array(p, card))], ordered=False)
    r.end(root)
    P = lambda m: child(root, m)  # noqa: E731
    if tok["n"] < tok["k"]:
        raise Reject(P("n"), f"{tok['n']} out of range {tok['k']}-255")
    if tok["keyslots"] and tok["keyslots"][0] != tok["keyslot"]:
        raise Reject(P("keyslot"), "the token is bound to another keyslot")
    if len(tok["cards"]) != tok["n"]:
        raise Reject(P("cards"), f"{len(tok['cards'])} cards, want all {tok['n']}")
    seen = {"index": set(), "serial": set(), "fingerprint": set()}
    for i, c in enumerate(tok["cards"]):
        for m in ("index", "serial", "fingerprint"):
            if (m == "index" and not 1 <= c[m] <= tok["n"]) or c[m] in seen[m]:
                raise Reject(f"{P('cards')}[{i}].{m}", "out of range or used twice")
            seen[m].add(c[m])
    cards = sorted(tok["cards"], key=lambda c: c["index"])
    rec = {"v": 1, "id": tok["ceremony"], "volume": tok["volume"], "k": tok["k"], "n": tok["n"],
           "keyslot": tok["keyslot"], "digest": tok["digest"], "allow_unattested": True,
           "cards": [dict(c, key=c["fingerprint"]) for c in cards]}
    check_use(rec, P("record"))
    rec["value"] = {"version": 1, "id": rec["id"], "volume": rec["volume"], "k": rec["k"], "n": rec["n"],
                    "keyslot": rec["keyslot"], "salt": None, "digest": rec["digest"], "replaces": tok.get("replaces"),
                    "set": None, "allow_unattested": True,
                    "cards": [{"index": c["index"], "serial": c["serial"], "slot": c["slot"],
                               "custodian": c.get("custodian"), "key": c["fingerprint"], "attestation": None,
                               "commitment": c["commitment"], "sealed": c["sealed"].hex()} for c in cards]}
    return {"v": 1, "keyslots": tok["keyslots"], "record": rec, "anchor": tok.get("anchor")}


def read_v1_body(r, p):
    """A version 1 ceremony body (appendix): encoding/json of the version 1
    record, members in order, optional ones absent. SPEC: the text does not
    say keyslot_salt and fingerprint are hex (they are, in custos's
    vectors); it says byte strings are base64, which commitment, digest and
    sealed_share are."""
    def gs(check=None):
        return lambda r, q, o: check(r.gostring(q), q) if check else r.gostring(q)

    def b64_32(s, q):
        b = b64std(s, q)
        if len(b) != 32:
            raise Reject(q, "not 32 bytes")
        return b.hex()

    def salt(s, q):
        if not re.fullmatch("([0-9a-f]{2}){1,256}", s):
            raise Reject(q, "keyslot_salt: hex, 2 to 512 digits")
        return s

    def card(r, q, done):
        return r.obj(q, [("index", True, I(1, 255)), ("serial", True, gs(serial_ok)),
                         ("fingerprint", True, gs(lambda s, x: check_hex(s, x, 64))), ("slot", True, gs(slot_ok)),
                         ("custodian", True, gs()), ("commitment", False, gs(b64_32)),
                         ("sealed_share", False, gs(lambda s, x: b64std(s, x).hex()))])

    def cards(r, q, out):
        return [] if r.null() else r.array(q, card)

    body = r.obj(p, [
        ("id", True, gs(lambda s, q: not_zero(check_hex(s, q, 32), q))), ("volume_uuid", True, gs(check_uuid)),
        ("k", True, I(2, 255)), ("n", True, lambda r, q, out: r.integer(q, max(2, out.get("k", 2)), 255)),
        ("keyslot", True, lambda r, q, out: r.integer(q, -1, 31, signed=True)),
        ("keyslot_salt", False, gs(salt)), ("cards", True, cards), ("digest", False, gs(b64_32)),
        ("status", True, gs(lambda s, q: s if s in STATUSES else _bad(q, f"{s!r} is not a status"))),
        ("replaces", False, gs(lambda s, q: check_hex(s, q, 32))),
        ("replaced_by", False, gs(lambda s, q: check_hex(s, q, 32)))])
    cs = sorted(body["cards"], key=lambda c: c["index"])
    value = {"version": 1, "id": body["id"], "volume": body["volume_uuid"], "k": body["k"], "n": body["n"],
             "keyslot": body["keyslot"], "salt": body.get("keyslot_salt"), "digest": body.get("digest"),
             "replaces": body.get("replaces"), "set": None, "allow_unattested": True,
             "cards": [{"index": c["index"], "serial": c["serial"], "slot": c["slot"],
                        "custodian": c["custodian"] or None, "key": c["fingerprint"], "attestation": None,
                        "commitment": c.get("commitment"), "sealed": c.get("sealed_share")} for c in cs]}
    return {"v1": True, "status": body["status"], "value": value}


def _bad(p, msg):
    raise Reject(p, msg)


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


def make_cert(point, ext_value, cn="custos share", signer_scalar=b"\x07" * 32, oid=CUSTOS_OID):
    """A certificate as section 12 describes, built by hand (python3-
    cryptography 38 cannot encode this OID)."""
    alg = tlv(0x30, oid_der("1.2.840.10045.4.3.2"))
    name = tlv(0x30, tlv(0x31, tlv(0x30, oid_der("2.5.4.3") + tlv(0x0C, cn.encode()))))
    validity = tlv(0x30, tlv(0x17, b"260101000000Z") + tlv(0x17, b"360101000000Z"))
    ku = tlv(0x30, oid_der("2.5.29.15") + tlv(0x01, b"\xff") + tlv(0x04, tlv(0x03, b"\x03\x08")))
    ext = tlv(0x30, oid_der(oid) + tlv(0x04, ext_value.encode() if isinstance(ext_value, str) else ext_value))
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
    """Cases written from the text alone, with section 7's paths and, where
    the text leaves a choice, the SPEC: notes; they cover what records.json
    does not (sections 1, 3, 13, event records, certificates as DER)."""
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
        (sub(rec, '"digest"', '"replaces":"101112131415161718191a1b1c1d1e1f","digest"'), "record.digest"),
        (sub(rec, ',"cards"', ',"replaces":"101112131415161718191a1b1c1d1e1f","cards"'), "record.replaces"),
        (sub(rec, ',"cards"', ',"set":{"name":"-x","version":1,"fingerprint":"' + "0" * 64 + '"},"cards"'),
         "record.set.name"),
        (sub(rec, ',"cards"', ',"set":{"name":"x","version":0,"fingerprint":"' + "0" * 64 + '"},"cards"'),
         "record.set.version"),
        (sub(rec, ',"cards"', ',"set":{"name":"x","fingerprint":"' + "0" * 64 + '","version":1},"cards"'),
         "record.set.version"),
        (sub(rec, ',"cards"', ',"allow_unattested":false,"cards"'), "record.allow_unattested"),
        (sub(rec, ',"cards"', ',"allow_unattested":null,"cards"'), "record.allow_unattested"),
        (sub(rec, ',"cards"', ',"x":1,"cards"'), "record"), (sub(rec, '"k":2', '"K":2'), "record.k"),
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
        (rec.replace("}]}", "},{}]}"), "record.cards[3].index"),
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
    t.rejects(lambda: decode_record(extra), "record.cards[2].index", "more than n cards")

    # Section 10.
    tok = f["token"]
    t.accepts(lambda: decode_token(tok), "token")
    t.accepts(lambda: decode_token(f["token_open"]), "open token")
    t.accepts(lambda: decode_token(indent(tok)), "indented token")
    t.accepts(lambda: decode_token(sub(tok, '"keyslots":["1"]', '"keyslots":[]')), "token after luksKillSlot")
    for bad, path in ((sub(tok, '"custos"', '"Custos"'), "type"),
                      (sub(tok, '"keyslots":["1"]', '"keyslots":["2"]'), "record.keyslot"),
                      (sub(tok, '"keyslots":["1"]', '"keyslots":["01"]'), "keyslots[0]"),
                      (sub(tok, '"keyslots":["1"]', '"keyslots":[1]'), "keyslots[0]"),
                      (sub(tok, '"keyslots":["1"]', '"keyslots":["1","2"]'), "keyslots[1]"),
                      (canon({"type": "custos", "keyslots": ["1"], "record": dict(f["frame"], cards=f["cards"][:2]),
                              "anchor": "1:" + "0" * 64}), "record.cards"),
                      (re.sub('"anchor":"[0-9]+:', '"anchor":"0:', tok), "anchor"),
                      (re.sub('"anchor":"[0-9]+:', '"anchor":"07:', tok), "anchor"),
                      (re.sub('"anchor":"([0-9]+):..', r'"anchor":"\1:AB', tok), "anchor"),
                      (sub(tok, '"custodian":"Ada', '"custodian":"\\u0041da'), "record.cards[0].custodian"),
                      (sub(tok, '"type":"custos",', '"type":"custos","status":"active",'), ""),
                      (tok + "}", "")):
        t.rejects(lambda: decode_token(bad), path, f"token {path}")
    t.rejects(lambda: decode_token(indent(sub(tok, '"custodian":"Ada', '"custodian":"<Ada')).replace(b"<", b"\\u003c")),
              "record.cards[0].custodian", "indented token with an escape")

    # Section 12, in a certificate built by hand.
    for j, cert in enumerate(f["certs"]):
        d = t.accepts(lambda: decode_cert(cert), f"certificate {j + 1}")
        t.check(d and d["record"]["cards"][0]["index"] == j + 1, f"certificate {j + 1} holds card {j + 1}")
    ext1 = canon({"record": dict(f["frame"], cards=[f["cards"][0]]), "anchor": f["anchors"]["card1"]})
    t.rejects(lambda: decode_cert(make_cert(f["points"][1], ext1)), "record.cards[0].key", "certificate for another key")
    t.rejects(lambda: decode_cert(make_cert(f["points"][0], canon({"record": dict(f["frame"], cards=f["cards"][:2]),
                                                                   "anchor": f["anchors"]["card1"]}))),
              "record.cards", "certificate with two cards")
    t.rejects(lambda: decode_cert(make_cert(f["points"][0], ext1 + " ")), "", "extension with a space")
    t.rejects(lambda: decode_cert(make_cert(f["points"][0], sub(ext1, '"anchor"', '"Anchor"'))), "anchor",
              "extension with a case-variant name")

    # Sections 9 and 11.
    log = f["log"]
    events = t.accepts(lambda: verify_chain(log), "log")
    tokd, okd = decode_token(tok), decode_token(f["token_open"])
    tv, ov = record_value(tokd["record"]), record_value(okd["record"])
    t.check(anchor_good(events, tokd["anchor"], tv), "complete token's anchor")
    t.check(anchor_good(events, okd["anchor"], ov), "open token's anchor")
    for j, cert in enumerate(f["certs"]):
        d = decode_cert(cert)
        t.check(anchor_good(events, d["anchor"], record_value(d["record"])), f"certificate {j + 1}'s anchor")
    t.check(not anchor_good(events, "1:" + events[0]["hash"], tv), "anchor before the ceremony")
    t.check(not anchor_good(events, "9:" + events[0]["hash"], tv), "anchor past the log")
    t.check(not anchor_good(events, "6:" + events[0]["hash"], tv), "anchor with a wrong hash")
    forged = decode_token(sub(tok, '"serial":"10000002"', '"serial":"10000009"'))
    t.check(not anchor_good(events, tokd["anchor"], record_value(forged["record"])), "a token whose card differs")
    t.check(not anchor_good(verify_chain(log[:4]), tokd["anchor"], tv), "anchor against a log rolled back")

    def bad_log(i, old, new, at, rule, what, chain=True, lines=None):
        lines = list(lines or log)
        lines[i] = sub(lines[i], old, new).encode()
        if chain:
            lines = rechain(lines)
        try:
            verify_chain(lines)
        except ChainReject as e:
            t.check((e.at, e.rule) == (at, rule), f"{what}: refused at {e.at} ({e.rule}: {e.msg}), want {at} {rule}")
        else:
            t.bad.append(f"{what}: accepted")
    bad_log(1, '"seq":2', '"seq":3', 2, "chain", "seq gap")
    bad_log(2, '"prev":"', '"prev":"0', 3, "event", "prev of 65 digits", chain=False)
    bad_log(2, log[2][-66:-2].decode(), "f" * 64, 3, "chain", "prev of another event", chain=False)
    bad_log(0, '"prev":"0', '"prev":"1', 1, "chain", "first prev not zero", chain=False)
    bad_log(0, "2026-03-14", "2026-02-30", 1, "event", "no such date")
    bad_log(0, "00589Z", "005890Z", 1, "event", "fraction with a trailing zero")
    bad_log(0, ".000000589Z", "+00:00", 1, "event", "offset instead of Z")
    bad_log(0, '"alice@host"', '"alice<host"', 1, "event", "actor with an unescaped <")
    bad_log(0, '"alice@host"', '"\\u0061lice"', 1, "event", "actor with an escape Go would not write")
    bad_log(0, '"alice@host"', '"alice\\u0007"', 1, "event", "actor with a control character")
    bad_log(0, '"alice@host"', '""', 1, "event", "empty actor")
    bad_log(0, '"log.created"', '"Log.created"', 1, "event", "type with upper case")
    bad_log(0, '"body":{', '"body": {', 1, "event", "space before the body")
    bad_log(0, '"seq":1,', '"seq":1,"x":1,', 1, "event", "unknown event member")
    bad_log(0, '"seq":1,"time":"2026-03-14T09:26:54.000000589Z"', '"time":"2026-03-14T09:26:54.000000589Z","seq":1',
            1, "event", "members out of order")
    bad_log(2, '"keyslot":1', '"keyslot":2', 3, "frame", "frame changed while adding the salt")
    bad_log(3, '"keyslot":1', '"keyslot":2', 4, "frame", "frame changed after the salt")
    bad_log(3, '"salt":"5a', '"salt":"6a', 4, "salt", "salt changed")
    bad_log(4, '"serial":"10000001"', '"serial":"10000009"', 5, "cards", "a card changed")
    bad_log(5, '"status":"open"', '"status":"retired"', 6, "status", "open to retired")
    bad_log(1, '"status":"open"', '"status":"abandoned"', 2, "first", "first record abandoned")
    bad_log(4, '"status":"open"', '"status":"active"', 5, "complete", "active with fewer than n cards")
    bad_log(1, '"ceremony":"1011', '"ceremony":"2011', 2, "event", "ceremony member not the record's id")
    bad_log(1, ',"cards"', ',"replaces":"' + "ab" * 16 + '","cards"', 2, "replaces",
            "replaces a ceremony the log does not hold")
    t.accepts(lambda: verify_chain(rechain(log[:7] + [sub(log[6], '"status":"active"', '"status":"retired"')
                                                      .replace('"seq":7', '"seq":8').encode()])), "active to retired")
    v1body = ('{"id":"' + "ab" * 16 + '","volume_uuid":"6a0e3f6c-2b4e-4d3a-9c1f-5e7d8a9b0c1d","k":2,"n":3,"keyslot":-1,'
              '"cards":null,"status":"open"}')
    t.accepts(lambda: verify_chain(rechain(log[:1] + [event_line(2, "ceremony", v1body, "0" * 64, "ab" * 16)])),
              "version 1 ceremony event in a log of schema 2")
    bad_log(1, "", "", 2, "version", "version 1 ceremony event in a log of schema 3",
            lines=[log[0].replace(b'"schema":2', b'"schema":3'), event_line(2, "ceremony", v1body, "0" * 64, "ab" * 16)])
    bad_log(1, '"k"', '"kk"', 2, "event", "version 1 ceremony event with an unknown member",
            lines=log[:1] + [event_line(2, "ceremony", v1body, "0" * 64, "ab" * 16)])
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
    v1card = {"index": 1, "serial": "10000001", "slot": "82", "fingerprint": c["key"], "custodian": "Ada",
              "commitment": c["commitment"], "sealed": base64.b64encode(b64url(c["sealed"], "")).decode()}
    v1 = {"type": "custos", "keyslots": ["1"], "custos_version": 1, "ceremony": f["frame"]["id"],
          "volume": f["frame"]["volume"], "k": 1 + 1, "n": 1, "keyslot": 1, "digest": f["frame"]["digest"],
          "status": "active", "anchor": f["anchors"]["open"], "cards": [v1card]}
    k2v1 = fixture(2, 2)
    v1["n"], v1["cards"] = 2, [dict(v1card, fingerprint=x["key"], serial=str(20 + x["index"]), index=x["index"],
                                    commitment=x["commitment"],
                                    sealed=base64.b64encode(b64url(x["sealed"], "")).decode()) for x in k2v1["cards"]]
    v1["ceremony"], v1["volume"], v1["digest"] = k2v1["frame"]["id"], k2v1["frame"]["volume"], k2v1["frame"]["digest"]
    v1t = json.dumps(v1)
    t.accepts(lambda: decode_v1_token(v1t), "version 1 token")
    t.accepts(lambda: decode_token(json.dumps(dict(reversed(list(v1.items()))), indent=1)), "v1 token, any order")
    k0 = v1["cards"][0]["fingerprint"]
    for bad, path in ((sub(v1t, '"status": "active"', '"status": null'), "status"),
                      (sub(v1t, '"k": 2', '"k": 2, "k": 2'), "k"), (sub(v1t, '"k": 2', '"K": 2'), "k"),
                      (sub(v1t, '"k": 2', '"z": 1, "k": 2'), ""), (v1t + "x", ""),
                      (sub(v1t, '"Ada"', '"A\xe9"').encode("latin-1"), "cards[0].custodian"),
                      (sub(v1t, k0, k0.upper()), "cards[0].fingerprint"),
                      (sub(v1t, '"slot": "82"', '"slot": "82", "slot": "83"'), "cards[0].slot"),
                      (sub(v1t, v1["cards"][0]["sealed"], v1["cards"][0]["sealed"].rstrip("=")), "cards[0].sealed"),
                      (sub(v1t, '"custos_version": 1', '"custos_version": true'), "custos_version"),
                      (sub(v1t, '"keyslots": ["1"]', '"keyslots": ["2"]'), "keyslot"),
                      (sub(v1t, '"serial": "22"', '"serial": "21"'), "cards[1].serial"),
                      (sub(v1t, '"n": 2', '"n": 3'), "cards")):
        t.rejects(lambda: decode_token(bad), path, f"v1 token {path}")
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


# ---------------------------------------------------------------- section 14


def read_set(r):
    """A custodian set's JSON text (section 14), its own path being ""."""
    def name(s, p):
        if not 1 <= len(s.encode()) <= 64:
            raise Reject(p, f"set name of {len(s.encode())} bytes, want 1 to 64")
        if not re.fullmatch("[a-z0-9][a-z0-9._-]*", s):
            raise Reject(p, "set name: want a-z 0-9 . _ - starting with a letter or digit")
        return s

    def previous(r, p, out):
        s = not_zero(check_hex(r.string(p), p, 64), p)
        if out.get("version") == 1:
            raise Reject(p, "version 1 replaces no version")
        return s

    def k(r, p, out):
        # previous is required from version 2: its absence is seen here,
        # the next member being read (section 7).
        if out.get("version", 1) > 1 and "previous" not in out:
            raise Reject("previous", "missing")
        return r.integer(p, 2, 255)

    def cards(r, p, out):
        def card(r, cp, done):
            def unique(field, check):
                def read(r, q, o):
                    v = check(r.string(q), q)
                    if any(c.get(field) == v for c in done):
                        raise Reject(q, f"{field} used by an earlier card")
                    return v
                return read

            def public_key(r, q, o):
                b = b64url(r.string(q), q)
                # SPEC: "a P-256 key, 91 bytes": the DER SubjectPublicKeyInfo
                # of an uncompressed point, which has this one prefix.
                if len(b) != 91 or not b.startswith(SPKI_P256_PREFIX):
                    raise Reject(q, "not a P-256 key's SubjectPublicKeyInfo")
                try:
                    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b[len(SPKI_P256_PREFIX):])
                except ValueError:
                    raise Reject(q, "not a point on P-256") from None
                if hashlib.sha256(b).hexdigest() != o.get("key"):
                    raise Reject(q, "key is not its SHA-256")
                return b

            def attestation(r, q, o):
                b = b64url(r.string(q), q)
                if not 1 <= len(b) <= 4096:
                    raise Reject(q, f"attestation of {len(b)} bytes, want 1 to 4096")
                return b

            return r.obj(cp, [
                ("serial", True, unique("serial", serial_ok)), ("slot", True, S(slot_ok)),
                ("custodian", False, S(check_text)), ("key", True, unique("key", lambda v, q: check_hex(v, q, 64))),
                ("public_key", True, public_key),
                ("attestation", "allow_unattested" not in out, attestation)])

        v = r.array(p, card)
        if not 2 <= len(v) <= 255:
            raise Reject(p, f"{len(v)} cards, want 2 to 255")
        if out["k"] > len(v):
            raise Reject(p, f"k is {out['k']}, more than the {len(v)} cards")
        return v

    return r.obj("", [
        ("custos_set", True, I(1, 1)), ("name", True, S(name)), ("version", True, I(1, 4294967295)),
        ("previous", False, previous), ("k", True, k),
        ("allow_unattested", False, lambda r, p, o: r.true(p)), ("cards", True, cards)])


def decode_set(data, file=False):
    """A set's JSON text, or (file) a set file: the text and one line feed.
    Returns the value sets.json gives."""
    if file:
        if not data.endswith(b"\n"):
            raise Reject("", "no line feed after the set")
        data = data[:-1]
    r = Canon(data)
    r.begin("")
    s = read_set(r)
    r.end("")
    return {"name": s["name"], "version": s["version"], "previous": s.get("previous"), "k": s["k"],
            "allow_unattested": "allow_unattested" in s, "fingerprint": hashlib.sha256(data).hexdigest(),
            "cards": [{"serial": c["serial"], "slot": c["slot"], "custodian": c.get("custodian"), "key": c["key"],
                       "public_key": c["public_key"].hex(),
                       "attestation": c["attestation"].hex() if "attestation" in c else None} for c in s["cards"]]}


def check_sets(v, t):
    """sets.json, section 14: each case read as a set text or file."""
    for c in v["cases"]:
        what = f"set case {c['name']!r}"
        try:
            got = decode_set(c["input"].encode("utf-8"), c.get("file", False))
        except Reject as e:
            if c["expect"] == "ok":
                t.bad.append(f"{what}: rejected at {e.path!r}: {e.msg}")
            else:
                t.check(e.path == c["path"], f"{what}: rejected at {e.path!r} ({e.msg}), want {c['path']!r} ({c['problem']})")
            continue
        if c["expect"] == "ok":
            t.check(got == c["value"], f"{what}: decoded {json.dumps(got)[:300]}, want {json.dumps(c['value'])[:300]}")
        else:
            t.bad.append(f"{what}: accepted, want a reject at {c['path']!r} ({c['problem']})")


# ---------------------------------------------------------------- records.json


def decode_copy(copy, data):
    """A case's input read as its copy; returns the value records.json gives."""
    if copy == "record":
        return record_value(decode_record(data))
    if copy == "token":
        return token_value(decode_token(data))
    if copy == "certificate":
        ext = decode_cert_extension(data)
        return {"record": record_value(ext["record"]), "anchor": ext["anchor"]}
    if copy == "event":
        body = decode_event_body(data)
        return {"status": body["status"], "record": body["value"] if "v1" in body else record_value(body["record"])}
    if copy == "anchor":
        s = data.decode("utf-8") if isinstance(data, bytes) else data
        check_anchor(s, "")
        seq, h = s.split(":")
        return {"seq": int(seq), "hash": h}
    raise ValueError(copy)


def check_records(v, t):
    """records.json, sections 7-12: each case read as its copy (path and
    layer compared for a reject, the decoded value for an accept), each
    chain verified (the event and rule compared), each anchor checked."""
    for c in v["cases"]:
        data = bytes.fromhex(c["input_hex"]) if "input_hex" in c else c["input"].encode("utf-8")
        what = f"{c['copy']} case {c['name']!r}"
        try:
            got = decode_copy(c["copy"], data)
        except Reject as e:
            if c["expect"] == "ok":
                t.bad.append(f"{what}: rejected at {e.path!r}: {e.msg}")
            else:
                t.check((e.path, e.layer) == (c["path"], c["layer"]),
                        f"{what}: rejected at {e.path!r} ({e.layer}: {e.msg}), want {c['path']!r} ({c['layer']}: {c['problem']})")
            continue
        if c["expect"] == "ok":
            t.check(got == c["value"], f"{what}: decoded {json.dumps(got)[:300]}, want {json.dumps(c['value'])[:300]}")
        else:
            t.bad.append(f"{what}: accepted, want a reject at {c['path']!r} ({c['problem']})")
    logs = {}
    for c in v["chains"]:
        lines = logs.get(c.get("extends"), []) + [e.encode("utf-8") for e in c["events"]]
        t.check([hashlib.sha256(e.encode("utf-8")).hexdigest() for e in c["events"]] == c["hashes"][-len(c["events"]):],
                f"chain {c['name']!r}: hashes")
        try:
            verify_chain(lines)
        except ChainReject as e:
            t.check(c["expect"] == "reject" and (e.at, e.rule) == (c["at"], c["rule"]),
                    f"chain {c['name']!r}: refused at event {e.at} ({e.rule}: {e.msg}), "
                    f"want {c['expect']} {c.get('at')} {c.get('rule')}")
        else:
            t.check(c["expect"] == "ok", f"chain {c['name']!r}: accepted, want event {c.get('at')} ({c.get('rule')})")
        logs[c["name"]] = lines
    for c in v["anchor_checks"]:
        events = verify_chain(logs[c["chain"]])
        try:
            copy = decode_token(c["input"]) if c["copy"] == "token" else decode_cert_extension(c["input"])
            good = anchor_good(events, copy["anchor"], record_value(copy["record"]))
        except Reject as e:
            good = False
            t.bad.append(f"anchor check {c['name']!r}: the copy is refused: {e}")
        t.check(good == (c["expect"] == "ok"), f"anchor check {c['name']!r}: {'good' if good else 'bad'}, want {c['expect']}")


def main(argv):
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        print("usage: spec_decoder.py DIR (the directory holding vectors.json and records.json)", file=sys.stderr)
        return 2
    failed = 0
    runs = [("own cases (from the text)", None, check_own),
            ("vectors.json", os.path.join(argv[1], "vectors.json"), check_vectors),
            ("records.json", os.path.join(argv[1], "records.json"), check_records),
            ("sets.json", os.path.join(argv[1], "sets.json"), check_sets)]
    for name, path, fn in runs:
        t = Tally(name)
        if path is not None:
            if not os.path.exists(path):  # vectors that vanish must not pass quietly
                print(f"{name}: MISSING: {path}")
                failed += 1
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
