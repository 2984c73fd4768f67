//! `users`: accounts and profiles: register, update profile, change email, delete (soft).
//!
//! Owns table `users`. Every change and its event commit in one transaction
//! ([`Api::transact`]), once per `Idempotency-Key` (scoped by method and path); the outbox
//! relay publishes the event on `user.events`, with the user id as subject and partition
//! key, so one user's events are published in the order they committed.
//!
//! | request | event |
//! | --- | --- |
//! | `POST /v1/users` | `user.registered` |
//! | `GET /v1/users?limit=&cursor=` | — (users not deleted, oldest first) |
//! | `GET /v1/users/{id}` | — (a deleted user shows `"deleted": true`) |
//! | `PATCH /v1/users/{id}` | `user.profile_updated` (only if something changed) |
//! | `POST /v1/users/{id}/email` | `user.email_changed` (only if the address changed) |
//! | `DELETE /v1/users/{id}?reason=&deleted_by=` | `user.deleted` |
//!
//! A deleted user is kept (soft delete): `GET` still answers it, every change to it is a
//! 404, its email address is free for a new account.
//!
//! This module also holds the cursor pagination every list endpoint of the services uses
//! (`paging`).

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ovasabi_events::users::{
    DeletionReason, ProfileField, UserDeleted, UserEmailChanged, UserProfileUpdated, UserRegistered,
};
use ovasabi_store::{params, Migration, MigrationSet, Row, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{Api, ApiError, RequestMeta};
use crate::runtime::{Context, Service};
use body::Body;

/// Where this service's events come from.
pub const SOURCE: &str = "/ovasabi/users";

/// Longest display name (the `user.registered` and `user.profile_updated` contracts).
pub const MAX_DISPLAY_NAME: usize = 64;
/// Longest biography (the `user.profile_updated` contract).
pub const MAX_BIO: usize = 500;
/// Longest avatar URL.
pub const MAX_URL: usize = 2048;
/// How long after a soft delete personal data is scheduled to be erased.
pub const PURGE_AFTER_DAYS: i64 = 30;

const MIGRATIONS: MigrationSet = MigrationSet::new(
    "users",
    &[
        Migration::new(
            1,
            "users",
            "CREATE TABLE users (
            id TEXT PRIMARY KEY,
            email TEXT NOT NULL,
            display_name TEXT,
            locale TEXT,
            referrer_user_id TEXT,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            deleted_at TIMESTAMPTZ
        );
        CREATE UNIQUE INDEX users_email ON users (email) WHERE deleted_at IS NULL;",
        ),
        Migration::new(
            2,
            "users: avatar_url and bio",
            "ALTER TABLE users ADD COLUMN avatar_url TEXT;
        ALTER TABLE users ADD COLUMN bio TEXT;",
        ),
    ],
);

/// The columns [`user_json`] reads.
const USER_COLUMNS: &str =
    "id, email, display_name, avatar_url, bio, locale, created_at, updated_at, deleted_at";

/// The `users` service.
#[derive(Clone, Debug, Default)]
pub struct UsersService;

