#!/usr/bin/env python3
"""Checks that schema validators cannot make: names that must agree across files.

Run by scripts/validate_deploy.sh with the validators' Python (PyYAML; tomllib needs 3.11+):

    validate-policy.py settings TOML_OR_ENV_SOURCE...   sluice.toml files: every key a field of
                                                       src/settings/ (sluice refuses unknown ones)
    validate-policy.py compose RENDERED_COMPOSE.yaml    docker-compose config output + docker/ files
    validate-policy.py k8s RENDERED.yaml                one rendered kustomize overlay
    validate-policy.py dockerfiles                     COPY sources exist and pass .dockerignore
    validate-policy.py write-rules                     regenerate base/prometheus-rule.yaml

Each prints what it checked and exits 1 on the first file with problems (all problems of that
file listed). Paths are relative to the repository root (the working directory).
"""

import fnmatch
import os
import re
import sys
import tomllib

import yaml

ROOT = os.getcwd()
SETTINGS_RS = "src/settings/"
METRICS_RS = "src/metrics/"


def read_rust(path):
    """The text of a Rust file, or of every .rs file of a module folder, concatenated."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith(".rs"))
        return "\n".join(open(os.path.join(path, n)).read() for n in names)
    return open(path).read()
RULES = "dashboards/prometheus/rules.yml"
PROM_RULE = "deploy/k8s/base/prometheus-rule.yaml"
# worker.shutdown_grace_secs + this must fit in the stop/termination grace period: a training
# checkpoint upload and closing connections happen after the drain.
GRACE_MARGIN_SECS = 20


class Problems(list):
    def check(self, ok, message):
        if not ok:
            self.append(message)
        return ok


def finish(what, problems):
    if problems:
        for p in problems:
            print(f"ERROR {what}: {p}")
        sys.exit(1)
    print(f"ok    {what}")


# ----------------------------------------------------------------------------- settings.rs

def settings_schema():
    """struct name -> {field: type text}, and the default of worker.shutdown_grace_secs."""
    text = read_rust(SETTINGS_RS)
    structs = {}
    for m in re.finditer(r"pub struct (\w+) \{\n(.*?)\n\}", text, re.S):
        fields = {}
        for line in m.group(2).splitlines():
            line = line.strip()
            if line.startswith("#[serde(") and ("rename" in line or "flatten" in line or "alias" in line):
                sys.exit(f"{SETTINGS_RS}: {line}: this checker does not understand serde renames; teach it")
            f = re.match(r"pub (\w+): (.+),$", line)
            if f:
                fields[f.group(1)] = f.group(2)
        structs[m.group(1)] = fields
    if "Settings" not in structs:
        sys.exit(f"{SETTINGS_RS}: no `pub struct Settings`")
    grace = re.search(r"shutdown_grace_secs: (\d+),", text)
    return structs, int(grace.group(1)) if grace else None


def type_kind(structs, type_text):
    """('struct', name) | ('map', None) | ('list', item kind) | ('leaf', None)."""
    t = type_text.replace(" ", "")
    if re.search(r"(BTreeMap|HashMap)<", t):
        return ("map", None)
    v = re.match(r"Vec<(.+)>$", t)
    if v:
        return ("list", type_kind(structs, v.group(1)))
    last = re.split(r"::", t)[-1]
    if last in structs:
        return ("struct", last)
    return ("leaf", None)


def check_toml_table(structs, struct, table, where, problems):
    for key, value in table.items():
        fields = structs[struct]
        if not problems.check(key in fields, f"{where}{key}: not a field of {struct} (fields: {', '.join(fields)})"):
            continue
        kind, inner = type_kind(structs, fields[key])
        if kind == "struct":
            if problems.check(isinstance(value, dict), f"{where}{key}: must be a table"):
                check_toml_table(structs, inner, value, f"{where}{key}.", problems)
        elif kind == "list" and inner[0] == "struct":
            for i, item in enumerate(value if isinstance(value, list) else []):
                if problems.check(isinstance(item, dict), f"{where}{key}[{i}]: must be a table"):
                    check_toml_table(structs, inner[1], item, f"{where}{key}[{i}].", problems)
        elif kind == "leaf":
            problems.check(not isinstance(value, dict), f"{where}{key}: a value, not a table")


def check_env_name(structs, name, problems, where):
    """SLUICE__A__B → settings field a.b; SLUICE_X must be read somewhere in src/."""
    if name.startswith("SLUICE__"):
        path = [p.lower() for p in name[len("SLUICE__"):].split("__")]
        struct = "Settings"
        for i, part in enumerate(path):
            fields = structs[struct]
            if not problems.check(part in fields, f"{where}: {name}: `{'.'.join(path[:i + 1])}` is not a setting"):
                return
            kind, inner = type_kind(structs, fields[part])
            last = i == len(path) - 1
            if kind == "struct":
                if not problems.check(not last, f"{where}: {name}: `{'.'.join(path)}` is a section, not a value"):
                    return
                struct = inner
            elif kind == "map":
                problems.check(i == len(path) - 2, f"{where}: {name}: a map setting takes exactly one key below it")
                return
            else:
                problems.check(last, f"{where}: {name}: `{'.'.join(path[:i + 1])}` has no sub-fields")
                return
    elif name.startswith("SLUICE_"):
        problems.check(name in source_text(), f"{where}: {name}: sluice reads no such variable (not in src/)")


_source = None


def source_text():
    global _source
    if _source is None:
        parts = []
        for base, _, files in os.walk("src"):
            for f in files:
                if f.endswith(".rs"):
                    parts.append(open(os.path.join(base, f)).read())
        _source = "\n".join(parts)
    return _source


def cmd_settings(files):
    structs, _ = settings_schema()
    for f in files:
        problems = Problems()
        try:
            data = tomllib.load(open(f, "rb"))
        except tomllib.TOMLDecodeError as e:
            finish(f, [f"not TOML: {e}"])
        check_toml_table(structs, "Settings", data, "", problems)
        finish(f"{f} (keys against {SETTINGS_RS})", problems)


def check_tokens_file(text, where, problems):
    """The API's tokens file: [[tokens]] with name, 64-hex sha256, known scopes, s3:// allows."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problems.append(f"{where}: not TOML: {e}")
        return
    problems.check(set(data) <= {"tokens"}, f"{where}: only `tokens` belongs at the top (got {sorted(data)})")
    for i, t in enumerate(data.get("tokens", [])):
        w = f"{where}: tokens[{i}]"
        problems.check(set(t) <= {"name", "sha256", "scopes", "allow"}, f"{w}: unknown fields {sorted(set(t) - {'name', 'sha256', 'scopes', 'allow'})}")
        problems.check(re.fullmatch(r"[0-9a-fA-F]{64}", str(t.get("sha256", ""))), f"{w}: sha256 must be 64 hex digits")
        problems.check(bool(t.get("name")), f"{w}: needs a name")
        for s in t.get("scopes", []):
            problems.check(s in {"submit", "read", "cancel", "admin"}, f"{w}: unknown scope {s}")
        for a in t.get("allow", []):
            problems.check(a == "*" or a.startswith("s3://"), f"{w}: allow entry {a} is neither * nor s3://…")


