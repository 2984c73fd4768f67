//! `messaging`: direct messages between two users.
//!
//! | request | event |
//! | --- | --- |
//! | `POST /v1/messages` | `message.sent` on `messaging.events` |
//! | `GET /v1/messages?user_id=&limit=&cursor=` | — (the messages of the user's conversations, newest first) |
//!
//! A direct conversation's id is a UUIDv5 of its two users (in either order), so the same
//! pair always meets in the same conversation without a lookup. `message.sent` has the
//! conversation id as subject and partition key: a conversation's messages are published
//! in the order they were sent.
//!
//! # What it cannot check
//!
//! Messaging owns its tables and reads no other service's: it does **not** read `users`,
//! so it cannot tell that a user id exists. It keeps its own projection,
//! `messaging_users`, fed by the `messaging` consumer (`user.registered`, `user.deleted`
//! on `user.events`), and refuses messages from or to users that projection knows were
//! deleted. A user it has not heard of yet (a typo, or one registered a moment ago whose
//! event has not arrived) is accepted: the projection lags the users service, and refusing
//! the unknown would refuse new users too.
//!
//! # Tables
//!
//! - `messaging_messages`: every message, with its conversation, sender and recipient.
//! - `messaging_users`: the projection above (user id, registered, deleted).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ovasabi_core::Ordering;
use ovasabi_events::messaging::MessageSent;
use ovasabi_events::users::{UserDeleted, UserRegistered};
use ovasabi_events::DomainEvent;
use ovasabi_middleware::{HandlerError, Message};
use ovasabi_store::{inbox::Order, params, Migration, MigrationSet, Row, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{Api, ApiError, RequestMeta};
use crate::reactor::{Reaction, Reactor};
use crate::runtime::{ConsumerSpec, Context, Service, ServiceError};
use crate::users::body::Body;
use crate::users::{check_url, paging};
use crate::wallet::{check_user_id, payload, store_failure};

/// Where this service's events come from.
pub const SOURCE: &str = "/ovasabi/messaging";
/// The consumer group of the users projection, and its inbox name.
pub const GROUP: &str = "messaging";
/// Longest message body (the `message.sent` contract).
pub const MAX_BODY: usize = 10_000;
/// Most attachments per message (the `message.sent` contract).
pub const MAX_ATTACHMENTS: usize = 10;

/// The namespace of direct conversations' ids.
const CONVERSATION_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x8d3e_61b2_4f0a_4a7c_b2e9_17c5_d0f4_a3b6);

const MIGRATIONS: MigrationSet = MigrationSet::new(
    "messaging",
    &[Migration::new(
        1,
        "messaging_messages and messaging_users",
        "CREATE TABLE messaging_messages (
            id TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL,
            sender_id TEXT NOT NULL,
            recipient_id TEXT NOT NULL,
            body TEXT NOT NULL,
            attachment_urls TEXT,
            sent_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX messaging_messages_sender ON messaging_messages (sender_id, id);
        CREATE INDEX messaging_messages_recipient ON messaging_messages (recipient_id, id);
        CREATE INDEX messaging_messages_conversation ON messaging_messages (conversation_id, id);
        CREATE TABLE messaging_users (
            user_id TEXT PRIMARY KEY,
            registered_at TIMESTAMPTZ,
            deleted_at TIMESTAMPTZ,
            updated_at TIMESTAMPTZ NOT NULL
        );",
    )],
);

/// The `messaging` service.
#[derive(Clone, Debug, Default)]
pub struct MessagingService;