impl Service for UsersService {
    fn name(&self) -> &'static str {
        "users"
    }

    fn about(&self) -> &'static str {
        "accounts and profiles: register, update profile, change email, delete (soft)"
    }

    fn migrations(&self) -> MigrationSet {
        MIGRATIONS
    }

    fn routes(&self, ctx: &Context) -> Option<Router> {
        Some(
            Router::new()
                .route("/v1/users", post(register).get(list))
                .route("/v1/users/{id}", get(user).patch(update).delete(delete))
                .route("/v1/users/{id}/email", post(change_email))
                .with_state(ctx.api.clone()),
        )
    }

    fn openapi(&self) -> Value {
        let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        let user = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/User"}}}});
        let headers = json!([{"$ref": "#/components/parameters/IdempotencyKey"}, {"$ref": "#/components/parameters/CorrelationId"}]);
        let id =
            json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
        let with_id = |extra: Value| {
            let mut all = vec![id.clone()];
            all.extend(headers.as_array().cloned().unwrap_or_default());
            all.extend(extra.as_array().cloned().unwrap_or_default());
            Value::Array(all)
        };
        json!({
            "paths": {
                "/v1/users": {
                    "post": {
                        "summary": "Register a user (publishes user.registered)",
                        "parameters": headers,
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RegisterUser"}}}},
                        "responses": {
                            "201": user("Registered"),
                            "409": error("The email is taken (field `email`)"),
                            "422": error("A field is invalid")
                        }
                    },
                    "get": {
                        "summary": "Users not deleted, oldest first, a page at a time",
                        "parameters": paging::openapi_parameters(),
                        "responses": {
                            "200": {"description": "A page of users", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UserPage"}}}},
                            "422": error("`limit` or `cursor` is invalid")
                        }
                    }
                },
                "/v1/users/{id}": {
                    "get": {
                        "summary": "A user (a deleted one shows deleted: true)",
                        "parameters": [id],
                        "responses": {"200": user("The user"), "404": error("No such user")}
                    },
                    "patch": {
                        "summary": "Change the profile (publishes user.profile_updated with the fields that changed; nothing if none did)",
                        "parameters": with_id(json!([])),
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UpdateProfile"}}}},
                        "responses": {
                            "200": user("The user as updated"),
                            "404": error("No such user, or deleted"),
                            "422": error("A field is invalid")
                        }
                    },
                    "delete": {
                        "summary": "Delete the account, softly (publishes user.deleted)",
                        "parameters": with_id(json!([
                            {"name": "reason", "in": "query", "required": false, "schema": {"type": "string", "enum": ["user_request", "admin_action", "fraud", "inactivity"], "default": "user_request"}},
                            {"name": "deleted_by", "in": "query", "required": false, "description": "Who deleted it (default: the user)", "schema": {"type": "string"}}
                        ])),
                        "responses": {
                            "200": user("The user, deleted"),
                            "404": error("No such user, or already deleted"),
                            "422": error("`reason` or `deleted_by` is invalid")
                        }
                    }
                },
                "/v1/users/{id}/email": {"post": {
                    "summary": "Change the login email (publishes user.email_changed; nothing if it is the same)",
                    "parameters": with_id(json!([])),
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChangeEmail"}}}},
                    "responses": {
                        "200": user("The user with the new address"),
                        "404": error("No such user, or deleted"),
                        "409": error("The email is taken (field `email`)"),
                        "422": error("The email is invalid")
                    }
                }}
            },
            "schemas": {
                "RegisterUser": {"type": "object", "required": ["email"], "additionalProperties": false, "properties": {
                    "email": {"type": "string", "format": "email"},
                    "display_name": {"type": "string", "minLength": 1, "maxLength": MAX_DISPLAY_NAME},
                    "locale": {"type": "string", "examples": ["en", "pt-BR"]},
                    "referrer_user_id": {"type": "string"}
                }},
                "UpdateProfile": {"type": "object", "additionalProperties": false, "description": "The fields to set; absent ones are left as they are.", "properties": {
                    "display_name": {"type": "string", "minLength": 1, "maxLength": MAX_DISPLAY_NAME},
                    "avatar_url": {"type": "string", "format": "uri", "description": "An http(s) URL"},
                    "bio": {"type": "string", "maxLength": MAX_BIO, "description": "Empty clears it"},
                    "locale": {"type": "string", "examples": ["en", "pt-BR"]}
                }},
                "ChangeEmail": {"type": "object", "required": ["email"], "additionalProperties": false, "properties": {
                    "email": {"type": "string", "format": "email"}
                }},
                "User": {"type": "object", "required": ["id", "email", "created_at", "deleted"], "properties": {
                    "id": {"type": "string"},
                    "email": {"type": "string"},
                    "display_name": {"type": ["string", "null"]},
                    "avatar_url": {"type": ["string", "null"]},
                    "bio": {"type": ["string", "null"]},
                    "locale": {"type": ["string", "null"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "updated_at": {"type": "string", "format": "date-time"},
                    "deleted": {"type": "boolean"}
                }},
                "UserPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/User"}},
                    "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last"}
                }}
            }
        })
    }
}

