"""The Helm chart, rendered by the Helm library (helm-python-sdk) for the default values and a
matrix of others; every object validated against the Kubernetes OpenAPI schemas (strict), the
security properties asserted, bad values refused by values.schema.json, and the README's install
commands rendered as written."""

import os
import re
import shlex
import subprocess
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ferry"
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest schemas at hand.
KUBE_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version() + ".0"]
NAME, NAMESPACE = "ferry", "ferry"

MATRIX = {
    "default": {},
    "daemonset": {"kind": "DaemonSet"},
    "watch-namespaces": {"watchNamespaces": ["shop", "blog"]},
    "watch-namespaces-with-own": {"watchNamespaces": ["ferry", "shop"]},
    "hpa": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 9}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "l4-ports": {"l4Ports": [{"name": "postgres", "port": 5432}, {"name": "tls-pass", "port": 9443, "servicePort": 443 + 1}]},
    "default-class-on": {"ingressClass": {"default": True}},
    "no-ingress-class": {"ingressClass": {"create": False, "name": "edge"}},
    "cluster-policy-nodeport": {"service": {"type": "NodePort", "externalTrafficPolicy": "Cluster"}},
    "gateway-api": {
        "gatewayClass": {"create": True, "name": "edge", "controllerName": "example.com/edge-gateway"},
        "gateways": {"ports": "30000-30049", "serviceType": "NodePort"},
        "watchNamespaces": ["shop"],
    },
    "everything": {
        "image": {"repository": "registry.example.com/ferry", "tag": "0.1.0-rc1"},
        "config": {
            "defaultTlsSecret": "ferry/wildcard",
            "allowExternalName": True,
            "nginxAnnotations": True,
            "accessLog": "off",
            "otlpEndpoint": "http://otel-collector.observability:4318",
            "otlpSampleRatio": 0.25,
            "maxConnectionsPerIp": 100,
            "threads": 4,
        },
        "shutdown": {"preStopSleepSeconds": 0, "delaySeconds": 10, "drainTimeoutSeconds": 30},
        "extraArgs": ["--outlier-ejection-seconds", "20"],
        "service": {"annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
                    "loadBalancerSourceRanges": ["10.0.0.0/8"]},
        "podDisruptionBudget": {"maxUnavailable": "50%"},
        "topologySpreadConstraints": [],
        "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
    },
}


def chart():
    return helm.Chart.load(str(CHART))


def render(values, name=NAME, namespace=NAMESPACE):
    """Rendered objects (templates, then the chart's CRDs) and the NOTES text."""
    rendered = chart().render(values, name=name, namespace=namespace, is_install=True)
    objects, notes = [], ""
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects += [o for o in yaml.safe_load_all(text) if o]
    for crd in chart().crds:
        objects += [o for o in yaml.safe_load_all(crd["data"]) if o]
    return objects, notes


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def one(objects, kind):
    found = of_kind(objects, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def workload(objects):
    found = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]
    assert len(found) == 1
    return found[0]


def container(objects):
    return workload(objects)["spec"]["template"]["spec"]["containers"][0]


@pytest.fixture(scope="session")
def ferry_bin():
    """The real ferry binary, to check that the chart's arguments parse."""
    subprocess.run(["cargo", "build", "-q", "--bin", "ferry"], cwd=ROOT, check=True)
    return ROOT / "target" / "debug" / "ferry"


# --- rendering, lint, schemas ------------------------------------------------------------------


@pytest.mark.parametrize("case", MATRIX)
def test_renders_lints_and_validates(case):
    values = MATRIX[case]
    objects, notes = render(values)
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "ServiceMonitor":
            check_service_monitor(obj, objects)
            continue
        if obj["kind"] == "GatewayClass":
            check_gateway_class(obj, objects)
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{case}: {where} invalid for Kubernetes {version}: {e.message} at {list(e.path)}")
    assert NAME in notes and "curl" in notes


def check_service_monitor(monitor, objects):
    """No OpenAPI schema ships for the Prometheus Operator's CRD: check what it must select."""
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in of_kind(objects, "Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert len(services) == 1, "the ServiceMonitor selects exactly the metrics Service"
    ports = {p["name"]: p for p in services[0]["spec"]["ports"]}
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics" and endpoint["port"] in ports
    assert ports[endpoint["port"]]["targetPort"] == "admin"


@pytest.mark.parametrize("case", MATRIX)
def test_arguments_parse_in_the_real_binary(case, ferry_bin):
    args = container(render(MATRIX[case])[0])["args"]
    # clap parses every argument before it acts on --help: a flag ferry does not know, or a
    # value it refuses, fails here.
    out = subprocess.run([str(ferry_bin), *args, "--help"], capture_output=True, text=True)
    assert out.returncode == 0, f"{args}: {out.stderr}"


def test_crds_in_the_chart_match_the_repository():
    ours = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    packaged = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert packaged == ours, "charts/ferry/crds/ must hold exactly crds/*.yaml (copy them over)"
    for name in ours:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"charts/ferry/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/ferry/crds/"
        )


