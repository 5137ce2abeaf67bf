"""The sandbox's `helm install`: installs a chart through helm-sdkpy (Helm's own Go library)
and prints the release's name, namespace, revision, status and notes as one JSON object.
Errors go to stderr with exit status 1.

Usage: python -c "$(cat helm_install.py)" KUBECONFIG NAMESPACE RELEASE CHART VALUES_JSON
"""

import asyncio
import json
import sys

import helm_sdkpy as helm


async def install(kubeconfig, namespace, release, chart, values):
    config = helm.Configuration(namespace=namespace, kubeconfig=kubeconfig)
    # As `helm install --create-namespace --wait` with the CLI's OpenAPI validation.
    return await helm.Install(config).run(
        release,
        chart,
        values=json.loads(values),
        create_namespace=True,
        wait=True,
        timeout=60,
        disable_openapi_validation=False,
    )


def main(argv):
    kubeconfig, namespace, release, chart, values = argv[1:6]
    try:
        result = asyncio.run(install(kubeconfig, namespace, release, chart, values))
    except helm.HelmError as error:
        print(f"helm install failed: {error}", file=sys.stderr)
        raise SystemExit(1)
    info = result.get("info") or {}
    print(
        json.dumps(
            {
                "name": result.get("name"),
                "namespace": result.get("namespace"),
                "version": result.get("version"),
                "status": info.get("status"),
                "notes": info.get("notes"),
            },
            default=str,
        )
    )


if __name__ == "__main__":
    main(sys.argv)
