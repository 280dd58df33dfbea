"""chains/fabric/msp.py and config.py: identities chain, roles, revocation, intermediates; channel configs the client
refuses to follow; hostile certificates and configs raise only typed errors."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.fabric.config import ChannelConfig
from chains.fabric.consts import OPERATOR_MSP
from chains.fabric.errors import ChannelConfigError
from chains.fabric.msp import IdentityRefused, Msp, verify_signature
from chains.fabric.proto import (
    ConfigEnvelope,
    ConsensusType,
    FabricMSPConfig,
    FabricNodeOUs,
    FabricOUIdentifier,
    MSPConfig,
    SerializedIdentity,
)
from chains.fabric.testing import _CA, T0_MS, YEAR_MS, FabricNet, Org, low_s_sign
from protocol.errors import ProtocolError


def _pem(cert: object) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined]


def _msp(org: Org, **changes: object) -> Msp:
    cfg = FabricMSPConfig.decode(MSPConfig.decode(org.msp_value()).config)
    from dataclasses import replace
    return Msp(replace(cfg, **changes))  # type: ignore[arg-type]


def test_an_identity_through_an_intermediate_ca() -> None:
    org = Org.new(OPERATOR_MSP)
    cert, key = org.ca.issue("ica.operatormsp", OPERATOR_MSP, [], T0_MS - YEAR_MS, T0_MS + YEAR_MS, is_ca=True)
    ica = _CA(cert, key)
    node = org.node("peer7.operatormsp", "peer", ca=ica)
    ident = SerializedIdentity(OPERATOR_MSP, _pem(node.cert))
    with pytest.raises(IdentityRefused, match="chain"):
        _msp(org).validate(ident, "peer")
    msp = _msp(org, intermediate_certs=(_pem(ica.cert),))
    valid = msp.validate(ident, "peer")
    Msp.check_time(valid, T0_MS)
    assert verify_signature(valid.public_key, node.sign(b"x"), b"x")
    assert not verify_signature(valid.public_key, node.sign(b"x"), b"y")
    # revoking the intermediate (by the root's CRL) revokes what it issued
    crl = org.ca.crl([ica.cert.serial_number], T0_MS)
    with pytest.raises(IdentityRefused, match="revoked"):
        _msp(org, intermediate_certs=(_pem(ica.cert),), revocation_list=(crl,)).validate(ident, "peer")
    # a CRL signed by someone else revokes nothing
    forged = Org.new(OPERATOR_MSP).ca.crl([ica.cert.serial_number], T0_MS)
    _msp(org, intermediate_certs=(_pem(ica.cert),), revocation_list=(forged,)).validate(ident, "peer")


def test_roles_need_node_ous_and_the_tied_ca() -> None:
    org = Org.new(OPERATOR_MSP)
    node = org.node("peer0.operatormsp", "peer")
    ident = SerializedIdentity(OPERATOR_MSP, _pem(node.cert))
    with pytest.raises(IdentityRefused, match="no node OUs"):
        _msp(org, fabric_node_ous=None).validate(ident, "peer")
    other_ca = _pem(Org.new(OPERATOR_MSP).ca.cert)
    tied_elsewhere = FabricNodeOUs(True, peer=FabricOUIdentifier(other_ca, "peer"))
    with pytest.raises(IdentityRefused, match="exactly one"):
        _msp(org, fabric_node_ous=tied_elsewhere).validate(ident, "peer")
    with pytest.raises(IdentityRefused, match="another MSP"):
        _msp(org).validate(SerializedIdentity("SalesMSP", ident.id_bytes), "peer")
    ca_as_identity = SerializedIdentity(OPERATOR_MSP, _pem(org.ca.cert))
    with pytest.raises(IdentityRefused, match="CA certificate"):
        _msp(org).validate(ca_as_identity, "peer")


@pytest.mark.parametrize("pem", [b"", b"junk", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                                 b"x" * 9000])
def test_identity_bytes_that_are_not_one_certificate(pem: bytes) -> None:
    with pytest.raises(IdentityRefused):
        _msp(Org.new(OPERATOR_MSP)).validate(SerializedIdentity(OPERATOR_MSP, pem), "peer")


def test_two_certificates_in_one_identity_are_refused() -> None:
    org = Org.new(OPERATOR_MSP)
    pem = _pem(org.node("a", "peer").cert) + _pem(org.node("b", "peer").cert)
    with pytest.raises(IdentityRefused, match="exactly one"):
        _msp(org).validate(SerializedIdentity(OPERATOR_MSP, pem), "peer")


def test_signatures_low_s_and_shape() -> None:
    org = Org.new(OPERATOR_MSP)
    node = org.node("p", "peer")
    pub = node.cert.public_key()
    sig = low_s_sign(node.key, b"m")
    assert verify_signature(pub, sig, b"m")  # type: ignore[arg-type]
    for bad in (b"", b"\x30\x00", sig + b"\x00", b"\x30" * 100):
        assert not verify_signature(pub, bad, b"m")  # type: ignore[arg-type]


def _env(net: FabricNet) -> ConfigEnvelope:
    return ConfigEnvelope.decode(net.config_envelope(0))


def test_configs_the_client_cannot_follow() -> None:
    net = FabricNet.new()
    ChannelConfig.parse(net.config_envelope(0), "park")
    # consenters whose TLS certificates no orderer organisation's TLS CA issued
    net.consenters = [Org.new("OrdererMSP").node("orderer0.orderermsp", "orderer", tls=True)]
    with pytest.raises(ChannelConfigError, match="no consenter"):
        ChannelConfig.parse(net.config_envelope(0), "park")
    net = FabricNet.new()
    env = _env(net)
    orderer = env.config.channel_group.groups["Orderer"]
    from dataclasses import replace
    solo = replace(orderer, values={"ConsensusType": replace(orderer.values["ConsensusType"],
                                                               value=ConsensusType("BFT", b"").encode())})
    bad = replace(env, config=replace(env.config, channel_group=replace(
        env.config.channel_group, groups={**env.config.channel_group.groups, "Orderer": solo})))
    with pytest.raises(ChannelConfigError, match="etcdraft"):
        ChannelConfig.parse(bad.encode(), "park")
    no_app = replace(env, config=replace(env.config, channel_group=replace(
        env.config.channel_group, groups={"Orderer": orderer})))
    with pytest.raises(ChannelConfigError, match="Application"):
        ChannelConfig.parse(no_app.encode(), "park")
    idemix = replace(env.config.channel_group.groups["Application"].groups[OPERATOR_MSP],
                     values={"MSP": replace(orderer.values["ConsensusType"], value=MSPConfig(1, b"").encode())})
    app = replace(env.config.channel_group.groups["Application"], groups={OPERATOR_MSP: idemix})
    with pytest.raises(ChannelConfigError, match=r"X\.509"):
        ChannelConfig.parse(replace(env, config=replace(env.config, channel_group=replace(
            env.config.channel_group, groups={"Orderer": orderer, "Application": app}))).encode(), "park")


_NET = FabricNet.new()
_CONFIG = _NET.config_envelope(0)
_PEER = _NET.peers[OPERATOR_MSP]
_DER = _PEER.cert.public_bytes(serialization.Encoding.DER)


def _as_pem(der: bytes) -> bytes:
    body = base64.encodebytes(der)
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


@settings(max_examples=int(os.environ.get("FABRIC_FUZZ", 400)), deadline=None)
@given(at=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255), cut=st.integers(min_value=1))
def test_hostile_configs_and_certificates_raise_only_typed_errors(at: int, mask: int, cut: int) -> None:
    i = at % len(_CONFIG)
    for raw in (_CONFIG[:i] + bytes([_CONFIG[i] ^ mask]) + _CONFIG[i + 1:], _CONFIG[: cut % len(_CONFIG)]):
        try:
            ChannelConfig.parse(raw, "park")
        except ProtocolError:
            pass
    msp = ChannelConfig.parse(_CONFIG, "park").application_msps[OPERATOR_MSP]
    j = at % len(_DER)
    for der in (_DER[:j] + bytes([_DER[j] ^ mask]) + _DER[j + 1:], _DER[: cut % len(_DER)]):
        try:
            valid = msp.validate(SerializedIdentity(OPERATOR_MSP, _as_pem(der)), "peer")
        except IdentityRefused:
            continue
        # a mutation that still validates must not have changed the key (only unsigned-irrelevant bits)
        assert der == _DER or verify_signature(valid.public_key, _PEER.sign(b"m"), b"m")