/// Cursor pagination, shared by every list endpoint (users, messages, wallet ledger).
///
/// Lists are ordered by id (UUIDv7, so by creation time). A page answers
/// `{"items": […], "next_cursor": "…" | null}`; the cursor is opaque to callers (the
/// last id of the page, hex-encoded behind a version tag) and a page is never repeated or
/// skipped while items are added, since the next page starts strictly after that id.
pub(crate) mod paging {
    use std::collections::HashMap;

    use axum::extract::rejection::QueryRejection;
    use axum::extract::Query;
    use axum::http::StatusCode;
    use serde_json::{json, Value};

    use crate::http::ApiError;

    /// Items per page unless `limit` says otherwise.
    pub(crate) const DEFAULT_LIMIT: usize = 50;
    /// The largest `limit`.
    pub(crate) const MAX_LIMIT: usize = 200;
    const TAG: &str = "c1:";

    /// A page asked for: how many items, and the id after which it starts.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(crate) struct PageRequest {
        /// Items on the page.
        pub(crate) limit: usize,
        /// The last id of the previous page.
        pub(crate) after: Option<String>,
    }

    impl PageRequest {
        /// `limit + 1`, as an SQL parameter: one more row than the page says whether
        /// another page follows.
        pub(crate) fn fetch(&self) -> i64 {
            i64::try_from(self.limit + 1).unwrap_or(i64::MAX)
        }
    }

    /// The query string as a map, a malformed one answered in the API's error shape.
    pub(crate) fn query(
        query: Result<Query<HashMap<String, String>>, QueryRejection>,
        known: &[&str],
    ) -> Result<HashMap<String, String>, ApiError> {
        let Query(query) = query.map_err(|e| ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_query",
            message: format!("the query string cannot be read: {}", e.body_text()),
            field: Some("query".to_owned()),
        })?;
        if let Some(unknown) = query.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ApiError::invalid(
                unknown.clone(),
                format!(
                    "unknown query parameter `{unknown}`; this endpoint takes {}",
                    known.join(", ")
                ),
            ));
        }
        Ok(query)
    }

    /// `limit` and `cursor` from the query.
    pub(crate) fn request(query: &HashMap<String, String>) -> Result<PageRequest, ApiError> {
        let limit = match query.get("limit") {
            None => DEFAULT_LIMIT,
            Some(text) => match text.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid(
                        "limit",
                        format!(
                        "`{text}` is not a page size: give a whole number from 1 to {MAX_LIMIT}"
                    ),
                    ))
                }
            },
        };
        let after = match query.get("cursor").map(|c| c.trim()) {
            None | Some("") => None,
            Some(cursor) => Some(decode(cursor).ok_or_else(|| {
                ApiError::invalid(
                    "cursor",
                    "not a cursor this API gave out: pass the `next_cursor` of the previous page unchanged",
                )
            })?),
        };
        Ok(PageRequest { limit, after })
    }

    /// The cursor of a page ending at `last_id`.
    pub(crate) fn encode(last_id: &str) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(2 * (TAG.len() + last_id.len()));
        for byte in TAG.bytes().chain(last_id.bytes()) {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }

    /// The id a cursor ends at.
    pub(crate) fn decode(cursor: &str) -> Option<String> {
        if !cursor.len().is_multiple_of(2) || cursor.len() > 1024 {
            return None;
        }
        let bytes = (0..cursor.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let text = String::from_utf8(bytes).ok()?;
        let id = text.strip_prefix(TAG)?;
        (!id.is_empty()).then(|| id.to_owned())
    }

    /// The page's answer from up to `limit + 1` items (each with its id): the first `limit`
    /// and, if there were more, the cursor of the next page.
    pub(crate) fn answer(page: &PageRequest, mut items: Vec<(String, Value)>) -> Value {
        let more = items.len() > page.limit;
        items.truncate(page.limit);
        let next = match (more, items.last()) {
            (true, Some((id, _))) => Value::String(encode(id)),
            _ => Value::Null,
        };
        json!({
            "items": items.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            "next_cursor": next,
        })
    }

    /// The OpenAPI parameters `limit` and `cursor`.
    pub(crate) fn openapi_parameters() -> Value {
        openapi_parameters_after(Vec::new())
    }

    /// `first`, then the OpenAPI parameters `limit` and `cursor`.
    pub(crate) fn openapi_parameters_after(mut first: Vec<Value>) -> Value {
        first.extend([
            json!({"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}}),
            json!({"name": "cursor", "in": "query", "required": false, "description": "The `next_cursor` of the previous page", "schema": {"type": "string"}}),
        ]);
        Value::Array(first)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn cursors_round_trip_and_garbage_is_refused() {
            let id = "01936f2a-1b3c-7d4e-8f5a-6b7c8d9e0f1a";
            assert_eq!(decode(&encode(id)).as_deref(), Some(id));
            for bad in ["", "zz", "abc", "6331", &encode("")[..], "ff00ff00"] {
                assert_eq!(decode(bad), None, "{bad}");
            }
        }

        #[test]
        fn limits_outside_the_range_name_the_field() {
            for bad in ["0", "201", "-1", "ten"] {
                let query = HashMap::from([("limit".to_owned(), bad.to_owned())]);
                assert_eq!(request(&query).unwrap_err().field.as_deref(), Some("limit"));
            }
            let query = HashMap::from([("cursor".to_owned(), "nope".to_owned())]);
            assert_eq!(
                request(&query).unwrap_err().field.as_deref(),
                Some("cursor")
            );
            assert_eq!(
                request(&HashMap::new()).unwrap(),
                PageRequest {
                    limit: DEFAULT_LIMIT,
                    after: None
                }
            );
        }
    }
}

/// Request bodies whose every 4xx names the field: [`JsonBody`](crate::http::JsonBody)'s answers (a missing or
/// unknown member, malformed JSON, the wrong media type), and also a member of the wrong
/// type (`"amount": "ten"`), which serde reports without its name.
pub(crate) mod body {
    use axum::extract::{FromRequest, Request};
    use axum::http::StatusCode;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    use crate::http::{ApiError, JsonBody};

    /// The body as `T`; see the [module](self).
    pub(crate) struct Body<T>(pub(crate) T);

    impl<T, S> FromRequest<S> for Body<T>
    where
        T: DeserializeOwned,
        S: Send + Sync,
    {
        type Rejection = ApiError;

        async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
            let JsonBody(value) = JsonBody::<Value>::from_request(req, state).await?;
            typed(value).map(Body)
        }
    }

    /// `value` as `T`, or a 422 naming the member at fault.
    pub(crate) fn typed<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
        let error = match serde_json::from_value::<T>(value.clone()) {
            Ok(typed) => return Ok(typed),
            Err(error) => error.to_string(),
        };
        // serde names the field of a missing or unknown member ("missing field `email`").
        let named = error
            .split('`')
            .nth(1)
            .filter(|_| error.contains("field `"))
            .map(str::to_owned);
        let field = named.or_else(|| match &value {
            // Otherwise the culprit is the member whose removal cures the error (or turns
            // it into its own absence).
            Value::Object(members) => members
                .keys()
                .find(|key| {
                    let mut without = members.clone();
                    without.remove(*key);
                    match serde_json::from_value::<T>(Value::Object(without)) {
                        Ok(_) => true,
                        Err(e) => e.to_string().contains(&format!("missing field `{key}`")),
                    }
                })
                .cloned(),
            _ => Some("body".to_owned()),
        });
        Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_body",
            message: format!("the body is not the expected JSON: {error}"),
            field,
        })
    }

    #[cfg(test)]
    mod tests {
        use serde::Deserialize;
        use serde_json::json;

        use super::typed;

        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Sample {
            name: String,
            #[serde(default)]
            count: Option<u32>,
        }

        #[test]
        fn the_member_at_fault_is_named() {
            for (body, field) in [
                (json!({"count": 1}), "name"),
                (json!({"name": "a", "extra": 1}), "extra"),
                (json!({"name": 5}), "name"),
                (json!({"name": "a", "count": -1}), "count"),
                (json!({"name": "a", "count": "x"}), "count"),
                (json!([1]), "body"),
            ] {
                let error = typed::<Sample>(body.clone()).unwrap_err();
                assert_eq!(error.field.as_deref(), Some(field), "{body}: {error:?}");
            }
            assert!(typed::<Sample>(json!({"name": "a"})).is_ok());
        }
    }
}

