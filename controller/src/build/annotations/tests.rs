use super::read::*;
use super::*;
use std::time::Duration;

use gateway::limits::Rate;
use gateway::table::Redirect;

fn ingress(yaml_annotations: &str) -> Ingress {
    serde_yaml_ng::from_str(&format!("metadata: {{name: i, annotations: {{{yaml_annotations}}}}}")).unwrap()
}

/// The settings, or `None` when the Ingress is refused, and the diagnostics.
fn try_read(yaml_annotations: &str, nginx: bool) -> (Option<IngressSettings>, Vec<Diagnostic>) {
    let ing = ingress(yaml_annotations);
    let mut diags = Vec::new();
    let (obj, rt) = (ObjectRef::new("Ingress", "default", "i"), Runtime::default());
    let s = settings(&ing, &obj, &Arc::from("default/i"), nginx, &rt, &mut diags);
    (s, diags)
}

/// The settings of an Ingress that is served.
fn read(yaml_annotations: &str, nginx: bool) -> (IngressSettings, Vec<Diagnostic>) {
    let (s, diags) = try_read(yaml_annotations, nginx);
    (s.unwrap_or_else(|| panic!("{yaml_annotations}: refused: {diags:?}")), diags)
}

fn errors(diags: &[Diagnostic]) -> Vec<(&str, &str)> {
    diags
        .iter()
        .filter(|d| d.severity == crate::diagnostic::Severity::Error)
        .map(|d| (d.field.as_str(), d.reason.as_str()))
        .collect()
}

#[test]
fn edit_distances() {
    for (a, b, d) in [
        ("", "", 0),
        ("rate-limit", "rate-limit", 0),
        ("rate-limits", "rate-limit", 1),
        ("allow-source-range", "allow-source-ranges", 1),
        ("maxbodysize", "max-body-size", 2),
        ("retires", "retries", 2),
        ("kitten", "sitting", 3),
        ("", "abc", 3),
    ] {
        assert_eq!(edit_distance(a, b), d, "{a} / {b}");
        assert_eq!(edit_distance(b, a), d, "{b} / {a}");
    }
}

#[test]
fn suggestions_for_unknown_keys() {
    use Suggestion::*;
    for (key, want) in [
        ("ferry.dev/allow-source-range", Some(Key(ALLOW_SOURCES))),
        ("ferry.dev/allow-sources-range", Some(Key(ALLOW_SOURCES))),
        ("ferry.dev/maxbodysize", Some(Key(MAX_BODY))),
        ("ferry.dev/rate-limits", Some(Key(RATE_LIMIT))),
        ("ferry.dev/Rate-Limit", Some(Key(RATE_LIMIT))),
        ("ferry.dev/retires", Some(Key(RETRIES))),
        ("ferry.dev/cors-allow-header", Some(Key(CORS_ALLOW_HEADERS))),
        ("ferry.dev/cors-allow-orgin", Some(Key(CORS_ALLOW_ORIGIN))),
        ("ferry.dev/canary-header-values", Some(Key(CANARY_HEADER_VALUE))),
        ("ferry.dev/conect-timout", Some(Key(CONNECT_TIMEOUT))),
        // ingress-nginx's names under ferry's prefix: their ferry key.
        ("ferry.dev/proxy-body-size", Some(Key(MAX_BODY))),
        ("ferry.dev/whitelist-source-range", Some(Key(ALLOW_SOURCES))),
        ("ferry.dev/limit-rps", Some(Key(RATE_LIMIT))),
        ("ferry.dev/canary-by-header", Some(Key(CANARY_HEADER))),
        ("ferry.dev/load-balancer", Some(Suggestion::On(super::On::Service))),
        // Nothing close: no guess.
        ("ferry.dev/timeout", None),
        ("ferry.dev/snippet", None),
        ("ferry.dev/", None),
    ] {
        assert_eq!(suggest(key, super::On::Ingress), want, "{key}");
    }
}

