//! Tests of the SSRF guard: the forbidden ranges, URL checks, the allowlist, resolution and
//! the delivery client end to end against a local server. Nothing here needs the internet.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ovasabi_webhooks::ssrf::{
    check_url, client, forbidden_range, parse_allowlist, resolve, Policy, Refusal,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One row per range and per form: the address and the range it must be refused as (`None`:
/// allowed).
const TABLE: &[(&str, Option<&str>)] = &[
    // IPv4: this network.
    ("0.0.0.0", Some("this network (0.0.0.0/8)")),
    ("0.255.255.255", Some("this network (0.0.0.0/8)")),
    // Loopback.
    ("127.0.0.1", Some("loopback (127.0.0.0/8)")),
    ("127.0.0.2", Some("loopback (127.0.0.0/8)")),
    ("127.255.255.255", Some("loopback (127.0.0.0/8)")),
    // RFC 1918.
    ("10.0.0.0", Some("private (10.0.0.0/8)")),
    ("10.1.2.3", Some("private (10.0.0.0/8)")),
    ("10.255.255.255", Some("private (10.0.0.0/8)")),
    ("172.16.0.0", Some("private (172.16.0.0/12)")),
    ("172.20.1.1", Some("private (172.16.0.0/12)")),
    ("172.31.255.255", Some("private (172.16.0.0/12)")),
    ("172.15.255.255", None),
    ("172.32.0.1", None),
    ("192.168.0.0", Some("private (192.168.0.0/16)")),
    ("192.168.1.1", Some("private (192.168.0.0/16)")),
    ("192.168.255.255", Some("private (192.168.0.0/16)")),
    ("192.169.0.1", None),
    // Link-local (cloud metadata).
    ("169.254.0.1", Some("link-local (169.254.0.0/16)")),
    ("169.254.169.254", Some("link-local (169.254.0.0/16)")),
    ("169.254.255.255", Some("link-local (169.254.0.0/16)")),
    ("169.255.0.1", None),
    // Carrier-grade NAT.
    ("100.64.0.0", Some("carrier-grade NAT (100.64.0.0/10)")),
    ("100.100.100.200", Some("carrier-grade NAT (100.64.0.0/10)")),
    ("100.127.255.255", Some("carrier-grade NAT (100.64.0.0/10)")),
    ("100.63.255.255", None),
    ("100.128.0.1", None),
    // IETF protocol assignments.
    (
        "192.0.0.0",
        Some("IETF protocol assignments (192.0.0.0/24)"),
    ),
    (
        "192.0.0.170",
        Some("IETF protocol assignments (192.0.0.0/24)"),
    ),
    (
        "192.0.0.255",
        Some("IETF protocol assignments (192.0.0.0/24)"),
    ),
    ("192.0.1.1", None),
    // Documentation.
    ("192.0.2.0", Some("documentation (192.0.2.0/24)")),
    ("192.0.2.255", Some("documentation (192.0.2.0/24)")),
    ("198.51.100.1", Some("documentation (198.51.100.0/24)")),
    ("198.51.100.255", Some("documentation (198.51.100.0/24)")),
    ("198.51.101.1", None),
    ("203.0.113.0", Some("documentation (203.0.113.0/24)")),
    ("203.0.113.99", Some("documentation (203.0.113.0/24)")),
    ("203.0.114.1", None),
    // 6to4 relay anycast.
    ("192.88.99.1", Some("6to4 relay anycast (192.88.99.0/24)")),
    // Benchmarking.
    ("198.18.0.0", Some("benchmarking (198.18.0.0/15)")),
    ("198.19.255.255", Some("benchmarking (198.18.0.0/15)")),
    ("198.17.255.255", None),
    ("198.20.0.1", None),
    // Multicast.
    ("224.0.0.1", Some("multicast (224.0.0.0/4)")),
    ("239.255.255.250", Some("multicast (224.0.0.0/4)")),
    // Reserved and broadcast.
    ("240.0.0.1", Some("reserved (240.0.0.0/4)")),
    ("255.255.255.254", Some("reserved (240.0.0.0/4)")),
    ("255.255.255.255", Some("broadcast (255.255.255.255/32)")),
    // Public IPv4.
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("93.184.216.34", None),
    ("223.255.255.255", None),
    // IPv6.
    ("::", Some("unspecified (::/128)")),
    ("::1", Some("loopback (::1/128)")),
    ("fc00::1", Some("unique-local (fc00::/7)")),
    ("fd12:3456:789a::1", Some("unique-local (fc00::/7)")),
    (
        "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        Some("unique-local (fc00::/7)"),
    ),
    ("fe80::1", Some("link-local (fe80::/10)")),
    ("febf:ffff::1", Some("link-local (fe80::/10)")),
    ("fec0::1", Some("site-local (fec0::/10)")),
    ("ff02::1", Some("multicast (ff00::/8)")),
    ("ff05::1:3", Some("multicast (ff00::/8)")),
    ("2001:db8::1", Some("documentation (2001:db8::/32)")),
    ("2001:db8:ffff::1", Some("documentation (2001:db8::/32)")),
    ("100::1", Some("discard (100::/64)")),
    ("100::ffff:ffff:ffff:ffff", Some("discard (100::/64)")),
    ("100:0:0:1::1", None),
    ("2001::1", Some("Teredo (2001::/32)")),
    (
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        Some("Teredo (2001::/32)"),
    ),
    // IPv4-mapped.
    (
        "::ffff:127.0.0.1",
        Some("IPv4-mapped IPv6 of loopback (127.0.0.0/8)"),
    ),
    (
        "::ffff:10.0.0.1",
        Some("IPv4-mapped IPv6 of private (10.0.0.0/8)"),
    ),
    (
        "::ffff:192.168.1.1",
        Some("IPv4-mapped IPv6 of private (192.168.0.0/16)"),
    ),
    (
        "::ffff:169.254.169.254",
        Some("IPv4-mapped IPv6 of link-local (169.254.0.0/16)"),
    ),
    ("::ffff:8.8.8.8", None),
    // IPv4-translated.
    (
        "::ffff:0:127.0.0.1",
        Some("IPv4-translated IPv6 of loopback (127.0.0.0/8)"),
    ),
    (
        "::ffff:0:10.0.0.1",
        Some("IPv4-translated IPv6 of private (10.0.0.0/8)"),
    ),
    (
        "::ffff:0:169.254.0.1",
        Some("IPv4-translated IPv6 of link-local (169.254.0.0/16)"),
    ),
    // IPv4-compatible.
    (
        "::127.0.0.1",
        Some("IPv4-compatible IPv6 of loopback (127.0.0.0/8)"),
    ),
    (
        "::10.0.0.1",
        Some("IPv4-compatible IPv6 of private (10.0.0.0/8)"),
    ),
    (
        "::172.16.0.1",
        Some("IPv4-compatible IPv6 of private (172.16.0.0/12)"),
    ),
    (
        "::169.254.169.254",
        Some("IPv4-compatible IPv6 of link-local (169.254.0.0/16)"),
    ),
    (
        "::2",
        Some("IPv4-compatible IPv6 of this network (0.0.0.0/8)"),
    ),
    ("::8.8.8.8", None),
    // 6to4: the IPv4 address is bytes 2..6.
    ("2002:7f00:1::", Some("6to4 IPv6 of loopback (127.0.0.0/8)")),
    ("2002:a00:1::1", Some("6to4 IPv6 of private (10.0.0.0/8)")),
    (
        "2002:c0a8:101:5::1",
        Some("6to4 IPv6 of private (192.168.0.0/16)"),
    ),
    (
        "2002:a9fe:a9fe::",
        Some("6to4 IPv6 of link-local (169.254.0.0/16)"),
    ),
    ("2002:808:808::1", None),
    // NAT64: the IPv4 address is the last 32 bits.
    (
        "64:ff9b::127.0.0.1",
        Some("NAT64 IPv6 of loopback (127.0.0.0/8)"),
    ),
    (
        "64:ff9b::10.0.0.1",
        Some("NAT64 IPv6 of private (10.0.0.0/8)"),
    ),
    (
        "64:ff9b::169.254.169.254",
        Some("NAT64 IPv6 of link-local (169.254.0.0/16)"),
    ),
    ("64:ff9b::8.8.8.8", None),
    (
        "64:ff9b:1::127.0.0.1",
        Some("local-use NAT64 IPv6 of loopback (127.0.0.0/8)"),
    ),
    (
        "64:ff9b:1:ab::10.0.0.1",
        Some("local-use NAT64 IPv6 of private (10.0.0.0/8)"),
    ),
    (
        "64:ff9b:1::169.254.0.1",
        Some("local-use NAT64 IPv6 of link-local (169.254.0.0/16)"),
    ),
    ("64:ff9b:1::1.1.1.1", None),
    // Public IPv6.
    ("2606:4700:4700::1111", None),
    ("2001:4860:4860::8888", None),
    ("2a00:1450:4001:82a::200e", None),
];

#[test]
fn forbidden_range_table() {
    let mut failures = Vec::new();
    for &(text, expected) in TABLE {
        let ip: IpAddr = text.parse().unwrap_or_else(|_| panic!("bad row {text}"));
        let got = forbidden_range(ip);
        if got != expected {
            failures.push(format!("{text}: expected {expected:?}, got {got:?}"));
        }
        // The strict policy agrees with forbidden_range.
        assert_eq!(Policy::default().forbidden(ip), got, "{text}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn forbidden_range_table_through_check_url() {
    let policy = Policy::default();
    for &(text, expected) in TABLE {
        let ip: IpAddr = text.parse().expect("row");
        let url = match ip {
            IpAddr::V4(v4) => format!("https://{v4}/hook"),
            IpAddr::V6(v6) => format!("https://[{v6}]/hook"),
        };
        match (check_url(&url, &policy), expected) {
            (Ok(_), None) => {}
            (Err(Refusal::ForbiddenAddress { address, range, .. }), Some(expected)) => {
                assert_eq!(address, ip, "{url}");
                assert_eq!(range, expected, "{url}");
            }
            (got, expected) => panic!("{url}: expected {expected:?}, got {got:?}"),
        }
    }
}

fn refused_range(url: &str, policy: &Policy) -> &'static str {
    match check_url(url, policy) {
        Err(Refusal::ForbiddenAddress { range, .. }) => range,
        other => panic!("{url}: expected a forbidden address, got {other:?}"),
    }
}

#[test]
fn check_url_normalizes_odd_ipv4_forms() {
    let policy = Policy {
        allow_http: true,
        allowlist: vec![],
    };
    for url in [
        "https://2130706433/",
        "https://0x7f.1/",
        "https://017700000001/",
        "https://127.1/",
        "https://0x7f000001/",
        "https://127.0.0.1./",
        "HTTPS://127.0.0.1/",
    ] {
        let err = check_url(url, &policy).expect_err(url);
        assert_eq!(
            err,
            Refusal::ForbiddenAddress {
                host: "127.0.0.1".into(),
                how: "is",
                address: "127.0.0.1".parse().unwrap(),
                range: "loopback (127.0.0.0/8)",
            },
            "{url}"
        );
        assert!(err.to_string().contains("loopback (127.0.0.0/8)"), "{err}");
    }
    assert_eq!(
        refused_range("http://[::ffff:127.0.0.1]/", &policy),
        "IPv4-mapped IPv6 of loopback (127.0.0.0/8)"
    );
    assert_eq!(
        refused_range("https://[::1]:8443/x", &policy),
        "loopback (::1/128)"
    );
    assert_eq!(
        refused_range("https://0/", &policy),
        "this network (0.0.0.0/8)"
    );
    assert_eq!(
        refused_range("https://10.1/", &policy),
        "private (10.0.0.0/8)"
    );
    assert_eq!(
        refused_range("https://169.254.169.254/latest/meta-data/", &policy),
        "link-local (169.254.0.0/16)"
    );
}

#[test]
fn check_url_schemes_credentials_and_hosts() {
    let strict = Policy::default();
    let url = check_url("https://example.com/hook", &strict).expect("allowed");
    assert_eq!(url.as_str(), "https://example.com/hook");
    assert!(check_url("https://8.8.8.8/hook", &strict).is_ok());
    assert!(check_url("https://[2606:4700:4700::1111]/hook", &strict).is_ok());

    let err = check_url("http://example.com/", &strict).expect_err("http refused");
    assert!(
        matches!(&err, Refusal::SchemeNotAllowed { scheme, .. } if scheme == "http"),
        "{err:?}"
    );
    assert!(err.to_string().contains("http://example.com/"), "{err}");
    let dev = Policy {
        allow_http: true,
        allowlist: vec![],
    };
    assert!(check_url("http://example.com/", &dev).is_ok());

    for policy in [&strict, &dev] {
        let err = check_url("ftp://example.com/", policy).expect_err("ftp");
        assert!(
            matches!(&err, Refusal::SchemeNotAllowed { scheme, .. } if scheme == "ftp"),
            "{err:?}"
        );
        for url in [
            "file:///etc/passwd",
            "gopher://example.com/",
            "ws://example.com/",
        ] {
            assert!(
                matches!(
                    check_url(url, policy),
                    Err(Refusal::SchemeNotAllowed { .. })
                ),
                "{url}"
            );
        }
    }

    let err = check_url("https://user:pw@example.com/", &strict).expect_err("credentials");
    assert!(matches!(err, Refusal::Credentials { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("https://example.com/"), "{message}");
    assert!(!message.contains("pw"), "the password leaks: {message}");
    assert!(matches!(
        check_url("https://user@example.com/", &strict),
        Err(Refusal::Credentials { .. })
    ));

    for url in [
        "",
        "not a url",
        "/relative/path",
        "https://",
        "https://exa mple.com/",
    ] {
        assert!(
            matches!(check_url(url, &strict), Err(Refusal::NotAUrl { .. })),
            "{url}: {:?}",
            check_url(url, &strict)
        );
    }
}

#[test]
fn allowlist() {
    let policy = Policy {
        allow_http: true,
        allowlist: parse_allowlist("127.0.0.1/32").expect("parses"),
    };
    assert!(check_url("http://127.0.0.1:8080/", &policy).is_ok());
    assert!(check_url("http://[::ffff:127.0.0.1]:8080/", &policy).is_ok());
    assert_eq!(
        refused_range("http://127.0.0.2/", &policy),
        "loopback (127.0.0.0/8)"
    );
    assert_eq!(
        refused_range("http://10.0.0.1/", &policy),
        "private (10.0.0.0/8)"
    );
    assert_eq!(
        refused_range("http://[::1]/", &policy),
        "loopback (::1/128)"
    );
    assert!(policy.is_allowlisted("127.0.0.1".parse().unwrap()));
    assert_eq!(policy.forbidden("127.0.0.1".parse().unwrap()), None);
    assert_eq!(
        policy.forbidden("127.0.0.2".parse().unwrap()),
        Some("loopback (127.0.0.0/8)")
    );

    let list = parse_allowlist(" 10.0.0.0/8, ::1/128 ,192.168.1.7,fd00::/8,").expect("parses");
    let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        ["10.0.0.0/8", "::1/128", "192.168.1.7/32", "fd00::/8"]
    );
    let policy = Policy {
        allow_http: false,
        allowlist: list,
    };
    for ok in [
        "10.0.0.1",
        "10.255.255.255",
        "::1",
        "192.168.1.7",
        "fd00::1",
        "fdff::1",
    ] {
        assert_eq!(policy.forbidden(ok.parse().unwrap()), None, "{ok}");
    }
    for refused in ["172.16.0.1", "192.168.1.8", "127.0.0.1", "fc00::1", "::2"] {
        assert!(
            policy.forbidden(refused.parse().unwrap()).is_some(),
            "{refused}"
        );
    }

    assert_eq!(parse_allowlist("").unwrap(), vec![]);
    assert_eq!(parse_allowlist(" , ").unwrap(), vec![]);
    assert!(parse_allowlist("0.0.0.0/0").is_ok());
    for bad in [
        "localhost",
        "10.0.0.0/33",
        "::1/129",
        "10.0.0.1/8",
        "10.0.0.0/x",
        "1.2.3/8",
    ] {
        let err = parse_allowlist(&format!("127.0.0.1/32,{bad}")).expect_err(bad);
        assert!(err.contains(bad), "{err}");
    }
}

#[tokio::test]
async fn resolve_localhost() {
    let url = check_url(
        "https://localhost:8443/hook",
        &Policy {
            allow_http: false,
            allowlist: parse_allowlist("127.0.0.1/32,::1/128").unwrap(),
        },
    )
    .expect("a host name passes check_url");
    let err = resolve(&url, &Policy::default())
        .await
        .expect_err("localhost is refused");
    match &err {
        Refusal::ForbiddenAddress {
            host, how, range, ..
        } => {
            assert_eq!(host, "localhost");
            assert_eq!(*how, "resolves to");
            assert!(range.starts_with("loopback ("), "{range}");
        }
        other => panic!("expected a forbidden address, got {other:?}"),
    }
    assert!(err.to_string().contains("loopback"), "{err}");

    let dev = Policy {
        allow_http: false,
        allowlist: parse_allowlist("127.0.0.1/32,::1/128").unwrap(),
    };
    let addrs = resolve(&url, &dev).await.expect("allowlisted");
    assert!(!addrs.is_empty());
    assert!(addrs
        .iter()
        .all(|a| a.ip().is_loopback() && a.port() == 8443));

    // An IP literal resolves to itself, checked the same way.
    let literal = url::Url::parse("https://127.0.0.1/").unwrap();
    assert!(matches!(
        resolve(&literal, &Policy::default()).await,
        Err(Refusal::ForbiddenAddress { .. })
    ));
    assert_eq!(
        resolve(&literal, &dev).await.unwrap(),
        vec!["127.0.0.1:443".parse().unwrap()]
    );
    // `resolve` re-checks the URL itself.
    let http = url::Url::parse("http://localhost/").unwrap();
    assert!(matches!(
        resolve(&http, &dev).await,
        Err(Refusal::SchemeNotAllowed { .. })
    ));
}

/// A local HTTP server on 127.0.0.1 that answers every request with `response`; returns its
/// port and the number of connections it accepted.
async fn serve(response: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (port, connections)
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
const REDIRECT: &str = "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/elsewhere\r\n\
                        content-length: 0\r\nconnection: close\r\n\r\n";

/// The error and all its sources, for assertions on messages.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

fn dev_policy(allowlist: &str) -> Policy {
    Policy {
        allow_http: true,
        allowlist: parse_allowlist(allowlist).unwrap(),
    }
}

#[tokio::test]
async fn client_resolver_refuses_forbidden_addresses() {
    let (port, connections) = serve(OK).await;
    let client = client(&dev_policy(""), Duration::from_secs(5)).expect("client");
    let err = client
        .get(format!("http://localhost:{port}/"))
        .send()
        .await
        .expect_err("the resolver refuses localhost");
    let text = chain(&err);
    assert!(text.contains("forbidden range loopback ("), "{text}");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no connection was made"
    );
}

#[tokio::test]
async fn client_allowlisted_delivery_succeeds() {
    let (port, connections) = serve(OK).await;
    let client =
        client(&dev_policy("127.0.0.1/32,::1/128"), Duration::from_secs(5)).expect("client");
    let response = client
        .post(format!("http://localhost:{port}/hook"))
        .body("{}")
        .send()
        .await
        .expect("allowlisted");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    assert!(connections.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn client_does_not_follow_redirects() {
    let (port, connections) = serve(REDIRECT).await;
    let client =
        client(&dev_policy("127.0.0.1/32,::1/128"), Duration::from_secs(5)).expect("client");
    let response = client
        .get(format!("http://localhost:{port}/"))
        .send()
        .await
        .expect("the 302 itself");
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        "http://127.0.0.1:1/elsewhere"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn client_strict_policy_refuses_http() {
    let (port, connections) = serve(OK).await;
    let client = client(&Policy::default(), Duration::from_secs(5)).expect("client");
    let err = client
        .get(format!("http://localhost:{port}/"))
        .send()
        .await
        .expect_err("https only");
    assert!(err.is_builder(), "{err:?}");
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

/// reqwest does not resolve IP literals, so the resolver cannot refuse them: this is why the
/// delivery code calls `check_url` before every request.
#[tokio::test]
async fn ip_literals_bypass_the_resolver_so_check_url_is_required() {
    let (port, _) = serve(OK).await;
    let policy = dev_policy("");
    let url = format!("http://127.0.0.1:{port}/");
    assert!(matches!(
        check_url(&url, &policy),
        Err(Refusal::ForbiddenAddress { .. })
    ));
    let client = client(&policy, Duration::from_secs(5)).expect("client");
    let response = client.get(&url).send().await.expect("not resolved");
    assert_eq!(response.status(), 200);
}

/// The client speaks TLS: against a local server, the first bytes it sends are a TLS
/// handshake record (the ClientHello).
#[tokio::test]
async fn client_speaks_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let first = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 3];
        socket.read_exact(&mut buf).await.expect("read");
        buf
    });
    let policy = Policy {
        allow_http: false,
        allowlist: parse_allowlist("127.0.0.1/32,::1/128").unwrap(),
    };
    let client = client(&policy, Duration::from_secs(5)).expect("client");
    let url = check_url(&format!("https://localhost:{port}/hook"), &policy).expect("url");
    let err = client.post(url).send().await.expect_err("no TLS server");
    assert!(!err.is_builder(), "{err:?}");
    let bytes = first.await.expect("server");
    assert_eq!(bytes[0], 0x16, "a TLS handshake record, got {bytes:?}");
    assert_eq!(bytes[1], 0x03, "TLS major version 3, got {bytes:?}");
}

#[test]
fn refusal_messages_name_what_is_wrong() {
    let strict = Policy::default();
    let message = check_url("https://10.0.0.5/hook", &strict)
        .unwrap_err()
        .to_string();
    assert!(message.contains("10.0.0.5"), "{message}");
    assert!(message.contains("private (10.0.0.0/8)"), "{message}");
    let message = check_url("ftp://example.com/", &strict)
        .unwrap_err()
        .to_string();
    assert!(message.contains("ftp"), "{message}");
    assert!(message.contains("https://"), "{message}");
}