/// `POST /v1/users`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RegisterUser {
    email: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    referrer_user_id: Option<String>,
}

/// `PATCH /v1/users/{id}`: the fields to set; absent (or null) ones stay as they are.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct UpdateProfile {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    avatar_url: Option<String>,
    #[serde(default)]
    bio: Option<String>,
    #[serde(default)]
    locale: Option<String>,
}

/// `POST /v1/users/{id}/email`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ChangeEmail {
    email: String,
}

/// `DELETE /v1/users/{id}`'s query, as hashed for the idempotency key.
#[derive(Debug, Serialize)]
struct DeleteUser {
    reason: DeletionReason,
    deleted_by: Option<String>,
}

/// A plausible email: one `@`, a dot in the domain, no spaces.
pub(crate) fn check_email(field: &str, email: &str) -> Result<String, ApiError> {
    let email = email.trim();
    let valid = email.len() <= 254
        && !email.contains(char::is_whitespace)
        && !email.contains(char::is_control)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if valid {
        Ok(email.to_ascii_lowercase())
    } else {
        Err(ApiError::invalid(
            field,
            format!("`{email}` is not an email address such as ada@example.com"),
        ))
    }
}

/// A BCP 47 tag as the event contracts take it: `^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$`.
fn check_locale(locale: &str) -> Result<(), ApiError> {
    let mut parts = locale.split('-');
    let language = parts.next().unwrap_or_default();
    let ok = locale.len() <= 35
        && (2..=3).contains(&language.len())
        && language.chars().all(|c| c.is_ascii_alphabetic())
        && parts
            .all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "locale",
            format!("`{locale}` is not a BCP 47 language tag such as en or pt-BR"),
        ))
    }
}