# ----------------------------------------------------------------------------- compose

def seconds(duration):
    """'1m30s' / '60s' / 90 → 90."""
    if isinstance(duration, (int, float)):
        return duration
    total = 0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", str(duration)):
        total += float(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}[unit]
    return total


def cmd_compose(rendered):
    structs, default_grace = settings_schema()
    doc = yaml.safe_load(open(rendered))
    services = doc["services"]
    problems = Problems()
    one_shots = {n for n, s in services.items() if str(s.get("restart", "no")) == "no"}
    aliases = set(services)
    for name, svc in services.items():
        for net in (svc.get("networks") or {}).values():
            aliases.update((net or {}).get("aliases", []))
    for name, svc in services.items():
        w = f"service {name}"
        if name not in one_shots:
            problems.check("healthcheck" in svc and not svc["healthcheck"].get("disable"), f"{w}: no health check")
            problems.check(str(svc.get("restart")) in {"unless-stopped", "always", "on-failure"}, f"{w}: long-running service without a restart policy")
        for dep, cond in (svc.get("depends_on") or {}).items():
            c = cond.get("condition") if isinstance(cond, dict) else None
            problems.check(c in {"service_healthy", "service_completed_successfully"}, f"{w}: depends_on {dep} without a health/completion condition")
            if c == "service_healthy":
                problems.check("healthcheck" in services.get(dep, {}), f"{w}: waits for {dep} to be healthy, but {dep} has no health check")
            if c == "service_completed_successfully":
                problems.check(dep in one_shots, f"{w}: waits for {dep} to complete, but {dep} restarts")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
        for key in env:
            check_env_name(structs, key, problems, w)
        command = svc.get("command") or []
        if isinstance(command, str):
            command = command.split()
        is_worker = (command[:1] == ["worker"]) or name.startswith("worker")
        if is_worker:
            problems.check("container_name" not in svc, f"{w}: a fixed container_name stops `--scale {name}=N`")
            problems.check(not svc.get("ports"), f"{w}: host ports stop `--scale {name}=N`")
            grace = int(env.get("SLUICE__WORKER__SHUTDOWN_GRACE_SECS") or default_grace or 30)
            stop = seconds(svc.get("stop_grace_period", "10s"))
            problems.check(stop >= grace + GRACE_MARGIN_SECS, f"{w}: stop_grace_period {stop:g}s < shutdown grace {grace}s + {GRACE_MARGIN_SECS}s (Docker would SIGKILL mid-drain)")
            problems.check("workers" in ((svc.get("networks") or {}).get("default") or {}).get("aliases", []), f"{w}: Prometheus finds workers by the network alias `workers`")
        # Bind mounts and secret files must exist (compose would create an empty directory).
        for v in svc.get("volumes") or []:
            src = v.get("source") if isinstance(v, dict) else v.split(":")[0]
            kind = v.get("type") if isinstance(v, dict) else ("bind" if src.startswith(("/", ".")) else "volume")
            if kind == "bind":
                problems.check(os.path.exists(src), f"{w}: bind mount source {src} does not exist")
        build = svc.get("build")
        if build:
            ctx = build.get("context", ".")
            dockerfile = os.path.join(ctx, build.get("dockerfile", "Dockerfile"))
            if problems.check(os.path.exists(dockerfile), f"{w}: {dockerfile} does not exist"):
                target = build.get("target")
                stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", open(dockerfile).read(), re.M | re.I)
                problems.check(target is None or target in stages, f"{w}: build target {target} is not a stage of {dockerfile} ({stages})")
    for name, secret in (doc.get("secrets") or {}).items():
        f = secret.get("file")
        if problems.check(f and os.path.exists(f), f"secret {name}: file {f} does not exist"):
            if "token" in name:
                check_tokens_file(open(f).read(), f"secret {name} ({f})", problems)
    # Prometheus: the job names the rules need, and targets that are compose services.
    prom = yaml.safe_load(open("docker/prometheus/prometheus.yml"))
    jobs = {c["job_name"]: c for c in prom["scrape_configs"]}
    for job in sorted(rule_jobs()):
        problems.check(job in jobs, f"docker/prometheus/prometheus.yml: no scrape job `{job}`, which {RULES} uses")
    for job, c in jobs.items():
        hosts = [t.rsplit(":", 1)[0] for s in c.get("static_configs", []) for t in s.get("targets", [])]
        hosts += [n for s in c.get("dns_sd_configs", []) for n in s.get("names", [])]
        for h in hosts:
            problems.check(h in aliases, f"prometheus job {job}: target host {h} is no compose service or alias")
    finish(f"{rendered} (compose policy)", problems)


