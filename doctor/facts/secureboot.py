"""Secure Boot, the kernel's module signature enforcement, the Machine Owner Keys shim hands
the kernel, and who signed the NVIDIA kernel module.

- EFI variables (efivarfs, Documentation/filesystems/efivarfs.rst): each file is 4 bytes of
  attributes (little-endian) followed by the variable's data. ``SecureBoot-8be4df61-…`` (EFI
  global variable GUID) holds one byte, 1 when the firmware enforces Secure Boot (UEFI
  specification, "Globally Defined Variables"; 0 in Setup Mode).
- shim's variables (GUID 605dab50-e046-4300-abb6-3dd810dd8b23): ``MokListRT`` (and, when
  the list is too large for one variable, ``MokListRT1``, ``MokListRT2``, …) is the list of
  enrolled Machine Owner Keys shim passes to the running system, and ``MokNew`` the keys
  `mokutil --import` asked MokManager to enroll at the next boot. Both are EFI_SIGNATURE_LISTs
  (UEFI specification, "Signature Database"): X.509 certificates are entries of type
  EFI_CERT_X509_GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072. Kernels with the EFI MOK
  configuration table (5.10+, drivers/firmware/efi/mokvar-table.c) also show it as
  /sys/firmware/efi/mok-variables/MokListRT (the data without attribute bytes, readable by
  root only); the kernel treats the table as more authoritative than the variable.
- /sys/kernel/security/lockdown (security/lockdown/lockdown.c) brackets the active mode
  (``none [integrity] confidentiality``); /sys/module/module/parameters/sig_enforce
  (kernel/module/signing.c) is ``Y`` under CONFIG_MODULE_SIG_FORCE or module.sig_enforce=1.
- A signed module ends with the PKCS#7 signature, a struct module_signature (algo, hash,
  id_type = 2 for PKCS#7, signer_len, key_id_len, 3 bytes of padding, big-endian sig_len) and
  the magic ``~Module signature appended~\\n`` (include/linux/module_signature.h,
  scripts/sign-file.c). The PKCS#7 SignedData's SignerInfo names the signing certificate by
  issuer and serial number (sign-file's default) or by subjectKeyIdentifier (sign-file -k).
  A compressed module (.ko.xz, .ko.gz, .ko.zst) is signed before it is compressed: the
  signature is at the end of the decompressed data, which the kernel checks whether kmod or
  the kernel itself (CONFIG_MODULE_DECOMPRESS) decompresses it.

DER is read by a small linear walker of its own, with every length checked against what
encloses it; no certificate library is needed to compare who signed a module with who is
enrolled.
"""

from __future__ import annotations

import struct

from ai_doctor.facts import Unavailable, fact
from ai_doctor.record import Record

EFI_DIR = "/sys/firmware/efi"
EFIVARS = EFI_DIR + "/efivars"
MOKVARS = EFI_DIR + "/mok-variables"
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SHIM_LOCK = "605dab50-e046-4300-abb6-3dd810dd8b23"
SECURE_BOOT_VAR = "%s/SecureBoot-%s" % (EFIVARS, EFI_GLOBAL)
MOK_NEW_VAR = "%s/MokNew-%s" % (EFIVARS, SHIM_LOCK)
LOCKDOWN = "/sys/kernel/security/lockdown"
SIG_ENFORCE = "/sys/module/module/parameters/sig_enforce"
# Where DKMS keeps the certificate of the key it signs modules with: dkms 3's default
# (mok_certificate in /etc/dkms/framework.conf), and Ubuntu's shim-signed key that older
# Ubuntu dkms releases used.
DKMS_CERTS = ("/var/lib/dkms/mok.pub", "/var/lib/shim-signed/mok/MOK.der")
# EFI_CERT_X509_GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072 as the firmware stores it (mixed-endian;
# written out, since the uuid module costs 3 ms of every start).
EFI_CERT_X509 = bytes.fromhex("a159c0a5e494a74a87b5ab155c2bf072")
MODULE_SIG_MAGIC = b"~Module signature appended~\n"
PKEY_ID_PKCS7 = 2
# A signature is a few KiB (RSA-4096 with its PKCS#7 wrapping is under 1 KiB, plus the
# signer's name); what a module claims beyond this is not trusted with memory.
SIG_TAIL = 64 << 10
# A MOK list of more than this many certificates is cut (real ones hold one to a dozen).
MAX_CERTS = 256
# EFI variables are small; MokListRT holds a few certificates of about 1 KiB each.
VAR_CAP = 1 << 20