#[test]
fn unknown_keys_refuse_the_ingress() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "ferry.dev/allow-source-range: 10.0.0.0/8",
            &[(
                "metadata.annotations[ferry.dev/allow-source-range]",
                "unknown annotation ferry.dev/allow-source-range (did you mean ferry.dev/allow-source-ranges?); \
                 the Ingress is not served until it is fixed",
            )],
        ),
        // The right key beside a wrong one does not make it servable.
        (
            "ferry.dev/rate-limit: 10r/s, ferry.dev/maxbodysize: 1k",
            &[(
                "metadata.annotations[ferry.dev/maxbodysize]",
                "unknown annotation ferry.dev/maxbodysize (did you mean ferry.dev/max-body-size?); \
                 the Ingress is not served until it is fixed",
            )],
        ),
        // Every unknown key is reported, each once.
        (
            "ferry.dev/rate-limits: 10r/s, ferry.dev/snippet: x",
            &[
                (
                    "metadata.annotations[ferry.dev/rate-limits]",
                    "unknown annotation ferry.dev/rate-limits (did you mean ferry.dev/rate-limit?); \
                     the Ingress is not served until it is fixed",
                ),
                (
                    "metadata.annotations[ferry.dev/snippet]",
                    "unknown annotation ferry.dev/snippet; the Ingress is not served until it is fixed",
                ),
            ],
        ),
        (
            "ferry.dev/load-balancer: least-request",
            &[(
                "metadata.annotations[ferry.dev/load-balancer]",
                "unknown annotation ferry.dev/load-balancer (an annotation of the Service, not of the Ingress); \
                 the Ingress is not served until it is fixed",
            )],
        ),
    ];
    for (annotations, want) in cases {
        for nginx in [false, true] {
            let (s, diags) = try_read(annotations, nginx);
            assert!(s.is_none(), "{annotations}: served");
            assert_eq!(errors(&diags), *want, "{annotations}");
        }
    }
    // Every key ferry knows is accepted; other prefixes are not ferry's to judge.
    let all: BTreeMap<String, String> =
        ANNOTATIONS.iter().filter(|a| a.on == super::On::Ingress).map(|a| (a.key.to_string(), String::new())).collect();
    let mut diags = Vec::new();
    assert!(Annotations { map: &all, nginx: false }.check_keys(&ObjectRef::new("Ingress", "d", "i"), &mut diags));
    assert!(diags.is_empty(), "{diags:?}");
    let (s, diags) = try_read("example.com/ferry.dev: x, ferry.devx/y: z, kubernetes.io/ingress.class: ferry", false);
    assert!(s.is_some() && diags.is_empty(), "{diags:?}");
    // Unknown nginx keys stay warnings (reported, the Ingress served).
    let (s, diags) = try_read("nginx.ingress.kubernetes.io/server-snippet: x", true);
    assert!(s.is_some() && errors(&diags).is_empty(), "{diags:?}");
}

#[test]
fn unsupported_nginx_protections_refuse_the_ingress() {
    // Asked to honour nginx annotations, ferry will not serve open what one of them guards.
    for name in [
        "auth-url",
        "auth-type",
        "auth-tls-secret",
        "denylist-source-range",
        "limit-connections",
        "global-rate-limit",
        "enable-modsecurity",
        "satisfy",
    ] {
        let (s, diags) = try_read(&format!("nginx.ingress.kubernetes.io/{name}: x"), true);
        assert!(s.is_none(), "{name}: served");
        let field = format!("metadata.annotations[nginx.ingress.kubernetes.io/{name}]");
        assert!(errors(&diags).iter().any(|(f, why)| *f == field && why.ends_with(NOT_SERVED)), "{name}: {diags:?}");
        // Without the flag every nginx annotation is reported as ignored, this one too.
        let (s, diags) = try_read(&format!("nginx.ingress.kubernetes.io/{name}: x"), false);
        assert!(s.is_some() && errors(&diags).is_empty(), "{name}: {diags:?}");
    }
    // The supported limits are read as ferry's rate limit, not refused.
    let (s, diags) = try_read("nginx.ingress.kubernetes.io/limit-rps: \"5\"", true);
    assert!(s.is_some() && errors(&diags).is_empty(), "{diags:?}");
}