def check_gateway_class(klass, objects):
    """No OpenAPI schema ships for the Gateway API CRDs: check the GatewayClass by hand, and that
    it names the controller the pods claim."""
    assert klass["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert set(klass) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(klass["spec"]) <= {"controllerName", "description", "parametersRef"}
    assert re.fullmatch(r"[a-z0-9.-]+/[A-Za-z0-9._/-]+", klass["spec"]["controllerName"])
    assert f"--gateway-controller-name={klass['spec']['controllerName']}" in container(objects)["args"]


# --- the objects a user gets --------------------------------------------------------------------


def test_default_install_is_a_load_balanced_ingress_controller():
    objects, _ = render({})
    deploy = one(objects, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    svc = next(s for s in of_kind(objects, "Service") if s["metadata"]["name"] == NAME)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {"http": (80, "http"), "https": (443, "https")}
    c = container(objects)
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert named == {"http": 8080, "https": 8443, "admin": 9180}
    args = c["args"]
    assert "--http-addr=0.0.0.0:8080" in args and "--https-addr=0.0.0.0:8443" in args
    assert "--admin-addr=0.0.0.0:9180" in args
    assert f"--publish-service={NAMESPACE}/{NAME}" in args
    # Gateway API: the ports range, the Services' type, and the pods' own labels as their selector.
    assert "--gateway-ports=20000-20099" in args and "--gateway-service-type=LoadBalancer" in args
    assert "--gateway-controller-name=ferry.dev/gateway-controller" in args
    selector = next(a for a in args if a.startswith("--gateway-service-selector="))
    pairs = dict(kv.split("=", 1) for kv in selector.split("=", 1)[1].split(","))
    assert pairs == deploy["spec"]["template"]["metadata"]["labels"] == deploy["spec"]["selector"]["matchLabels"]
    assert not of_kind(objects, "GatewayClass"), "needs the Gateway API CRDs: only on request"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c["env"]}
    assert env["POD_NAME"] == "metadata.name" and env["POD_NAMESPACE"] == "metadata.namespace"
    klass = one(objects, "IngressClass")
    assert klass["metadata"]["name"] == "ferry"
    assert klass["spec"]["controller"] == "ferry.dev/ingress-controller"
    assert "ingressclass.kubernetes.io/is-default-class" not in (klass["metadata"].get("annotations") or {})
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not of_kind(objects, "HorizontalPodAutoscaler") and not of_kind(objects, "ServiceMonitor")
    assert one(objects, "CustomResourceDefinition")["metadata"]["name"] == "l4routes.ferry.dev"
    spread = deploy["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {t["topologyKey"] for t in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert all(t["labelSelector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"] for t in spread)


def test_shutdown_timing_fits_in_the_grace_period():
    for shutdown in ({}, {"preStopSleepSeconds": 0, "delaySeconds": 2, "drainTimeoutSeconds": 60}):
        values = {"shutdown": shutdown} if shutdown else {}
        objects, _ = render(values)
        spec = workload(objects)["spec"]["template"]["spec"]
        c = container(objects)
        merged = chart().merge_values(values)["shutdown"]
        assert f"--shutdown-delay={merged['delaySeconds']}" in c["args"]
        assert f"--drain-timeout={merged['drainTimeoutSeconds']}" in c["args"]
        sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert sleep == merged["preStopSleepSeconds"]
        assert spec["terminationGracePeriodSeconds"] > sleep + merged["delaySeconds"] + merged["drainTimeoutSeconds"]


def test_value_matrix_changes_what_it_should():
    ds, _ = render(MATRIX["daemonset"])
    assert one(ds, "DaemonSet") and not of_kind(ds, "Deployment")
    assert not of_kind(ds, "PodDisruptionBudget"), "a DaemonSet's disruptions are per node"

    hpa, _ = render(MATRIX["hpa"])
    h = one(hpa, "HorizontalPodAutoscaler")
    assert (h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) == (3, 9)
    assert h["spec"]["scaleTargetRef"]["name"] == one(hpa, "Deployment")["metadata"]["name"]
    assert "replicas" not in one(hpa, "Deployment")["spec"], "the HPA owns the replica count"

    l4, _ = render(MATRIX["l4-ports"])
    c = container(l4)
    assert "--l4-ports=5432,9443" in c["args"]
    svc = next(s for s in of_kind(l4, "Service") if s["metadata"]["name"] == NAME)
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports["postgres"] == (5432, "postgres") and ports["tls-pass"] == (444, "tls-pass")
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["tls-pass"] == 9443

    on, _ = render(MATRIX["default-class-on"])
    assert one(on, "IngressClass")["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true"
    off, _ = render(MATRIX["no-ingress-class"])
    assert not of_kind(off, "IngressClass")
    assert "--ingress-class=edge" in container(off)["args"]

    gw, _ = render(MATRIX["gateway-api"])
    klass = one(gw, "GatewayClass")
    assert (klass["metadata"]["name"], klass["spec"]["controllerName"]) == ("edge", "example.com/edge-gateway")
    args = container(gw)["args"]
    assert "--gateway-ports=30000-30049" in args and "--gateway-service-type=NodePort" in args

    np, _ = render(MATRIX["cluster-policy-nodeport"])
    svc = next(s for s in of_kind(np, "Service") if s["metadata"]["name"] == NAME)
    assert svc["spec"]["type"] == "NodePort" and svc["spec"]["externalTrafficPolicy"] == "Cluster"

    every, _ = render(MATRIX["everything"])
    c = container(every)
    for arg in ["--default-tls-secret=ferry/wildcard", "--allow-external-name", "--nginx-annotations",
                "--access-log=off", "--otlp-endpoint=http://otel-collector.observability:4318",
                "--otlp-sample-ratio=0.25", "--max-connections-per-ip=100", "--threads=4",
                "--outlier-ejection-seconds", "20"]:
        assert arg in c["args"], arg
    assert c["image"] == "registry.example.com/ferry:0.1.0-rc1"
    assert "lifecycle" not in c, "preStopSleepSeconds 0 means no hook"
    assert "topologySpreadConstraints" not in one(every, "Deployment")["spec"]["template"]["spec"]


# --- security properties ---------------------------------------------------------------------


def readme_rbac_contract():
    """The RBAC table of README.md: {(apiGroup, resource): {verb: scope}}, scope being "cluster"
    (cluster-scoped kinds: a ClusterRole always), "own" (ferry's own namespace only: a Role in the
    release namespace) or "watched" (a ClusterRole, or a Role per watched namespace)."""
    text = (ROOT / "README.md").read_text()
    table = text.split("**RBAC**", 1)[1].split("\n\n", 2)[1]
    contract = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        group = cells[0].strip("`").replace('""', "")
        verbs = {v.strip() for v in cells[2].split(",")}
        scope = ("cluster" if cells[3].startswith("cluster-scoped")
                 else "own" if "own namespace only" in cells[3] else "watched")
        for resource in re.findall(r"`([a-z0-9/]+)`", cells[1]):
            # IngressClass shares the Ingress row but is cluster-scoped.
            kind_scope = "cluster" if resource == "ingressclasses" else scope
            for verb in verbs:
                assert verb not in contract.get((group, resource), {}), f"{resource} {verb} twice in the table"
                contract.setdefault((group, resource), {})[verb] = kind_scope
    assert len(contract) >= 10, contract
    return contract


def rbac_rules(objects):
    """(kind, namespace, apiGroup, resource, verb) of every granted permission."""
    granted = set()
    for role in of_kind(objects, "ClusterRole") + of_kind(objects, "Role"):
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        granted.add((role["kind"], role["metadata"].get("namespace"), group, resource, verb))
    return granted


@pytest.mark.parametrize("case", MATRIX)
def test_rbac_grants_no_more_than_the_readme_contract(case):
    objects, _ = render(MATRIX[case])
    contract = readme_rbac_contract()
    granted = rbac_rules(objects)
    assert granted, "RBAC is rendered"
    for kind, ns, group, resource, verb in granted:
        assert "*" not in (group, resource, verb), f"wildcard in {kind}: {group}/{resource} {verb}"
        assert (group, resource) in contract, f"{kind} grants {resource} in {group!r}, not in the README contract"
        assert verb in contract[(group, resource)], f"{kind} grants {verb} on {resource}, beyond the README contract"
        if resource == "leases":
            assert (kind, ns) == ("Role", NAMESPACE), "Lease permissions only in the release namespace"
    secrets = {verb for (_, _, g, r, verb) in granted if (g, r) == ("", "secrets")}
    assert secrets == {"get", "list", "watch"}
    # ConfigMaps (BackendTLSPolicy CA bundles): read, never written.
    configmaps = {verb for (_, _, g, r, verb) in granted if (g, r) == ("", "configmaps")}
    assert configmaps == {"get", "list", "watch"}
    for binding in of_kind(objects, "ClusterRoleBinding") + of_kind(objects, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    # Everything ferry needs is granted, in the right scope.
    needed = {(g, r, v) for (g, r), verbs in contract.items() for v in verbs}
    assert needed == {(g, r, v) for (_, _, g, r, v) in granted}
    watched = MATRIX[case].get("watchNamespaces")
    for (g, r), verbs in contract.items():
        for v, scope in verbs.items():
            where = {(kind, ns) for (kind, ns, gg, rr, vv) in granted if (gg, rr, vv) == (g, r, v)}
            if scope == "cluster":
                assert where == {("ClusterRole", None)}, f"{r} {v}: cluster-scoped, granted in {where}"
            elif scope == "own":
                assert where == {("Role", NAMESPACE)}, f"{r} {v}: the release namespace only, granted in {where}"
            elif watched:
                for ns in watched:
                    assert ("Role", ns, g, r, v) in granted, f"{r} {v} in {ns}"
                assert ("ClusterRole", None, g, r, v) not in granted, f"{r} {v} cluster-wide despite watchNamespaces"
            else:
                assert ("ClusterRole", None, g, r, v) in granted
    if watched and NAMESPACE not in watched:
        assert ("Role", NAMESPACE, "", "services", "watch") in granted, "the published Service is watched"
    # The per-Gateway Services: written only in the release namespace, nowhere else.
    for verb in ("create", "patch", "delete", "update"):
        assert {(k, ns) for (k, ns, g, r, v) in granted if (g, r, v) == ("", "services", verb)} <= {("Role", NAMESPACE)}
    # Gateway API status: patched, never replaced.
    assert not {r for (_, _, g, r, v) in granted if g == "gateway.networking.k8s.io" and v in ("update", "create", "delete")}


@pytest.mark.parametrize("case", MATRIX)
def test_pod_is_hardened(case):
    objects, _ = render(MATRIX[case])
    pod = workload(objects)["spec"]["template"]["spec"]
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), key
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert not sc.get("privileged")
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert all(p["containerPort"] >= 1024 and "hostPort" not in p for p in c["ports"]), "unprivileged ports"
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert all("hostPath" not in v for v in pod.get("volumes", []))


# --- bad values ------------------------------------------------------------------------------

BAD = [
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"replicas": 3}, "replicas"),
    ({"kind": "StatefulSet"}, "/kind"),
    ({"service": {"externalTrafficPolicy": "Nearest"}}, "/service/externalTrafficPolicy"),
    ({"service": {"prots": {"http": 80}}}, "prots"),
    ({"l4Ports": [{"name": "pg", "port": 80}]}, "/l4Ports/0/port"),
    ({"l4Ports": [{"name": "pg", "port": 8080}]}, "/l4Ports/0/port"),
    ({"l4Ports": [{"port": 5432}]}, "name"),
    ({"config": {"otlpSampleRatio": 2}}, "/config/otlpSampleRatio"),
    ({"config": {"accessLog": "/var/log/ferry.log"}}, "/config/accessLog"),
    ({"config": {"snippet": "anything"}}, "snippet"),
    ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
    ({"ingressClass": {"default": "yes"}}, "/ingressClass/default"),
    ({"gatewayClass": {"controllerName": "no-slash"}}, "/gatewayClass/controllerName"),
    ({"gateways": {"ports": "20000"}}, "/gateways/ports"),
    ({"gateways": {"ports": "80-90"}}, "/gateways/ports"),
    ({"gateways": {"serviceType": "ExternalName"}}, "/gateways/serviceType"),
]


@pytest.mark.parametrize("values,where", BAD, ids=[str(v) for v, _ in BAD])
def test_bad_values_are_refused_with_the_key(values, where):
    with pytest.raises(helm.HelmValuesError) as err:
        chart().validate_schema(values)
    assert where in str(err.value), str(err.value)
    with pytest.raises(helm.HelmError):
        render(values)


def test_contradicting_values_fail_with_a_message():
    with pytest.raises(helm.HelmError, match="autoscaling.enabled needs kind: Deployment"):
        render({"kind": "DaemonSet", "autoscaling": {"enabled": True}})
    with pytest.raises(helm.HelmError, match="minReplicas is larger"):
        render({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}})
    with pytest.raises(helm.HelmError, match="gateways.ports 30000-20000: FIRST-LAST"):
        render({"gateways": {"ports": "30000-20000"}})
    with pytest.raises(helm.HelmError, match="contains port 8080"):
        render({"gateways": {"ports": "8000-8100"}})
    with pytest.raises(helm.HelmError, match="contains port 20005"):
        render({"l4Ports": [{"name": "pg", "port": 20005}]})