/// 1 to [`MAX_DISPLAY_NAME`] characters, not blank; returned trimmed.
fn check_display_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_DISPLAY_NAME || name.contains(char::is_control)
    {
        return Err(ApiError::invalid(
            "display_name",
            format!("a display name has 1 to {MAX_DISPLAY_NAME} characters, not all blank, no control characters"),
        ));
    }
    Ok(name.to_owned())
}

/// An absolute `http(s)` URL of URI characters only (what `format: uri` accepts).
pub(crate) fn check_url(field: &str, url: &str) -> Result<String, ApiError> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let uri_char = |c: char| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c);
    let valid = url.len() <= MAX_URL
        && rest.is_some_and(|r| {
            let host = r.split(['/', '?', '#']).next().unwrap_or_default();
            !host.is_empty() && r.chars().all(uri_char)
        });
    if valid {
        Ok(url.to_owned())
    } else {
        Err(ApiError::invalid(
            field,
            format!("`{url}` is not an http(s) URL such as https://cdn.example.com/a.png (at most {MAX_URL} characters, spaces percent-encoded)"),
        ))
    }
}

/// A 404 naming the path parameter that names what does not exist.
pub(crate) fn missing(field: &str, what: impl Into<String>) -> ApiError {
    ApiError {
        field: Some(field.to_owned()),
        ..ApiError::not_found(what)
    }
}

/// A 409 naming the field.
fn conflict_on(field: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        field: Some(field.to_owned()),
        ..ApiError::conflict(message)
    }
}

/// The email is taken: said as a 409 naming `email`, whether our check or the unique index
/// (a concurrent request) found it.
fn email_taken(email: &str) -> ApiError {
    conflict_on(
        "email",
        format!("the email {email} belongs to another account"),
    )
}

fn unique_email(email: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| {
        if e.is_unique_violation() {
            email_taken(email)
        } else {
            ApiError::store(e)
        }
    }
}

