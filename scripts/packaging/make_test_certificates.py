"""Makes the test PKI for certificates.mode=provided without openssl: a throw-away CA and a
serving certificate for kvinject.kvinject.svc, both P-256 and valid for two days, written as
ca.crt, tls.crt and tls.key into the directory given as the only argument.

scripts/check-packaging runs it (with Python cryptography) only where openssl is missing.
"""

import datetime
import pathlib
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

out = pathlib.Path(sys.argv[1])
now = datetime.datetime.now(datetime.timezone.utc)


def name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


ca_key, tls_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
ca = (
    x509.CertificateBuilder().subject_name(name("kvinject-test-ca")).issuer_name(name("kvinject-test-ca"))
    .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
    .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=2))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(ca_key, hashes.SHA256())
)
tls = (
    x509.CertificateBuilder().subject_name(name("kvinject.kvinject.svc")).issuer_name(ca.subject)
    .public_key(tls_key.public_key()).serial_number(x509.random_serial_number())
    .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=2))
    .add_extension(x509.SubjectAlternativeName([x509.DNSName("kvinject.kvinject.svc")]), critical=False)
    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    .sign(ca_key, hashes.SHA256())
)
(out / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
(out / "tls.crt").write_bytes(tls.public_bytes(serialization.Encoding.PEM))
(out / "tls.key").write_bytes(pem_key(tls_key))
