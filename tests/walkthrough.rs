//! The cluster walkthrough (`examples/cluster/README.md`), steps 3 and 4 run as written: its
//! `kubectl apply`, the `kubectl get service` that finds the address and the `curl`, against the
//! test API server, with ferry in Kubernetes mode. What a cluster would add by itself is done here
//! by the test: the chart's IngressClass and LoadBalancer Service (with an address, as a cloud
//! would set it), and the EndpointSlice of the echo pods (a local echo backend plays them).

mod support;

use std::time::Duration;

use support::apiserver::ApiServer;
use support::*;

/// The lines of the walkthrough's `sh` blocks.
fn walkthrough() -> Vec<String> {
    let text = std::fs::read_to_string("examples/cluster/README.md").expect("examples/cluster/README.md");
    let mut lines = Vec::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("```") {
            inside = line == "```sh";
        } else if inside && !line.is_empty() {
            lines.push(line.to_string());
        }
    }
    lines
}

/// Splits a command line as the shell would, for the quoting the walkthrough uses ('…').
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut word, mut quoted, mut any) = (String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => (quoted, any) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quote in {line}");
    if any {
        out.push(word);
    }
    out
}

fn step<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines.iter().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` line in the walkthrough"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_steps_work_as_written() {
    let lines = walkthrough();
    let api = ApiServer::start_new().await;
    // What `helm install ferry charts/ferry -n ferry` puts in place (the chart tests check that
    // it renders these very names).
    api.upsert(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ferry}\n\
         spec: {controller: ferry.dev/ingress-controller}\n",
    );
    api.upsert(
        "apiVersion: v1\nkind: Service\nmetadata: {name: ferry, namespace: ferry}\n\
         spec:\n  type: LoadBalancer\n  ports: [{name: http, port: 80}]\n\
         status:\n  loadBalancer:\n    ingress: [{ip: 127.0.0.1}]\n",
    );
    let ferry = Ferry::start_kube(&api, &["--publish-service", "ferry/ferry"]);
    ferry.wait_ready().await;

    // The main README's "watch the Service" line (it runs until interrupted: stopped here).
    let readme = std::fs::read_to_string("README.md").unwrap();
    let watch = readme.lines().find(|l| l.starts_with("kubectl -n ferry get service ferry -w")).expect("README line");
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(&words(watch)[1..])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    let stdout = child.stdout.take().unwrap();
    let first = std::thread::spawn(move || {
        use std::io::BufRead as _;
        std::io::BufReader::new(stdout).lines().take(2).map_while(Result::ok).collect::<Vec<_>>()
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = child.kill();
    let _ = child.wait();
    // (The test API server does not print server-side tables, so columns beyond NAME and AGE,
    // such as EXTERNAL-IP, are not shown here.)
    let shown = first.join().unwrap();
    assert!(shown.len() == 2 && shown[1].starts_with("ferry "), "{shown:?}");

    // Step 3, as written. The test API server serves no OpenAPI documents, so kubectl's
    // client-side validation is off here; the chart tests validate both files against the
    // Kubernetes schemas instead.
    let apply = words(step(&lines, "kubectl apply"));
    let mut args: Vec<&str> = apply[1..].iter().map(String::as_str).collect();
    args.push("--validate=false");
    let (ok, out) = api.kubectl(&args, None).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("deployment.apps/echo created") && out.contains("ingress.networking.k8s.io/echo created"),
        "{out}"
    );

    // The EndpointSlice controller's part: the echo pods.
    let pod = echo("127.0.0.2", "echo").await;
    api.upsert(&endpoint_slice("echo-x1", "echo", "http", &pod, "ready: true"));

    // Step 4, as written: the address from the Service, then curl.
    let addr_line = step(&lines, "ADDR=$(");
    let inner = addr_line.strip_prefix("ADDR=$(").and_then(|l| l.strip_suffix(')')).expect("ADDR=$(…)");
    let get = words(inner);
    let args: Vec<&str> = get[1..].iter().map(String::as_str).collect();
    let (ok, addr) = api.kubectl(&args, None).await;
    assert!(ok, "{addr}");
    assert_eq!(addr.trim(), "127.0.0.1");
    // The LoadBalancer's port 80 is ferry's HTTP listener here.
    let addr = format!("{}:{}", addr.trim(), ferry.http.port());
    let curl = step(&lines, "curl ").replace("$ADDR", &addr);
    let mut body = String::new();
    eventually_within("the curl line is answered by the echo pods", Duration::from_secs(10), || {
        let args = words(&curl);
        let out = std::process::Command::new(&args[0]).args(&args[1..]).args(["-sS"]).output().expect("curl");
        body = String::from_utf8_lossy(&out.stdout).into_owned();
        let ok = out.status.success()
            && serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["service"] == "echo");
        async move { ok }
    })
    .await;
    assert!(body.contains(&pod.to_string()), "{body}");

    // And the Ingress shows the LoadBalancer address, as `kubectl get ingress` would.
    eventually_within("the Ingress status carries the address", Duration::from_secs(10), || {
        let api = &api;
        async move {
            let (_, ip) = api
                .kubectl(&["get", "ingress", "echo", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"], None)
                .await;
            ip.trim() == "127.0.0.1"
        }
    })
    .await;
}
