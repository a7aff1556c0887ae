"""Certificates and keys for the local control plane: a cluster CA (serving and client certificates),
a front-proxy CA (the aggregation layer), and the service-account signing key pair."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=365)
# The only name the API server accepts front-proxy (aggregation layer) client certificates for.
FRONT_PROXY_CLIENT_NAME = "front-proxy-client"


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path

    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    def key_pem(self) -> bytes:
        return self.key.read_bytes()


class _Authority:
    def __init__(self, directory: Path, name: str, common_name: str):
        self._dir = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.pair = _write(directory, name, self._cert, self._key)

    @classmethod
    def load(cls, pair: CertPair) -> _Authority:
        """The authority whose certificate and key ``pair`` holds (written by an earlier run)."""
        authority = cls.__new__(cls)
        authority._dir = pair.cert.parent
        authority._key = serialization.load_pem_private_key(pair.key_pem(), password=None)
        authority._cert = x509.load_pem_x509_certificate(pair.cert_pem())
        authority.pair = pair
        return authority

    def issue(
        self,
        name: str,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        server_names: tuple[str, ...] = (),
        client: bool = True,
        directory: Path | None = None,
    ) -> CertPair:
        """A leaf certificate: a client certificate, and a serving one when server_names are given;
        written into ``directory`` (default: the authority's)."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in server_names]), critical=False
            )
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        return _write(directory or self._dir, name, builder.sign(self._key, hashes.SHA256()), key)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write(directory: Path, name: str, cert: x509.Certificate, key) -> CertPair:
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pair.key.chmod(0o600)
    return pair


@dataclass(frozen=True)
class ClusterPKI:
    ca: CertPair
    apiserver: CertPair
    admin: CertPair
    controller_manager: CertPair
    scheduler: CertPair
    kwok: CertPair
    front_proxy_ca: CertPair
    front_proxy_client: CertPair
    service_account_key: Path
    service_account_pub: Path


def issue_leaf(ca: CertPair, directory: Path, name: str, common_name: str, server_names: tuple[str, ...]) -> CertPair:
    """A serving and client certificate signed by the CA in ``ca`` (e.g. the cluster's, for a
    component started after the cluster), written as ``directory/name.{crt,key}``."""
    directory.mkdir(parents=True, exist_ok=True)
    return _Authority.load(ca).issue(name, common_name, server_names=server_names, directory=directory)


@dataclass(frozen=True)
class NodePKI:
    """What a real node and the API server need to trust each other, all signed by the cluster CA."""

    kubelet: CertPair  # client: the Node authorizer knows it as system:node:<name>
    kubelet_serving: CertPair  # its port 10250, for the node's IP and name
    kube_proxy: CertPair  # client: RBAC binds system:kube-proxy to system:node-proxier
    apiserver_kubelet_client: CertPair  # the API server's client certificate towards kubelets


def create_node_pki(ca: CertPair, directory: Path, node_name: str, node_ip: str) -> NodePKI:
    authority = _Authority.load(ca)
    return NodePKI(
        kubelet=authority.issue(
            "kubelet", f"system:node:{node_name}", organizations=("system:nodes",), directory=directory
        ),
        kubelet_serving=authority.issue(
            "kubelet-serving", node_name, server_names=(node_ip, node_name), client=False, directory=directory
        ),
        kube_proxy=authority.issue("kube-proxy", "system:kube-proxy", directory=directory),
        # system:masters: the kubelet authorizes the API server's log, exec and port-forward calls
        # through a SubjectAccessReview, which this group always passes.
        apiserver_kubelet_client=authority.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            organizations=("system:masters",),
            directory=directory,
        ),
    )


def create_pki(directory: Path, server_names: tuple[str, ...]) -> ClusterPKI:
    """Everything the control plane needs, written as PEM files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _Authority(directory, "ca", "soundmind-local-ca")
    front_proxy = _Authority(directory, "front-proxy-ca", "soundmind-local-front-proxy-ca")

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_private, sa_public = directory / "sa.key", directory / "sa.pub"
    sa_private.write_bytes(
        sa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    sa_private.chmod(0o600)
    sa_public.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    return ClusterPKI(
        ca=ca.pair,
        apiserver=ca.issue("apiserver", "kube-apiserver", server_names=server_names, client=False),
        admin=ca.issue("admin", "kubernetes-admin", organizations=("system:masters",)),
        controller_manager=ca.issue("controller-manager", "system:kube-controller-manager"),
        scheduler=ca.issue("scheduler", "system:kube-scheduler"),
        # kwok writes status for nodes and pods it does not own as a kubelet would, on every node.
        kwok=ca.issue("kwok", "kwok-controller", organizations=("system:masters",)),
        front_proxy_ca=front_proxy.pair,
        front_proxy_client=front_proxy.issue("front-proxy-client", FRONT_PROXY_CLIENT_NAME),
        service_account_key=sa_private,
        service_account_pub=sa_public,
    )