#[test]
fn every_nginx_alias_is_read_as_its_key() {
    // Each alias of the registry is read by `get` as its ferry key, and only with the flag (CORS
    // needs enable-cors).
    for a in ANNOTATIONS {
        assert!(a.on == super::On::Ingress || a.nginx.is_empty(), "{}: nginx aliases are an Ingress's", a.key);
        assert_eq!(a.read.is_some(), a.on == super::On::Ingress, "{}", a.key);
        for alias in a.nginx {
            let mut map = BTreeMap::from([(format!("{NGINX}enable-cors"), "true".to_string())]);
            let value = if alias.name == "enable-cors" { "true" } else { "1" };
            map.insert(format!("{NGINX}{}", alias.name), value.to_string());
            let found = Annotations { map: &map, nginx: true }.get(a);
            let found = found.unwrap_or_else(|| panic!("{} is not read as {}", alias.name, a.key));
            assert_eq!(found.field, field(&format!("{NGINX}{}", alias.name)), "{}", a.key);
            assert!(Annotations { map: &map, nginx: false }.get(a).is_none(), "{} without the flag", alias.name);
            assert!(nginx_supported(alias.name));
        }
        if let Some(whole) = a.part_of {
            assert_eq!(annotation(whole).on, a.on, "{} is part of {whole}", a.key);
        }
    }
    // Keys are unique and under ferry's prefix.
    let mut keys: Vec<&str> = ANNOTATIONS.iter().map(|a| a.key).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), ANNOTATIONS.len());
    assert!(keys.iter().all(|k| k.starts_with(PREFIX)));
}

#[test]
fn readme_tables_are_the_registry() {
    let readme = include_str!("../../../../README.md");
    for (name, table) in [("annotations", markdown_table()), ("nginx", nginx_markdown_table())] {
        assert!(
            readme.contains(&table),
            "README's {name} table differs from `ferry annotations`; it should be:\n{table}"
        );
    }
}

#[test]
fn a_part_without_its_setting_is_reported() {
    for (annotations, nginx, field_key, why) in [
        ("ferry.dev/redirect-code: \"302\"", false, "ferry.dev/redirect-code", "ferry.dev/redirect is not set"),
        ("ferry.dev/cors-max-age: \"5\"", false, "ferry.dev/cors-max-age", "ferry.dev/cors-allow-origin is not set"),
        ("ferry.dev/canary-weight: \"5\"", true, "ferry.dev/canary-weight", "ferry.dev/canary (or nginx.ingress.kubernetes.io/canary) is not set"),
        (
            "nginx.ingress.kubernetes.io/cors-allow-methods: GET",
            true,
            "nginx.ingress.kubernetes.io/cors-allow-methods",
            "ferry.dev/cors-allow-origin (or nginx.ingress.kubernetes.io/cors-allow-origin, nginx.ingress.kubernetes.io/enable-cors) is not set",
        ),
    ] {
        let (s, diags) = read(annotations, nginx);
        assert!(s.options.cors.is_none() && s.options.redirect.is_none() && s.canary.is_none());
        assert_eq!(diags.len(), 1, "{annotations}: {diags:?}");
        assert_eq!(diags[0].severity, crate::diagnostic::Severity::Warning);
        assert_eq!(diags[0].field, field(field_key));
        assert_eq!(diags[0].reason, format!("{why}, so this has no effect"));
    }
    // With its setting, the part is used.
    let (s, diags) = read("ferry.dev/redirect: /x, ferry.dev/redirect-code: \"302\"", false);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(s.options.redirect.map(|r| r.code), Some(302));
}

#[test]
fn unknown_service_keys_are_warnings() {
    let svc = |annotations: &str| -> crate::snapshot::Svc {
        let text = format!("metadata: {{name: web, annotations: {{{annotations}}}}}");
        serde_yaml_ng::from_str::<k8s_openapi::api::core::v1::Service>(&text).unwrap().into()
    };
    assert!(service_warnings(&svc("ferry.dev/load-balancer: ewma, ferry.dev/gateway: a/b, x.io/y: z")).is_empty());
    assert_eq!(
        service_warnings(&svc("ferry.dev/load-balancr: ewma, ferry.dev/rate-limit: 10r/s")),
        [
            "Service web: unknown annotation ferry.dev/load-balancr (did you mean ferry.dev/load-balancer?); ignored",
            "Service web: unknown annotation ferry.dev/rate-limit (an annotation of the Ingress, not of the Service); ignored",
        ]
    );
}