# -- DER --------------------------------------------------------------------------------


class DerError(ValueError):
    """DER that is not what it claims: a length past its container, a tag not expected."""


def der_item(data: bytes, pos: int, end: int):
    """(tag, content start, content end) of the DER item at ``pos``, inside ``data[:end]``.
    Definite lengths only (DER has no other), up to 4 length bytes, never past ``end``."""
    if pos + 2 > end:
        raise DerError("truncated DER at byte %d" % pos)
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("a multi-byte DER tag at byte %d" % pos)
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise DerError("a DER length of %d bytes at byte %d" % (count, pos - 1))
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if length > end - pos:
        raise DerError("a DER item of %d bytes where %d are left" % (length, end - pos))
    return tag, pos, pos + length


def _expect(data, pos, end, tag, what):
    got, start, stop = der_item(data, pos, end)
    if got != tag:
        raise DerError("%s: tag 0x%02x, not 0x%02x" % (what, got, tag))
    return start, stop


def _children(data, start, end, limit=4096):
    """The items directly inside ``data[start:end]``, as (tag, start, end, item start)."""
    items = []
    pos = start
    while pos < end:
        if len(items) >= limit:
            raise DerError("more than %d items in one DER container" % limit)
        tag, cstart, cend = der_item(data, pos, end)
        items.append((tag, cstart, cend, pos))
        pos = cend
    return items


_OIDS = {
    b"\x55\x04\x03": "CN",
    b"\x55\x04\x0a": "O",
    b"\x55\x04\x0b": "OU",
    b"\x55\x04\x06": "C",
    b"\x55\x04\x07": "L",
    b"\x55\x04\x08": "ST",
    b"\x2a\x86\x48\x86\xf7\x0d\x01\x09\x01": "emailAddress",
}
_SKID_OID = b"\x55\x1d\x0e"
_SIGNED_DATA_OID = b"\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02"


