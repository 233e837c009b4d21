"""A real Kubernetes control plane run as local processes, for tests and local development.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the upstream binaries built by
``scripts/build-k8s.sh``; nothing here imitates the API server. What a cluster normally gets from
its installer is done here instead:

* One ECDSA CA signs the apiserver's serving certificate and every client certificate. Clients
  authenticate with certificates (CN = user, O = groups): the admin is in ``system:masters``, the
  scheduler and controller manager use their bootstrap identities, so RBAC (the only authorizer)
  treats them like in a kubeadm cluster.
* One RSA key signs and verifies ServiceAccount tokens, so TokenRequest works and the controller
  manager runs each controller under its own ServiceAccount (``--use-service-account-credentials``).
* ServiceAccount admission stays on, like in a real cluster: the serviceaccount controller creates
  the ``default`` ServiceAccount of every namespace, and ``start`` waits for it before returning.
* ``--endpoint-reconciler-type=none``: the apiserver listens on loopback, which the Endpoints of the
  ``kubernetes`` Service may not contain.
* The node-lifecycle controller is off: there are no kubelets posting heartbeats, the process
  kubelet (``catalogsync.dev.kubelet``) registers Nodes that stay Ready as long as they exist.

Every component runs in its own process group on free loopback ports, logs into the work
directory, and is killed with its group on ``stop``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from catalogsync.dev.cache import cache_root
from catalogsync.dev.processes import die_with_parent, free_port, process_exists, signal_group
from catalogsync.dev.service import Service

BINARY_NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")

CONTROLLERS = (
    "job-controller",
    "cronjob-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "ttl-after-finished-controller",
    "pod-garbage-collector-controller",
    "clusterrole-aggregation-controller",
    "replicaset-controller",
    "deployment-controller",
    "statefulset-controller",
    "daemonset-controller",
    "disruption-controller",
    "resourcequota-controller",
    "taint-eviction-controller",
)
"""Controllers the tests rely on; node-lifecycle and everything about networking/volumes is off."""

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0
WORKDIR_PREFIX = "catalogsync-k8s-"
OWNER_FILE = "owner.pid"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started; the message carries the failing component's log."""


class BinariesMissing(ControlPlaneError):
    """The control-plane binaries have not been built (run ``scripts/build-k8s.sh``)."""


# --------------------------------------------------------------------------------------------
# Locating the binaries


