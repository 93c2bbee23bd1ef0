#!/usr/bin/env python3
"""Independent verifier for Stele ledger exports, written from docs/ledger-format.md only.

Usage:
    python3 stele_verify.py --key VERIFIER_KEY [--checkpoint FILE] EXPORT_FILE
    python3 stele_verify.py --self-test

Exit status: 0 when the export (or every self-test vector) verifies, 3 on any
verification failure or malformed input. Section numbers ("§n") refer to
docs/ledger-format.md.
"""

import argparse
import base64
import binascii
import hashlib
import json
import os
import re
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey, Ed25519PublicKey)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ZERO_HASH = bytes(32)
EMPTY_ROOT = hashlib.sha256(b"").digest()                # §4 MTH({})


class VerifyError(Exception):
    """A verification failure; position is None when not about one event."""

    def __init__(self, reason, position=None):
        super().__init__(reason)
        self.reason, self.position = reason, position

    def line(self):
        if self.position is None:
            return "FAILED: " + self.reason
        return "FAILED at position %d: %s" % (self.position, self.reason)


def sha256(b):
    return hashlib.sha256(b).digest()


# ==== §1 / §2  Events and their canonical encoding ====

EVENT_TAG = b"stele.event.v1\x00"                          # §2, 15 bytes
STRING_FIELDS = ("stream_id", "type", "actor", "tenant", "request_id",
                 "client_addr", "causation_id", "correlation_id", "data")
METADATA_FIELDS = STRING_FIELDS[2:8]
MAX_META, MAX_DATA = 1024, 262144                           # §1 limits
STREAM_ID_RE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:/-]*\Z")
# §1: two or more segments joined by '.', each a-z then a-z, 0-9 or _.
TYPE_RE = re.compile(rb"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z")
MAX_CANONICAL = (len(EVENT_TAG) + 32 + 8 + 8 + 8 + 16 + 9 * 4
                 + 400 + 100 + 6 * MAX_META + MAX_DATA)


def parse_canonical(c):
    """Strictly parse a canonical encoding (§2) and check the §1 field rules.

    Raises ValueError on a wrong tag, a length that runs past the end, bytes
    after `data`, or a field that breaks its §1 rule."""
    if len(c) < 87 or c[:15] != EVENT_TAG:
        raise ValueError("wrong tag or encoding too short")
    ev = {"prev_hash": c[15:47]}
    ev["position"], ev["stream_version"], ev["recorded_at"] = struct.unpack(">QQq", c[47:71])
    ev["event_id"] = c[71:87]
    off = 87
    for name in STRING_FIELDS:
        if off + 4 > len(c):
            raise ValueError("length of %s runs past the end" % name)
        (n,) = struct.unpack(">I", c[off:off + 4])
        off += 4
        if off + n > len(c):
            raise ValueError("%s runs past the end" % name)
        ev[name] = c[off:off + n]
        off += n
    if off != len(c):
        raise ValueError("%d bytes after data" % (len(c) - off))
    check_field_rules(ev)
    return ev


def check_field_rules(ev):
    """§1: per-field types and rules that can be checked on one event."""
    sid, typ = ev["stream_id"], ev["type"]
    if not 1 <= len(sid) <= 400 or not STREAM_ID_RE.match(sid):
        raise ValueError("invalid stream_id %r" % sid)
    if len(typ) > 100 or not TYPE_RE.match(typ):
        raise ValueError("invalid type %r" % typ)
    for name in METADATA_FIELDS:
        if len(ev[name]) > MAX_META:
            raise ValueError("%s longer than %d bytes" % (name, MAX_META))
        try:
            ev[name].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("%s is not valid UTF-8" % name)
    if len(ev["data"]) > MAX_DATA:
        raise ValueError("data longer than %d bytes" % MAX_DATA)


def encode_canonical(ev):
    """§2 in the other direction (used by the self-test)."""
    out = [EVENT_TAG, ev["prev_hash"],
           struct.pack(">QQq", ev["position"], ev["stream_version"], ev["recorded_at"]),
           ev["event_id"]]
    for name in STRING_FIELDS:
        out += [struct.pack(">I", len(ev[name])), ev[name]]
    return b"".join(out)


# ==== §3  The chain (rules 1-5), as applied event by event in §7 step 3 ====

