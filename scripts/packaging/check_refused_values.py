"""Checks that charts/kvinject refuses, at install, values that are misspelt or invalid, each
with an error that names what is wrong; prints one line per case and exits 1 if any case
renders or fails with another message.

scripts/check-packaging runs it.
"""

import pathlib
import sys

import helm_python as helm

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "kvinject"

# (values, what the error must say)
refused = [
    ({"replica": 3}, "additional properties 'replica' not allowed"),
    ({"webhook": {"timeoutSecond": 5}}, "additional properties 'timeoutSecond' not allowed"),
    ({"resources": {"limits": {"memroy": "64Mi"}}}, "additional properties 'memroy' not allowed"),
    ({"certificates": {"mode": "certmanager"}}, "/certificates/mode"),
    ({"webhook": {"timeoutSeconds": 31}}, "/webhook/timeoutSeconds"),
    ({"verifyObjects": "strict"}, "/verifyObjects"),
    ({"gcGracePeriod": "ten minutes"}, "/gcGracePeriod"),
    ({"planCacheEntries": 4097}, "/planCacheEntries"),
    ({"planCacheEntries": -1}, "/planCacheEntries"),
    ({"planCacheEntries": "64"}, "/planCacheEntries"),
    ({"defaultVault": "my--vault"}, "/defaultVault"),
    ({"replicas": 0}, "/replicas"),
    ({"rotationRestarts": {"maxConcurrent": 0}}, "/rotationRestarts/maxConcurrent"),
    ({"rotationRestarts": {"debounce": "30 seconds"}}, "/rotationRestarts/debounce"),
    ({"uninjectedPods": {"evictInterval": "10s"}}, "additional properties 'evictInterval' not allowed"),
    ({"certificates": {"mode": "provided"}}, "certificates.mode=provided needs the PEM values certificates.provided.tlsCrt, certificates.provided.tlsKey, certificates.provided.caBundle"),
    (
        {"certificates": {"mode": "provided", "provided": {"tlsCrt": "x", "tlsKey": "y", "caBundle": "z"}}},
        "is not a PEM",
    ),
]
failed = False
with helm.Chart.load(CHART) as chart:
    for values, expected in refused:
        try:
            chart.render(values, name="kvinject", namespace="kvinject", is_install=True)
            print(f"FAIL {values}: rendered")
            failed = True
        except helm.HelmError as error:
            message = " ".join(str(error).split())
            ok = expected in message
            failed |= not ok
            print(f"{'refused' if ok else 'FAIL wrong message'} {values}" + ("" if ok else f": {message}"))
sys.exit(1 if failed else 0)
