#!/usr/bin/env python3
"""Renders the kustomize base offline and checks it; run through deploy/validate.sh.

1. Render: `kubectl kustomize` when kubectl is there, and always a small built-in renderer (the
   resources listed in kustomization.yaml plus its `images:`); when both ran, they must agree.
2. Schema: every document against the Kubernetes OpenAPI schemas shipped in the
   `kubernetes-validate` package, strict (unknown fields are errors), for each version given.
3. Properties DistributedMQ relies on (StatefulSets Parallel, headless Services publishing
   not-ready addresses, PDBs, non-root numeric users, probes, ...).
4. The container commands: each pod's shell snippet is run with /bin/sh for every ordinal, after
   kubelet's $(VAR) expansion, with the dmq binary replaced by a stub that records its arguments
   and environment; the node ids, --peers, --advertise and --controllers it would get are checked.

Exit status 1 on any failure, with one line per problem.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

DMQ_BIN = "/usr/local/bin/dmq"
CLUSTER_DOMAIN = "svc.cluster.local"
TEST_NAMESPACE = "ns-under-test"
PART_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component")

problems: list[str] = []


def fail(msg: str) -> None:
    problems.append(msg)
    print(f"  FAIL {msg}", file=sys.stderr)


def ok(msg: str) -> None:
    print(f"  ok   {msg}")


def kn(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# ---------------------------------------------------------------- rendering


def render_builtin(base: Path) -> list[dict]:
    """The resources of `base`/kustomization.yaml, with its images: applied. Anything else a
    kustomization can say is refused, so this stays in step with what kustomize would do."""
    kfile = base / "kustomization.yaml"
    kust = yaml.safe_load(kfile.read_text())
    supported = {"apiVersion", "kind", "resources", "images"}
    extra = set(kust) - supported
    if extra:
        raise SystemExit(
            f"{kfile}: the built-in renderer supports only {sorted(supported)}, not "
            f"{sorted(extra)}: render with kubectl kustomize or extend render_builtin"
        )
    docs: list[dict] = []
    for res in kust.get("resources", []):
        path = base / res
        if not path.is_file():
            raise SystemExit(f"{kfile}: resource {res} is not a file in {base}")
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append(doc)
    for img in kust.get("images", []):
        for doc in docs:
            for c in containers_of(doc):
                name, _, _tag = c.get("image", "").partition(":")
                if name != img["name"]:
                    continue
                new = img.get("newName", name)
                if "digest" in img:
                    c["image"] = f"{new}@{img['digest']}"
                elif "newTag" in img:
                    c["image"] = f"{new}:{img['newTag']}"
                else:
                    c["image"] = new if not _tag else f"{new}:{_tag}"
    return docs


def render_kubectl(base: Path) -> list[dict] | None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return None
    try:
        out = subprocess.run(
            [kubectl, "kustomize", str(base)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        stderr = getattr(e, "stderr", "") or ""
        fail(f"kubectl kustomize {base} failed: {stderr.strip() or e}")
        return None
    return [d for d in yaml.safe_load_all(out) if d is not None]


def by_key(docs: list[dict]) -> dict[str, dict]:
    return {f"{d['apiVersion']} {kn(d)}": d for d in docs}


# ---------------------------------------------------------------- helpers


def pod_spec(doc: dict) -> dict | None:
    if doc.get("kind") in ("StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job"):
        return doc["spec"]["template"]["spec"]
    if doc.get("kind") == "Pod":
        return doc["spec"]
    return None


def containers_of(doc: dict) -> list[dict]:
    spec = pod_spec(doc)
    if spec is None:
        return []
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def selector_matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def kubelet_expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion (k8s.io/kubernetes third_party/forked/golang/expansion):
    $$ is a literal $, $(NAME) of a defined NAME is its value, anything else stays as written."""
    out: list[str] = []
    i = 0
    while i < len(s):
        if s[i] != "$" or i + 1 == len(s):
            out.append(s[i])
            i += 1
            continue
        nxt = s[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = s.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
                continue
            name = s[i + 2 : close]
            out.append(env[name] if name in env else f"$({name})")
            i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def container_env(c: dict, pod_name: str, namespace: str) -> dict[str, str]:
    """The container's environment as kubelet builds it (values expanded in order)."""
    env: dict[str, str] = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = kubelet_expand(e["value"], env)
        elif "valueFrom" in e and "fieldRef" in e["valueFrom"]:
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            env[e["name"]] = {"metadata.name": pod_name, "metadata.namespace": namespace}.get(
                path, f"<{path}>"
            )
        else:
            env[e["name"]] = "<valueFrom>"
    return env


# ---------------------------------------------------------------- property checks


def check_properties(docs: list[dict]) -> None:
    services = [d for d in docs if d["kind"] == "Service"]
    headless = {d["metadata"]["name"]: d for d in services if d["spec"].get("clusterIP") == "None"}
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    sets = [d for d in docs if d["kind"] == "StatefulSet"]
    if not sets:
        fail("no StatefulSet rendered")

    for d in docs:
        labels = d["metadata"].get("labels", {})
        missing = [label for label in PART_LABELS if label not in labels]
        if missing:
            fail(f"{kn(d)} lacks labels {missing}")

    for name, svc in headless.items():
        if svc["spec"].get("publishNotReadyAddresses") is True:
            ok(f"Service/{name}: headless, publishNotReadyAddresses: true")
        else:
            fail(f"Service/{name}: headless without publishNotReadyAddresses: true")

    for svc in services:
        sel = svc["spec"].get("selector", {})
        targets = [
            s
            for s in sets
            if selector_matches(sel, s["spec"]["template"]["metadata"].get("labels", {}))
        ]
        if not targets:
            fail(f"{kn(svc)}: selector {sel} matches no pod template")
            continue
        port_names = {
            p.get("name") for s in targets for c in containers_of(s) for p in c.get("ports", [])
        }
        port_numbers = {
            p["containerPort"]
            for s in targets
            for c in containers_of(s)
            for p in c.get("ports", [])
        }
        for p in svc["spec"]["ports"]:
            t = p.get("targetPort", p["port"])
            if t not in port_names and t not in port_numbers:
                fail(
                    f"{kn(svc)}: targetPort {t} is no container port of {[kn(s) for s in targets]}"
                )

    for s in sets:
        name = s["metadata"]["name"]
        spec = s["spec"]
        tmpl_labels = spec["template"]["metadata"].get("labels", {})
        where = f"StatefulSet/{name}"
        if spec.get("podManagementPolicy") == "Parallel":
            ok(f"{where}: podManagementPolicy Parallel, replicas {spec.get('replicas')}")
        else:
            fail(
                f"{where}: podManagementPolicy is {spec.get('podManagementPolicy')!r}, not Parallel"
            )
        if not selector_matches(spec["selector"].get("matchLabels", {}), tmpl_labels):
            fail(f"{where}: selector does not match the pod template labels")
        svc = headless.get(spec.get("serviceName", ""))
        if svc is None:
            fail(f"{where}: serviceName {spec.get('serviceName')!r} is not a headless Service")
        elif not selector_matches(svc["spec"].get("selector", {}), tmpl_labels):
            fail(f"{where}: its headless Service does not select its pods")
        matching = [
            p
            for p in pdbs
            if selector_matches(p["spec"]["selector"].get("matchLabels", {}), tmpl_labels)
        ]
        if len(matching) == 1 and matching[0]["spec"].get("maxUnavailable") == 1:
            ok(f"{where}: PodDisruptionBudget/{matching[0]['metadata']['name']} maxUnavailable 1")
        else:
            fail(
                f"{where}: needs exactly one PodDisruptionBudget with maxUnavailable 1 (found {len(matching)})"
            )
        vcts = {v["metadata"]["name"] for v in spec.get("volumeClaimTemplates", [])}
        if not vcts:
            fail(f"{where}: no volumeClaimTemplates (a PVC per pod)")
        pod = spec["template"]["spec"]
        if pod.get("enableServiceLinks") is not False:
            fail(f"{where}: set enableServiceLinks: false (service env vars collide with DMQ_*)")
        psc = pod.get("securityContext", {})
        for c in containers_of(s):
            check_container(where, c, psc, vcts, pod)


def check_container(where: str, c: dict, psc: dict, vcts: set[str], pod: dict) -> None:
    where = f"{where} container {c['name']}"
    sc = c.get("securityContext", {})

    def eff(key: str):
        return sc.get(key, psc.get(key))

    uid = eff("runAsUser")
    if eff("runAsNonRoot") is True and isinstance(uid, int) and uid > 0:
        ok(f"{where}: runs as non-root numeric user {uid}")
    else:
        fail(f"{where}: needs runAsNonRoot: true and a numeric non-zero runAsUser (got {uid!r})")
    if not isinstance(eff("runAsGroup"), int) or eff("runAsGroup") == 0:
        fail(f"{where}: needs a numeric non-zero runAsGroup")
    if not isinstance(psc.get("fsGroup"), int):
        fail(f"{where}: the pod needs a numeric fsGroup so the volume is writable")
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(f"{where}: readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(f"{where}: allowPrivilegeEscalation must be false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        fail(f"{where}: capabilities must drop ALL")
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(res.get(kind, {})):
            fail(f"{where}: resources.{kind} needs cpu and memory")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    if not any(mounts.get(v) == "/var/lib/dmq" for v in vcts):
        fail(f"{where}: no PVC mounted at /var/lib/dmq")
    ports = {p["containerPort"] for p in c.get("ports", [])}
    names = {p.get("name") for p in c.get("ports", [])}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c.get(probe)
        if not p:
            fail(f"{where}: no {probe}")
            continue
        for handler in ("grpc", "tcpSocket", "httpGet"):
            if handler in p:
                port = p[handler]["port"]
                if port not in ports and port not in names:
                    fail(f"{where}: {probe} port {port} is no container port")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if "grpc" not in c.get(probe, {}):
            fail(f"{where}: {probe} must be the native gRPC health probe")
    for probe in ("startupProbe", "livenessProbe"):
        if c.get(probe, {}).get("grpc", {}).get("service") != "liveness":
            fail(f"{where}: {probe} must ask for the 'liveness' health service, which is SERVING "
                 "while the process runs (the default one is NOT_SERVING without a leader)")
    else:
        ok(
            f"{where}: gRPC readiness on {c['readinessProbe']['grpc']['port']}, "
            f"startup/liveness {', '.join(k for k in ('grpc', 'tcpSocket') if k in c.get('livenessProbe', {}))}"
        )
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    grace = pod.get("terminationGracePeriodSeconds", 30)
    transfer_ms = int(env.get("DMQ_SHUTDOWN_TRANSFER_TIMEOUT_MS") or 3000)
    if grace < transfer_ms / 1000 + 10:
        fail(
            f"{where}: terminationGracePeriodSeconds {grace} is not comfortably above the "
            f"leadership transfer timeout ({transfer_ms} ms)"
        )
    if not c.get("image"):
        fail(f"{where}: no image")


# ---------------------------------------------------------------- running the commands


STUB = """#!/bin/sh
# Stands in for dmq: records argv and the DMQ_* environment as JSON.
exec "{python}" - "$@" <<'PY'
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items() if k.startswith("DMQ_")}}))
PY
"""


_expansion_reported: set[str] = set()


def run_pod_command(c: dict, pod_name: str, stub: Path) -> tuple[int, str, str, str]:
    """Runs the container's command as the pod `pod_name` would; returns (status, stdout,
    stderr, the command line after kubelet expansion)."""
    env = container_env(c, pod_name, TEST_NAMESPACE)
    argv = [kubelet_expand(a, env) for a in c.get("command", []) + c.get("args", [])]
    raw = c.get("command", []) + c.get("args", [])
    # The scripts must mean the same to kubelet and to the shell: no $$ and no $(NAME) of a
    # defined variable inside them.
    if raw != argv and c["name"] not in _expansion_reported:
        _expansion_reported.add(c["name"])
        changed = next(b for b, a in zip(raw, argv, strict=True) if b != a)
        fail(
            f"container {c['name']}: kubelet's $(VAR) expansion changes its command "
            f"(write $$ as $, avoid $(NAME) of its env vars in scripts): {changed[:120]!r}..."
        )
    if not c.get("command"):  # the image's ENTRYPOINT, dmq, with args
        return 0, json.dumps({"argv": argv, "env": env}), "", " ".join(argv)
    if argv[0] == DMQ_BIN:
        return 0, json.dumps({"argv": argv[1:], "env": env}), "", " ".join(argv)
    if argv[0] not in ("/bin/sh", "sh") or argv[1] != "-c":
        fail(f"container {c['name']}: command {argv[:2]} is neither dmq nor /bin/sh -c")
        return 1, "", "", ""
    script = argv[2].replace(DMQ_BIN, str(stub))
    if script == argv[2]:
        fail(f"container {c['name']}: its script does not exec {DMQ_BIN}")
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": pod_name, **env}
    p = subprocess.run(
        ["/bin/sh", "-c", script, *argv[3:]],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return p.returncode, p.stdout, p.stderr, " ".join(argv)


def flag(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def setting(rec: dict, flag_name: str, env_name: str) -> str | None:
    """A dmq setting as the binary sees it: the flag wins over the DMQ_* variable."""
    v = flag(rec["argv"], flag_name)
    return v if v is not None else rec["env"].get(env_name)


def id_setting(rec: dict, pod: str, flag_name: str, env_name: str) -> str | None:
    """--node-id / --broker-id, including the binary's own derivation from the hostname
    (`--node-id-from-hostname`, or the value `auto`): ordinal + 1, as services/dmq/src/ordinal.rs."""
    v = setting(rec, flag_name, env_name)
    if v == "auto" or (v is None and f"{flag_name}-from-hostname" in rec["argv"]):
        return str(int(pod.rsplit("-", 1)[1]) + 1)
    return v


def pod_dns(set_name: str, service: str, ordinal: int) -> str:
    return f"{set_name}-{ordinal}.{service}.{TEST_NAMESPACE}.{CLUSTER_DOMAIN}"


def container_port(c: dict, name: str) -> int:
    return next(p["containerPort"] for p in c.get("ports", []) if p.get("name") == name)


def check_commands(docs: list[dict]) -> None:
    sets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    controllers = [
        s
        for s in sets.values()
        if s["spec"]["template"]["metadata"]["labels"].get(PART_LABELS[1]) == "controller"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp) / "dmq"
        stub.write_text(STUB.replace("{python}", sys.executable))
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
        for s in sets.values():
            name, spec = s["metadata"]["name"], s["spec"]
            replicas, service = spec["replicas"], spec["serviceName"]
            c = spec["template"]["spec"]["containers"][0]
            ids = []
            for ordinal in range(replicas):
                pod = f"{name}-{ordinal}"
                rc, out, err, _ = run_pod_command(c, pod, stub)
                if rc != 0:
                    fail(f"{pod}: its command exited {rc}: {err.strip()}")
                    continue
                rec = json.loads(out)
                sub = rec["argv"][0] if rec["argv"] else None
                if sub == "controller":
                    check_controller(pod, ordinal, rec, c, name, service, replicas)
                    ids.append(int(id_setting(rec, pod, "--node-id", "DMQ_NODE_ID")))
                elif sub == "broker":
                    check_broker(pod, ordinal, rec, c, service, controllers)
                    ids.append(int(id_setting(rec, pod, "--broker-id", "DMQ_BROKER_ID")))
                else:
                    fail(f"{pod}: runs dmq {sub!r}, expected controller or broker")
            if controllers and s is controllers[0]:
                check_scaled_controllers(c, name, service, replicas, stub)
            if ids == list(range(1, replicas + 1)):
                ok(f"StatefulSet/{name}: pods {name}-0..{replicas - 1} get ids {ids} (ordinal + 1)")
            # A pod name without an ordinal must stop with a message, not start with a bad id.
            # (When dmq derives the id itself, ordinal.rs's unit tests cover this.)
            if not c.get("command"):
                continue
            for bad in ("mybox", f"{name}-", f"{name}-x1"):
                rc, out, err, _ = run_pod_command(c, bad, stub)
                if rc == 0 or "ordinal" not in err:
                    fail(
                        f"{name}: HOSTNAME={bad} should fail with a message about the ordinal "
                        f"(exit {rc}, stdout {out.strip()!r}, stderr {err.strip()!r})"
                    )
            ok(f"StatefulSet/{name}: hostnames without an ordinal are refused with a message")


def check_controller(pod, ordinal, rec, c, set_name, service, replicas) -> None:
    node_id = id_setting(rec, pod, "--node-id", "DMQ_NODE_ID")
    if node_id != str(ordinal + 1):
        fail(f"{pod}: --node-id {node_id}, expected {ordinal + 1}")
    peer_port, client_port = container_port(c, "peer"), container_port(c, "client")
    expected = ",".join(
        f"{o + 1}={pod_dns(set_name, service, o)}:{peer_port}/{pod_dns(set_name, service, o)}:{client_port}"
        for o in range(replicas)
    )
    peers = setting(rec, "--peers", "DMQ_PEERS")
    if peers != expected:
        fail(f"{pod}: --peers is {peers}, expected (replicas {replicas}) {expected}")
    elif ordinal == 0:
        ok(f"StatefulSet/{set_name}: --peers = {peers}")
    if setting(rec, "--listen", "DMQ_LISTEN") != f"0.0.0.0:{client_port}":
        fail(f"{pod}: --listen must be 0.0.0.0:{client_port}")
    if setting(rec, "--peer-listen", "DMQ_PEER_LISTEN") != f"0.0.0.0:{peer_port}":
        fail(f"{pod}: --peer-listen must be 0.0.0.0:{peer_port}")
    if setting(rec, "--data-dir", "DMQ_DATA_DIR") != "/var/lib/dmq":
        fail(f"{pod}: --data-dir must be /var/lib/dmq (the PVC)")


def check_scaled_controllers(c, set_name, service, replicas, stub) -> None:
    """Pods past the bootstrap ones (the set scaled up, 3 -> 5) start with --join through the
    client Service and only their own --peers entry."""
    peer_port, client_port = container_port(c, "peer"), container_port(c, "client")
    for ordinal in range(replicas, replicas + 2):
        pod = f"{set_name}-{ordinal}"
        rc, out, err, _ = run_pod_command(c, pod, stub)
        if rc != 0:
            fail(f"{pod} (scaled up): its command exited {rc}: {err.strip()}")
            continue
        rec = json.loads(out)
        own = pod_dns(set_name, service, ordinal)
        want_peers = f"{ordinal + 1}={own}:{peer_port}/{own}:{client_port}"
        if setting(rec, "--peers", "DMQ_PEERS") != want_peers:
            fail(f"{pod} (scaled up): --peers {setting(rec, '--peers', 'DMQ_PEERS')}, expected {want_peers}")
        want_join = f"{set_name}-client.{TEST_NAMESPACE}.svc.cluster.local:{client_port}"
        if setting(rec, "--join", "DMQ_JOIN") != want_join:
            fail(f"{pod} (scaled up): --join {setting(rec, '--join', 'DMQ_JOIN')}, expected {want_join}")
    ok(f"StatefulSet/{set_name}: pods scaled past {replicas} join with --join and their own address")


def check_broker(pod, ordinal, rec, c, service, controllers) -> None:
    broker_id = id_setting(rec, pod, "--broker-id", "DMQ_BROKER_ID")
    if broker_id != str(ordinal + 1):
        fail(f"{pod}: --broker-id {broker_id}, expected {ordinal + 1}")
    port = container_port(c, "broker")
    adv = setting(rec, "--advertise", "DMQ_ADVERTISE")
    want = f"{pod}.{service}.{TEST_NAMESPACE}.{CLUSTER_DOMAIN}:{port}"
    if adv != want:
        fail(f"{pod}: --advertise {adv}, expected {want}")
    elif ordinal == 0:
        ok(f"StatefulSet/{pod.rsplit('-', 1)[0]}: --advertise = {adv}")
    if setting(rec, "--listen", "DMQ_LISTEN") != f"0.0.0.0:{port}":
        fail(f"{pod}: --listen must be 0.0.0.0:{port}")
    if setting(rec, "--data-dir", "DMQ_DATA_DIR") != "/var/lib/dmq":
        fail(f"{pod}: --data-dir must be /var/lib/dmq (the PVC)")
    got = (setting(rec, "--controllers", "DMQ_CONTROLLERS") or "").split(",")
    want_ctl = [
        f"{pod_dns(s['metadata']['name'], s['spec']['serviceName'], o)}:"
        f"{container_port(s['spec']['template']['spec']['containers'][0], 'client')}"
        for s in controllers
        for o in range(s["spec"]["replicas"])
    ]
    if got != want_ctl:
        fail(f"{pod}: --controllers {got}, expected every controller pod {want_ctl}")
    elif ordinal == 0:
        ok(f"StatefulSet/{pod.rsplit('-', 1)[0]}: --controllers = {','.join(got)}")


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("--k8s-version", action="append", dest="versions")
    ap.add_argument("--out", type=Path, help="write the rendered manifests here")
    args = ap.parse_args()
    versions = args.versions or ["1.30.0", "1.37.0"]
    t0 = time.monotonic()

    # validate.sh installs it first.
    import kubernetes_validate.utils as kvu  # noqa: PLC0415
    import kubernetes_validate.version  # noqa: PLC0415

    print(f"== render {args.base}")
    builtin = render_builtin(args.base)
    kubectl = render_kubectl(args.base)
    if kubectl is None:
        ok(f"built-in renderer: {len(builtin)} documents (kubectl not found: not compared)")
        docs = builtin
    else:
        a, b = by_key(kubectl), by_key(builtin)
        if a == b:
            ok(f"kubectl kustomize and the built-in renderer agree: {len(kubectl)} documents")
        else:
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    fail(f"kubectl kustomize and the built-in renderer differ on {k}")
        docs = kubectl
    if args.out:
        args.out.write_text(yaml.safe_dump_all(docs, sort_keys=False))

    kv = kubernetes_validate.version.__version__
    print(f"== schema (kubernetes-validate {kv}, strict) for Kubernetes {', '.join(versions)}")
    for d in docs:
        for v in versions:
            try:
                kvu.validate(copy.deepcopy(d), v, strict=True)
            except kvu.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                fail(f"{kn(d)} (Kubernetes {v}): {e.message} at {path or '<root>'}")
                continue
            except kvu.SchemaNotFoundError:
                fail(f"{kn(d)}: {d['apiVersion']} {d['kind']} is unknown to Kubernetes {v}")
                continue
        ok(f"{d['apiVersion']} {kn(d)}")

    print("== properties")
    check_properties(docs)

    print("== container commands (node id = ordinal + 1, peers, advertise, controllers)")
    check_commands(docs)

    took = time.monotonic() - t0
    if problems:
        print(
            f"validate: {len(problems)} problem(s) in {args.base} ({took:.1f} s)", file=sys.stderr
        )
        return 1
    print(f"validate: {len(docs)} manifests valid ({took:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
