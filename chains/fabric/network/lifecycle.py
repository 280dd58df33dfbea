"""The chaincode lifecycle of a Fabric park, chaincode as a service (no Docker, no build on the peer).

Each peer organisation runs its own chaincode server, so each has its own package: ``metadata.json``
(``{"type": "ccaas", "label": "<name>_<version>"}``) and ``code.tar.gz`` holding ``connection.json`` — the address
of *that* organisation's server. The two packages differ, and so do their package ids; that is allowed, since a
package id is an organisation's local choice and not part of the chaincode definition both organisations approve.

Steps (each skipped when already done, so the launcher can run them at every start):

1. package (deterministic bytes: fixed mtimes and owners, so the package id of a data dir never changes) and
   ``peer lifecycle chaincode calculatepackageid``;
2. ``install`` on the organisation's peer (its ``ccaas`` external builder accepts it: ``ccaas/bin``);
3. ``approveformyorg`` by each organisation with the definition: name, version, sequence, and the signature
   policy (:data:`~chains.fabric.consts.ENDORSEMENT_POLICY`: both organisations' peers endorse);
4. ``commit`` once both approved (the channel's ``LifecycleEndorsement`` is ``MAJORITY Endorsement``: both
   organisations' peers endorse the commit).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from chains.fabric.consts import PEER_ORGS
from chains.fabric.network.config import FabricNetworkConfig
from chains.fabric.network.crypto import ADMIN
from chains.fabric.network.process import FabricNetworkError
from chains.fabric.network.tools import FabricTools

__all__ = ["Lifecycle", "ccaas_package"]


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _tgz(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            _tar_member(tar, name, data)
    return gzip.compress(raw.getvalue(), mtime=0)


def ccaas_package(label: str, address: str, dial_timeout: str = "10s") -> bytes:
    """The bytes of a chaincode-as-a-service package whose server listens on ``address`` (plain gRPC)."""
    connection = {"address": address, "dial_timeout": dial_timeout, "tls_required": False}
    code = _tgz({"connection.json": json.dumps(connection, indent=2).encode() + b"\n"})
    metadata = {"type": "ccaas", "label": label}
    return _tgz({"metadata.json": json.dumps(metadata).encode(), "code.tar.gz": code})


class Lifecycle:
    """The chaincode lifecycle steps of ``cfg``'s one chaincode (module docstring)."""

    def __init__(self, cfg: FabricNetworkConfig, tools: FabricTools) -> None:
        self.cfg = cfg
        self.tools = tools
        self.spec = cfg.chaincode

    def package_path(self, msp: str) -> Path:
        return self.cfg.layout.chaincode_dir(msp) / f"{self.spec.label}.tgz"

    def server_address(self, msp: str) -> str:
        """Where ``msp``'s chaincode server listens and its peer reaches it: always a loopback address (the server
        has no TLS), the park's ``host`` if that is one, else 127.0.0.1 (a park on a host of its own, e.g. a network
        namespace: the peer and its chaincode server share that host's loopback)."""
        return f"{_loopback_or_default(self.cfg.host)}:{self.cfg.peer_ports(msp).chaincode_server}"

    def package(self, msp: str) -> str:
        """Write ``msp``'s package (if it changed) and return its package id (``label:sha256``)."""
        path = self.package_path(msp)
        data = ccaas_package(self.spec.label, self.server_address(msp))
        if not path.exists() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        out = self.tools.peer(msp, "lifecycle", "chaincode", "calculatepackageid", str(path)).output.strip()
        package_id = out.splitlines()[-1].strip() if out else ""
        if not package_id.startswith(self.spec.label + ":"):
            raise FabricNetworkError(f"calculatepackageid of {path}: expected {self.spec.label}:<hash>, got {out!r}")
        (path.parent / "package-id").write_text(package_id + "\n")
        return package_id

    def installed(self, msp: str) -> set[str]:
        """Package ids installed on ``msp``'s peer."""
        out = self.tools.peer(msp, "lifecycle", "chaincode", "queryinstalled", "--output", "json").output
        doc = _json(out, "queryinstalled")
        return {c["package_id"] for c in doc.get("installed_chaincodes") or []}

    def install(self, msp: str, package_id: str) -> bool:
        """Install ``msp``'s package on its peer unless it is there; True if it was installed now."""
        if package_id in self.installed(msp):
            return False
        self.tools.peer(msp, "lifecycle", "chaincode", "install", str(self.package_path(msp)), timeout_s=120)
        return True

    def _definition(self) -> list[str]:
        s = self.spec
        return ["--channelID", self.cfg.channel, "--name", s.name, "--version", s.version,
                "--sequence", str(s.sequence), "--signature-policy", s.endorsement_policy]

    def committed_sequence(self, msp: str = PEER_ORGS[0]) -> int | None:
        """The sequence of the chaincode's committed definition, or None if it has none."""
        res = self.tools.peer(msp, "lifecycle", "chaincode", "querycommitted", "--channelID", self.cfg.channel,
                              "--name", self.spec.name, "--output", "json", check=False)
        if res.returncode != 0:
            if "404" in res.output or "not defined" in res.output or "not found" in res.output:
                return None
            raise FabricNetworkError(f"querycommitted on {msp}'s peer: {res.output.strip()}")
        seq = _json(res.output, "querycommitted").get("sequence")
        if not isinstance(seq, int):
            raise FabricNetworkError(f"querycommitted on {msp}'s peer: no sequence in {res.output.strip()!r}")
        return seq

    def approvals(self, msp: str = PEER_ORGS[0]) -> dict[str, bool]:
        """Which organisations approved this definition (``checkcommitreadiness``)."""
        out = self.tools.peer(msp, "lifecycle", "chaincode", "checkcommitreadiness", *self._definition(),
                              "--output", "json").output
        approvals = _json(out, "checkcommitreadiness").get("approvals")
        if not isinstance(approvals, dict):
            raise FabricNetworkError(f"checkcommitreadiness: no approvals in {out.strip()!r}")
        return {str(k): bool(v) for k, v in approvals.items()}

    def approve(self, msp: str, package_id: str, orderer: int) -> None:
        """``approveformyorg`` by ``msp`` (waits until the approval commits on its peer)."""
        self.tools.peer(msp, "lifecycle", "chaincode", "approveformyorg", *self.tools.orderer_flags(orderer),
                        *self._definition(), "--package-id", package_id, "--waitForEventTimeout", "60s",
                        timeout_s=90)

    def commit(self, orderer: int) -> None:
        """Commit the definition, endorsed by every organisation's peer (waits until it commits)."""
        lay = self.cfg.layout
        peers: list[str] = []
        for msp in PEER_ORGS:
            peers += ["--peerAddresses", self.cfg.peer_endpoint(msp), "--tlsRootCertFiles", str(lay.tls_ca(msp))]
        self.tools.peer(PEER_ORGS[0], "lifecycle", "chaincode", "commit", *self.tools.orderer_flags(orderer),
                        *self._definition(), *peers, "--waitForEventTimeout", "60s", timeout_s=90)

    def invoke(self, args: list[str], orderer: int, *, msp: str = PEER_ORGS[0], user: str | None = None,
               check: bool = True, timeout_s: float = 60.0) -> tuple[int, str]:
        """``peer chaincode invoke`` as ``user`` (default the admin) of ``msp``, endorsed by every organisation's
        peer, submitted to ``orderer`` and waited for until it commits: the CLI's exit status and output."""
        lay = self.cfg.layout
        peers: list[str] = []
        for org in PEER_ORGS:
            peers += ["--peerAddresses", self.cfg.peer_endpoint(org), "--tlsRootCertFiles", str(lay.tls_ca(org))]
        res = self.tools.peer(msp, "chaincode", "invoke", *self.tools.orderer_flags(orderer), "--channelID",
                              self.cfg.channel, "--name", self.spec.name, *peers, "--ctor", json.dumps({"Args": args}),
                              "--waitForEvent", "--waitForEventTimeout", f"{int(timeout_s)}s", user=user or ADMIN,
                              check=check, timeout_s=timeout_s + 10)
        return res.returncode, res.output

    def query(self, msp: str, args: list[str], *, user: str | None = None, check: bool = True) -> str:
        """``peer chaincode query`` on ``msp``'s peer (as ``user``, default its admin): what the chaincode
        returned."""
        res = self.tools.peer(msp, "chaincode", "query", "--channelID", self.cfg.channel, "--name", self.spec.name,
                              "--ctor", json.dumps({"Args": args}), check=check, user=user or ADMIN)
        return res.output


def _json(out: str, what: str) -> dict[str, Any]:
    start = out.find("{")
    try:
        doc = json.loads(out[start:]) if start >= 0 else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise FabricNetworkError(f"{what}: expected JSON, got {out.strip()!r}")
    return doc


def _loopback_or_default(host: str) -> str:
    import ipaddress

    try:
        return host if host == "localhost" or ipaddress.ip_address(host).is_loopback else "127.0.0.1"
    except ValueError:
        return "127.0.0.1"