class Chain:
    def __init__(self):
        self.expected, self.prev, self.last_time = 1, ZERO_HASH, None
        self.versions = {}                     # stream_id -> last stream_version

    def add(self, stored_hash, c):
        """Check one event; return its hash h. Failures carry the expected position."""
        pos = self.expected
        try:
            ev = parse_canonical(c)
        except ValueError as e:
            raise VerifyError("malformed event: %s" % e, pos)
        h = sha256(c)
        if ev["position"] != pos:                                   # rule 1
            raise VerifyError("position out of order or event missing: expected %d, "
                              "found %d" % (pos, ev["position"]), pos)
        if ev["prev_hash"] != self.prev:                            # rule 2
            raise VerifyError("prev_hash does not match the previous event's hash", pos)
        if h != stored_hash:                                        # rule 3
            raise VerifyError("stored hash differs from the hash of the content", pos)
        if self.last_time is not None and ev["recorded_at"] < self.last_time:  # rule 4
            raise VerifyError("recorded_at goes backwards", pos)
        want = self.versions.get(ev["stream_id"], 0) + 1            # rule 5
        if ev["stream_version"] != want:
            raise VerifyError("stream_version %d in stream %s, expected %d" % (
                ev["stream_version"], ev["stream_id"].decode(), want), pos)
        self.versions[ev["stream_id"]] = want
        self.last_time, self.prev, self.expected = ev["recorded_at"], h, pos + 1
        return h


# ==== §4  Merkle tree (RFC 6962 / RFC 9162) ====