async fn register(
    State(api): State<Api>,
    meta: RequestMeta,
    Body(input): Body<RegisterUser>,
) -> Result<Response, ApiError> {
    let email = check_email("email", &input.email)?;
    let display_name = input
        .display_name
        .as_deref()
        .map(check_display_name)
        .transpose()?;
    if let Some(locale) = &input.locale {
        check_locale(locale)?;
    }
    if input.referrer_user_id.as_deref().is_some_and(str::is_empty) {
        return Err(ApiError::invalid(
            "referrer_user_id",
            "give the inviting user's id, or leave the field out",
        ));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let locale = input.locale.clone();
    let referrer = input.referrer_user_id.clone();
    api.transact(&meta, "POST /v1/users", &input, move |tx| {
        Box::pin(async move {
            let now = Utc::now();
            let taken = tx
                .db()
                .query_opt(
                    "SELECT id FROM users WHERE email = $1 AND deleted_at IS NULL",
                    params![email.as_str()],
                )
                .await?;
            if taken.is_some() {
                return Err(email_taken(&email));
            }
            if let Some(referrer) = &referrer {
                let exists = tx
                    .db()
                    .query_opt(
                        "SELECT id FROM users WHERE id = $1 AND deleted_at IS NULL",
                        params![referrer.as_str()],
                    )
                    .await?;
                if exists.is_none() {
                    return Err(ApiError::invalid(
                        "referrer_user_id",
                        format!("there is no user {referrer}"),
                    ));
                }
            }
            tx.db()
                .execute(
                    "INSERT INTO users (id, email, display_name, locale, referrer_user_id, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    params![
                        id.as_str(),
                        email.as_str(),
                        display_name.as_deref(),
                        locale.as_deref(),
                        referrer.as_deref(),
                        now
                    ],
                )
                .await
                .map_err(unique_email(&email))?;
            tx.publish(
                &UserRegistered {
                    user_id: id.clone(),
                    email: email.clone(),
                    registered_at: now,
                    referrer_user_id: referrer.clone(),
                    display_name: display_name.clone(),
                    locale: locale.clone(),
                },
                SOURCE,
            )
            .await?;
            Ok((
                StatusCode::CREATED,
                json!({
                    "id": id, "email": email, "display_name": display_name,
                    "avatar_url": null, "bio": null, "locale": locale,
                    "created_at": now, "updated_at": now, "deleted": false
                }),
            ))
        })
    })
    .await
}

fn user_json(row: &Row) -> Result<Value, ApiError> {
    let deleted: Option<DateTime<Utc>> = row.get("deleted_at")?;
    Ok(json!({
        "id": row.get::<String>("id")?,
        "email": row.get::<String>("email")?,
        "display_name": row.get::<Option<String>>("display_name")?,
        "avatar_url": row.get::<Option<String>>("avatar_url")?,
        "bio": row.get::<Option<String>>("bio")?,
        "locale": row.get::<Option<String>>("locale")?,
        "created_at": row.get::<DateTime<Utc>>("created_at")?,
        "updated_at": row.get::<DateTime<Utc>>("updated_at")?,
        "deleted": deleted.is_some(),
    }))
}

async fn user(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let row = api
        .store
        .query_opt(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
            params![id.as_str()],
        )
        .await?
        .ok_or_else(|| missing("id", format!("user {id}")))?;
    Ok(Json(user_json(&row)?))
}