def repo_root() -> Path | None:
    """The checkout this module lives in (src layout), or None when installed elsewhere."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "tools" / "k8s" / "versions.env").is_file():
            return parent
    return None


def pinned_versions(root: Path | None = None) -> dict[str, str]:
    """``K8S_VERSION``/``ETCD_VERSION`` from ``tools/k8s/versions.env`` (the build's cache key)."""
    root = root or repo_root()
    if root is None:
        raise BinariesMissing("tools/k8s/versions.env not found; set CATALOGSYNC_K8S_BIN")
    versions: dict[str, str] = {}
    for line in (root / "tools" / "k8s" / "versions.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            versions[key.strip()] = value.strip()
    return versions


def default_bin_dir() -> Path:
    """Where ``scripts/build-k8s.sh`` puts the binaries; keep both in step."""
    if explicit := os.environ.get("CATALOGSYNC_K8S_BIN"):
        return Path(explicit)
    versions = pinned_versions()
    key = f"{versions['K8S_VERSION']}-etcd{versions['ETCD_VERSION']}"
    return cache_root() / "k8s" / key / "bin"


@dataclass(frozen=True)
class Binaries:
    """Paths of the five executables."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path

    @classmethod
    def find(cls, bin_dir: Path | None = None) -> Binaries:
        """Binaries in ``bin_dir`` (default: the build cache); raises BinariesMissing."""
        bin_dir = bin_dir or default_bin_dir()
        paths = [bin_dir / name for name in BINARY_NAMES]
        missing = [p.name for p in paths if not os.access(p, os.X_OK)]
        if missing:
            raise BinariesMissing(
                f"missing {', '.join(missing)} in {bin_dir}; build them with scripts/build-k8s.sh"
            )
        return cls(*paths)


# --------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True)
class KeyPair:
    """PEM files of a certificate and its private key."""

    cert: Path
    key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class CertificateAuthority:
    """A throwaway CA for one control plane (a week of validity is plenty for a test run)."""

    def __init__(self, directory: Path, name: str = "catalogsync-test-ca") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._cert = (
            self._builder(subject, self._key.public_key())
            .issuer_name(subject)
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
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = directory / "ca.crt"
        self.cert_file.write_bytes(self.pem)

    @property
    def pem(self) -> bytes:
        """The CA certificate, for kubeconfigs and ``--client-ca-file``."""
        return self._cert.public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def _builder(
        subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=7))
        )

    def issue(
        self,
        directory: Path,
        name: str,
        common_name: str,
        *,
        groups: Sequence[str] = (),
        hosts: Sequence[str] = (),
    ) -> KeyPair:
        """A leaf certificate: client (CN/O = user/groups) or, with ``hosts``, also server."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usage = [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            self._builder(x509.Name(attrs), key.public_key())
            .issuer_name(self._cert.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if hosts:
            usage.append(x509.oid.ExtendedKeyUsageOID.SERVER_AUTH)
            sans = x509.SubjectAlternativeName(subject_alt_names(hosts))
            builder = builder.add_extension(sans, critical=False)
        cert = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False).sign(
            self._key, hashes.SHA256()
        )
        pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pair.key, key)
        return pair


def subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """IP and DNS SAN entries for ``hosts``."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def write_service_account_keys(directory: Path) -> KeyPair:
    """The RSA pair that signs (apiserver, controller manager) and checks ServiceAccount tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pair = KeyPair(directory / "sa.pub", directory / "sa.key")
    _write_key(pair.key, key)
    pair.cert.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pair


# --------------------------------------------------------------------------------------------
# Kubeconfig and connection details


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach the apiserver as one user: URL, CA and client certificate, and a kubeconfig."""

    server: str
    ca_file: Path
    client: KeyPair
    kubeconfig: Path

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS context that trusts the test CA and presents the client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.client.cert), str(self.client.key))
        return context

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path, directory: Path) -> ClusterAccess:
        """Read a client-certificate kubeconfig (like ours), writing its PEMs to ``directory``."""
        import base64

        import yaml

        config = yaml.safe_load(kubeconfig.read_text())
        context_name = config["current-context"]
        context = next(c for c in config["contexts"] if c["name"] == context_name)["context"]
        cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])["cluster"]
        user = next(u for u in config["users"] if u["name"] == context["user"])["user"]

        def pem(entry: dict[str, str], key: str, name: str) -> Path:
            if f"{key}-data" in entry:
                path = directory / name
                path.write_bytes(base64.b64decode(entry[f"{key}-data"]))
                path.chmod(0o600)
                return path
            if key in entry:
                return (kubeconfig.parent / entry[key]).resolve()
            raise ControlPlaneError(f"{kubeconfig}: no {key} for the current context")

        directory.mkdir(parents=True, exist_ok=True)
        client = KeyPair(
            pem(user, "client-certificate", "client.crt"), pem(user, "client-key", "client.key")
        )
        ca = pem(cluster, "certificate-authority", "ca.crt")
        return cls(cluster["server"], ca, client, kubeconfig)


def write_kubeconfig(
    path: Path,
    server: str,
    ca_pem: bytes,
    *,
    user: str,
    client: KeyPair | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    """A self-contained kubeconfig (data embedded) for a certificate or a bearer token."""
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    credentials: dict[str, str] = {}
    if client is not None:
        credentials["client-certificate-data"] = b64(client.cert.read_bytes())
        credentials["client-key-data"] = b64(client.key.read_bytes())
    if token is not None:
        credentials["token"] = token
    context: dict[str, str] = {"cluster": "catalogsync-test", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "catalogsync-test",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "catalogsync-test", "context": context}],
        "current-context": "catalogsync-test",
    }
    # JSON is valid YAML, and every kubeconfig loader accepts it.
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------------------------
# Processes


@dataclass
class Component:
    """One control-plane process, started in its own process group."""

    name: str
    argv: list[str]
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # Only a prctl() call between fork and exec: no locks, no allocation to deadlock on.
                preexec_fn=die_with_parent(),  # noqa: PLW1509
            )

    def check_alive(self) -> None:
        """Raise with the log tail if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise ControlPlaneError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the whole group, then SIGKILL what is left after ``timeout``."""
        process, self.process = self.process, None
        if process is None:
            return
        signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
        signal_group(process.pid, signal.SIGKILL)
        process.wait()


def sweep_stale_workdirs() -> None:
    """Remove work directories of control planes whose owner was killed before its ``stop``.

    Their components died with the owner (parent-death signal), but the directory (etcd data,
    logs, ~100 MB) stays. Only directories marked with a dead owner's pid go: kept ones
    (``keep_workdir``) carry no mark.
    """
    for workdir in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        try:
            owner = int((workdir / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not process_exists(owner):
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_until(what: str, probe: Probe, components: Sequence[Component], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        for component in components:
            component.check_alive()
        try:
            if probe():
                return
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last_error = str(exc)
        time.sleep(0.25)
    tails = "\n".join(f"--- {c.name}\n{c.log_tail()}" for c in components)
    raise ControlPlaneError(f"timed out waiting for {what} ({last_error})\n{tails}")


class Probe:
    """An HTTPS GET that counts as ready on HTTP 200 (and optionally a JSON predicate)."""

    def __init__(self, url: str, context: ssl.SSLContext) -> None:
        self.url = url
        self.context = context

    def __call__(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, context=self.context, timeout=5) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return False


def _insecure_context() -> ssl.SSLContext:
    # The controller manager and scheduler serve /healthz with self-signed certificates.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# --------------------------------------------------------------------------------------------
# The control plane


@dataclass
class ControlPlane(Service):
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler on loopback.

    Use as a context manager, or call ``start``/``stop``. ``admin`` is a system:masters user;
    ``kubeconfig`` is its kubeconfig file.
    """

    binaries: Binaries = field(default_factory=Binaries.find)
    workdir: Path | None = None
    extra_apiserver_args: Sequence[str] = ()
    extra_controller_manager_args: Sequence[str] = ()
    keep_workdir: bool = False
    components: list[Component] = field(default_factory=list, init=False)
    _admin: ClusterAccess | None = field(default=None, init=False)
    _owns_workdir: bool = field(default=False, init=False)

    @property
    def admin(self) -> ClusterAccess:
        """Connection details of the cluster-admin user."""
        if self._admin is None:
            raise ControlPlaneError("control plane is not running")
        return self._admin

    @property
    def kubeconfig(self) -> Path:
        return self.admin.kubeconfig

    @property
    def server(self) -> str:
        return self.admin.server

    @property
    def pki(self) -> Path:
        return self._dir("pki")

    def _dir(self, name: str) -> Path:
        assert self.workdir is not None
        path = self.workdir / name
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def start(self, attempts: int = 3) -> None:
        """Start everything and wait until it serves; retries with new ports on a port clash."""
        if self.workdir is None:
            sweep_stale_workdirs()
            self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
            if not self.keep_workdir:
                (self.workdir / OWNER_FILE).write_text(str(os.getpid()))
            self._owns_workdir = True
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                return
            except ControlPlaneError as exc:
                self._stop_components()
                if attempt == attempts or "address already in use" not in str(exc):
                    self.stop()
                    raise
            except BaseException:  # Ctrl-C, a binary that cannot exec: nothing may stay up
                self.stop()
                raise

    def _start_once(self) -> None:
        shutil.rmtree(self._dir("etcd"))  # a failed attempt leaves a member with other ports
        ports = {name: free_port() for name in ("etcd", "peer", "apiserver", "kcm", "sched")}
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        server = f"https://127.0.0.1:{ports['apiserver']}"
        ca, sa_keys, access = self._write_pki(server)

        etcd = self._component("etcd", self._etcd_args(etcd_url, ports["peer"]))
        _wait_until("etcd", Probe(f"{etcd_url}/health", _insecure_context()), [etcd], 30)
        self._admin = access["admin"]
        apiserver = self._component(
            "kube-apiserver", self._apiserver_args(etcd_url, ports["apiserver"], ca, sa_keys)
        )
        context = access["admin"].ssl_context()
        _wait_until(
            "kube-apiserver /readyz",
            Probe(f"{server}/readyz", context),
            [etcd, apiserver],
            START_TIMEOUT,
        )
        kcm = self._component(
            "kube-controller-manager",
            self._controller_manager_args(access["kcm"], ports["kcm"], ca, sa_keys),
        )
        scheduler = self._component(
            "kube-scheduler", self._scheduler_args(access["scheduler"], ports["sched"])
        )
        everything = [etcd, apiserver, kcm, scheduler]
        insecure = _insecure_context()
        for name, port in (
            ("kube-controller-manager", ports["kcm"]),
            ("kube-scheduler", ports["sched"]),
        ):
            probe = Probe(f"https://127.0.0.1:{port}/healthz", insecure)
            _wait_until(f"{name} /healthz", probe, everything, START_TIMEOUT)
        default_sa = Probe(f"{server}/api/v1/namespaces/default/serviceaccounts/default", context)
        _wait_until("the default ServiceAccount", default_sa, everything, START_TIMEOUT)

    def _write_pki(
        self, server: str
    ) -> tuple[CertificateAuthority, KeyPair, dict[str, ClusterAccess]]:
        pki = self.pki
        ca = CertificateAuthority(pki)
        ca.issue(
            pki,
            "apiserver",
            "kube-apiserver",
            hosts=(
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "10.0.0.1",
            ),
        )
        users = {
            "admin": ("admin", ("system:masters",)),
            "kcm": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
        }
        access: dict[str, ClusterAccess] = {}
        for name, (common_name, groups) in users.items():
            pair = ca.issue(pki, name, common_name, groups=groups)
            kubeconfig = write_kubeconfig(
                self._dir("kubeconfig") / f"{name}.kubeconfig",
                server,
                ca.pem,
                user=common_name,
                client=pair,
            )
            access[name] = ClusterAccess(server, ca.cert_file, pair, kubeconfig)
        return ca, write_service_account_keys(pki), access

    def _component(self, name: str, argv: list[str]) -> Component:
        component = Component(name, argv, self._dir("logs") / f"{name}.log")
        self.components.append(component)
        component.start()
        return component

    def _etcd_args(self, url: str, peer_port: int) -> list[str]:
        peer = f"http://127.0.0.1:{peer_port}"
        return [
            str(self.binaries.etcd),
            "--name=catalogsync",
            f"--data-dir={self._dir('etcd')}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=catalogsync={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_args(
        self, etcd_url: str, port: int, ca: CertificateAuthority, sa: KeyPair
    ) -> list[str]:
        pki = self.pki
        return [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={ca.cert_file}",
            # Only to publish a complete extension-apiserver-authentication ConfigMap; without it
            # the controller manager and scheduler keep logging about the missing bundle.
            f"--requestheader-client-ca-file={ca.cert_file}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={sa.cert}",
            f"--service-account-signing-key-file={sa.key}",
            "--endpoint-reconciler-type=none",
            # Process-kubelet Nodes are all 127.0.0.1; their Hostname address does not resolve.
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
            *self.extra_apiserver_args,
        ]

    def _controller_manager_args(
        self, access: ClusterAccess, port: int, ca: CertificateAuthority, sa: KeyPair
    ) -> list[str]:
        return [
            str(self.binaries.kube_controller_manager),
            *self._client_component_args(access, port, "kcm"),
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={sa.key}",
            f"--root-ca-file={ca.cert_file}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            *self.extra_controller_manager_args,
        ]

    def _scheduler_args(self, access: ClusterAccess, port: int) -> list[str]:
        return [
            str(self.binaries.kube_scheduler),
            *self._client_component_args(access, port, "scheduler"),
        ]

    def _client_component_args(self, access: ClusterAccess, port: int, cert_dir: str) -> list[str]:
        """What the controller manager and the scheduler share: one identity for the API and for
        checking callers of their own /healthz port, a single instance (no leader election)."""
        kubeconfig = str(access.kubeconfig)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self._dir(cert_dir)}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]

    def logs(self) -> dict[str, Path]:
        """Log file of each component, for failure reports."""
        return {c.name: c.log_file for c in self.components}

    def _stop_components(self) -> None:
        for component in reversed(self.components):
            component.stop()
        self.components.clear()

    def stop(self) -> None:
        """Kill every component's process group and remove the work directory (unless kept)."""
        self._stop_components()
        self._admin = None
        if self._owns_workdir and not self.keep_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self._owns_workdir = False


@contextlib.contextmanager
def running(**kwargs: object) -> Iterator[ControlPlane]:
    """``with running() as cp:`` for scripts and notebooks."""
    plane = ControlPlane(**kwargs)  # type: ignore[arg-type]
    with plane:
        yield plane


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m catalogsync.dev.controlplane``: run a control plane until Ctrl-C."""
    del argv

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Also when started in the background, where a non-interactive shell ignores SIGINT.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    with ControlPlane(keep_workdir=True) as plane:
        print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
        print(f"# logs in {plane.workdir}/logs; Ctrl-C or SIGTERM stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
