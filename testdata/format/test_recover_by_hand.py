#!/usr/bin/python3
"""Tests of scripts/recover-by-hand from the vectors alone, with no card.

    /usr/bin/python3 testdata/format/test_recover_by_hand.py

The shares, commitments, digest and the sealed share of index 1 come from
vectors.json; the shares of index 2 and 3 are sealed here (with
spec_decoder's seal, itself checked against vectors.json). A card is played
by an ECDH with the recipient's private scalar, exactly what pkcs11-tool
--derive asks the card to do. The program runs as a separate process, the
way a custodian runs it.
"""

import base64
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import stat
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAM = os.path.join(HERE, "..", "..", "scripts", "recover-by-hand")
sys.path.insert(0, HERE)
import spec_decoder as spec  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

with open(os.path.join(HERE, "vectors.json")) as f:
    V = json.load(f)


def load_program():
    loader = importlib.machinery.SourceFileLoader("recover_by_hand", PROGRAM)
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(mod)
    return mod


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Ceremony:
    """A 2-of-3 ceremony made of the vectors."""

    def __init__(self):
        c = V["combine"][0]["ceremony"]
        self.cid, self.vol, self.k, self.n = bytes.fromhex(c["id"]), c["volume"], c["k"], c["n"]
        self.digest, self.secret = c["digest"], bytes.fromhex(V["combine"][0]["secret"])
        self.values = [bytes.fromhex(s["value"]) for s in V["shares"]]
        self.commitments = c["commitments"]
        sv = V["sealed"][0]
        self.privs = [bytes.fromhex(sv["recipient_private"])] + [spec.scalar(f"by-hand recipient {i}") for i in (2, 3)]
        self.wrong = bytes.fromhex(sv["wrong_recipient_private"])
        self.points = [spec.point_of(ec.derive_private_key(int.from_bytes(p, "big"), ec.SECP256R1()).public_key())
                       for p in self.privs]
        self.sealed = [bytes.fromhex(sv["sealed"])] + [self.seal(i, self.values[i - 1]) for i in (2, 3)]
        self.frame = {"v": 2, "id": self.cid.hex(), "volume": self.vol, "k": self.k, "n": self.n, "keyslot": 1,
                      "salt": "a1" * 32, "digest": self.digest}

    def header(self, index):
        return self.cid + bytes.fromhex(self.vol.replace("-", "")) + bytes([index, self.k, self.n])

    def seal(self, index, value):
        return spec.seal(self.header(index), self.points[index - 1], value, spec.scalar(f"by-hand ephemeral {index}"))

    def card(self, index, sealed=None, commitment=None):
        return {"index": index, "serial": str(20000000 + index), "slot": ["82", "83", "8f"][index - 1],
                "custodian": ["Ada", "Émile", "李雷"][index - 1],
                "key": hashlib.sha256(spec.spki(self.points[index - 1])).hexdigest(),
                "attestation": "ab" * 32, "commitment": commitment or self.commitments[index - 1],
                "sealed": b64url(sealed or self.sealed[index - 1])}

    def token(self, cards=None):
        cards = cards or [self.card(i) for i in (1, 2, 3)]
        return spec.canon({"type": "custos", "keyslots": ["1"], "record": dict(self.frame, cards=cards),
                           "anchor": "3:" + "cd" * 32})

    def cert(self, index, card=None, ext=True):
        """Card i's certificate; ext=False: one for the same key without the
        custos extension (as ykcs11's attestation certificate is)."""
        card = card or self.card(index)
        if not ext:
            return spec.make_cert(self.points[index - 1], b"{}", oid="2.25.1981978834")
        value = spec.canon({"record": dict(self.frame, cards=[card]), "anchor": "3:" + "cd" * 32})
        return spec.make_cert(self.points[index - 1], value)

    def v1_token(self):
        cards = [{"index": i, "serial": 20000000 + i, "slot": "82", "fingerprint": self.card(i)["key"],
                  "commitment": self.commitments[i - 1],
                  "sealed": base64.b64encode(self.sealed[i - 1]).decode()} for i in (1, 2, 3)]
        return json.dumps({"type": "custos", "keyslots": ["1"], "custos_version": 1, "ceremony": self.cid.hex(),
                           "volume": self.vol, "k": 2, "n": 3, "keyslot": 1, "digest": self.digest,
                           "status": "active", "cards": cards}, indent=2)

    def v1_cert(self, index):
        t = spec.tlv
        ext = t(0x30, t(2, b"\x01") + t(2, b"\x01") + t(4, bytes.fromhex(self.digest)) +
                t(4, bytes.fromhex(self.commitments[index - 1])) + t(4, bytes(32)) + t(4, self.sealed[index - 1]))
        return spec.make_cert(self.points[index - 1], ext)