def rule_jobs():
    return set(re.findall(r'job="([^"]+)"', open(RULES).read()))


# ----------------------------------------------------------------------------- kubernetes

def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_env(c):
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def cmd_k8s(rendered):
    structs, default_grace = settings_schema()
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    problems = Problems()
    deployments = by_kind.get("Deployment", {})
    secrets = by_kind.get("Secret", {})
    configmaps = by_kind.get("ConfigMap", {})
    external_secrets = not secrets
    if external_secrets:
        print(f"note  {rendered}: no Secret in this build; they must exist in the cluster (names checked against nothing)")

    # One namespace, and it is created here.
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    problems.check(len(namespaces) == 1 and None not in namespaces, f"objects spread over namespaces {namespaces}")
    problems.check(set(by_kind.get("Namespace", {})) == namespaces, f"Namespace objects {set(by_kind.get('Namespace', {}))} ≠ namespace used {namespaces}")

    # Settings in the ConfigMap(s).
    settings = {}
    for name, cm in configmaps.items():
        for key, text in (cm.get("data") or {}).items():
            if key.endswith(".toml"):
                data = tomllib.loads(text)
                check_toml_table(structs, "Settings", data, f"ConfigMap {name} {key}: ", problems)
                settings = data
    prefix = settings.get("prefix", "sluice")
    for name, s in secrets.items():
        for key, value in (s.get("stringData") or {}).items():
            if key.endswith(".toml") and "token" in name:
                check_tokens_file(value, f"Secret {name} {key}", problems)

    def secret_has(name, key=None):
        if external_secrets:
            return True
        s = secrets.get(name)
        return s is not None and (key is None or key in (s.get("stringData") or {}) or key in (s.get("data") or {}))

    pools = {}
    for name, dep in deployments.items():
        w = f"Deployment {name}"
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        problems.check(labels_match(spec["selector"]["matchLabels"], labels), f"{w}: selector does not match its pod labels")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        pod_sc = pod.get("securityContext", {})
        problems.check(pod.get("automountServiceAccountToken") is False, f"{w}: mounts a service account token sluice never uses")
        for v in volumes.values():
            if "configMap" in v:
                problems.check(v["configMap"]["name"] in configmaps, f"{w}: volume {v['name']} names ConfigMap {v['configMap']['name']}, not in this build")
            if "secret" in v:
                problems.check(secret_has(v["secret"]["secretName"]), f"{w}: volume {v['name']} names Secret {v['secret']['secretName']}, not in this build")
        is_worker = labels.get("app.kubernetes.io/component") == "worker"
        for c in pod["containers"]:
            cw = f"{w} container {c['name']}"
            env = container_env(c)
            for e in c.get("env", []):
                check_env_name(structs, e["name"], problems, cw)
                ref = e.get("valueFrom", {}).get("resourceFieldRef")
                if ref:
                    problems.check(ref.get("containerName") in {x["name"] for x in pod["containers"]}, f"{cw}: resourceFieldRef names container {ref.get('containerName')}")
            for ef in c.get("envFrom", []):
                sname = ef.get("secretRef", {}).get("name")
                if sname:
                    if problems.check(secret_has(sname), f"{cw}: envFrom Secret {sname} is not in this build") and not external_secrets:
                        for key in (secrets[sname].get("stringData") or {}):
                            check_env_name(structs, key, problems, f"Secret {sname}")
            ports = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
            port_numbers = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            # Where this role serves /healthz and /readyz: the API's port unless
            # api.serve_metrics is false, else (and for workers and ingest) metrics.listen.
            listen_port = lambda text: int(str(text).rsplit(":", 1)[-1])
            is_api = labels.get("app.kubernetes.io/component") == "api"
            api_settings = settings.get("api", {})
            if is_api and api_settings.get("serve_metrics", True):
                ops_port, ops_setting = listen_port(api_settings.get("listen", "127.0.0.1:8080")), "api.listen"
            else:
                ops_port, ops_setting = listen_port(settings.get("metrics", {}).get("listen", "127.0.0.1:9464")), "metrics.listen"
            for probe in ("readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if problems.check(p is not None, f"{cw}: no {probe}"):
                    port = p.get("httpGet", {}).get("port")
                    if problems.check(port in ports, f"{cw}: {probe} port {port} is not a container port"):
                        number = port_numbers.get(port, port)
                        problems.check(number == ops_port, f"{cw}: {probe} asks port {number}, but this role serves /healthz and /readyz on {ops_port} ({ops_setting}; see api.serve_metrics)")
            problems.check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"{cw}: readiness must ask /readyz (503 while draining)")
            problems.check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"{cw}: liveness must ask /healthz (not /readyz: a draining pod must not be restarted)")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                problems.check({"cpu", "memory"} <= set(res.get(kind, {})), f"{cw}: resources.{kind} needs cpu and memory")
            sc = c.get("securityContext", {})
            problems.check(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{cw}: runAsNonRoot is not set")
            problems.check(sc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem is not set")
            problems.check(sc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation is not false")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            for m in c.get("volumeMounts", []):
                problems.check(m["name"] in volumes, f"{cw}: volumeMount {m['name']} has no volume")
            problems.check("/tmp" in mounts, f"{cw}: /tmp must be a writable volume (read-only root filesystem)")
            if is_worker:
                args = c.get("args", [])
                pool = args[args.index("--pool") + 1] if "--pool" in args else env.get("SLUICE__WORKER__POOL")
                if problems.check(pool in {"cpu", "gpu"}, f"{cw}: worker without an explicit --pool"):
                    pools[name] = pool
                cache = settings.get("worker", {}).get("model_cache_dir", "")
                problems.check(cache in mounts, f"{cw}: the model cache {cache or '(unset)'} is not a mounted volume")
                grace = int(env.get("SLUICE__WORKER__SHUTDOWN_GRACE_SECS") or settings.get("worker", {}).get("shutdown_grace_secs") or default_grace or 30)
                tgp = pod.get("terminationGracePeriodSeconds", 30)
                problems.check(tgp >= grace + GRACE_MARGIN_SECS, f"{w}: terminationGracePeriodSeconds {tgp} < shutdown_grace_secs {grace} + {GRACE_MARGIN_SECS}")
                if pool == "gpu":
                    problems.check("nvidia.com/gpu" in res.get("limits", {}), f"{cw}: a GPU worker must limit nvidia.com/gpu")
        if is_worker:
            problems.check("replicas" not in spec, f"{w}: `replicas` belongs to the autoscaler; re-applying would reset it")

    services = by_kind.get("Service", {})
    for name, svc in services.items():
        sel = svc["spec"].get("selector", {})
        matched = [d for d in deployments.values() if labels_match(sel, d["spec"]["template"]["metadata"].get("labels", {}))]
        if problems.check(matched, f"Service {name}: selector {sel} matches no Deployment"):
            for p in svc["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                problems.check(all(any(tp in ({q.get("name") for q in c.get("ports", [])} | {q["containerPort"] for q in c.get("ports", [])}) for c in d["spec"]["template"]["spec"]["containers"]) for d in matched), f"Service {name}: targetPort {tp} is not a port of every selected pod")

    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        sel = pdb["spec"]["selector"]["matchLabels"]
        problems.check(any(labels_match(sel, d["spec"]["template"]["metadata"].get("labels", {})) for d in deployments.values()), f"PodDisruptionBudget {name}: selects no Deployment's pods")

    for name, sm in by_kind.get("ServiceMonitor", {}).items():
        sel = sm["spec"]["selector"]["matchLabels"]
        matched = {n: s for n, s in services.items() if labels_match(sel, s["metadata"].get("labels", {}))}
        ports = {p["port"] for p in sm["spec"]["endpoints"]}
        for n, s in matched.items():
            problems.check(ports & {p.get("name") for p in s["spec"]["ports"]}, f"ServiceMonitor {name}: Service {n} has none of the ports {ports}")
        # Without jobLabel, Prometheus' job label is the Service's name.
        wanted = {"sluice-api", "sluice-worker", "sluice-ingest"} | {j for j in rule_jobs() if j.startswith("sluice-")}
        for job in sorted(wanted):
            problems.check(job in matched, f"ServiceMonitor {name}: no Service named {job}, so no `job=\"{job}\"` series for the rules")

    auths = by_kind.get("TriggerAuthentication", {})
    for name, auth in auths.items():
        for ref in auth["spec"].get("secretTargetRef", []):
            problems.check(secret_has(ref["name"], ref["key"]), f"TriggerAuthentication {name}: Secret {ref['name']} has no key {ref['key']}")
    metrics_src = read_rust(METRICS_RS)
    scaled = by_kind.get("ScaledObject", {})
    for name, so in scaled.items():
        w = f"ScaledObject {name}"
        target = so["spec"]["scaleTargetRef"]["name"]
        if not problems.check(target in deployments, f"{w}: scaleTargetRef {target} is not a Deployment here"):
            continue
        pool = pools.get(target)
        for t in so["spec"]["triggers"]:
            md = t.get("metadata", {})
            ref = (t.get("authenticationRef") or {}).get("name")
            if ref:
                problems.check(ref in auths, f"{w}: authenticationRef {ref} is not a TriggerAuthentication here")
            if t["type"] == "rabbitmq":
                problems.check(md.get("queueName") == f"{prefix}.inference.{pool}", f"{w}: queueName {md.get('queueName')} is not the {pool} pool's queue {prefix}.inference.{pool}")
                problems.check(md.get("protocol") == "amqp", f"{w}: protocol amqp counts the queue exactly (http lags 5-8 s)")
            if t["type"] == "prometheus":
                q = md.get("query", "")
                problems.check(f'pool="{pool}"' in q, f"{w}: query {q!r} is not about pool {pool}")
                for metric in re.findall(r"\b(sluice_\w+)", q):
                    problems.check(f'"{metric}"' in metrics_src, f"{w}: query names {metric}, which {METRICS_RS} does not define")
                problems.check(not re.search(r"\bsum\s*\(\s*sluice_backlog", q), f"{w}: sum() over sluice_backlog_* counts the backlog once per API replica; use max()")
        problems.check(so["spec"].get("minReplicaCount", 0) <= so["spec"].get("maxReplicaCount", 100), f"{w}: minReplicaCount > maxReplicaCount")
    for name in deployments:
        if name in pools:
            problems.check(any(so["spec"]["scaleTargetRef"]["name"] == name for so in scaled.values()), f"Deployment {name}: a worker pool without a ScaledObject")

    rules = by_kind.get("PrometheusRule", {})
    if problems.check(rules, "no PrometheusRule: the alerts of dashboards/prometheus/rules.yml would not exist in the cluster"):
        want = yaml.safe_load(open(RULES))["groups"]
        for name, r in rules.items():
            problems.check(r["spec"]["groups"] == want, f"PrometheusRule {name}: differs from {RULES}; run `scripts/validate_deploy.sh --write-rules`")
    finish(f"{rendered} (cross-references)", problems)


# ----------------------------------------------------------------------------- images

def dockerignore_patterns():
    rules = []
    for line in open(".dockerignore"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        rules.append((neg, line.lstrip("!").strip("/")))
    return rules


def ignored(path, rules):
    """Docker's rule: the last matching pattern wins; a pattern matching a parent matches."""
    parts = path.strip("/").split("/")
    result = False
    for neg, pat in rules:
        for i in range(1, len(parts) + 1):
            if fnmatch.fnmatchcase("/".join(parts[:i]), pat):
                result = not neg
                break
    return result


def cmd_dockerfiles():
    rules = dockerignore_patterns()
    structs, _ = settings_schema()
    for df in ("docker/Dockerfile", "docker/Dockerfile.cuda"):
        problems = Problems()
        text = open(df).read().replace("\\\n", " ")
        for m in re.finditer(r"^ENV\s+(.*)$", text, re.M):
            for name in re.findall(r"(?:^|\s)(\w+)=", m.group(1)):
                check_env_name(structs, name, problems, "ENV")
        stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I))
        for m in re.finditer(r"^COPY\s+(.*)$", text, re.M):
            args = m.group(1).split()
            if any(a.startswith("--from=") for a in args):
                src = [a for a in args if a.startswith("--from=")][0].split("=", 1)[1]
                problems.check(src in stages, f"COPY --from={src}: no such stage")
                continue
            paths = [a for a in args if not a.startswith("--")][:-1]
            for p in paths:
                problems.check(os.path.exists(p), f"COPY {p}: not in the repository")
                problems.check(not ignored(p, rules), f"COPY {p}: excluded by .dockerignore (the build would fail)")
                if os.path.isdir(p):
                    for base, _, files in os.walk(p):
                        for f in files:
                            problems.check(not ignored(os.path.join(base, f), rules), f"COPY {p}: {os.path.join(base, f)} excluded by .dockerignore")
        for path in ("target", ".git", "tests", "README.md", "docker/.env"):
            problems.check(ignored(path, rules), f".dockerignore lets {path} into the build context")
        finish(f"{df} (COPY sources against .dockerignore, ENV names)", problems)


# ----------------------------------------------------------------------------- rules

class _Literal(str):
    pass


def _literal(dumper, value):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


def cmd_write_rules():
    groups = yaml.safe_load(open(RULES))["groups"]

    def mark(v):
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mark(x) for x in v]
        if isinstance(v, str) and "\n" in v:
            return _Literal(v)
        return v

    class Dumper(yaml.SafeDumper):
        # Lists indented under their key, as the hand-written manifests (and yamllint) have it.
        def increase_indent(self, flow=False, indentless=False):
            return super().increase_indent(flow, False)

    Dumper.add_representer(_Literal, _literal)
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "sluice"},
        "spec": {"groups": mark(groups)},
    }
    body = yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=1000, allow_unicode=True)
    header = (
        f"# GENERATED from {RULES} by `scripts/validate_deploy.sh --write-rules`; do not edit.\n"
        "# The recording and alert rules of the compose Prometheus, for a Prometheus operator.\n"
        "# (The validator fails when the two differ.) Overlays add the label their Prometheus\n"
        "# selects rules by.\n"
        "# yamllint disable rule:line-length\n"
    )
    open(PROM_RULE, "w").write(header + body)
    print(f"wrote {PROM_RULE}")


def main(argv):
    if not argv:
        sys.exit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "settings":
        cmd_settings(args)
    elif cmd == "compose":
        cmd_compose(args[0])
    elif cmd == "k8s":
        cmd_k8s(args[0])
    elif cmd == "dockerfiles":
        cmd_dockerfiles()
    elif cmd == "write-rules":
        cmd_write_rules()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
