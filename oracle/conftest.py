"""Shared fixtures of the oracle suite: the kvinject binary, a running webhook, the validators."""

import base64
import functools
import http.client
import json
import os
import pathlib
import re
import socket
import ssl
import subprocess
import time

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The upstream CRDs that SecretProviderClass and AAD Pod Identity objects are validated against;
# oracle/crds/README.md says where each file comes from and how to refresh it.
CRDS = ROOT / "oracle" / "crds"
CRD_FILES = ("secrets-store.csi.x-k8s.io_secretproviderclasses.yaml", "aadpodidentity.k8s.io.yaml")
BIN = os.environ.get("KVINJECT_BIN", str(ROOT / "target" / "debug" / "kvinject"))
KUBECTL = str(pathlib.Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "kubectl")
KUBERNETES_VERSION = "1.34.0"
SNI = "kvinject.kvinject.svc"


def pytest_configure(config):
    """Stops the run with one line, not a stack trace, when a CRD file is missing."""
    missing = [name for name in CRD_FILES if not (CRDS / name).is_file()]
    if missing:
        pytest.exit(
            f"oracle suite: missing {', '.join(missing)} in {CRDS}"
            " (restore it with git; oracle/crds/README.md says where it comes from)",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webhook:
    """A running `kvinject serve`, called the way the API server calls it."""

    def __init__(self, port, ca_file):
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2

    def post(self, body: bytes, content_type="application/json", path="/mutate"):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        tls = self.context.wrap_socket(raw, server_hostname=SNI)
        connection = http.client.HTTPConnection(SNI, self.port, timeout=10)
        connection.sock = tls
        connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, data

    def review(self, review: dict, path="/mutate") -> dict:
        status, data = self.post(json.dumps(review).encode(), path=path)
        assert status == 200, data
        answer = json.loads(data)
        response = answer["response"]
        assert response["uid"] == review["request"]["uid"]
        if "patch" in response:
            assert isinstance(response["patch"], str), "patch must be base64 on the wire"
            response["patch"] = json.loads(base64.b64decode(response["patch"]))
        return response


@pytest.fixture(scope="session")
def webhook(tmp_path_factory):
    certs = tmp_path_factory.mktemp("certs")
    subprocess.run([BIN, "certs", "--out", str(certs)], check=True, capture_output=True)
    port, health = free_port(), free_port()
    process = subprocess.Popen(
        [
            BIN, "serve",
            "--tls-cert-file", str(certs / "tls.crt"),
            "--tls-key-file", str(certs / "tls.key"),
            "--listen", f"127.0.0.1:{port}",
            "--health-listen", f"127.0.0.1:{health}",
            "--facts", str(ROOT / "tests" / "fixtures" / "facts.yaml"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", health, timeout=1)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("kvinject serve did not become ready: " + process.stderr.read().decode())
        time.sleep(0.05)
    yield Webhook(port, certs / "ca.crt")
    process.terminate()
    process.wait(timeout=30)


@functools.cache
def crd_schemas():
    """(apiVersion, kind) -> strict JSON schema, from the upstream CRDs in oracle/crds."""
    schemas = {}
    for name in CRD_FILES:
        for crd in yaml.safe_load_all((CRDS / name).read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(f"{group}/{version['name']}", kind)] = strict(schema)
    return schemas


def strict(schema):
    """Rejects unknown fields, as the API server's strict field validation does."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def validate(document: dict):
    """Validates any document kvinject may emit; fails on what it cannot check."""
    key = (document.get("apiVersion"), document.get("kind"))
    schemas = crd_schemas()
    if key in schemas:
        jsonschema.validate(document, schemas[key])
        if document["kind"] == "SecretProviderClass":
            check_provider_objects(document)
        return
    if key == ("v1", "List"):
        for item in document["items"]:
            validate(item)
        return
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


ALLOWED_OBJECT_KEYS = {
    "objectName", "objectType", "objectVersion", "objectAlias", "objectFormat",
    "objectEncoding", "filePermission", "objectVersionHistory",
}


def check_provider_objects(spc: dict):
    """The Azure provider's own rules for `parameters.objects` and `secretObjects`."""
    objects = yaml.safe_load(spc["spec"]["parameters"]["objects"])
    assert isinstance(objects, dict) and set(objects) == {"array"}, objects
    files = []
    for text in objects["array"]:
        assert isinstance(text, str), "each entry is a YAML string"
        entry = yaml.safe_load(text)
        assert set(entry) <= ALLOWED_OBJECT_KEYS, entry
        for key, value in entry.items():
            assert isinstance(value, str), f"{key} must read back as a string: {value!r}"
        assert entry["objectName"]
        assert entry["objectType"] in ("secret", "key", "cert"), entry
        alias = entry.get("objectAlias", entry["objectName"])
        assert alias and "/" not in alias and alias not in (".", ".."), alias
        if "objectFormat" in entry:
            assert entry["objectFormat"] in ("pem", "pfx"), entry
            if entry["objectFormat"] == "pfx":
                assert entry["objectType"] == "secret", entry
        if "objectEncoding" in entry:
            assert entry["objectEncoding"] in ("utf-8", "hex", "base64"), entry
            assert entry["objectType"] == "secret", entry
        if "filePermission" in entry:
            int(entry["filePermission"], 8)
        files.append(alias)
    assert len(files) == len(set(files)), f"two objects mounted as one file: {files}"
    by_file = {entry.get("objectAlias", entry["objectName"]): entry
               for entry in (yaml.safe_load(text) for text in objects["array"])}
    for secret in spc["spec"].get("secretObjects", []):
        assert DNS_SUBDOMAIN.fullmatch(secret["secretName"]), secret["secretName"]
        for data in secret["data"]:
            assert data["objectName"] in files, f"synced objectName {data['objectName']} is not a mounted file"
        if secret["type"] == "kubernetes.io/tls":
            check_tls_secret(secret, by_file)


DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def check_tls_secret(secret: dict, by_file: dict):
    """What the CSI driver needs to fill a kubernetes.io/tls Secret: `tls.key` and `tls.crt`, split
    from one PEM file holding the private key and the chain, which only a certificate's backing
    secret read as PEM is (`cert` is the public part alone, `pfx` and decoded encodings are not
    PEM)."""
    keys = {data["key"]: data["objectName"] for data in secret["data"]}
    assert set(keys) == {"tls.key", "tls.crt"}, secret
    assert keys["tls.key"] == keys["tls.crt"], f"both keys must come from one file: {secret}"
    entry = by_file[keys["tls.key"]]
    assert entry["objectType"] == "secret", entry
    assert entry.get("objectFormat", "pem") == "pem", entry
    assert entry.get("objectEncoding", "utf-8") == "utf-8", entry


def kubectl_patch(document: dict, patch: list, tmp_path) -> dict:
    """Applies a JSON Patch with kubectl, which uses the API server's JSON Patch library."""
    path = tmp_path / "object.json"
    path.write_text(json.dumps(document))
    result = subprocess.run(
        [KUBECTL, "patch", "--local", "-f", str(path), "--type=json", "-p", json.dumps(patch), "-o", "json", "--show-managed-fields"],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
