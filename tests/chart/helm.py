"""Drives real Helm (helm-sdkpy: Helm's own Go library) for the chart tests and prints the
result as JSON on stdout; a Helm error goes to stderr with exit status 1.

Usage: helm.py KUBECONFIG NAMESPACE ACTION [ARGS...]
  lint CHART                        -> {"messages": [{"severity", "path", "error"}]}
  install RELEASE CHART VALUES_JSON -> the release (with its rendered "manifest")
  upgrade RELEASE CHART VALUES_JSON -> the release
"""

import asyncio
import json
import sys

import helm_sdkpy as helm

# Helm's support.Severity, by number.
SEVERITIES = {0: "unknown", 1: "info", 2: "warning", 3: "error"}


async def main(argv):
    kubeconfig, namespace, action = argv[1:4]
    rest = argv[4:]
    config = helm.Configuration(namespace=namespace, kubeconfig=kubeconfig)
    # What `helm install --wait` does, with the server's OpenAPI validation on as in the CLI.
    checks = {"wait": True, "timeout": 90, "disable_openapi_validation": False}
    try:
        if action == "lint":
            result = await helm.Lint(config).run(rest[0])
            result = {
                "messages": [
                    {
                        "severity": SEVERITIES.get(m.get("Severity"), str(m.get("Severity"))),
                        "path": m.get("Path"),
                        "error": str(m.get("Err")),
                    }
                    for m in result.get("Messages") or []
                ],
                "errors": [str(e) for e in result.get("Errors") or []],
            }
        elif action == "install":
            release, chart, values = rest
            result = await helm.Install(config).run(
                release, chart, values=json.loads(values), create_namespace=True, **checks
            )
        elif action == "upgrade":
            release, chart, values = rest
            result = await helm.Upgrade(config).run(
                release, chart, values=json.loads(values), **checks
            )
        else:
            raise SystemExit(f"unknown action {action}")
    except helm.HelmError as error:
        print(f"helm {action} failed: {error}", file=sys.stderr)
        raise SystemExit(1)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    asyncio.run(main(sys.argv))