impl Service for MessagingService {
    fn name(&self) -> &'static str {
        "messaging"
    }

    fn about(&self) -> &'static str {
        "direct messages between users"
    }

    fn migrations(&self) -> MigrationSet {
        MIGRATIONS
    }

    fn consumers(&self, ctx: &Context) -> Result<Vec<ConsumerSpec>, ServiceError> {
        let topics = vec![UserRegistered::TOPIC.to_owned()];
        Ok(vec![ctx.consumer(
            "messaging",
            GROUP,
            &topics,
            Ordering::PerKey,
            Arc::new(Reactor::new(
                GROUP,
                Order::Unordered,
                ctx.store.clone(),
                UsersProjection,
            )),
        )?])
    }

    fn routes(&self, ctx: &Context) -> Option<Router> {
        Some(
            Router::new()
                .route("/v1/messages", post(send).get(list))
                .with_state(ctx.api.clone()),
        )
    }

    fn openapi(&self) -> Value {
        let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        let get_parameters = paging::openapi_parameters_after(vec![
            json!({"name": "user_id", "in": "query", "required": true, "schema": {"type": "string"}}),
        ]);
        json!({
            "paths": {
                "/v1/messages": {
                    "post": {
                        "summary": "Send a direct message (publishes message.sent); the users are not checked to exist, only not to be known deleted",
                        "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}, {"$ref": "#/components/parameters/CorrelationId"}],
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SendMessage"}}}},
                        "responses": {
                            "201": {"description": "Sent", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DirectMessage"}}}},
                            "422": error("A field is invalid, or names a deleted user")
                        }
                    },
                    "get": {
                        "summary": "The messages of a user's conversations (sent and received), newest first, a page at a time",
                        "parameters": get_parameters,
                        "responses": {
                            "200": {"description": "A page of messages", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessagePage"}}}},
                            "422": error("`user_id`, `limit` or `cursor` is invalid")
                        }
                    }
                }
            },
            "schemas": {
                "SendMessage": {"type": "object", "required": ["from_user_id", "to_user_id", "body"], "additionalProperties": false, "properties": {
                    "from_user_id": {"type": "string"},
                    "to_user_id": {"type": "string"},
                    "body": {"type": "string", "minLength": 1, "maxLength": MAX_BODY},
                    "attachment_urls": {"type": "array", "maxItems": MAX_ATTACHMENTS, "items": {"type": "string", "format": "uri"}}
                }},
                "DirectMessage": {"type": "object", "required": ["id", "conversation_id", "from_user_id", "to_user_id", "body", "sent_at"], "properties": {
                    "id": {"type": "string"},
                    "conversation_id": {"type": "string"},
                    "from_user_id": {"type": "string"},
                    "to_user_id": {"type": "string"},
                    "body": {"type": "string"},
                    "attachment_urls": {"type": "array", "items": {"type": "string"}},
                    "sent_at": {"type": "string", "format": "date-time"}
                }},
                "MessagePage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/DirectMessage"}},
                    "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for older messages; null on the last page"}
                }}
            }
        })
    }
}

/// The id of the direct conversation between `a` and `b` (the same either way round).
pub fn conversation_id(a: &str, b: &str) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    uuid::Uuid::new_v5(
        &CONVERSATION_NAMESPACE,
        format!("direct\n{first}\n{second}").as_bytes(),
    )
    .to_string()
}

/// `POST /v1/messages`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SendMessage {
    from_user_id: String,
    to_user_id: String,
    body: String,
    #[serde(default)]
    attachment_urls: Option<Vec<String>>,
}