# --- the examples and the README ---------------------------------------------------------------


def example_objects():
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if obj:
                yield path.relative_to(ROOT), obj


def test_examples_validate_against_kubernetes_and_the_crds():
    crd = next(o for o in render({})[0] if o["kind"] == "CustomResourceDefinition")
    crd_schemas = {(f"{crd['spec']['group']}/{v['name']}", crd["spec"]["names"]["kind"]): v["schema"]["openAPIV3Schema"]
                   for v in crd["spec"]["versions"]}
    seen = set()
    for path, obj in example_objects():
        key = (obj["apiVersion"], obj["kind"])
        if key in crd_schemas:
            try:
                jsonschema.validate(obj, crd_schemas[key])
            except jsonschema.ValidationError as e:
                pytest.fail(f"{path}: {obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")
        else:
            for version in KUBE_VERSIONS:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    pytest.fail(f"{path}: {obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")
        seen.add(obj["kind"])
    assert {"Ingress", "Service", "Deployment", "L4Route", "EndpointSlice"} <= seen, seen


def readme_commands(path):
    """Shell lines of the fenced sh blocks of a markdown file."""
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            inside = line.strip() == "```sh"
            continue
        if inside and line.strip() and not line.strip().startswith("#"):
            lines.append(line.strip())
    return lines