#[test]
fn protection_values_that_do_not_parse_refuse_the_ingress() {
    let cases = [
        ("ferry.dev/rate-limit: \"10 per second\"", false, "ferry.dev/rate-limit", "\"10 per second\" is not a rate"),
        ("ferry.dev/rate-limit: 0r/s", false, "ferry.dev/rate-limit", "\"0r/s\" is not a rate"),
        ("ferry.dev/rate-limit: \"10r/s burst=0\"", false, "ferry.dev/rate-limit", "is not a rate"),
        ("ferry.dev/max-body-size: 8 MB", false, "ferry.dev/max-body-size", "\"8 MB\" is not a size"),
        ("ferry.dev/max-body-size: 1.5m", false, "ferry.dev/max-body-size", "\"1.5m\" is not a size"),
        ("ferry.dev/max-body-size: \"-1\"", false, "ferry.dev/max-body-size", "\"-1\" is not a size"),
        ("ferry.dev/canary: \"yes\"", false, "ferry.dev/canary", "\"yes\" is not true or false"),
        (
            "nginx.ingress.kubernetes.io/limit-rps: ten",
            true,
            "nginx.ingress.kubernetes.io/limit-rps",
            "\"ten\" is not a number of requests",
        ),
        (
            "nginx.ingress.kubernetes.io/limit-rps: \"10r/s\"",
            true,
            "nginx.ingress.kubernetes.io/limit-rps",
            "\"10r/s\" is not a number of requests",
        ),
        (
            "nginx.ingress.kubernetes.io/limit-rpm: \"5.5\"",
            true,
            "nginx.ingress.kubernetes.io/limit-rpm",
            "\"5.5\" is not a number of requests",
        ),
        (
            "nginx.ingress.kubernetes.io/proxy-body-size: 8mb",
            true,
            "nginx.ingress.kubernetes.io/proxy-body-size",
            "\"8mb\" is not a size",
        ),
        ("nginx.ingress.kubernetes.io/canary: \"on\"", true, "nginx.ingress.kubernetes.io/canary", "not true or false"),
    ];
    for (annotations, nginx, key, why) in cases {
        let (s, diags) = try_read(annotations, nginx);
        assert!(s.is_none(), "{annotations}: served");
        let errors = errors(&diags);
        assert_eq!(errors.len(), 1, "{annotations}: {diags:?}");
        assert_eq!(errors[0].0, format!("metadata.annotations[{key}]"));
        assert!(errors[0].1.contains(why) && errors[0].1.ends_with(NOT_SERVED), "{annotations}: {}", errors[0].1);
    }
    // An unparsable canary flag sorts with the canaries; `false` is a main route.
    assert!(is_canary(&ingress("ferry.dev/canary: \"yes\""), false));
    assert!(!is_canary(&ingress("ferry.dev/canary: \"false\""), false));
    assert!(is_canary(&ingress("ferry.dev/canary: \"true\""), false));
    // What is served: explicit "no limit" values, nginx values without the flag, a ferry key
    // over a broken nginx one.
    let (s, diags) = read(
        "ferry.dev/max-body-size: \"0\", nginx.ingress.kubernetes.io/limit-rps: \"0\", \
         nginx.ingress.kubernetes.io/limit-rpm: \"0\"",
        true,
    );
    assert!(s.options.max_body.is_none() && s.options.rate_limit.is_none() && diags.is_empty(), "{diags:?}");
    let (s, diags) =
        read("nginx.ingress.kubernetes.io/limit-rps: \"0\", nginx.ingress.kubernetes.io/limit-rpm: \"120\"", true);
    assert_eq!(s.options.rate_limit.map(|l| l.rate().per_second), Some(2.0), "{diags:?}");
    let (s, diags) =
        read("nginx.ingress.kubernetes.io/proxy-body-size: 8mb, nginx.ingress.kubernetes.io/limit-rps: ten", false);
    assert!(s.options.max_body.is_none() && errors(&diags).is_empty(), "{diags:?}");
    let (s, diags) = read("ferry.dev/max-body-size: 1k, nginx.ingress.kubernetes.io/proxy-body-size: bogus", true);
    assert!(s.options.max_body == Some(1024) && diags.is_empty(), "{diags:?}");
    // Settings that protect nothing keep their default with a warning.
    let (s, diags) = read(
        "ferry.dev/connect-timeout: soon, ferry.dev/retries: \"9\", ferry.dev/ssl-redirect: maybe, \
         ferry.dev/backend-protocol: spdy",
        false,
    );
    assert!(s.options.connect.is_none() && s.options.retries == 0 && s.ssl_redirect);
    assert_eq!(diags.len(), 4, "{diags:?}");
    assert!(errors(&diags).is_empty(), "{diags:?}");
}