class RecoverByHand(unittest.TestCase):
    module = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

    def setUp(self):
        self.c = Ceremony()
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        return path

    def run_program(self, *args):
        env = dict(os.environ, PKCS11_MODULE=self.module)
        p = subprocess.run([sys.executable, PROGRAM, *args], capture_output=True, text=True, env=env)
        return p.returncode, p.stdout, p.stderr

    def card_step(self, index, cert, token=None, priv=None):
        """What a custodian does with one card: the card step, then the derive."""
        cert_path = self.write(f"card{index}.der", cert)
        args = ["card", "--dir", self.dir] + (["--token", token] if token else []) + [cert_path]
        rc, out, err = self.run_program(*args)
        self.assertEqual(rc, 0, err)
        self.assertIn("--derive -m ECDH1-DERIVE", out)
        peer_path = os.path.join(self.dir, f"share-{index}.peer.der")
        self.assertIn(f"--input-file {peer_path} --output-file {self.dir}/share-{index}.z", out)
        # The card: ECDH between its private key and the peer key (pkcs11-tool --derive).
        with open(peer_path, "rb") as f:
            peer = serialization.load_der_public_key(f.read())
        card = ec.derive_private_key(int.from_bytes(priv or self.c.privs[index - 1], "big"), ec.SECP256R1())
        self.write(f"share-{index}.z", card.exchange(ec.ECDH(), peer))
        return out

    def combine(self, token=None, out=None):
        out = out or os.path.join(self.dir, "recovered.key")
        args = ["combine", "--dir", self.dir, "--out", out] + (["--token", token] if token else [])
        return self.run_program(*args)

    def assert_key_file(self, path):
        with open(path, "rb") as f:
            text = f.read()
        self.assertEqual(text, spec.key_text(self.c.secret).encode())
        self.assertEqual(len(text), 71)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_luks2_token(self):
        tok = self.write("token.json", self.c.token())
        out = self.card_step(1, self.c.cert(1), tok)
        self.assertIn("--id 05", out)  # slot 82
        out = self.card_step(3, self.c.cert(3), tok)
        self.assertIn("--id 18", out)  # slot 8f, retired key 14: OpenSC's ID is 14 + 4 in decimal digits
        self.assertIn(f"pkcs11-tool --module {self.module} --login", out)
        rc, out, err = self.combine(tok)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "")  # the key is never on standard output unless asked
        self.assert_key_file(os.path.join(self.dir, "recovered.key"))
        self.assertIn("keyslot 1", err)
        self.assertFalse([f for f in os.listdir(self.dir) if f.endswith(".z")], "the cards' answers are erased")

    def test_pkcs11_ids(self):
        self.module = "/usr/lib/x86_64-linux-gnu/libykcs11.so"
        tok = self.write("token.json", self.c.token())
        self.assertIn("--id 12", self.card_step(3, self.c.cert(3), tok))  # ykcs11: 14 + 4 in hex
        self.assertIn("--id 05", self.card_step(1, self.c.cert(1), tok))
        del self.module
        env = {k: v for k, v in os.environ.items() if k != "PKCS11_MODULE"}
        cert = self.write("c3.der", self.c.cert(3))
        out = subprocess.run([sys.executable, PROGRAM, "card", "--dir", self.dir, "--token", tok, cert],
                             capture_output=True, text=True, env=env).stdout
        self.assertIn("opensc-pkcs11.so --login --derive -m ECDH1-DERIVE --id 18", out)
        self.assertIn("libykcs11.so --login --derive -m ECDH1-DERIVE --id 12", out)

    def test_luks2_token_indented(self):
        tok = self.write("token.json", spec.indent(self.c.token()))
        self.card_step(1, self.c.cert(1), tok)
        self.card_step(2, self.c.cert(2), tok)
        rc, _, err = self.combine(tok)
        self.assertEqual(rc, 0, err)
        self.assert_key_file(os.path.join(self.dir, "recovered.key"))

    def test_token_with_a_certificate_without_extension(self):
        tok = self.write("token.json", self.c.token())
        self.card_step(1, self.c.cert(1, ext=False), tok)
        self.card_step(2, self.c.cert(2), tok)
        rc, _, err = self.combine(tok)
        self.assertEqual(rc, 0, err)

    def test_luks1_certificates(self):
        self.card_step(2, self.c.cert(2))
        self.card_step(3, self.c.cert(3))
        rc, _, err = self.combine()
        self.assertEqual(rc, 0, err)
        self.assert_key_file(os.path.join(self.dir, "recovered.key"))

    def test_certificate_without_extension_and_no_token(self):
        cert = self.write("card.der", self.c.cert(1, ext=False))
        rc, _, err = self.run_program("card", "--dir", self.dir, cert)
        self.assertEqual(rc, 1)
        self.assertIn("no custos extension", err)

    def test_tampered_share_is_set_aside(self):
        # Card 2's share replaced by another value sealed to card 2: it opens, but fails its commitment.
        bad = bytearray(self.c.values[1])
        bad[0] ^= 1
        tok = self.write("token.json", self.c.token(
            [self.c.card(1), self.c.card(2, sealed=self.c.seal(2, bytes(bad))), self.c.card(3)]))
        for i in (1, 2, 3):
            self.card_step(i, self.c.cert(i), tok)
        rc, _, err = self.combine(tok)
        self.assertEqual(rc, 0, err)
        self.assertIn("set aside share-2.cert: fails its commitment", err)
        self.assertIn("from shares 1, 3", err)
        self.assert_key_file(os.path.join(self.dir, "recovered.key"))

    def test_forged_share_and_commitment(self):
        # A forger rewrites card 2's share and its commitment: only the digest can tell.
        bad = bytearray(self.c.values[1])
        bad[5] ^= 0x40
        forged = self.c.card(2, sealed=self.c.seal(2, bytes(bad)),
                             commitment=spec.commitment(self.c.cid, 2, bytes(bad)).hex())
        tok = self.write("token.json", self.c.token([self.c.card(1), forged, self.c.card(3)]))
        self.card_step(1, self.c.cert(1), tok)
        self.card_step(2, self.c.cert(2), tok)
        rc, _, err = self.combine(tok)
        self.assertEqual(rc, 1)
        self.assertIn("a share is forged", err)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "recovered.key")))
        self.card_step(1, self.c.cert(1), tok)
        self.card_step(2, self.c.cert(2), tok)
        self.card_step(3, self.c.cert(3), tok)
        rc, _, err = self.combine(tok)
        self.assertEqual(rc, 0, err)
        self.assertIn("shares 1, 2 do not give the ceremony's secret", err)
        self.assert_key_file(os.path.join(self.dir, "recovered.key"))

    def test_wrong_card_answer(self):
        tok = self.write("token.json", self.c.token())
        self.card_step(1, self.c.cert(1), tok, priv=self.c.wrong)
        self.card_step(2, self.c.cert(2), tok)
        rc, _, err = self.combine(tok)
        self.assertEqual(rc, 1)
        self.assertIn("set aside share-1.cert: does not open", err)
        self.assertIn("1 good shares, 2 needed", err)

    def test_share_sealed_to_another_card(self):
        # The token's card 1 entry names card 1's key, but its share is sealed to card 3.
        c1 = self.c.card(1, sealed=self.c.sealed[2])
        tok = self.write("token.json", self.c.token([c1, self.c.card(2), self.c.card(3)]))
        cert = self.write("card1.der", self.c.cert(1))
        rc, _, err = self.run_program("card", "--dir", self.dir, "--token", tok, cert)
        self.assertEqual(rc, 1)
        self.assertIn("sealed to another key", err)

    def test_card_not_in_token(self):
        other = self.c.token([self.c.card(1), self.c.card(2)])
        tok = self.write("token.json", other)
        cert = self.write("card3.der", self.c.cert(3))
        rc, _, err = self.run_program("card", "--dir", self.dir, "--token", tok, cert)
        self.assertEqual(rc, 1)
        self.assertIn("the token holds no share for this card", err)

    def test_certificate_differs_from_token(self):
        tok = self.write("token.json", self.c.token())
        c2 = self.c.card(2, sealed=self.c.seal(2, self.c.values[2]))
        self.card_step(2, self.c.cert(2, card=c2), tok)
        self.card_step(1, self.c.cert(1), tok)
        rc, _, err = self.combine(tok)
        self.assertEqual(rc, 0, err)
        self.assertIn("the certificate's copy differs from the token's; using the token's", err)

    def test_one_card_is_not_enough(self):
        tok = self.write("token.json", self.c.token())
        self.card_step(3, self.c.cert(3), tok)
        rc, _, err = self.combine(tok)
        self.assertEqual(rc, 1)
        self.assertIn("1 good shares, 2 needed", err)

    def test_missing_answer_and_short_answer(self):
        tok = self.write("token.json", self.c.token())
        self.card_step(1, self.c.cert(1), tok)
        self.card_step(2, self.c.cert(2), tok)
        self.card_step(3, self.c.cert(3), tok)
        os.unlink(os.path.join(self.dir, "share-1.z"))
        self.write("share-2.z", b"\x01" * 31)
        rc, _, err = self.combine(tok)
        self.assertEqual(rc, 1)
        self.assertIn("set aside share-1.cert: no card answer", err)
        self.assertIn("holds 31 bytes", err)

    def test_out_is_never_overwritten(self):
        tok = self.write("token.json", self.c.token())
        self.card_step(1, self.c.cert(1), tok)
        self.card_step(2, self.c.cert(2), tok)
        out = self.write("recovered.key", "keep me")
        rc, _, err = self.combine(tok, out=out)
        self.assertEqual(rc, 1)
        with open(out) as f:
            self.assertEqual(f.read(), "keep me")

    def test_out_dash_prints_the_key(self):
        tok = self.write("token.json", self.c.token())
        self.card_step(1, self.c.cert(1), tok)
        self.card_step(2, self.c.cert(2), tok)
        rc, out, err = self.combine(tok, out="-")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, spec.key_text(self.c.secret))  # no newline into a pipe

    def test_pem_certificate(self):
        tok = self.write("token.json", self.c.token())
        pem = "-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(self.c.cert(2)).decode() + "-----END CERTIFICATE-----\n"
        self.card_step(2, pem, tok)
        self.card_step(3, self.c.cert(3), tok)
        rc, _, err = self.combine(tok)
        self.assertEqual(rc, 0, err)

    def test_version_1_token(self):
        tok = self.write("token.json", self.c.v1_token())
        self.card_step(1, self.c.cert(1, ext=False), tok)
        self.card_step(3, self.c.cert(3, ext=False), tok)
        rc, _, err = self.combine(tok)
        self.assertEqual(rc, 0, err)
        self.assert_key_file(os.path.join(self.dir, "recovered.key"))

    def test_version_1_certificates(self):
        self.card_step(1, self.c.v1_cert(1))
        self.card_step(2, self.c.v1_cert(2))
        rc, _, err = self.combine()
        self.assertEqual(rc, 0, err)
        self.assert_key_file(os.path.join(self.dir, "recovered.key"))