@pytest.mark.parametrize("doc", ["README.md", "examples/cluster/README.md"])
def test_helm_install_commands_in_the_docs_render(doc):
    installs = [c for c in readme_commands(ROOT / doc) if c.startswith("helm install")]
    assert installs, f"{doc} has a helm install command"
    for command in installs:
        words = shlex.split(command.split("#")[0])
        name, chart_path = words[2], words[3]
        assert (ROOT / chart_path).resolve() == CHART
        namespace, sets = "default", []
        i = 4
        while i < len(words):
            if words[i] in ("-n", "--namespace"):
                namespace, i = words[i + 1], i + 2
            elif words[i] == "--set":
                sets.append(words[i + 1])
                i += 2
            elif words[i] == "--create-namespace":
                i += 1
            else:
                pytest.fail(f"{doc}: unexpected word {words[i]!r} in {command!r}")
        # Helm's own parser, as for repeated --set flags (later ones win).
        values = helm.parse_set_string(",".join(sets)) if sets else {}
        chart().validate_schema(values)
        objects, notes = render(values, name=name, namespace=namespace)
        assert any(o["kind"] == "Service" and o["metadata"]["name"] == name for o in objects)
        assert f"kubectl -n {namespace} get service {name}" in notes


def test_notes_walk_through_the_example_files():
    _, notes = render({})
    for ref in re.findall(r"examples/[\w/.-]+\.yaml", notes):
        assert (ROOT / ref).exists(), ref
    assert "curl -H 'Host: echo.example.test'" in notes
    hosts = [r["host"] for path, o in example_objects() if o["kind"] == "Ingress" and path.parts[1] == "cluster"
             for r in o["spec"]["rules"]]
    assert hosts == ["echo.example.test"]


def test_dockerfile_matches_the_chart():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.M)
    assert len(stages) >= 2 and stages[0][0].startswith("docker.io/library/rust:"), "multi-stage, built with Rust"
    assert "nonroot" in stages[-1][0] or "distroless" in stages[-1][0]
    user = re.findall(r"^USER\s+(\d+)(?::(\d+))?", text, re.M)
    pod = workload(render({})[0])["spec"]["template"]["spec"]["securityContext"]
    assert user and int(user[-1][0]) == pod["runAsUser"] and int(user[-1][1]) == pod["runAsGroup"]
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", text, re.M) for p in line.split()}
    assert exposed == {p["containerPort"] for p in container(render({})[0])["ports"]}
    assert re.search(r'^ENTRYPOINT \["/ferry"\]', text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "target/" in ignored and ".git/" in ignored
