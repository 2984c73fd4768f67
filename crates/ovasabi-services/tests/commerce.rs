//! The commerce service over real HTTP on the embedded bus and SQLite (and PostgreSQL when
//! it is there): an order's events reach the bus in order (placed → completed → shipped)
//! with the order id as subject, the request's correlation id and a valid schema; retries
//! with the same `Idempotency-Key` publish nothing and never charge twice (the provider's
//! calls are counted); declines triggered by the amount give `payment.failed` with the
//! reason and leave the order payable; illegal transitions are 409s naming the state; bad
//! input is a 422 naming the field; pagination walks each order once.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::Platform;
use ovasabi_core::Event;
use ovasabi_events::commerce::PaymentFailureReason;
use ovasabi_services::commerce::{
    ChargeOutcome, ChargeRequest, CommerceService, FakeProvider, PaymentProvider,
    ProviderUnavailable, RefundOutcome, RefundRequest,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// What the test provider does on a call.
enum Step {
    /// Answer this.
    Answer(Result<ChargeOutcome, ProviderUnavailable>),
    /// Wait for the signal, then answer as the fake provider does.
    Wait(Arc<Notify>),
}

/// Records every call; answers from its script, then as [`FakeProvider`].
#[derive(Default)]
struct TestProvider {
    charges: Mutex<Vec<ChargeRequest>>,
    refunds: Mutex<Vec<RefundRequest>>,
    script: Mutex<VecDeque<Step>>,
}

impl TestProvider {
    fn then(&self, step: Step) {
        self.script.lock().unwrap().push_back(step);
    }

    fn charges(&self) -> Vec<ChargeRequest> {
        self.charges.lock().unwrap().clone()
    }

    fn charges_of(&self, order: &str) -> Vec<ChargeRequest> {
        self.charges()
            .into_iter()
            .filter(|c| c.order_id == order)
            .collect()
    }
}

#[async_trait]
impl PaymentProvider for TestProvider {
    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProviderUnavailable> {
        self.charges.lock().unwrap().push(request.clone());
        let step = self.script.lock().unwrap().pop_front();
        match step {
            Some(Step::Answer(answer)) => answer,
            Some(Step::Wait(signal)) => {
                signal.notified().await;
                FakeProvider.charge(request).await
            }
            None => FakeProvider.charge(request).await,
        }
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, ProviderUnavailable> {
        self.refunds.lock().unwrap().push(request.clone());
        FakeProvider.refund(request).await
    }
}

async fn start() -> (Platform, Arc<TestProvider>) {
    let provider = Arc::new(TestProvider::default());
    let service = CommerceService::with_provider(provider.clone());
    (Platform::embedded(vec![Arc::new(service)]).await, provider)
}

fn address() -> Value {
    json!({"recipient": "Ada Lovelace", "line1": "12 St James's Square", "city": "London",
           "postal_code": "SW1Y 4JH", "country": "GB"})
}

/// An order of one item priced `amount_minor` USD.
fn order_of(customer: &str, amount_minor: i64) -> Value {
    json!({
        "customer_id": customer,
        "items": [{"sku": "SKU-1", "quantity": 1, "unit_price": {"amount_minor": amount_minor, "currency": "USD"}}],
        "shipping_address": address(),
    })
}

async fn place(platform: &Platform, customer: &str, amount_minor: i64) -> String {
    let (status, order, _) = platform
        .post("/v1/orders", &order_of(customer, amount_minor), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    order["id"].as_str().unwrap().to_owned()
}

async fn act(platform: &Platform, order: &str, action: &str, body: Value) -> (StatusCode, Value) {
    let (status, answer, _) = platform
        .post(&format!("/v1/orders/{order}/{action}"), &body, None)
        .await;
    (status, answer)
}

/// The events on `commerce.events` once at least `expected` arrived, each checked against
/// its schema.
async fn events(platform: &Platform, expected: usize) -> Vec<Event> {
    let events = platform
        .events("commerce.events", expected, Duration::from_secs(15))
        .await;
    for event in &events {
        common::contracts()
            .check(event)
            .unwrap_or_else(|e| panic!("{} breaks its schema: {e}", event.ty));
        assert_eq!(event.source, "/ovasabi/commerce");
    }
    events
}

/// The events of one order, in the order they arrived.
fn of<'a>(events: &'a [Event], order: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.subject.as_deref() == Some(order))
        .collect()
}

fn types(events: &[&Event]) -> Vec<String> {
    events.iter().map(|e| e.ty.clone()).collect()
}

fn data(event: &Event) -> Value {
    event.data_json().expect("JSON data")
}

/// 409 `invalid_state` whose message names `state`.
fn assert_refused(status: StatusCode, answer: &Value, state: &str) {
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_state", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("is {state}:")), "{message}");
}

/// Place, pay, ship with idempotent retries; the events in order with subject, correlation
/// id and schema. Shared by the SQLite and PostgreSQL tests.
async fn happy_path(platform: &Platform, provider: &TestProvider) {
    let body = json!({
        "customer_id": "cust-ada",
        "items": [
            {"sku": "BOOK-ENGINE-HC", "name": "The Engine", "quantity": 2, "unit_price": {"amount_minor": 1250, "currency": "USD"}},
            {"sku": "MUG-OVA-WHT", "quantity": 1, "unit_price": {"amount_minor": 999, "currency": "USD"}}
        ],
        "shipping_address": address(),
        "coupon_code": "welcome10"
    });
    let (status, order, headers) = platform
        .post_with(
            "/v1/orders",
            &body,
            &[
                ("Idempotency-Key", "place-1"),
                ("X-Correlation-Id", "corr-place"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(headers["x-correlation-id"], "corr-place");
    let id = order["id"].as_str().unwrap().to_owned();
    // 2 × 12.50 + 9.99 = 34.99, less 10 % (3.49) = 31.50.
    assert_eq!(
        order["subtotal"],
        json!({"amount_minor": 3499, "currency": "USD"})
    );
    assert_eq!(order["discount"]["amount_minor"], 349);
    assert_eq!(
        order["total"],
        json!({"amount_minor": 3150, "currency": "USD"})
    );
    assert_eq!(order["coupon_code"], "WELCOME10");
    assert_eq!(order["status"], "placed");
    // The answer is the order as stored.
    let (status, mut stored) = platform.get(&format!("/v1/orders/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored["payment_attempts"], json!([]));
    stored.as_object_mut().unwrap().remove("payment_attempts");
    // GET adds the fraud hold (none on a new order) and the order's history.
    assert_eq!(
        stored.as_object_mut().unwrap().remove("hold"),
        Some(Value::Null)
    );
    let history = stored.as_object_mut().unwrap().remove("history").unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history[0]["event_type"], "order.placed");
    assert_eq!(stored, order);

    let (status, again, headers) = platform.post("/v1/orders", &body, Some("place-1")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again, order);
    assert_eq!(headers["idempotent-replayed"], "true");

    let pay = format!("/v1/orders/{id}/pay");
    let (status, paid, _) = platform
        .post_with(
            &pay,
            &json!({"method": "card"}),
            &[
                ("Idempotency-Key", "pay-1"),
                ("X-Correlation-Id", "corr-pay"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["order"]["status"], "paid");
    assert_eq!(paid["payment"]["status"], "succeeded");
    let payment_id = paid["payment"]["id"].as_str().unwrap().to_owned();

    // The retried pay: the first answer, no second charge.
    let (status, again, headers) = platform
        .post(&pay, &json!({"method": "card"}), Some("pay-1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, paid);
    assert_eq!(headers["idempotent-replayed"], "true");
    // A new pay of a paid order: refused, still no charge.
    let (status, answer, _) = platform.post(&pay, &json!({}), Some("pay-2")).await;
    assert_refused(status, &answer, "paid");
    assert_eq!(provider.charges_of(&id).len(), 1, "charged once");
    assert_eq!(provider.charges_of(&id)[0].payment_id, payment_id);
    assert_eq!(provider.charges_of(&id)[0].amount.amount_minor, 3150);

    let ship_body = json!({"carrier": "dhl", "tracking": "JD014600003828460012",
                           "tracking_url": "https://www.dhl.com/track?id=JD014600003828460012",
                           "estimated_delivery": "2025-12-02"});
    let (status, shipped, _) = platform
        .post_with(
            &format!("/v1/orders/{id}/ship"),
            &ship_body,
            &[
                ("Idempotency-Key", "ship-1"),
                ("X-Correlation-Id", "corr-ship"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{shipped}");
    assert_eq!(shipped["status"], "shipped");
    let (status, _, headers) = platform
        .post(&format!("/v1/orders/{id}/ship"), &ship_body, Some("ship-1"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["idempotent-replayed"], "true");

    let events = events(platform, 3).await;
    let mine = of(&events, &id);
    assert_eq!(
        types(&mine),
        ["order.placed", "payment.completed", "order.shipped"],
        "{events:?}"
    );
    for (event, correlation) in mine.iter().zip(["corr-place", "corr-pay", "corr-ship"]) {
        assert_eq!(event.extension_str("correlationid"), Some(correlation));
        assert_eq!(event.partition_key(), Some(id.as_str()));
        assert!(event.extension_str("traceparent").is_some());
    }
    assert_eq!(
        mine[0].dataschema.as_deref(),
        Some("urn:ovasabi:schema:order.placed:2")
    );
    let placed = data(mine[0]);
    assert_eq!(placed["total"]["amount_minor"], 3150);
    assert_eq!(placed["coupon_code"], "WELCOME10");
    assert_eq!(placed["items"][0]["quantity"], 2);
    let completed = data(mine[1]);
    assert_eq!(completed["payment_id"], payment_id.as_str());
    assert_eq!(completed["amount"]["amount_minor"], 3150);
    assert_eq!(completed["method"], "card");
    let shipped_event = data(mine[2]);
    assert_eq!(shipped_event["carrier"], "dhl");
    assert_eq!(shipped_event["tracking_number"], "JD014600003828460012");
    assert_eq!(shipped_event["estimated_delivery"], "2025-12-02");

    let (status, fetched) = platform.get(&format!("/v1/orders/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["status"], "shipped");
    assert_eq!(fetched["payment"]["payment_id"], payment_id.as_str());
    assert_eq!(fetched["payment_attempts"].as_array().unwrap().len(), 1);
    assert_eq!(fetched["payment_attempts"][0]["provider_calls"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_placed_paid_and_shipped_once_per_idempotency_key() {
    let (platform, provider) = start().await;
    happy_path(&platform, &provider).await;
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_happy_path_on_postgresql() {
    let Some(db) = ovasabi_store::testing::postgres_or_skip("commerce happy path").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn ovasabi_core::Bus> = Arc::new(
        ovasabi_embedded::EmbeddedBus::open(ovasabi_embedded::EmbeddedConfig::new(
            dir.path().join("bus"),
        ))
        .await
        .unwrap(),
    );
    let provider = Arc::new(TestProvider::default());
    let service = CommerceService::with_provider(provider.clone());
    let platform = Platform::start(vec![Arc::new(service)], bus, db.config()).await;
    happy_path(&platform, &provider).await;
    // A decline and a state refusal on PostgreSQL too.
    let id = place(&platform, "cust-pg", 4213).await;
    let (status, answer) = act(&platform, &id, "pay", json!({})).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{answer}");
    let (status, answer) = act(&platform, &id, "ship", json!({})).await;
    assert_refused(status, &answer, "placed");
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_triggered_by_the_amount_publish_payment_failed_and_leave_the_order_payable() {
    let (platform, provider) = start().await;
    // …13: card_declined (not retryable), …14: insufficient_funds (retryable).
    let declined = place(&platform, "cust-1", 1013).await;
    let (status, answer, _) = platform
        .post_with(
            &format!("/v1/orders/{declined}/pay"),
            &json!({}),
            &[("Idempotency-Key", "pay-d"), ("X-Correlation-Id", "corr-d")],
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{answer}");
    assert_eq!(answer["error"]["code"], "card_declined");
    assert_eq!(answer["payment"]["reason_code"], "card_declined");
    assert_eq!(answer["order"]["status"], "placed");
    let first_attempt = answer["payment"]["id"].as_str().unwrap().to_owned();
    // The retry with the same key: the stored 402, no second charge.
    let (status, again, _) = platform
        .post(
            &format!("/v1/orders/{declined}/pay"),
            &json!({}),
            Some("pay-d"),
        )
        .await;
    assert_eq!((status, &again), (StatusCode::PAYMENT_REQUIRED, &answer));
    assert_eq!(provider.charges_of(&declined).len(), 1);
    // A new attempt is allowed (the order stays payable), and declined again.
    let (status, answer) = act(&platform, &declined, "pay", json!({})).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{answer}");
    assert_ne!(answer["payment"]["id"], first_attempt.as_str());
    assert_eq!(provider.charges_of(&declined).len(), 2);

    let poor = place(&platform, "cust-2", 2014).await;
    let (status, answer) = act(&platform, &poor, "pay", json!({"method": "paypal"})).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{answer}");
    assert_eq!(answer["error"]["code"], "insufficient_funds");

    // Declined once by the provider's choice, then paid: the order stayed payable.
    let later = place(&platform, "cust-3", 5000).await;
    provider.then(Step::Answer(Ok(ChargeOutcome::Declined {
        reason: PaymentFailureReason::ExpiredCard,
        message: None,
        retryable: false,
    })));
    let (status, answer) = act(&platform, &later, "pay", json!({})).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{answer}");
    assert_eq!(answer["error"]["code"], "expired_card");
    let (status, answer) = act(&platform, &later, "pay", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["order"]["status"], "paid");

    let events = events(&platform, 8).await;
    let d = of(&events, &declined);
    assert_eq!(
        types(&d),
        ["order.placed", "payment.failed", "payment.failed"]
    );
    let failed = data(d[1]);
    assert_eq!(failed["reason_code"], "card_declined");
    assert_eq!(failed["retryable"], false);
    assert_eq!(failed["payment_id"], first_attempt.as_str());
    assert_eq!(failed["amount"]["amount_minor"], 1013);
    assert_eq!(d[1].extension_str("correlationid"), Some("corr-d"));
    let p = of(&events, &poor);
    assert_eq!(types(&p), ["order.placed", "payment.failed"]);
    assert_eq!(data(p[1])["reason_code"], "insufficient_funds");
    assert_eq!(data(p[1])["retryable"], true);
    assert_eq!(data(p[1])["method"], "paypal");
    let l = of(&events, &later);
    assert_eq!(
        types(&l),
        ["order.placed", "payment.failed", "payment.completed"]
    );
    assert_eq!(events.len(), 8, "{events:?}");
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_transitions_are_409s_naming_the_state() {
    let (platform, provider) = start().await;

    // Placed, then cancelled: nothing to pay, ship or refund.
    let a = place(&platform, "cust-a", 1000).await;
    let (s, e) = act(&platform, &a, "ship", json!({})).await;
    assert_refused(s, &e, "placed");
    let (s, e) = act(&platform, &a, "refund", json!({})).await;
    assert_refused(s, &e, "placed");
    let (s, cancelled) = act(
        &platform,
        &a,
        "cancel",
        json!({"reason": "changed my mind"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancellation"]["refund_due"], Value::Null);
    for action in ["pay", "ship", "cancel", "refund"] {
        let (s, e) = act(&platform, &a, action, json!({})).await;
        assert_refused(s, &e, "cancelled");
    }

    // Paid, shipped, refunded.
    let b = place(&platform, "cust-b", 2000).await;
    assert_eq!(act(&platform, &b, "pay", json!({})).await.0, StatusCode::OK);
    assert_eq!(
        act(&platform, &b, "ship", json!({})).await.0,
        StatusCode::OK
    );
    for action in ["pay", "ship", "cancel"] {
        let (s, e) = act(&platform, &b, action, json!({})).await;
        assert_refused(s, &e, "shipped");
    }
    let (s, refunded) = act(&platform, &b, "refund", json!({"reason": "damaged_item"})).await;
    assert_eq!(s, StatusCode::OK, "{refunded}");
    assert_eq!(refunded["order"]["status"], "refunded");
    for action in ["pay", "ship", "cancel", "refund"] {
        let (s, e) = act(&platform, &b, action, json!({})).await;
        assert_refused(s, &e, "refunded");
    }

    // Paid, then cancelled: the refund is due, then made; the order stays cancelled.
    let c = place(&platform, "cust-c", 3000).await;
    let (s, paid) = act(&platform, &c, "pay", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{paid}");
    let (s, cancelled) = act(&platform, &c, "cancel", json!({"cancelled_by": "merchant"})).await;
    assert_eq!(s, StatusCode::OK, "{cancelled}");
    assert_eq!(
        cancelled["cancellation"]["refund_due"],
        json!({"amount_minor": 3000, "currency": "USD"})
    );
    let (s, e) = act(&platform, &c, "ship", json!({})).await;
    assert_refused(s, &e, "cancelled");
    let (s, refunded) = act(&platform, &c, "refund", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{refunded}");
    assert_eq!(refunded["order"]["status"], "cancelled");
    assert_eq!(refunded["refund"]["refund_reason"], "order_cancelled");
    let (s, e) = act(&platform, &c, "refund", json!({})).await;
    assert_refused(s, &e, "cancelled");

    let (s, e) = act(&platform, "no-such-order", "pay", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    assert_eq!(provider.refunds.lock().unwrap().len(), 2);

    let events = events(&platform, 10).await;
    assert_eq!(types(&of(&events, &a)), ["order.placed", "order.cancelled"]);
    assert_eq!(
        types(&of(&events, &b)),
        [
            "order.placed",
            "payment.completed",
            "order.shipped",
            "payment.refunded"
        ]
    );
    let c_events = of(&events, &c);
    assert_eq!(
        types(&c_events),
        [
            "order.placed",
            "payment.completed",
            "order.cancelled",
            "payment.refunded"
        ]
    );
    assert_eq!(data(c_events[2])["refund_due"]["amount_minor"], 3000);
    assert_eq!(data(c_events[2])["cancelled_by"], "merchant");
    let refund = data(c_events[3]);
    assert_eq!(refund["reason"], "order_cancelled");
    assert_eq!(refund["payment_id"], paid["payment"]["id"]);
    assert_eq!(refund["amount"]["amount_minor"], 3000);
    assert_eq!(events.len(), 10, "{events:?}");
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_naming_the_field_and_publishes_nothing() {
    let (platform, provider) = start().await;
    let item = |sku: &str, quantity: Value, currency: &str| json!({"sku": sku, "quantity": quantity, "unit_price": {"amount_minor": 500, "currency": currency}});
    let with = |items: Value, extra: Value| {
        let mut body =
            json!({"customer_id": "cust-1", "items": items, "shipping_address": address()});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let good = item("A", json!(1), "USD");
    for (body, field) in [
        (
            with(json!([good, item("B", json!(0), "USD")]), json!({})),
            "items[1].quantity",
        ),
        (
            with(json!([good, item("B", json!("two"), "USD")]), json!({})),
            "items[1].quantity",
        ),
        (
            with(json!([good, item("B", json!(1), "EUR")]), json!({})),
            "items[1].unit_price.currency",
        ),
        (
            with(
                json!([good, {"quantity": 1, "unit_price": {"amount_minor": 1, "currency": "USD"}}]),
                json!({}),
            ),
            "items[1].sku",
        ),
        (
            with(
                json!([{"sku": "A", "quantity": 1, "unit_price": {"amount_minor": 1, "currency": "USD", "cents": true}}]),
                json!({}),
            ),
            "items[0].unit_price.cents",
        ),
        (with(json!([]), json!({})), "items"),
        (
            with(json!([good]), json!({"coupon_code": "FREEMONEY"})),
            "coupon_code",
        ),
        (
            with(json!([good]), json!({"customer_id": " "})),
            "customer_id",
        ),
        (
            with(
                json!([good]),
                json!({"shipping_address": {"recipient": "A", "line1": "1", "city": "X", "postal_code": "1", "country": "GBR"}}),
            ),
            "shipping_address.country",
        ),
        (
            with(
                json!([good]),
                json!({"shipping_address": {"recipient": "A", "line1": "1", "city": "X", "country": "GB"}}),
            ),
            "shipping_address.postal_code",
        ),
        (with(json!([good]), json!({"gift_wrap": true})), "gift_wrap"),
        (json!({"items": [good]}), "customer_id"),
    ] {
        let (status, err, _) = platform.post("/v1/orders", &body, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let id = place(&platform, "cust-1", 1000).await;
    for (action, body, field) in [
        ("pay", json!({"method": "cash"}), "method"),
        ("pay", json!({"amount": 5}), "amount"),
        ("refund", json!({"reason": "boredom"}), "reason"),
        ("ship", json!({"tracking_url": "not a url"}), "tracking_url"),
        (
            "ship",
            json!({"estimated_delivery": "next tuesday"}),
            "estimated_delivery",
        ),
        ("cancel", json!({"cancelled_by": "aliens"}), "cancelled_by"),
    ] {
        let (status, err) = act(&platform, &id, action, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{action} {body}: {err}"
        );
        assert_eq!(err["error"]["field"], field, "{action} {body}: {err}");
    }
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("cursor=garbage", "cursor"),
        ("colour=red", "colour"),
        ("customer_id=a%20b", "customer_id"),
    ] {
        let (status, err) = platform.get(&format!("/v1/orders?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {err}");
        assert_eq!(err["error"]["field"], field, "{query}: {err}");
    }
    let (status, _) = platform.get("/v1/orders/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(provider.charges().is_empty());

    let events = events(&platform, 1).await;
    assert_eq!(types(&events.iter().collect::<Vec<_>>()), ["order.placed"]);
    let (status, doc) = platform.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["paths"]["/v1/orders/{id}/pay"]["post"].is_object(),
        "{doc}"
    );
    assert!(doc["components"]["schemas"]["PlaceOrder"].is_object());
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_walks_each_order_once_newest_first() {
    let (platform, _) = start().await;
    let mut ada = Vec::new();
    for i in 0..5 {
        ada.push(place(&platform, "cust-ada", 1000 + i).await);
        if i < 2 {
            place(&platform, "cust-bo", 2000 + i).await;
        }
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/v1/orders?customer_id=cust-ada&limit=2".to_owned(),
            Some(c) => format!("/v1/orders?customer_id=cust-ada&limit=2&cursor={c}"),
        };
        let (status, page) = platform.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for order in page["items"].as_array().unwrap() {
            assert_eq!(order["customer_id"], "cust-ada");
            seen.push(order["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "the walk does not end");
    }
    assert_eq!(pages, 3);
    ada.reverse();
    assert_eq!(seen, ada, "each of Ada's orders once, newest first");
    let (_, all) = platform.get("/v1/orders?limit=100").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 7);
    assert_eq!(all["next_cursor"], Value::Null);
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_charge_is_resumed_with_the_same_payment_id() {
    let (platform, provider) = start().await;
    let unavailable = || {
        Step::Answer(Err(ProviderUnavailable(
            "connection reset by peer".to_owned(),
        )))
    };

    // Retried with the same key: the same attempt, called again, recorded once.
    let id = place(&platform, "cust-1", 4200).await;
    provider.then(unavailable());
    let pay = format!("/v1/orders/{id}/pay");
    let (status, err, _) = platform.post(&pay, &json!({}), Some("k1")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["error"]["code"], "provider_unavailable");
    let (_, order) = platform.get(&format!("/v1/orders/{id}")).await;
    assert!(order["payment_in_progress"].is_object(), "{order}");
    // Shipping an order whose payment is undecided is refused.
    let (status, err) = act(&platform, &id, "ship", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "payment_in_progress");
    let (status, paid, _) = platform.post(&pay, &json!({}), Some("k1")).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let charges = provider.charges_of(&id);
    assert_eq!(charges.len(), 2);
    assert_eq!(charges[0].payment_id, charges[1].payment_id);
    assert_eq!(paid["payment"]["id"], charges[0].payment_id.as_str());
    assert_eq!(paid["payment"]["provider_calls"], 2);

    // Resolved by the next pay, whatever its key.
    let other = place(&platform, "cust-2", 4300).await;
    provider.then(unavailable());
    let (status, _) = act(&platform, &other, "pay", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, paid) = act(&platform, &other, "pay", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let charges = provider.charges_of(&other);
    assert_eq!(charges.len(), 2);
    assert_eq!(charges[0].payment_id, charges[1].payment_id);

    let events = events(&platform, 4).await;
    for order in [&id, &other] {
        let mine = of(&events, order);
        assert_eq!(types(&mine), ["order.placed", "payment.completed"]);
        assert_eq!(
            data(mine[1])["payment_id"],
            provider.charges_of(order)[0].payment_id.as_str()
        );
    }
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pay_while_the_provider_is_busy_is_refused_not_charged() {
    let (platform, provider) = start().await;
    let id = place(&platform, "cust-1", 4400).await;
    let gate = Arc::new(Notify::new());
    provider.then(Step::Wait(gate.clone()));
    let client = platform.client.clone();
    let url = format!("{}/v1/orders/{id}/pay", platform.base);
    let first = tokio::spawn(async move {
        let response = client
            .post(url)
            .header("Idempotency-Key", "slow")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    });
    // Wait until the provider holds the first charge.
    for _ in 0..200 {
        if !provider.charges_of(&id).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(provider.charges_of(&id).len(), 1);
    let (status, err) = act(&platform, &id, "pay", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "payment_in_progress");
    let (status, err) = act(&platform, &id, "cancel", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "payment_in_progress");
    gate.notify_one();
    let (status, paid) = first.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["order"]["status"], "paid");
    assert_eq!(provider.charges_of(&id).len(), 1, "charged once");
    let events = events(&platform, 2).await;
    assert_eq!(
        types(&of(&events, &id)),
        ["order.placed", "payment.completed"]
    );
    platform.stop().await;
}