class ProgramAgainstVectors(unittest.TestCase):
    """The program's own functions against vectors.json, one by one."""

    @classmethod
    def setUpClass(cls):
        cls.p = load_program()

    def test_key_text(self):
        for c in V["recovery_keys"]:
            self.assertEqual(self.p.key_text(bytes.fromhex(c["key"])), c["text"])

    def test_combine(self):
        for c in V["combine"]:
            values = [bytes.fromhex(e)[41:] for e in c["share_envelopes"]]
            self.assertEqual(self.p.combine(values).hex(), c["secret"])
            self.assertEqual(self.p.combine(list(reversed(values))).hex(), c["secret"])
        values = [bytes.fromhex(s["value"]) for s in V["shares"]]
        for pair in ((0, 1), (0, 2), (1, 2), (0, 1, 2)):
            self.assertEqual(self.p.combine([values[i] for i in pair]).hex(), V["combine"][0]["secret"])

    def test_unseal(self):
        for c in V["sealed"]:
            sealed = bytes.fromhex(c["sealed"])
            spki = spec.spki(bytes.fromhex(c["recipient_public"]))
            value = self.p.unseal(sealed, spki, bytes.fromhex(c["shared_secret"]))
            self.assertEqual(value, bytes.fromhex(c["share_envelope"])[41:])
            self.assertEqual(self.p.parse_sealed(sealed)["key"], c["recipient_fingerprint"])
            with self.assertRaises(self.p.Failure):
                self.p.unseal(sealed[:100] + bytes([sealed[100] ^ 1]) + sealed[101:], spki,
                              bytes.fromhex(c["shared_secret"]))

    def test_oid(self):
        self.assertEqual(self.p.CUSTOS_OID, spec.oid_der(spec.CUSTOS_OID))
        self.assertEqual(self.p.P256_SPKI, spec.SPKI_P256_PREFIX)


if __name__ == "__main__":
    unittest.main(verbosity=1)
