#!/usr/bin/env python3
"""Turns the rendered Kubernetes base into what `podman kube play` can run on one machine.

    fleet_kube.py play RENDERED OUT --image IMG --tokens TOKENS_TOML --amqp URL --redis URL
                       --s3-endpoint URL --s3-key KEY --s3-secret SECRET --host-port-base N
                       # also writes OUT.secret-NAME.json for `podman secret create NAME`
    fleet_kube.py probes OUT        # one line per probe: POD CONTAINER KIND PORT PATH
    fleet_kube.py grace OUT         # one line per Deployment: POD terminationGracePeriodSeconds

What `play` changes, and nothing else: keeps the ConfigMap, the Secrets and the API, CPU
worker and ingest Deployments (the GPU worker asks for nvidia.com/gpu, which podman cannot
grant); drops what kube play ignores or cannot run (Namespace, ServiceAccount, Services, PDB,
KEDA ScaledObjects, ServiceMonitor, PrometheusRule); points the images at the local build,
one replica each; fills the Secrets' placeholders with the compose stack's services and a
real token; and sets the S3 endpoint in sluice.toml to the stack's S3 (the base is for AWS).
Probes, ports, env, envFrom, mounts, security contexts and grace periods stay as rendered.

Two podman 4.3 quirks are worked around here. kube play publishes every containerPort on
the host (0.0.0.0:9464 for each pod would collide): each port gets hostIP 127.0.0.1 and a
hostPort from --host-port-base on. And it stores a Secret of the YAML as the YAML text but
reads envFrom/secret volumes as a flat JSON map of base64 values: the Secrets are written
in that form beside OUT, for `podman secret create`, and left out of OUT. A Secret mounted
as a volume (the API's tokens file) crashes podman 4.3's kube play: it becomes a ConfigMap
of the same name and content, mounted at the same path.
"""

import argparse
import base64
import json
import sys

import yaml

RUN_KINDS = {"ConfigMap", "Secret", "Deployment"}
SKIP_DEPLOYMENTS = {"sluice-worker-gpu"}
SECRET_VOLUMES = set()


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def play(args):
    out = []
    dropped = []
    secrets = {}
    host_port = int(args.host_port_base)
    docs = load(args.rendered)
    for doc in docs:
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] not in SKIP_DEPLOYMENTS:
            for vol in doc["spec"]["template"]["spec"].get("volumes", []):
                if "secret" in vol:
                    SECRET_VOLUMES.add(vol["secret"]["secretName"])
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind not in RUN_KINDS or name in SKIP_DEPLOYMENTS:
            dropped.append(f"{kind}/{name}")
            continue
        doc["metadata"].pop("namespace", None)
        if kind == "Deployment":
            doc["spec"]["replicas"] = 1
            for vol in doc["spec"]["template"]["spec"].get("volumes", []):
                if "secret" in vol:
                    vol["configMap"] = {"name": vol.pop("secret")["secretName"]}
            for c in doc["spec"]["template"]["spec"]["containers"]:
                c["image"] = args.image
                for port in c.get("ports", []):
                    port["hostIP"] = "127.0.0.1"
                    port["hostPort"] = host_port
                    host_port += 1
        elif kind == "Secret":
            data = dict(doc.get("stringData") or {})
            if name == "sluice-secrets":
                data = {
                    "SLUICE__AMQP__URL": args.amqp,
                    "SLUICE__REDIS__URL": args.redis,
                    "SLUICE__S3__ACCESS_KEY_ID": args.s3_key,
                    "SLUICE__S3__SECRET_ACCESS_KEY": args.s3_secret,
                }
            elif name == "sluice-api-tokens":
                with open(args.tokens) as f:
                    data = {"tokens.toml": f.read()}
            secrets[name] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
            if name in SECRET_VOLUMES:
                # podman 4.3 panics on a secret volume (VolumeFromSecret): the same files as a
                # ConfigMap of the same name, mounted at the same path.
                out.append({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": name}, "data": data})
            continue
        elif kind == "ConfigMap" and name.startswith("sluice-config"):
            toml = doc["data"]["sluice.toml"]
            for old, new in (('endpoint = ""', f'endpoint = "{args.s3_endpoint}"'),
                             ("force_path_style = false", "force_path_style = true")):
                if old not in toml:
                    sys.exit(f"sluice.toml in ConfigMap {name}: `{old}` not found; "
                             "update fleet_kube.py to the new settings file")
                toml = toml.replace(old, new, 1)
            doc["data"]["sluice.toml"] = toml
        out.append(doc)
    for name, data in secrets.items():
        with open(f"{args.out}.secret-{name}.json", "w") as f:
            json.dump(data, f)
    with open(args.out, "w") as f:
        yaml.safe_dump_all(out, f, sort_keys=False)
    kept = [d["kind"] + "/" + d["metadata"]["name"] for d in out] + [f"Secret/{n}" for n in secrets]
    print(f"kept {', '.join(kept)}")
    print(f"left to the offline validators: {', '.join(dropped)}")


def deployments(path):
    return [d for d in load(path) if d["kind"] == "Deployment"]


def probes(args):
    for d in deployments(args.out):
        pod = d["metadata"]["name"]
        for c in d["spec"]["template"]["spec"]["containers"]:
            named = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = (c.get(kind) or {}).get("httpGet")
                if get:
                    port = get["port"]
                    print(pod, c["name"], kind, named.get(port, port), get["path"])


def grace(args):
    for d in deployments(args.out):
        print(d["metadata"]["name"], d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("play")
    a.add_argument("rendered")
    a.add_argument("out")
    for opt in ("--image", "--tokens", "--amqp", "--redis", "--s3-endpoint", "--s3-key", "--s3-secret",
                "--host-port-base"):
        a.add_argument(opt, required=True)
    sub.add_parser("probes").add_argument("out")
    sub.add_parser("grace").add_argument("out")
    args = p.parse_args()
    {"play": play, "probes": probes, "grace": grace}[args.cmd](args)


if __name__ == "__main__":
    main()