#[test]
fn header_values_with_control_characters_are_errors() {
    const ORIGIN: &str = "ferry.dev/cors-allow-origin: \"https://a.test\", ";
    // CORS: an error at the annotation and CORS off altogether; the Ingress is served.
    let cors_off = [
        (format!("{ORIGIN}ferry.dev/cors-allow-headers: \"X-A\\r\\nX-B\""), false, CORS_ALLOW_HEADERS, "control character '\\r'"),
        (format!("{ORIGIN}ferry.dev/cors-allow-headers: \"X-A,\\nX-B\""), false, CORS_ALLOW_HEADERS, "control character '\\n'"),
        (format!("{ORIGIN}ferry.dev/cors-allow-methods: \"GET\\u0000\""), false, CORS_ALLOW_METHODS, "control character '\\0'"),
        (format!("{ORIGIN}ferry.dev/cors-expose-headers: \"X-A\\tX-B\""), false, CORS_EXPOSE_HEADERS, "control character '\\t'"),
        (format!("{ORIGIN}ferry.dev/cors-allow-methods: \"GET, P UT\""), false, CORS_ALLOW_METHODS, "\"P UT\" is not a method"),
        (format!("{ORIGIN}ferry.dev/cors-allow-headers: \"X-A, X:B\""), false, CORS_ALLOW_HEADERS, "\"X:B\" is not a method or header name"),
        (format!("{ORIGIN}ferry.dev/cors-expose-headers: \"Ünicode\""), false, CORS_EXPOSE_HEADERS, "not a method or header name"),
        ("ferry.dev/cors-allow-origin: \"https://a.test\\r\\nX-Injected: 1\"".into(), false, CORS_ALLOW_ORIGIN, "control character '\\r'"),
        (
            "nginx.ingress.kubernetes.io/enable-cors: \"true\", nginx.ingress.kubernetes.io/cors-allow-headers: \"X-A\\r\\nX-B\"".into(),
            true,
            "nginx.ingress.kubernetes.io/cors-allow-headers",
            "control character '\\r'",
        ),
    ];
    for (annotations, nginx, key, why) in &cors_off {
        let (s, diags) = read(annotations, *nginx);
        assert!(s.options.cors.is_none(), "{annotations}: CORS on");
        let errors = errors(&diags);
        assert_eq!(errors.len(), 1, "{annotations}: {diags:?}");
        assert_eq!(errors[0].0, format!("metadata.annotations[{key}]"), "{annotations}");
        assert!(errors[0].1.contains(why) && errors[0].1.ends_with("CORS stays off"), "{annotations}: {}", errors[0].1);
    }
    // Good lists are written back cleanly; a value ending in a newline (a YAML block) is fine.
    let (s, diags) = read(
        &format!("{ORIGIN}ferry.dev/cors-allow-headers: \" X-A ,X-B,, \", ferry.dev/cors-allow-methods: \"GET,PUT\\n\", ferry.dev/cors-expose-headers: \"*\""),
        false,
    );
    let cors = s.options.cors.unwrap_or_else(|| panic!("{diags:?}"));
    assert_eq!(
        (cors.headers.as_str(), cors.methods.as_str(), cors.expose.as_deref()),
        ("X-A, X-B", "GET, PUT", Some("*"))
    );
    assert!(diags.is_empty(), "{diags:?}");

    // Other values that become headers: an error at the annotation, the value not used.
    let (s, diags) = read(
        "ferry.dev/canary: \"true\", ferry.dev/canary-header: X-Canary, ferry.dev/canary-header-value: \"on\\r\\nX: y\"",
        false,
    );
    let canary = s.canary.unwrap();
    assert!(canary.header.is_none() && canary.header_value.is_none(), "no header rule: {canary:?}");
    assert_eq!(errors(&diags)[0].0, "metadata.annotations[ferry.dev/canary-header-value]");
    let (s, diags) = read("ferry.dev/canary: \"true\", ferry.dev/canary-header: \"X-Canary\\n\\rX\"", false);
    assert!(s.canary.unwrap().header.is_none());
    assert_eq!(errors(&diags)[0].0, "metadata.annotations[ferry.dev/canary-header]");
    let (s, diags) =
        read("ferry.dev/affinity: cookie, ferry.dev/affinity-cookie-name: \"sticky\\r\\nSet-Cookie: x\"", false);
    assert_eq!(s.options.affinity_cookie.unwrap().name, "ferry-affinity");
    assert_eq!(errors(&diags)[0].0, "metadata.annotations[ferry.dev/affinity-cookie-name]");
    for bad in ["ferry.dev/redirect: \"/new\\r\\nSet-Cookie: x=1\"", "ferry.dev/redirect: \"https://a.test/\\u0000\""] {
        let (s, diags) = read(bad, false);
        assert!(s.options.redirect.is_none(), "{bad}");
        assert!(errors(&diags)[0].1.contains("control character"), "{bad}: {diags:?}");
    }
}