async fn send(
    State(api): State<Api>,
    meta: RequestMeta,
    Body(input): Body<SendMessage>,
) -> Result<Response, ApiError> {
    let from = check_user_id("from_user_id", &input.from_user_id)?;
    let to = check_user_id("to_user_id", &input.to_user_id)?;
    if from == to {
        return Err(ApiError::invalid(
            "to_user_id",
            "a direct message goes to another user, not to its sender",
        ));
    }
    let body = input.body.clone();
    if body.trim().is_empty() || body.chars().count() > MAX_BODY {
        return Err(ApiError::invalid(
            "body",
            format!("a message has 1 to {MAX_BODY} characters, not all blank"),
        ));
    }
    let attachments = match &input.attachment_urls {
        None => None,
        Some(urls) if urls.len() > MAX_ATTACHMENTS => {
            return Err(ApiError::invalid(
                "attachment_urls",
                format!("at most {MAX_ATTACHMENTS} attachments per message"),
            ))
        }
        Some(urls) if urls.is_empty() => None,
        Some(urls) => Some(
            urls.iter()
                .map(|u| check_url("attachment_urls", u))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let id = uuid::Uuid::now_v7().to_string();
    let conversation = conversation_id(&from, &to);
    api.transact(&meta, "POST /v1/messages", &input, move |tx| {
        Box::pin(async move {
            let deleted = tx
                .db()
                .query(
                    "SELECT user_id FROM messaging_users
                     WHERE (user_id = $1 OR user_id = $2) AND deleted_at IS NOT NULL",
                    params![from.as_str(), to.as_str()],
                )
                .await?;
            if let Some(row) = deleted.first() {
                let user: String = row.get("user_id")?;
                let field = if user == from { "from_user_id" } else { "to_user_id" };
                return Err(ApiError::invalid(
                    field,
                    format!("user {user} was deleted: no messages from or to it"),
                ));
            }
            let now = Utc::now();
            let attachments_json = attachments
                .as_ref()
                .map(|urls| Value::from(urls.clone()).to_string());
            tx.db()
                .execute(
                    "INSERT INTO messaging_messages (id, conversation_id, sender_id, recipient_id, body, attachment_urls, sent_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    params![
                        id.as_str(),
                        conversation.as_str(),
                        from.as_str(),
                        to.as_str(),
                        body.as_str(),
                        attachments_json,
                        now
                    ],
                )
                .await?;
            tx.publish(
                &MessageSent {
                    message_id: id.clone(),
                    conversation_id: conversation.clone(),
                    sender_id: from.clone(),
                    recipient_ids: vec![to.clone()],
                    body: body.clone(),
                    attachment_urls: attachments.clone(),
                    sent_at: now,
                },
                SOURCE,
            )
            .await?;
            Ok((
                StatusCode::CREATED,
                json!({
                    "id": id, "conversation_id": conversation, "from_user_id": from,
                    "to_user_id": to, "body": body,
                    "attachment_urls": attachments.unwrap_or_default(), "sent_at": now
                }),
            ))
        })
    })
    .await
}

fn message_json(row: &Row) -> Result<Value, ApiError> {
    let attachments: Option<String> = row.get("attachment_urls")?;
    let attachments: Vec<String> = attachments
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    Ok(json!({
        "id": row.get::<String>("id")?,
        "conversation_id": row.get::<String>("conversation_id")?,
        "from_user_id": row.get::<String>("sender_id")?,
        "to_user_id": row.get::<String>("recipient_id")?,
        "body": row.get::<String>("body")?,
        "attachment_urls": attachments,
        "sent_at": row.get::<DateTime<Utc>>("sent_at")?,
    }))
}

/// `GET /v1/messages?user_id=&limit=&cursor=`.
async fn list(
    State(api): State<Api>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = paging::query(query, &["user_id", "limit", "cursor"])?;
    let user = check_user_id("user_id", query.get("user_id").map_or("", String::as_str))?;
    let page = paging::request(&query)?;
    const COLUMNS: &str =
        "id, conversation_id, sender_id, recipient_id, body, attachment_urls, sent_at";
    let rows = match &page.after {
        None => {
            api.store
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM messaging_messages
                         WHERE (sender_id = $1 OR recipient_id = $1)
                         ORDER BY id DESC LIMIT $2"
                    ),
                    params![user.as_str(), page.fetch()],
                )
                .await?
        }
        Some(after) => {
            api.store
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM messaging_messages
                         WHERE (sender_id = $1 OR recipient_id = $1) AND id < $2
                         ORDER BY id DESC LIMIT $3"
                    ),
                    params![user.as_str(), after.as_str(), page.fetch()],
                )
                .await?
        }
    };
    let items = rows
        .iter()
        .map(|row| Ok((row.get::<String>("id")?, message_json(row)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(paging::answer(&page, items)))
}

/// Keeps `messaging_users` up to date from `user.events`. The upsert commutes (a
/// registration never undeletes), so order does not matter: [`Order::Unordered`].
struct UsersProjection;

/// A user's registration or deletion: (user id, registered at, deleted at).
type UserChange = (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

#[async_trait]
impl Reaction for UsersProjection {
    type Plan = UserChange;

    fn plan(&self, msg: &Message) -> Result<Option<UserChange>, HandlerError> {
        let event = msg.event();
        Ok(Some(match event.ty.as_str() {
            UserRegistered::TYPE => {
                let registered: UserRegistered = payload(event)?;
                (registered.user_id, Some(registered.registered_at), None)
            }
            UserDeleted::TYPE => {
                let deleted: UserDeleted = payload(event)?;
                (deleted.user_id, None, Some(deleted.deleted_at))
            }
            _ => return Ok(None),
        }))
    }

    async fn apply(
        &self,
        tx: &mut Transaction,
        _msg: &Message,
        (user_id, registered_at, deleted_at): UserChange,
    ) -> Result<bool, HandlerError> {
        // COALESCE keeps what an earlier event set: a registration never undeletes.
        tx.execute(
            "INSERT INTO messaging_users (user_id, registered_at, deleted_at, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET
                 registered_at = COALESCE(messaging_users.registered_at, excluded.registered_at),
                 deleted_at = COALESCE(messaging_users.deleted_at, excluded.deleted_at),
                 updated_at = excluded.updated_at",
            params![user_id.as_str(), registered_at, deleted_at, Utc::now()],
        )
        .await
        .map_err(store_failure("messaging"))?;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_has_one_conversation() {
        assert_eq!(conversation_id("a", "b"), conversation_id("b", "a"));
        assert_ne!(conversation_id("a", "b"), conversation_id("a", "c"));
        // No ambiguity from concatenation.
        assert_ne!(conversation_id("ab", "c"), conversation_id("a", "bc"));
    }
}