def leaf_hash(entry):
    return sha256(b"\x00" + entry)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def mth(entries):
    """Reference (recursive) MTH over event hashes, §4."""
    n = len(entries)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hash(entries[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(entries[:k]), mth(entries[k:]))


class Peaks:
    """Incremental root via the complete-subtree peaks described in §4."""

    def __init__(self):
        self.peaks = []                        # list of (height, hash), left to right
        self.size = 0

    def append(self, entry):
        self.peaks.append((0, leaf_hash(entry)))
        self.size += 1
        while len(self.peaks) >= 2 and self.peaks[-1][0] == self.peaks[-2][0]:
            (hgt, r), (_, l) = self.peaks.pop(), self.peaks.pop()
            self.peaks.append((hgt + 1, node_hash(l, r)))

    def root(self):
        if not self.peaks:
            return EMPTY_ROOT
        r = self.peaks[-1][1]
        for _, p in reversed(self.peaks[:-1]):
            r = node_hash(p, r)
        return r


def verify_inclusion(leaf, index, size, proof, root):
    """RFC 9162 §2.1.3.2; `leaf` is the leaf hash."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(size1, size2, root1, root2, proof):
    """RFC 9162 §2.1.4.2 (with the trivial cases size1 = 0 and size1 = size2)."""
    if size1 > size2:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if size1 & (size1 - 1) == 0:               # size1 is an exact power of two
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == root1 and sr == root2 and sn == 0


# ==== §5  Checkpoints: verifier key, signed note, checkpoint body ====

def b64decode_strict(s):
    """Standard base64 with padding (Conventions); must be canonical."""
    try:
        b = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("bad base64")
    if base64.b64encode(b).decode("ascii") != s:
        raise ValueError("non-canonical base64")
    return b


def valid_key_name(name):
    # C2SP signed-note: non-empty, no Unicode spaces, no '+'.
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def key_hash(name, pub):
    return sha256(name.encode("utf-8") + b"\n" + b"\x01" + pub)[:4]


def parse_verifier_key(vkey):
    """§5: <name>+<8 hex digits>+<base64(0x01 || public_key)>.
    The name cannot contain '+', but the base64 part can: split twice only."""
    parts = vkey.split("+", 2)
    if len(parts) != 3 or not valid_key_name(parts[0]):
        raise ValueError("not <name>+<hash>+<key>")
    name, hhex, kb64 = parts
    if not re.fullmatch(r"[0-9a-f]{8}", hhex):
        raise ValueError("key hash is not 8 lowercase hex digits")
    raw = b64decode_strict(kb64)
    if len(raw) != 33 or raw[0] != 0x01:
        raise ValueError("key is not 0x01 followed by a 32-byte Ed25519 key")
    pub = raw[1:]
    if key_hash(name, pub) != bytes.fromhex(hhex):
        raise ValueError("key hash does not match the name and key")
    return name, bytes.fromhex(hhex), Ed25519PublicKey.from_public_bytes(pub)


def verify_checkpoint(note, key):
    """§5 steps: split the signed note, find our signature line, check the
    signature over the body, check origin = key name, parse size and root.
    Returns (size, root). Raises ValueError."""
    name, khash, pub = key
    try:
        text = note.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("note is not UTF-8")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise ValueError("note contains control characters")
    split = note.rfind(b"\n\n")
    if split < 0 or not note.endswith(b"\n"):
        raise ValueError("note has no signature block")
    body, sigblock = note[:split + 1], note[split + 2:]
    if not sigblock:
        raise ValueError("note has no signature lines")
    found = []
    for line in sigblock.decode("utf-8").split("\n")[:-1]:
        if not line.startswith("\u2014 "):
            raise ValueError("malformed signature line")
        sname, _, sb64 = line[2:].partition(" ")
        try:
            sig = b64decode_strict(sb64)
        except ValueError:
            raise ValueError("malformed signature line")
        if not valid_key_name(sname) or len(sig) < 5:
            raise ValueError("malformed signature line")
        if sname == name and sig[:4] == khash:
            found.append(sig[4:])              # every line for our key must verify (§5)
    if not found:
        raise ValueError("no signature by %s+%s" % (name, khash.hex()))
    for sig in found:
        try:
            if len(sig) != 64:
                raise InvalidSignature()
            pub.verify(sig, body)
        except InvalidSignature:
            raise ValueError("invalid signature")
    # C2SP tlog-checkpoint body: origin, size and root lines, then any
    # non-empty extension lines, which are signed and otherwise ignored (§5).
    lines = body.decode("utf-8").split("\n")
    if len(lines) < 4 or lines[-1] != "" or any(l == "" for l in lines[3:-1]):
        raise ValueError("checkpoint body is not origin, size and root lines plus extension lines")
    origin, size_s, root_b64 = lines[:3]
    if origin != name:
        raise ValueError("origin %r differs from key name %r" % (origin, name))
    if not re.fullmatch(r"0|[1-9][0-9]*", size_s) or int(size_s) >= 1 << 64:
        raise ValueError("bad tree size %r" % size_s)
    root = b64decode_strict(root_b64)
    if len(root) != 32:
        raise ValueError("root is not 32 bytes")
    return int(size_s), root


# ==== §6  Export file framing ====

HEADER = b"stele-ledger-export/v1\n"                       # 23 bytes


def read_frames(f):
    """Yield (kind, payload) for each frame; raise VerifyError on truncation."""
    if f.read(len(HEADER)) != HEADER:
        raise VerifyError("not a Stele export: bad header")
    while True:
        head = f.read(5)
        if not head:
            raise VerifyError("malformed export: file ends without a Z frame")
        if len(head) < 5:
            raise VerifyError("malformed export: truncated frame header")
        kind, length = head[:1], struct.unpack(">I", head[1:])[0]
        if kind == b"E" and length > 32 + MAX_CANONICAL:
            raise VerifyError("malformed export: E frame of %d bytes is too large" % length)
        payload = f.read(length)
        if len(payload) != length:
            raise VerifyError("malformed export: %s frame runs past the end of the file"
                              % kind.decode("latin-1"))
        yield kind, payload
        if kind == b"Z":
            return


# ==== §7  Verifying an export, step by step ====

def verify_export(f, key, trusted=None):
    """Returns (events, checkpoints, root). `trusted` is (size, root) or None."""
    frames = read_frames(f)
    # Step 1 / §6 rule 1: header (checked by read_frames), then exactly one M frame.
    kind, payload = next(frames)
    if kind != b"M":
        raise VerifyError("malformed export: first frame is not M")
    try:
        meta = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise VerifyError("malformed export: M frame is not JSON")
    if not isinstance(meta, dict):
        raise VerifyError("malformed export: M frame is not a JSON object")
    # Step 2.
    chain, peaks = Chain(), Peaks()
    events = checkpoints = 0
    last_cp_size = None
    if trusted is not None and trusted[0] == 0 and trusted[1] != EMPTY_ROOT:   # step 6, k = 0
        raise VerifyError("trusted checkpoint of size 0 has a wrong root")
    for kind, payload in frames:
        if kind == b"E":                                            # step 3
            pos = events + 1
            if len(payload) < 32:
                raise VerifyError("malformed event frame: shorter than 32 bytes", pos)
            h = chain.add(payload[:32], payload[32:])
            peaks.append(h)
            events += 1
            if trusted is not None and trusted[0] == events and peaks.root() != trusted[1]:
                raise VerifyError("root at size %d differs from the trusted checkpoint "
                                  "(history rewritten)" % events, events)
        elif kind == b"C":                                          # step 4, §6 rule 3
            where = events or None
            try:
                size, root = verify_checkpoint(payload, key)
            except ValueError as e:
                raise VerifyError("checkpoint: %s" % e, where)
            if size != events:
                raise VerifyError("checkpoint of size %d placed after %d events"
                                  % (size, events), where)
            if last_cp_size is not None and size <= last_cp_size:
                raise VerifyError("checkpoint sizes not increasing", where)
            if root != peaks.root():
                raise VerifyError("checkpoint root differs from the Merkle root at size %d"
                                  % size, where)
            last_cp_size, checkpoints = size, checkpoints + 1
        elif kind == b"Z":                                          # step 5, §6 rules 4-5
            if len(payload) != 16:
                raise VerifyError("malformed export: Z frame is not two uint64")
            n_e, n_c = struct.unpack(">QQ", payload)
            if (n_e, n_c) != (events, checkpoints):
                raise VerifyError("end frame counts %d events, %d checkpoints; file has "
                                  "%d and %d" % (n_e, n_c, events, checkpoints))
            if checkpoints == 0:
                raise VerifyError("export has no checkpoint")
            if last_cp_size != events:
                raise VerifyError("last checkpoint (size %d) does not cover all %d events"
                                  % (last_cp_size, events), events)
            if f.read(1):
                raise VerifyError("trailing bytes after the Z frame")
        elif kind == b"M":
            raise VerifyError("malformed export: second M frame")
        else:
            raise VerifyError("malformed export: unknown frame kind 0x%02x" % kind[0])
    # Step 6: a kept checkpoint must not be beyond the end of the export.
    if trusted is not None and trusted[0] > events:
        raise VerifyError("trusted checkpoint has size %d but the export has only %d "
                          "events (log cut back)" % (trusted[0], events))
    return events, checkpoints, peaks.root()


# ==== Self-test against eventstore/testdata/vectors.json ====

def self_test():
    here = os.path.dirname(os.path.abspath(__file__))
    testdata = os.path.join(here, "..", "..", "eventstore", "testdata")
    with open(os.path.join(testdata, "vectors.json"), encoding="utf-8") as fh:
        v = json.load(fh)
    results = []

    def check(label, ok):
        results.append(ok)
        print("%s  %s" % ("ok  " if ok else "FAIL", label))

    hashes = []
    for e in v["events"]:                                            # §2
        c = bytes.fromhex(e["canonical_hex"])
        try:
            ev = parse_canonical(c)
        except ValueError as err:
            check("event %d parses (%s)" % (e["position"], err), False)
            continue
        want = {"prev_hash": bytes.fromhex(e["prev_hash"]), "position": e["position"],
                "stream_version": e["stream_version"],
                "recorded_at": e["recorded_at_unix_micros"],
                "event_id": bytes.fromhex(e["event_id"].replace("-", "")),
                "stream_id": e["stream_id"].encode(), "type": e["type"].encode(),
                "data": bytes.fromhex(e["data_hex"])}
        want.update({k: e["metadata"][k].encode("utf-8") for k in METADATA_FIELDS})
        check("event %d parses to the stated fields" % e["position"], ev == want)
        check("event %d re-encodes to canonical_hex" % e["position"],
              encode_canonical(want) == c)
        check("event %d hash" % e["position"], sha256(c).hex() == e["hash"])
        check("event %d leaf hash" % e["position"],
              leaf_hash(sha256(c)).hex() == e["merkle_leaf_hash"])
        hashes.append(sha256(c))

    for m in v["malformed"]:
        try:
            parse_canonical(bytes.fromhex(m["canonical_hex"]))
            check("malformed rejected: " + m["description"], False)
        except ValueError as err:
            check("malformed rejected: %s (%s)" % (m["description"], err), True)

    for t in v["tampered"]:                                          # §3
        chain, failed = Chain(), None
        try:
            for c, s in zip(t["chain_canonical_hex"], t["stored_hashes"]):
                chain.add(bytes.fromhex(s), bytes.fromhex(c))
        except VerifyError as err:
            failed = err
        check("tampered fails at %d: %s (%s)" % (
            t["fails_at_position"], t["description"], failed and failed.reason),
            failed is not None and failed.position == t["fails_at_position"])

    mk = v["merkle"]                                                 # §4
    peaks = Peaks()
    for n in range(len(hashes) + 1):
        if n:
            peaks.append(hashes[n - 1])
        want = mk["roots_by_size"][str(n)]
        check("root at size %d (recursive and peaks)" % n,
              mth(hashes[:n]).hex() == want and peaks.root().hex() == want)
    roots = {int(k): bytes.fromhex(r) for k, r in mk["roots_by_size"].items()}
    idx, size = mk["inclusion_leaf_index"], mk["inclusion_tree_size"]
    proof = [bytes.fromhex(p) for p in mk["inclusion_proof"]]
    check("inclusion proof verifies", verify_inclusion(
        leaf_hash(hashes[idx]), idx, size, proof, roots[size]))
    check("inclusion proof rejects a wrong leaf", not verify_inclusion(
        leaf_hash(hashes[0]), idx, size, proof, roots[size]))
    s1, s2 = mk["consistency_old_size"], mk["consistency_new_size"]
    cproof = [bytes.fromhex(p) for p in mk["consistency_proof"]]
    check("consistency proof verifies",
          verify_consistency(s1, s2, roots[s1], roots[s2], cproof))
    check("consistency proof rejects a wrong old root",
          not verify_consistency(s1, s2, roots[1], roots[s2], cproof))

    cp = v["checkpoint"]                                             # §5
    key = parse_verifier_key(cp["verifier_key"])
    priv = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(cp["ed25519_seed_hex"]))
    pub = priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    check("verifier key matches the seed",
          key[2].public_bytes(Encoding.Raw, PublicFormat.Raw) == pub)
    note = cp["signed_note"].encode("utf-8")
    try:
        size, root = verify_checkpoint(note, key)
        check("checkpoint verifies", size == cp["size"] and root.hex() == cp["root"]
              and root == roots[cp["size"]])
    except ValueError as err:
        check("checkpoint verifies (%s)" % err, False)
    try:
        verify_checkpoint(note.replace(b"\n3\n", b"\n4\n"), key)
        check("altered checkpoint rejected", False)
    except ValueError:
        check("altered checkpoint rejected", True)

    try:                                                             # §6/§7
        with open(os.path.join(testdata, "example.export"), "rb") as fh:
            got = verify_export(fh, key)
        check("example.export verifies", got == (3, 1, roots[3]))
    except (OSError, VerifyError) as err:
        check("example.export verifies (%s)" % err, False)

    print("self-test: %d/%d passed" % (sum(results), len(results)))
    return 0 if all(results) else 3


# ==== Command line ====

def main(argv=None):
    ap = argparse.ArgumentParser(description="Verify a Stele ledger export (docs/ledger-format.md §7).")
    ap.add_argument("--key", help="trusted verifier key, <name>+<hash>+<base64 key>")
    ap.add_argument("--checkpoint", help="a signed checkpoint note kept from earlier")
    ap.add_argument("--self-test", action="store_true", help="check vectors.json")
    ap.add_argument("export", nargs="?", help="export file")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    if not args.key or not args.export:
        ap.error("--key and EXPORT_FILE are required")
    try:
        try:
            key = parse_verifier_key(args.key)
        except ValueError as e:
            raise VerifyError("invalid verifier key: %s" % e)
        trusted = None
        if args.checkpoint:
            try:
                with open(args.checkpoint, "rb") as fh:
                    trusted = verify_checkpoint(fh.read(), key)
            except OSError as e:
                raise VerifyError("cannot read checkpoint: %s" % e.strerror)
            except ValueError as e:
                raise VerifyError("trusted checkpoint: %s" % e)
        try:
            fh = open(args.export, "rb")
        except OSError as e:
            raise VerifyError("cannot read export: %s" % e.strerror)
        with fh:
            events, cps, root = verify_export(fh, key, trusted)
    except VerifyError as e:
        print(e.line())
        return 3
    extra = "" if trusted is None else " (matches trusted checkpoint of size %d)" % trusted[0]
    print("OK: %d events, %d checkpoints, root %s%s" % (events, cps, root.hex(), extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
