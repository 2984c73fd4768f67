//! Notifications over HTTP, live over Server-Sent Events and WebSocket, and sent on by the
//! default file senders — on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use ovasabi_services::notifications::{NotificationsService, SmtpSender};
use ovasabi_services::{commerce, messaging, users, Service};
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::sse::SseReader;
use common::{start, Db, Running};

on_both!(
    events_notify_users_live_and_in_their_inbox,
    preferences_choose_the_channels_and_refuse_what_cannot_be,
    email_goes_out_through_an_smtp_server,
);

async fn platform(db: Db, test: &str, dir: &std::path::Path) -> Option<Running> {
    let services: Vec<Arc<dyn Service>> = vec![
        Arc::new(users::UsersService),
        Arc::new(commerce::CommerceService::default_provider()),
        Arc::new(messaging::MessagingService),
        Arc::new(NotificationsService::with_outbox_dir(Some(dir.to_owned()))),
    ];
    start(services, db, test).await
}

async fn register(p: &Running, email: &str, name: &str) -> String {
    let (status, user, _) = p
        .post(
            "/v1/users",
            &json!({"email": email, "display_name": name}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    user["id"].as_str().unwrap().to_owned()
}

/// A user's notification stream.
struct Sse(SseReader);

impl Sse {
    async fn open(p: &Running, user: &str, last_event_id: Option<&str>) -> Sse {
        let mut request = p
            .client
            .get(format!("{}/v1/notifications/stream?user_id={user}", p.base));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        Sse(SseReader::open(request).await)
    }

    /// The next `notification` event: (id, data).
    async fn next(&mut self, within: Duration) -> (String, Value) {
        let (id, data) = self
            .0
            .event("notification", within)
            .await
            .expect("a notification within the deadline");
        (id.expect("a notification has an id"), data)
    }
}

async fn events_notify_users_live_and_in_their_inbox(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let Some(p) = platform(db, "notifications_live", dir.path()).await else {
        return;
    };
    let ada = register(&p, "ada@example.com", "Ada").await;
    let bo = register(&p, "bo@example.com", "Bo").await;

    // SSE: the welcome, then a message as it happens.
    let mut sse = Sse::open(&p, &ada, None).await;
    let (id, welcome) = sse.next(Duration::from_secs(10)).await;
    assert_eq!(id, "1");
    assert_eq!(welcome["category"], "welcome", "{welcome}");
    assert_eq!(welcome["body"], "Hello Ada, your account is ready.");
    assert_eq!(welcome["cause"]["event_type"], "user.registered");

    // WebSocket on the same path, from the start.
    let ws_url = format!(
        "{}/v1/notifications/stream?user_id={ada}&after=1",
        p.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();

    let (status, _, _) = p
        .post(
            "/v1/messages",
            &json!({"from_user_id": bo, "to_user_id": ada, "body": "Lovely notes, Ada."}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (id, message) = sse.next(Duration::from_secs(10)).await;
    assert_eq!(id, "2");
    assert_eq!(message["category"], "message");
    assert_eq!(message["title"], format!("New message from {bo}"));
    assert_eq!(message["body"], "Lovely notes, Ada.");
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a WebSocket message")
        .unwrap()
        .unwrap();
    let over_ws: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(over_ws, message, "the same notification over both");

    // Commerce: a failed payment and a shipment notify the customer.
    let order_body = |amount: i64| {
        json!({
            "customer_id": ada,
            "items": [{"sku": "SKU-1", "quantity": 1, "unit_price": {"amount_minor": amount, "currency": "USD"}}],
            "shipping_address": {"recipient": "Ada Lovelace", "line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"},
        })
    };
    let (_, declined, _) = p.post("/v1/orders", &order_body(1013), None).await;
    let declined = declined["id"].as_str().unwrap().to_owned();
    let (status, _, _) = p
        .post(
            &format!("/v1/orders/{declined}/pay"),
            &json!({"method": "card"}),
            None,
        )
        .await;
    assert_ne!(status, StatusCode::OK, "the …13 amount declines");
    let (_, failed) = sse.next(Duration::from_secs(10)).await;
    assert_eq!(failed["category"], "payment", "{failed}");
    assert_eq!(
        failed["title"],
        format!("Payment for order {declined} failed")
    );
    assert!(
        failed["body"].as_str().unwrap().contains("card declined"),
        "{failed}"
    );

    let (_, order, _) = p.post("/v1/orders", &order_body(2500), None).await;
    let order = order["id"].as_str().unwrap().to_owned();
    let (status, _, _) = p
        .post(
            &format!("/v1/orders/{order}/pay"),
            &json!({"method": "card"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = p
        .post(
            &format!("/v1/orders/{order}/ship"),
            &json!({"carrier": "royal-mail"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (id, shipped) = sse.next(Duration::from_secs(10)).await;
    assert_eq!(id, "4");
    assert_eq!(shipped["title"], format!("Your order {order} has shipped"));

    // A reconnecting client resumes after the last id it saw, without gaps or repeats.
    drop(sse);
    let mut resumed = Sse::open(&p, &ada, Some("2")).await;
    let (id, again) = resumed.next(Duration::from_secs(10)).await;
    assert_eq!((id.as_str(), &again), ("3", &failed));
    let (id, _) = resumed.next(Duration::from_secs(10)).await;
    assert_eq!(id, "4");

    // The inbox: newest first, unread counted; reading one (twice) counts it read once.
    let (status, inbox) = p.get(&format!("/v1/notifications?user_id={ada}")).await;
    assert_eq!(status, StatusCode::OK, "{inbox}");
    let numbers: Vec<i64> = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [4, 3, 2, 1]);
    assert_eq!(inbox["unread"], 4);
    let welcome_id = welcome["id"].as_str().unwrap();
    for _ in 0..2 {
        let (status, read, _) = p
            .post(
                &format!("/v1/notifications/{welcome_id}/read"),
                &json!({}),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_eq!(read["read"], true);
    }
    let (_, unread) = p
        .get(&format!(
            "/v1/notifications?user_id={ada}&unread=true&limit=2"
        ))
        .await;
    assert_eq!(unread["unread"], 3);
    assert_eq!(unread["items"].as_array().unwrap().len(), 2);
    let cursor = unread["next_cursor"].as_str().unwrap();
    let (_, rest) = p
        .get(&format!(
            "/v1/notifications?user_id={ada}&unread=true&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(rest["items"][0]["number"], 2, "{rest}");
    assert!(rest["next_cursor"].is_null());
    let (status, missing, _) = p
        .post("/v1/notifications/nope/read", &json!({}), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    let (status, bad) = p.get("/v1/notifications?user_id=&unread=maybe").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");

    // Email and push went out through the default file senders (Ada 4, Bo 1); SMS is off
    // by default.
    let email = wait_for_lines(&dir.path().join("notifications-email.jsonl"), 5).await;
    let welcome_mail = email
        .iter()
        .find(|l| l["notification"]["id"] == welcome["id"])
        .expect("the welcome was emailed");
    assert_eq!(welcome_mail["notification"]["email"], "ada@example.com");
    wait_for_lines(&dir.path().join("notifications-push.jsonl"), 5).await;
    assert!(!dir.path().join("notifications-sms.jsonl").exists());

    ws.send(tokio_tungstenite::tungstenite::Message::Close(None))
        .await
        .unwrap();
    p.stop().await;
}

/// The JSON lines of `path` once it has at least `n`.
async fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lines: Vec<Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, {n} expected",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn preferences_choose_the_channels_and_refuse_what_cannot_be(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let Some(p) = platform(db, "notifications_prefs", dir.path()).await else {
        return;
    };
    let (status, prefs) = p.get("/v1/notifications/preferences?user_id=u1").await;
    assert_eq!(status, StatusCode::OK, "{prefs}");
    let enabled = |prefs: &Value, category: &str, channel: &str| {
        prefs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["category"] == category && i["channel"] == channel)
            .map(|i| i["enabled"].as_bool().unwrap())
            .unwrap()
    };
    assert!(enabled(&prefs, "message", "in_app"));
    assert!(enabled(&prefs, "message", "email"));
    assert!(!enabled(&prefs, "message", "sms"));

    let put = |body: Value| {
        let p = &p;
        async move {
            let response = p
                .client
                .put(format!("{}/v1/notifications/preferences", p.base))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, _) =
        put(json!({"user_id": "u1", "category": "welcome", "channel": "email", "enabled": false}))
            .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        put(json!({"user_id": "u1", "category": "welcome", "channel": "sms", "enabled": true}))
            .await;
    assert_eq!(status, StatusCode::OK);
    let (_, prefs) = p.get("/v1/notifications/preferences?user_id=u1").await;
    assert!(!enabled(&prefs, "welcome", "email"));
    assert!(enabled(&prefs, "welcome", "sms"));
    assert!(
        enabled(&prefs, "message", "email"),
        "other categories keep theirs"
    );

    for (body, field) in [
        (
            json!({"user_id": "u1", "category": "welcome", "channel": "in_app", "enabled": false}),
            "channel",
        ),
        (
            json!({"user_id": "u1", "category": "gossip", "channel": "email", "enabled": true}),
            "category",
        ),
        (
            json!({"user_id": "u1", "category": "welcome", "channel": "pigeon", "enabled": true}),
            "channel",
        ),
        (
            json!({"user_id": "", "category": "welcome", "channel": "email", "enabled": true}),
            "user_id",
        ),
    ] {
        let (status, error) = put(body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }

    // The choice applies to what comes next: Cy's messages go by SMS, not email.
    let cy = register(&p, "cy@example.com", "Cy").await;
    let dee = register(&p, "dee@example.com", "Dee").await;
    for (channel, enabled) in [("email", false), ("sms", true)] {
        let body =
            json!({"user_id": cy, "category": "message", "channel": channel, "enabled": enabled});
        assert_eq!(put(body).await.0, StatusCode::OK);
    }
    let (status, _, _) = p
        .post(
            "/v1/messages",
            &json!({"from_user_id": dee, "to_user_id": cy, "body": "hi"}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let sms = wait_for_lines(&dir.path().join("notifications-sms.jsonl"), 1).await;
    assert_eq!(sms[0]["notification"]["user_id"], cy.as_str());
    assert_eq!(sms[0]["notification"]["category"], "message");
    let message_id = sms[0]["notification"]["id"].clone();
    // Push still goes (3 lines: two welcomes and the message); email only has the welcomes.
    let push = wait_for_lines(&dir.path().join("notifications-push.jsonl"), 3).await;
    assert!(push.iter().any(|l| l["notification"]["id"] == message_id));
    let email = wait_for_lines(&dir.path().join("notifications-email.jsonl"), 2).await;
    assert!(
        email.iter().all(|l| l["notification"]["id"] != message_id),
        "{email:?}"
    );
    p.stop().await;
}

/// A minimal SMTP server on a free port: accepts every message and hands each one's
/// envelope recipient and text over the channel.
async fn smtp_server() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 test SMTP\r\n").await.unwrap();
                let mut to = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_uppercase();
                    let answer: &[u8] = if upper.starts_with("EHLO") {
                        b"250-test\r\n250 OK\r\n"
                    } else if upper.starts_with("MAIL FROM:") {
                        b"250 OK\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        to = line[8..].trim_matches(['<', '>', ' ']).to_owned();
                        b"250 OK\r\n"
                    } else if upper == "DATA" {
                        write.write_all(b"354 go on\r\n").await.unwrap();
                        let mut text = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            text.push_str(&l);
                            text.push('\n');
                        }
                        let _ = tx.send((to.clone(), text));
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"500 what?\r\n"
                    };
                    write.write_all(answer).await.unwrap();
                }
            });
        }
    });
    (addr, rx)
}

async fn email_goes_out_through_an_smtp_server(db: Db) {
    let (server, mut mails) = smtp_server().await;
    let dir = tempfile::tempdir().unwrap();
    let notifications = NotificationsService::with_outbox_dir(Some(dir.path().to_owned()))
        .with_sender(
            "email",
            Arc::new(SmtpSender::new(server, "noreply@ovasabi.test")),
        );
    let services: Vec<Arc<dyn Service>> =
        vec![Arc::new(users::UsersService), Arc::new(notifications)];
    let Some(p) = start(services, db, "notifications_smtp").await else {
        return;
    };
    let ada = register(&p, "ada@example.com", "Ada").await;
    let (to, text) = tokio::time::timeout(Duration::from_secs(15), mails.recv())
        .await
        .expect("the welcome email within 15 s")
        .unwrap();
    assert_eq!(to, "ada@example.com");
    assert!(text.contains("From: noreply@ovasabi.test"), "{text}");
    assert!(text.contains("To: ada@example.com"), "{text}");
    assert!(text.contains("Subject: Welcome to OVASABI"), "{text}");
    assert!(text.contains("Hello Ada, your account is ready."), "{text}");
    // Not written to the email file: the SMTP sender replaced it.
    assert!(!dir.path().join("notifications-email.jsonl").exists());
    let _ = ada;
    p.stop().await;
}