#[test]
fn rewrite_and_app_root_must_be_routable_paths() {
    for (annotations, key, why) in [
        (
            "ferry.dev/rewrite-target: /a/../b",
            REWRITE_TARGET,
            "dot-segment in path, which ferry refuses in requests; not rewritten",
        ),
        (
            "ferry.dev/rewrite-target: /v2%2fadmin",
            REWRITE_TARGET,
            "\"/v2%2fadmin\": encoded slash or backslash in path, which ferry refuses in requests; not rewritten",
        ),
        (
            "ferry.dev/app-root: /app/%2e%2e/admin",
            APP_ROOT,
            "dot-segment in path, which ferry refuses in requests; not redirected",
        ),
    ] {
        let (s, diags) = read(annotations, false);
        assert!(s.rewrite_target.is_none() && s.options.app_root.is_none(), "{annotations}");
        let errors = errors(&diags);
        assert_eq!(errors.len(), 1, "{annotations}: {diags:?}");
        assert_eq!(errors[0].0, field(key));
        assert!(errors[0].1.ends_with(why), "{annotations}: {}", errors[0].1);
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration(" 45 "), Some(Duration::from_secs(45)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    for bad in ["", "s", "1.5s", "-1s", "10x", "ms"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn redirect_locations() {
    for ok in ["https://new.test/", "http://new.test:8080/a?b=1", "/v2/api", "/"] {
        assert_eq!(redirect_location(ok).as_deref(), Ok(ok), "{ok}");
    }
    for bad in [
        "https://new.test$request_uri",
        "new.test/x",
        "ftp://new.test/",
        "//new.test/",
        "https:///x",
        "/a b",
        "/a\r\nSet-Cookie: x=1",
        "",
    ] {
        assert!(redirect_location(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn redirects_and_app_root() {
    let (s, diags) =
        read("ferry.dev/redirect: /new, ferry.dev/redirect-code: \"307\", ferry.dev/app-root: /app", false);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(s.options.redirect.as_deref(), Some(&Redirect { location: "/new".into(), code: 307 }));
    assert_eq!(s.options.app_root.as_deref(), Some("/app"));
    // A bad code falls back to 301; a bad location or root is an error and nothing redirects.
    let (s, diags) = read("ferry.dev/redirect: /new, ferry.dev/redirect-code: \"200\"", false);
    assert_eq!(s.options.redirect.map(|r| r.code), Some(301));
    assert_eq!(diags[0].field, "metadata.annotations[ferry.dev/redirect-code]");
    for bad in [
        "ferry.dev/redirect: \"https://x.test$request_uri\"",
        "ferry.dev/app-root: /",
        "ferry.dev/app-root: app",
        "ferry.dev/app-root: //evil.test/app",
        "ferry.dev/app-root: /app$1",
    ] {
        let (s, diags) = read(bad, false);
        assert!(s.options.redirect.is_none() && s.options.app_root.is_none(), "{bad}");
        assert_eq!(diags.len(), 1, "{bad}: {diags:?}");
        assert!(diags[0].reason.ends_with("not redirected"), "{bad}: {diags:?}");
    }
    // nginx: a temporal redirect wins over a permanent one and is a 302.
    let (s, _) = read(
        "nginx.ingress.kubernetes.io/permanent-redirect: /p, nginx.ingress.kubernetes.io/permanent-redirect-code: \"308\", \
         nginx.ingress.kubernetes.io/temporal-redirect: /t",
        true,
    );
    assert_eq!(s.options.redirect.as_deref(), Some(&Redirect { location: "/t".into(), code: 302 }));
    let (s, _) = read(
        "nginx.ingress.kubernetes.io/permanent-redirect: /p, nginx.ingress.kubernetes.io/permanent-redirect-code: \"308\"",
        true,
    );
    assert_eq!(s.options.redirect.as_deref(), Some(&Redirect { location: "/p".into(), code: 308 }));
    let (s, _) = read("nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"", true);
    assert!(s.force_ssl_redirect);
    let (s, diags) = read("ferry.dev/force-ssl-redirect: \"yes\"", false);
    assert!(!s.force_ssl_redirect && diags.len() == 1);
}

#[test]
fn timeouts() {
    let (s, diags) = read("ferry.dev/connect-timeout: 250ms, ferry.dev/read-timeout: 2h", false);
    assert_eq!(s.options.connect, Some(Duration::from_millis(250)));
    assert_eq!(s.options.read, None, "over an hour: default");
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].field, "metadata.annotations[ferry.dev/read-timeout]");
}

#[test]
fn protection() {
    assert_eq!(parse_rate("10r/s"), Some(Rate { per_second: 10.0, burst: 10 }));
    assert_eq!(parse_rate("30r/m burst=5"), Some(Rate { per_second: 0.5, burst: 5 }));
    for bad in ["10", "10r/h", "0r/s", "10r/s burst=0", "10r/s burst=x", "10r/s b=1"] {
        assert_eq!(parse_rate(bad), None, "{bad}");
    }
    assert_eq!(parse_size("512k"), Some(512 * 1024));
    assert_eq!(parse_size("8M"), Some(8 << 20));
    assert_eq!(parse_size("100"), Some(100));
    assert_eq!(parse_size("1.5m"), None);
    let (s, diags) = read("ferry.dev/allow-source-ranges: \"10.0.0.0/8, 192.0.2.7, bogus\"", false);
    assert_eq!(s.options.allow_sources.unwrap().len(), 2);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert!(diags[0].reason.contains("\"bogus\""));
}

#[test]
fn redirect_rewrite_protocol() {
    let (s, diags) = read(
        "ferry.dev/ssl-redirect: \"false\", ferry.dev/rewrite-target: /v2, ferry.dev/backend-protocol: GRPC",
        false,
    );
    assert!(!s.ssl_redirect && diags.is_empty(), "{diags:?}");
    assert_eq!(s.rewrite_target.as_deref(), Some("/v2"));
    assert_eq!(s.backend_protocol, Some(UpstreamProtocol::H2c));
    let (s, diags) = read("ferry.dev/rewrite-target: /$2", false);
    assert!(s.rewrite_target.is_none() && diags[0].reason.contains("captures"), "{diags:?}");
}

#[test]
fn cors_settings() {
    let (s, diags) = read("ferry.dev/cors-allow-origin: \"https://a.test, http://b.test:8080\", ferry.dev/cors-allow-credentials: \"true\"", false);
    let cors = s.options.cors.unwrap();
    assert_eq!(cors.origins, ["https://a.test", "http://b.test:8080"]);
    assert!(cors.credentials && diags.is_empty());
    let (s, diags) = read("ferry.dev/cors-allow-origin: \"a.test\"", false);
    assert!(s.options.cors.is_none(), "an invalid list never becomes *");
    assert_eq!(diags.len(), 2);
    let (s, _) = read("nginx.ingress.kubernetes.io/enable-cors: \"true\"", true);
    assert!(s.options.cors.unwrap().origins.is_empty(), "nginx default origin *");
}

#[test]
fn nginx_annotations_map_or_are_reported() {
    let nginx = "nginx.ingress.kubernetes.io/proxy-body-size: 8m, nginx.ingress.kubernetes.io/limit-rps: \"5\", \
                 nginx.ingress.kubernetes.io/ssl-redirect: \"false\", nginx.ingress.kubernetes.io/backend-protocol: HTTPS, \
                 nginx.ingress.kubernetes.io/configuration-snippet: \"more_set_headers x: y\"";
    let (s, diags) = read(nginx, true);
    assert_eq!(s.options.max_body, Some(8 << 20));
    assert_eq!(s.options.rate_limit.unwrap().rate(), Rate { per_second: 5.0, burst: 25 });
    assert!(!s.ssl_redirect);
    assert_eq!(s.backend_protocol, Some(UpstreamProtocol::Tls));
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert!(diags[0].field.contains("configuration-snippet") && diags[0].reason.contains("not supported"));
    // Without the flag nothing is taken, and each one is reported.
    let (s, diags) = read(nginx, false);
    assert!(s.options.max_body.is_none() && s.ssl_redirect);
    assert_eq!(diags.len(), 5);
    // ferry's own key wins over the nginx one.
    let (s, _) = read("ferry.dev/max-body-size: 1k, nginx.ingress.kubernetes.io/proxy-body-size: 8m", true);
    assert_eq!(s.options.max_body, Some(1024));
}

proptest::proptest! {
    /// Any annotations, with values near and far from valid ones: reading them never panics,
    /// gives the same answer twice, and refuses an Ingress only with an error that says so
    /// (located at an annotation); a served Ingress's limits are the ones it asked for.
    #[test]
    fn annotation_parsers_hold_on_any_value(
        entries in proptest::collection::vec((0usize..64, value_strategy()), 0..6),
        nginx in proptest::bool::ANY,
    ) {
        let names: Vec<String> = ANNOTATIONS.iter().map(|a| a.key.to_string())
            .chain(ANNOTATIONS.iter().flat_map(|a| a.nginx.iter().map(|al| format!("{NGINX}{}", al.name))))
            .chain(["ferry.dev/retires", "nginx.ingress.kubernetes.io/auth-url", "example.com/x"].map(String::from))
            .collect();
        let map: BTreeMap<String, String> =
            entries.into_iter().map(|(i, v)| (names[i % names.len()].clone(), v)).collect();
        let ing = Ingress {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                annotations: Some(map.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let obj = ObjectRef::new("Ingress", "default", "i");
        let route: Arc<str> = Arc::from("default/i");
        let (mut d1, mut d2) = (Vec::new(), Vec::new());
        let rt = Runtime::default();
        let first = settings(&ing, &obj, &route, nginx, &rt, &mut d1);
        let second = settings(&ing, &obj, &route, nginx, &rt, &mut d2);
        proptest::prop_assert_eq!(&d1, &d2);
        proptest::prop_assert_eq!(first.is_some(), second.is_some());
        for d in &d1 {
            proptest::prop_assert!(d.field.starts_with("metadata.annotations["), "{:?}", d);
        }
        match first {
            None => proptest::prop_assert!(
                errors(&d1).iter().any(|(_, why)| why.ends_with(NOT_SERVED)),
                "refused without saying so: {:?} {:?}", map, d1
            ),
            Some(s) => {
                if let Some(v) = map.get(MAX_BODY) {
                    proptest::prop_assert_eq!(s.options.max_body.unwrap_or(0), parse_size(v).unwrap_or(0));
                }
                if let Some(v) = map.get(RATE_LIMIT) {
                    proptest::prop_assert_eq!(
                        s.options.rate_limit.map(|l| l.rate().per_second), parse_rate(v).map(|r| r.per_second));
                }
            }
        }
    }
}

/// Values around the valid ones: numbers, units, durations, lists, booleans, control bytes.
fn value_strategy() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        "[0-9]{1,12}(r/s|r/m|k|m|g|ms|s|m|h)?( burst=[0-9]{1,6})?",
        "(true|false|cookie|h2c|https|http|grpc|yes|on|0|-1|/app|/|//x|/\\$1|\\*)",
        "(10\\.0\\.0\\.0/8|::1|[0-9.:/]{0,20})(, ?[0-9a-f.:/]{0,18}){0,3}",
        "https?://[a-z.*]{0,12}(:[0-9]{1,6})?(/[a-z$]{0,6})?",
        any::<String>(),
        "[ -~\\t\\r\\n\\x00]{0,24}",
    ]
}