/// `GET /v1/users?limit=&cursor=`: users not deleted, by id (oldest first).
async fn list(
    State(api): State<Api>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = paging::query(query, &["limit", "cursor"])?;
    let page = paging::request(&query)?;
    let rows = api
        .store
        .query(
            &format!(
                "SELECT {USER_COLUMNS} FROM users
                 WHERE deleted_at IS NULL AND id > $1 ORDER BY id LIMIT $2"
            ),
            params![page.after.as_deref().unwrap_or(""), page.fetch()],
        )
        .await?;
    let items = rows
        .iter()
        .map(|row| Ok((row.get::<String>("id")?, user_json(row)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(paging::answer(&page, items)))
}

/// The user `id`, locked for the rest of the transaction; 404 if there is none or it was
/// deleted.
async fn live_user(tx: &mut crate::http::Tx<'_>, id: &str) -> Result<Row, ApiError> {
    let row = tx
        .db()
        .query_opt(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1 FOR UPDATE"),
            params![id],
        )
        .await?;
    match row {
        Some(row) if row.get::<Option<DateTime<Utc>>>("deleted_at")?.is_none() => Ok(row),
        Some(_) => Err(missing("id", format!("user {id} (it was deleted)"))),
        None => Err(missing("id", format!("user {id}"))),
    }
}

async fn reread(tx: &mut crate::http::Tx<'_>, id: &str) -> Result<Value, ApiError> {
    let row = tx
        .db()
        .query_one(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
            params![id],
        )
        .await?;
    user_json(&row)
}

/// `PATCH /v1/users/{id}`.
async fn update(
    State(api): State<Api>,
    Path(id): Path<String>,
    meta: RequestMeta,
    Body(input): Body<UpdateProfile>,
) -> Result<Response, ApiError> {
    let display_name = input
        .display_name
        .as_deref()
        .map(check_display_name)
        .transpose()?;
    let avatar_url = input
        .avatar_url
        .as_deref()
        .map(|u| check_url("avatar_url", u))
        .transpose()?;
    let bio = input.bio.as_deref().map(str::trim).map(str::to_owned);
    if let Some(bio) = &bio {
        if bio.chars().count() > MAX_BIO {
            return Err(ApiError::invalid(
                "bio",
                format!("a biography has at most {MAX_BIO} characters (empty clears it)"),
            ));
        }
    }
    if let Some(locale) = &input.locale {
        check_locale(locale)?;
    }
    let locale = input.locale.clone();
    let scope = format!("PATCH /v1/users/{id}");
    api.transact(&meta, &scope, &input, move |tx| {
        Box::pin(async move {
            let row = live_user(tx, &id).await?;
            // Only what differs from the stored profile changed; a field set to its own
            // value is not announced.
            let mut changed = Vec::new();
            let mut event = UserProfileUpdated {
                user_id: id.clone(),
                changed_fields: Vec::new(),
                display_name: None,
                avatar_url: None,
                bio: None,
                locale: None,
                updated_at: Utc::now(),
            };
            let mut consider = |field: ProfileField,
                                column: &str,
                                new: &Option<String>,
                                slot: &mut Option<String>|
             -> Result<(), ApiError> {
                if let Some(new) = new {
                    let old: Option<String> = row.get(column)?;
                    if old.as_deref().unwrap_or_default() != new.as_str() {
                        changed.push(field);
                        *slot = Some(new.clone());
                    }
                }
                Ok(())
            };
            consider(
                ProfileField::DisplayName,
                "display_name",
                &display_name,
                &mut event.display_name,
            )?;
            consider(
                ProfileField::AvatarUrl,
                "avatar_url",
                &avatar_url,
                &mut event.avatar_url,
            )?;
            consider(ProfileField::Bio, "bio", &bio, &mut event.bio)?;
            consider(ProfileField::Locale, "locale", &locale, &mut event.locale)?;
            if changed.is_empty() {
                return Ok((StatusCode::OK, user_json(&row)?));
            }
            event.changed_fields = changed;
            tx.db()
                .execute(
                    "UPDATE users SET
                         display_name = COALESCE($2, display_name),
                         avatar_url = COALESCE($3, avatar_url),
                         bio = COALESCE($4, bio),
                         locale = COALESCE($5, locale),
                         updated_at = $6
                     WHERE id = $1",
                    params![
                        id.as_str(),
                        event.display_name.as_deref(),
                        event.avatar_url.as_deref(),
                        event.bio.as_deref(),
                        event.locale.as_deref(),
                        event.updated_at
                    ],
                )
                .await?;
            tx.publish(&event, SOURCE).await?;
            Ok((StatusCode::OK, reread(tx, &id).await?))
        })
    })
    .await
}

/// `POST /v1/users/{id}/email`.
async fn change_email(
    State(api): State<Api>,
    Path(id): Path<String>,
    meta: RequestMeta,
    Body(input): Body<ChangeEmail>,
) -> Result<Response, ApiError> {
    let email = check_email("email", &input.email)?;
    let scope = format!("POST /v1/users/{id}/email");
    api.transact(&meta, &scope, &input, move |tx| {
        Box::pin(async move {
            let row = live_user(tx, &id).await?;
            let old: String = row.get("email")?;
            if old == email {
                return Ok((StatusCode::OK, user_json(&row)?));
            }
            let taken = tx
                .db()
                .query_opt(
                    "SELECT id FROM users WHERE email = $1 AND deleted_at IS NULL AND id <> $2",
                    params![email.as_str(), id.as_str()],
                )
                .await?;
            if taken.is_some() {
                return Err(email_taken(&email));
            }
            let now = Utc::now();
            tx.db()
                .execute(
                    "UPDATE users SET email = $2, updated_at = $3 WHERE id = $1",
                    params![id.as_str(), email.as_str(), now],
                )
                .await
                .map_err(unique_email(&email))?;
            tx.publish(
                &UserEmailChanged {
                    user_id: id.clone(),
                    old_email: old,
                    new_email: email.clone(),
                    // Nothing verifies addresses yet: the change takes effect unverified.
                    verified: false,
                    changed_at: now,
                },
                SOURCE,
            )
            .await?;
            Ok((StatusCode::OK, reread(tx, &id).await?))
        })
    })
    .await
}

/// `DELETE /v1/users/{id}?reason=&deleted_by=`.
async fn delete(
    State(api): State<Api>,
    Path(id): Path<String>,
    meta: RequestMeta,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = paging::query(query, &["reason", "deleted_by"])?;
    let reason = match query.get("reason").map(|r| r.trim()) {
        None | Some("") => DeletionReason::UserRequest,
        Some(text) => serde_json::from_value(Value::String(text.to_owned())).map_err(|_| {
            ApiError::invalid(
                "reason",
                format!(
                    "`{text}` is not a reason: user_request, admin_action, fraud or inactivity"
                ),
            )
        })?,
    };
    let deleted_by = match query.get("deleted_by").map(|d| d.trim()) {
        None | Some("") => None,
        Some(who) if who.len() > 128 || who.contains(char::is_control) => {
            return Err(ApiError::invalid(
                "deleted_by",
                "give the id of whoever deletes the account (at most 128 characters)",
            ))
        }
        Some(who) => Some(who.to_owned()),
    };
    let request = DeleteUser {
        reason,
        deleted_by: deleted_by.clone(),
    };
    let scope = format!("DELETE /v1/users/{id}");
    api.transact(&meta, &scope, &request, move |tx| {
        Box::pin(async move {
            live_user(tx, &id).await?;
            let now = Utc::now();
            tx.db()
                .execute(
                    "UPDATE users SET deleted_at = $2, updated_at = $2 WHERE id = $1",
                    params![id.as_str(), now],
                )
                .await?;
            tx.publish(
                &UserDeleted {
                    user_id: id.clone(),
                    reason,
                    deleted_by: deleted_by.unwrap_or_else(|| id.clone()),
                    deleted_at: now,
                    purge_after: Some(now + chrono::Duration::days(PURGE_AFTER_DAYS)),
                },
                SOURCE,
            )
            .await?;
            Ok((StatusCode::OK, reread(tx, &id).await?))
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_follow_the_contract_pattern() {
        for ok in ["en", "pt-BR", "zh-Hant-TW", "ast"] {
            assert!(check_locale(ok).is_ok(), "{ok}");
        }
        for bad in ["", "e", "en US", "english", "en-", "en-x", "12"] {
            assert!(check_locale(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_must_be_absolute_http() {
        assert!(check_url("u", "https://cdn.example.com/a.png?s=1").is_ok());
        for bad in [
            "cdn.example.com/a.png",
            "https://",
            "https://a b",
            "ftp://x.y/z",
            "https://x/\"y\"",
        ] {
            assert!(check_url("u", bad).is_err(), "{bad}");
        }
    }
}