def _oid_text(raw: bytes) -> str:
    if raw in _OIDS:
        return _OIDS[raw]
    if not raw:
        return "?"
    parts = [str(raw[0] // 40), str(raw[0] % 40)]
    value = 0
    for byte in raw[1:32]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(str(value))
            value = 0
    return ".".join(parts)


def _string(tag: int, raw: bytes) -> str:
    if tag == 0x1E:  # BMPString
        text = raw.decode("utf-16-be", "replace")
    elif tag == 0x1C:  # UniversalString
        text = raw.decode("utf-32-be", "replace")
    elif tag in (0x0C, 0x13, 0x16, 0x1A):  # UTF8, Printable, IA5, Visible
        text = raw.decode("utf-8", "replace")
    elif tag == 0x14:  # T61String, read as Latin-1 as OpenSSL does
        text = raw.decode("latin-1")
    else:
        text = "#" + raw.hex()
    # One line of a derived record per field: no control characters, a bounded length.
    return "".join(c if c >= " " and c != "\x7f" else "?" for c in text[:200])


def name_text(data: bytes, start: int, end: int) -> str:
    """An X.501 Name (SEQUENCE OF SET OF AttributeTypeAndValue) as ``CN=…, O=…`` in the
    order written."""
    parts = []
    for tag, rstart, rend, _ in _children(data, start, end, limit=64):
        if tag != 0x31:
            raise DerError("a Name holds tag 0x%02x, not a SET" % tag)
        for atag, astart, aend, _ in _children(data, rstart, rend, limit=16):
            if atag != 0x30:
                raise DerError("an attribute of tag 0x%02x" % atag)
            oid_start, oid_end = _expect(data, astart, aend, 0x06, "attribute type")
            vtag, vstart, vend = der_item(data, oid_end, aend)
            parts.append("%s=%s" % (_oid_text(data[oid_start:oid_end]), _string(vtag, data[vstart:vend])))
    return ", ".join(parts)


def _serial(raw: bytes) -> str:
    if len(raw) > 64:
        raise DerError("a serial number of %d bytes" % len(raw))
    return "%x" % int.from_bytes(raw, "big") if raw else "0"


class Cert(Record):
    """An X.509 certificate as far as module signatures need it: ``issuer`` and ``subject``
    (``CN=…, O=…``), ``serial`` (hex), ``skid`` (subjectKeyIdentifier, hex; None without
    one) and ``source``, where it was read."""

    __slots__ = ("issuer", "serial", "subject", "skid", "source")
    _defaults = {"source": None}

    @property
    def name(self) -> str:
        return self.subject or self.issuer


def parse_certificate(data: bytes, source=None) -> Cert:
    """The fields of a DER X.509 certificate; DerError for anything else."""
    start, end = _expect(data, 0, len(data), 0x30, "Certificate")
    tbs_start, tbs_end = _expect(data, start, end, 0x30, "TBSCertificate")
    items = _children(data, tbs_start, tbs_end, limit=16)
    index = 1 if items and items[0][0] == 0xA0 else 0
    if len(items) < index + 6:
        raise DerError("a TBSCertificate of %d fields" % len(items))
    serial, _alg, issuer, _validity, subject = items[index : index + 5]
    if serial[0] != 0x02 or issuer[0] != 0x30 or subject[0] != 0x30:
        raise DerError("not an X.509 certificate")
    skid = None
    for tag, estart, eend, _ in items[index + 6 :]:
        if tag != 0xA3:
            continue
        seq_start, seq_end = _expect(data, estart, eend, 0x30, "Extensions")
        for xtag, xstart, xend, _ in _children(data, seq_start, seq_end, limit=64):
            if xtag != 0x30:
                continue
            fields = _children(data, xstart, xend, limit=4)
            if len(fields) < 2 or fields[0][0] != 0x06 or data[fields[0][1] : fields[0][2]] != _SKID_OID:
                continue
            value = fields[-1]
            if value[0] == 0x04:
                inner_start, inner_end = _expect(data, value[1], value[2], 0x04, "subjectKeyIdentifier")
                skid = data[inner_start:inner_end].hex()
    return Cert(
        name_text(data, issuer[1], issuer[2]),
        _serial(data[serial[1] : serial[2]]),
        name_text(data, subject[1], subject[2]),
        skid,
        source,
    )


def pkcs7_signer(data: bytes):
    """(issuer, serial, skid) naming the certificate of the first SignerInfo of a DER PKCS#7
    SignedData (RFC 2315 9.2; CMS, RFC 5652 5.3, for the subjectKeyIdentifier form)."""
    start, end = _expect(data, 0, len(data), 0x30, "ContentInfo")
    oid_start, oid_end = _expect(data, start, end, 0x06, "contentType")
    if data[oid_start:oid_end] != _SIGNED_DATA_OID:
        raise DerError("a PKCS#7 message that is not SignedData")
    content_start, content_end = _expect(data, oid_end, end, 0xA0, "content")
    sd_start, sd_end = _expect(data, content_start, content_end, 0x30, "SignedData")
    items = _children(data, sd_start, sd_end, limit=8)
    infos = items[-1] if items else None
    if infos is None or infos[0] != 0x31:
        raise DerError("SignedData without signerInfos")
    signers = _children(data, infos[1], infos[2], limit=16)
    if not signers or signers[0][0] != 0x30:
        raise DerError("no SignerInfo")
    fields = _children(data, signers[0][1], signers[0][2], limit=16)
    if len(fields) < 2:
        raise DerError("a SignerInfo of %d fields" % len(fields))
    tag, sid_start, sid_end, _ = fields[1]
    if tag == 0x30:  # issuerAndSerialNumber
        parts = _children(data, sid_start, sid_end, limit=4)
        if len(parts) != 2 or parts[0][0] != 0x30 or parts[1][0] != 0x02:
            raise DerError("an issuerAndSerialNumber of another shape")
        return name_text(data, parts[0][1], parts[0][2]), _serial(data[parts[1][1] : parts[1][2]]), None
    if tag == 0x80:  # [0] IMPLICIT SubjectKeyIdentifier
        return None, None, data[sid_start:sid_end].hex()
    raise DerError("a SignerInfo identifier of tag 0x%02x" % tag)


def signature_list_certs(data: bytes, limit: int = MAX_CERTS):
    """The DER X.509 certificates in a run of EFI_SIGNATURE_LISTs: (certificates, problem or
    None). Entries of other types (SHA-256 hashes) are passed over."""
    certs = []
    pos = 0
    while pos < len(data):
        if pos + 28 > len(data):
            return certs, "a signature list cut short at byte %d" % pos
        kind = data[pos : pos + 16]
        list_size, header_size, sig_size = struct.unpack_from("<III", data, pos + 16)
        if list_size < 28 or list_size > len(data) - pos or header_size > list_size - 28:
            return certs, "a signature list of %d bytes at byte %d" % (list_size, pos)
        body = pos + 28 + header_size
        end = pos + list_size
        if sig_size <= 16 or (end - body) % sig_size:
            return certs, "signature entries of %d bytes at byte %d" % (sig_size, pos)
        if kind == EFI_CERT_X509:
            for entry in range(body, end, sig_size):
                if len(certs) >= limit:
                    return certs, "more than %d certificates" % limit
                certs.append(data[entry + 16 : entry + sig_size])
        pos = end
    return certs, None


# -- module signatures ------------------------------------------------------------------


class Signer(Record):
    """Who signed a module: ``kind`` is ``none`` (no signature), ``pkcs7`` (with ``issuer``
    and ``serial``, or ``skid``, of the signing certificate) or ``other`` (a signature the
    kernel does not take, ``detail`` says which)."""

    __slots__ = ("kind", "issuer", "serial", "skid", "detail")
    _defaults = {"issuer": None, "serial": None, "skid": None, "detail": None}

    @property
    def signed(self) -> bool:
        return self.kind == "pkcs7"

    @property
    def shown(self) -> str:
        if self.kind == "none":
            return "unsigned"
        if self.kind != "pkcs7":
            return "signed in a form the kernel does not take (%s)" % self.detail
        if self.issuer is not None:
            return "signed by %s (serial %s)" % (self.issuer, self.serial)
        return "signed by the key with subjectKeyIdentifier %s" % self.skid

    def same_key(self, other) -> bool:
        """Whether ``other`` (a Signer) names the same signing certificate."""
        if not (self.signed and other is not None and other.signed):
            return False
        if self.issuer is not None and other.issuer is not None:
            return (self.issuer, self.serial) == (other.issuer, other.serial)
        return self.skid is not None and self.skid == other.skid

    def made_by(self, cert) -> bool:
        """Whether certificate ``cert`` is the one this signature names."""
        if not self.signed:
            return False
        if self.issuer is not None:
            return (self.issuer, self.serial) == (cert.issuer, cert.serial)
        return self.skid is not None and self.skid == cert.skid

    @property
    def text(self) -> str:
        """The derived record (``Host.derive`` kind ``modsig``): ``key: value`` lines."""
        lines = ["signature: %s" % (self.kind if self.kind != "other" else "other %s" % self.detail)]
        for key in ("issuer", "serial", "skid"):
            value = getattr(self, key)
            if value is not None:
                lines.append("%s: %s" % (key, value))
        return "".join(line + "\n" for line in lines)


def parse_modsig(text: str):
    """A Signer from its record (as ``Signer.text`` writes it); None when not understood."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    kind = fields.get("signature", "")
    if kind == "none":
        return Signer("none")
    if kind.startswith("other"):
        return Signer("other", detail=kind[5:].strip() or "unknown")
    if kind != "pkcs7":
        return None
    issuer, serial, skid = fields.get("issuer"), fields.get("serial"), fields.get("skid")
    if issuer and serial:
        return Signer("pkcs7", issuer, serial.lower().lstrip("0") or "0")
    if skid:
        return Signer("pkcs7", skid=skid.lower())
    return None


def signer_from_tail(tail: bytes, size: int) -> Signer:
    """Who signed a module, from the last bytes of its (decompressed) contents; ``size`` is
    the whole length. ValueError where a signature is there but cannot be read."""
    if not tail.endswith(MODULE_SIG_MAGIC):
        return Signer("none")
    info_end = len(tail) - len(MODULE_SIG_MAGIC)
    if info_end < 12:
        raise ValueError("a signature marker with no signature information before it")
    algo, hash_, id_type, signer_len, key_id_len, sig_len = struct.unpack_from(">BBBBB3xI", tail, info_end - 12)
    # kernel/module/signing.c (mod_check_sig): the signature must fit before its information.
    if sig_len >= size - len(MODULE_SIG_MAGIC) - 12:
        raise ValueError("a signature of %d bytes in a module of %d" % (sig_len, size))
    if id_type != PKEY_ID_PKCS7:
        return Signer("other", detail="id_type %d" % id_type)
    if algo or hash_ or signer_len or key_id_len:
        return Signer("other", detail="PKCS#7 with non-zero parameters")
    if sig_len > info_end - 12:
        raise ValueError("a signature of %d bytes, more than the %d KiB read" % (sig_len, SIG_TAIL >> 10))
    blob = tail[info_end - 12 - sig_len : info_end - 12]
    try:
        issuer, serial, skid = pkcs7_signer(blob)
    except DerError as exc:
        raise ValueError("an unreadable PKCS#7 signature (%s)" % exc) from None
    return Signer("pkcs7", issuer, serial, skid)


def _decompressor(stream):
    """A file-like reader of the module's contents (decompressed: told by the magic bytes)
    and its name, or (None, None) for a plain file."""
    stream.seek(0)
    head = stream.read(6)
    stream.seek(0)
    if head.startswith(b"\xfd7zXZ\x00"):
        import lzma

        return lzma.LZMAFile(stream), "xz"
    if head.startswith(b"\x1f\x8b"):
        import gzip

        return gzip.GzipFile(fileobj=stream), "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        from ai_doctor.elf import _zstd_reader

        return _zstd_reader(stream), "zstd"
    return None, None


def modsig(stream) -> str:
    """``Host.derive`` extractor: the module's signature as ``Signer.text``. A plain module's
    last bytes are read through a seek; a compressed one is decompressed as a stream keeping
    only its last :data:`SIG_TAIL` bytes, and never past the decompression cap."""
    import zlib

    from ai_doctor.elf import DECOMPRESSED_CAP

    reader, what = _decompressor(stream)
    if reader is None:
        head = stream.read(4)
        size = stream.seek(0, 2)
        stream.seek(max(0, size - SIG_TAIL))
        tail = stream.read(SIG_TAIL)
    else:
        import lzma

        tail = head = b""
        size = 0
        try:
            while True:
                chunk = reader.read(1 << 20)
                if not chunk:
                    break
                if not size:
                    head = chunk[:4]
                size += len(chunk)
                if size > DECOMPRESSED_CAP:
                    raise ValueError("%s data inflates past %d MiB" % (what, DECOMPRESSED_CAP >> 20))
                tail = (tail + chunk)[-SIG_TAIL:]
        except (lzma.LZMAError, zlib.error, EOFError, OSError) as exc:
            raise ValueError("corrupt or truncated %s data (%s)" % (what, str(exc)[:200])) from None
        finally:
            try:
                reader.close()
            except (OSError, ValueError):
                pass
    if size == 0:
        raise ValueError("an empty file")
    # Told apart from a file that is no module at all, which is not "unsigned".
    if head != b"\x7fELF":
        raise ValueError("not an ELF module")
    return signer_from_tail(tail, size).text


# -- facts --------------------------------------------------------------------------------


class KeyList(Record):
    """Certificates read from one place (``path``): ``certs``; ``problem`` says what could not
    be read or understood (None: all of it was)."""

    __slots__ = ("path", "certs", "problem")
    _defaults = {"problem": None}


class SecureBoot(Record):
    """What decides whether the kernel takes an unsigned or foreign-signed module.

    ``efi``: the system booted through UEFI (/sys/firmware/efi exists). ``state``: True/False
    when the SecureBoot variable was read, None when not (``state_problem`` says why).
    ``lockdown``: the active lockdown mode, None when unreadable or absent; ``sig_enforce``:
    True/False from the module parameter, None when unreadable or absent. ``enrolled``: a
    KeyList of MokListRT (None: shim passed none, or it could not be read: ``enrolled_problem``).
    ``pending``: a KeyList of MokNew (None: no enrollment pending). ``on_disk``: KeyLists of
    the DKMS signing certificates present."""

    __slots__ = ("efi", "state", "state_problem", "lockdown", "sig_enforce", "enrolled", "enrolled_problem", "pending", "on_disk")
    _defaults = {"state_problem": None, "enrolled": None, "enrolled_problem": None, "pending": None, "on_disk": ()}

    @property
    def enforced(self):
        """True when the kernel refuses modules it cannot verify, False when it takes them
        (tainting itself), None when that cannot be told.

        module.sig_enforce refuses them, and so does lockdown (integrity or confidentiality:
        kernel/module/signing.c asks security_locked_down(LOCKDOWN_MODULE_SIGNATURE)).
        Distribution kernels (Ubuntu, Debian, Fedora, RHEL, SUSE) lock down when booted with
        Secure Boot; where the lockdown file cannot be read, Secure Boot is taken to mean it.
        """
        if self.sig_enforce or self.lockdown in ("integrity", "confidentiality"):
            return True
        if self.state and self.lockdown is None and not self.sig_enforce:
            return True
        if self.lockdown is not None or self.state is False or not self.efi:
            return False
        return None


def efi_value(data: bytes):
    """An efivarfs file's data after its 4 attribute bytes; None when shorter."""
    return data[4:] if len(data) >= 4 else None


def parse_lockdown(text: str):
    """``none [integrity] confidentiality`` → ``integrity``; None when nothing is bracketed."""
    start = text.find("[")
    end = text.find("]", start + 1)
    return text[start + 1 : end].strip() if start >= 0 and end > start else None


def _key_list(host, path: str, attributes: bool) -> KeyList:
    got = host.read_bytes(path, cap=VAR_CAP)
    if not got.ok:
        return KeyList(path, (), got.describe())
    data = efi_value(got.data) if attributes else got.data
    if data is None:
        return KeyList(path, (), "shorter than its 4 attribute bytes")
    raw, problem = signature_list_certs(data)
    if got.truncated:
        problem = "larger than %d KiB" % (VAR_CAP >> 10)
    certs = []
    for der in raw:
        try:
            certs.append(parse_certificate(der, path))
        except DerError as exc:
            problem = problem or "a certificate not understood (%s)" % exc
    return KeyList(path, tuple(certs), problem)


def _mok_lists(host):
    """MokListRT: from the EFI MOK configuration table where the kernel shows it, else the
    MokListRT, MokListRT1, … variables. (KeyList or None, problem)."""
    table = host.stat(MOKVARS + "/MokListRT")[0]
    if table.ok:
        listed = _key_list(host, MOKVARS + "/MokListRT", False)
        if not listed.problem:
            return listed, None
        table_problem = "%s: %s" % (listed.path, listed.problem)
    else:
        table_problem = None
    names = host.listdir(EFIVARS)
    if not names.ok:
        return None, table_problem or "%s: %s" % (EFIVARS, names.describe())
    suffix = "-" + SHIM_LOCK
    # MokListRT, then MokListRT1, MokListRT2 … where shim split a long list (never MokListXRT).
    parts = sorted(
        (name for name in names.data if name.startswith("MokListRT") and name.endswith(suffix) and _mok_part(name[9 : -len(suffix)])),
        key=lambda name: (len(name), name),
    )
    if not parts:
        return (None, table_problem) if table_problem else (KeyList(EFIVARS + "/MokListRT" + suffix, ()), None)
    certs, problems = [], []
    for name in parts[:16]:
        listed = _key_list(host, "%s/%s" % (EFIVARS, name), True)
        certs.extend(listed.certs)
        if listed.problem:
            problems.append("%s: %s" % (listed.path, listed.problem))
    if problems and not certs:
        return None, "; ".join(problems)
    return KeyList("%s/%s" % (EFIVARS, parts[0]), tuple(certs), "; ".join(problems) or None), None


def _mok_part(number: str) -> bool:
    return number == "" or (number.isdigit() and number.isascii() and len(number) <= 3)


def _cert_file(host, path: str):
    got = host.read_bytes(path, cap=65536)
    if not got.ok:
        return None
    data = got.data
    if data.startswith(b"-----BEGIN"):
        import base64
        import binascii

        body = data.split(b"-----", 4)
        try:
            data = base64.b64decode(b"".join(body[2].split()) if len(body) > 2 else b"")
        except (binascii.Error, ValueError):
            return KeyList(path, (), "not a PEM certificate")
    try:
        return KeyList(path, (parse_certificate(data, path),))
    except DerError as exc:
        return KeyList(path, (), "not a DER certificate (%s)" % exc)


@fact("secure_boot")
def secure_boot(host, facts):
    if not facts.get("running"):
        return Unavailable("an image, not a running system: Secure Boot is the firmware's setting, unknown for an image")
    lockdown = host.read_text(LOCKDOWN, cap=4096)
    mode = parse_lockdown(lockdown.data) if lockdown.ok else None
    enforce = host.read_text(SIG_ENFORCE, cap=64)
    sig_enforce = enforce.data.strip() in ("Y", "1") if enforce.ok and enforce.data.strip() else None
    efi = host.stat(EFI_DIR)[0]
    if not efi.ok:
        if efi.missing:
            sb = SecureBoot(False, False, None, mode, sig_enforce)
        else:
            sb = SecureBoot(False, None, "%s: %s" % (EFI_DIR, efi.describe()), mode, sig_enforce)
        return _with_keys(host, sb)
    got = host.read_bytes(SECURE_BOOT_VAR, cap=4096)
    state, problem = None, None
    if got.ok:
        value = efi_value(got.data)
        if value:
            state = value[0] == 1
        else:
            problem = "%s: %d bytes, no value after the attributes" % (SECURE_BOOT_VAR, len(got.data))
    elif got.missing and host.stat(EFIVARS)[0].ok:
        # Firmware without Secure Boot support has no such variable.
        state = False
    elif got.missing:
        problem = "%s: not present (efivarfs is not mounted at %s)" % (SECURE_BOOT_VAR, EFIVARS)
    else:
        problem = "%s: %s" % (SECURE_BOOT_VAR, got.describe())
    return _with_keys(host, SecureBoot(True, state, problem, mode, sig_enforce))


def _with_keys(host, sb):
    """``sb`` with the enrolled, pending and on-disk keys, read only where modules must be
    verified."""
    if not sb.enforced:
        return sb
    enrolled, enrolled_problem = _mok_lists(host)
    pending = None
    new = host.stat(MOK_NEW_VAR)[0]
    if not new.missing:
        pending = _key_list(host, MOK_NEW_VAR, True)
    on_disk = tuple(found for found in (_cert_file(host, path) for path in DKMS_CERTS) if found is not None)
    return sb._replace(enrolled=enrolled, enrolled_problem=enrolled_problem, pending=pending, on_disk=on_disk)


class ModuleSignature(Record):
    """The signature of the nvidia module installed for ``release`` (``path``): ``signer``
    (None when unread: ``problem`` says why), and of one of the kernel's own modules
    (``reference`` path, ``reference_signer``), whose key the kernel was built with.
    ``loaded``: the running kernel's, loaded now (so accepted; not read)."""

    __slots__ = ("release", "path", "signer", "problem", "reference", "reference_signer", "loaded")
    _defaults = {"problem": None, "reference": None, "reference_signer": None, "loaded": False}


def read_signer(host, path: str):
    """(Signer or None, problem or None) of the module at ``path``."""
    got = host.derive(path, "modsig", modsig)
    if not got.ok:
        return None, got.describe()
    signer = parse_modsig(got.data)
    if signer is None:
        return None, "a signature record not understood: %r" % got.data[:80]
    return signer, None


@fact("module_signatures")
def module_signatures(host, facts):
    """Who signed the nvidia module of each kernel ``gpu_modules`` looks at, and who signed
    that kernel's own modules. Compressed modules are decompressed to read their last bytes:
    only checks that need the answer ask for this fact."""
    found = []
    nv = facts.get("nvidia")
    for position, mods in enumerate(facts.get("gpu_modules") or ()):
        info = mods.found.get("nvidia")
        if info is None:
            continue
        if position == 0 and facts.get("running") and nv and nv.loaded:
            # It loaded, so the kernel took its signature: nothing to decompress.
            found.append(ModuleSignature(mods.release, info.path, None, None, loaded=True))
            continue
        signer, problem = read_signer(host, info.path)
        reference = reference_signer = None
        # One of the kernel's own modules: never an NVIDIA one that modules.dep happened to list first.
        if signer is not None and signer.signed and mods.reference is not None and "nvidia" not in mods.reference.path:
            reference = mods.reference.path
            reference_signer, _ = read_signer(host, reference)
        found.append(ModuleSignature(mods.release, info.path, signer, problem, reference, reference_signer))
    return tuple(found)
