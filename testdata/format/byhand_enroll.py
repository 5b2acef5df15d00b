"""A ceremony made from docs/FORMAT.md with third-party tools only, for
scripts/recover-by-hand-test --self-enroll: yubico-piv-tool makes each
card's custody key and stores its certificate, cryptsetup makes the volume
and holds the token. It stands in for custos enroll until custos writes the
version 2 formats; the recovery that follows does not know the difference.
"""

import base64
import hashlib
import json
import os
import subprocess

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import spec_decoder as spec

READER = "Yubico Virtual PCD 00 00"
SLOTS = ["82", "83", "8f"]  # PKCS#11 IDs 05, 06, 12


def sh(argv, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return p.stdout


def piv(*args):
    return sh(["yubico-piv-tool", "-r", READER, *args])


def scalar():
    return ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value.to_bytes(32, "big")


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def enroll(kind, work, stack, tamper=None, k=2, n=3):
    """Returns (device image, [(card state file, PIN)]) of a k-of-n ceremony;
    with tamper=I, share I's copy (token for LUKS2, certificate for LUKS1)
    holds another value sealed to card I, under the original commitment."""
    cid, secret = os.urandom(16), os.urandom(32)
    xs = list(range(1, 256))
    xs = [xs.pop(b % len(xs)) for b in os.urandom(n)]
    values = spec.shamir_split(secret, k, xs, [os.urandom(k - 1) for _ in secret])
    assert spec.shamir_combine(values[:k]) == secret

    image = os.path.join(work, f"volume-{kind}.img")
    op, rk = os.path.join(work, "operator.key"), os.path.join(work, "recovery.key")
    with open(op, "w") as f:
        f.write("the operator's passphrase")
    with open(rk, "w") as f:
        f.write(spec.key_text(secret))
    with open(image, "wb") as f:
        f.truncate(20 << 20)
    cheap = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]
    sh(["cryptsetup", "luksFormat", "--batch-mode", "--type", kind, *cheap, "--key-file", op, image])
    sh(["cryptsetup", "luksAddKey", "--batch-mode", *cheap, "--key-slot", "1", "--key-file", op, image, rk])
    os.unlink(rk)
    volume = sh(["cryptsetup", "luksUUID", image]).strip()
    frame = {"v": 2, "id": cid.hex(), "volume": volume, "k": k, "n": n, "keyslot": 1}
    if kind == "luks2":
        meta = json.loads(sh(["cryptsetup", "luksDump", "--dump-json-metadata", image]))
        frame["salt"] = base64.b64decode(meta["keyslots"]["1"]["kdf"]["salt"]).hex()
    frame["digest"] = spec.secret_digest(secret, cid).hex()
    anchor = "1:" + hashlib.sha256(b"no log in this test").hexdigest()

    cards, states = [], []
    for j in range(n):
        idx, slot = j + 1, SLOTS[j]
        state, pin = os.path.join(work, f"card{idx}.json"), f"{idx}4680{idx}"
        sh([stack.vcard, "new", "--state", state, "--serial", str(30000000 + idx), "--version", "5.4.3"])
        stack.insert(state)
        pem = os.path.join(work, "pub.pem")
        piv("-a", "generate", "-s", slot, "-A", "ECCP256", "-o", pem)
        with open(pem, "rb") as f:
            point = spec.point_of(serialization.load_pem_public_key(f.read()))
        header = cid + bytes.fromhex(volume.replace("-", "")) + bytes([idx, k, n])
        sealed = spec.seal(header, point, values[j], scalar())
        card = {"index": idx, "serial": str(30000000 + idx), "slot": slot, "custodian": f"custodian {idx}",
                "key": hashlib.sha256(spec.spki(point)).hexdigest(), "attestation": hashlib.sha256(b"none").hexdigest(),
                "commitment": spec.commitment(cid, idx, values[j]).hex(), "sealed": b64url(sealed)}
        cards.append(card)
        in_cert = dict(card)
        if tamper == idx:
            in_cert["sealed"] = b64url(spec.seal(header, point, bytes([values[j][0] ^ 1]) + values[j][1:], scalar()))
        ext = spec.canon({"record": dict(frame, cards=[in_cert if kind == "luks1" else card]), "anchor": anchor})
        cert = spec.make_cert(point, ext, cn=f"custos share {idx} of {n}, ceremony {cid.hex()}")
        pem_cert = os.path.join(work, "cert.pem")
        with open(pem_cert, "w") as f:
            body = base64.encodebytes(cert).decode()
            f.write(f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n")
        piv("-a", "import-certificate", "-s", slot, "-i", pem_cert)
        # The Key History object (SP 800-73-4 part 1, 5FC10C): OpenSC lists
        # retired slots 82.. only up to its keysWithOnCardCerts.
        kh = os.path.join(work, "keyhistory.bin")
        with open(kh, "wb") as f:
            f.write(bytes([0xC1, 1, int(slot, 16) - 0x81, 0xC2, 1, 0, 0xFE, 0]))
        piv("-a", "write-object", "--id", "0x5fc10c", "-f", "binary", "-i", kh)
        piv("-a", "change-pin", "-P", "123456", "-N", pin)
        stack.remove()
        states.append((state, pin))
        if tamper == idx:
            cards[-1] = dict(card, sealed=in_cert["sealed"])
    if kind == "luks2":
        tok = os.path.join(work, "token.json")
        with open(tok, "w") as f:
            f.write(spec.canon({"type": "custos", "keyslots": ["1"], "record": dict(frame, cards=cards), "anchor": anchor}))
        sh(["cryptsetup", "token", "import", "--token-id", "0", "--json-file", tok, image])
        dumped = sh(["cryptsetup", "token", "export", "--token-id", "0", image])
        spec.decode_token(dumped)  # the token cryptsetup keeps is still in section 7's form
    if tamper:
        return image, states
    return image, [states[0], states[2]]  # k of n: cards 1 and 3
