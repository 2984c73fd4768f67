//! `users`: accounts and profiles: register, update profile, change email, delete (soft).
//!
//! Owns table `users`. Every change and its event commit in one transaction
//! ([`Api::transact`]); the outbox relay publishes the event on `user.events`.
//!
//! | request | event |
//! | --- | --- |
//! | `POST /v1/users` | `user.registered` |
//! | `GET /v1/users/{id}` | — |

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use ovasabi_events::users::UserRegistered;
use ovasabi_store::{params, Migration, MigrationSet, Row};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{Api, ApiError, JsonBody, RequestMeta};
use crate::runtime::{Context, Service};

/// Where this service's events come from.
pub const SOURCE: &str = "/ovasabi/users";

const MIGRATIONS: MigrationSet = MigrationSet::new(
    "users",
    &[Migration::new(
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
    )],
);

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
                .route("/v1/users", post(register))
                .route("/v1/users/{id}", get(user))
                .with_state(ctx.api.clone()),
        )
    }

    fn openapi(&self) -> Value {
        json!({
            "paths": {
                "/v1/users": {"post": {
                    "summary": "Register a user (publishes user.registered)",
                    "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}, {"$ref": "#/components/parameters/CorrelationId"}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RegisterUser"}}}},
                    "responses": {
                        "201": {"description": "Registered", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/User"}}}},
                        "409": {"description": "The email is taken", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                        "422": {"description": "A field is invalid", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                    }
                }},
                "/v1/users/{id}": {"get": {
                    "summary": "A user",
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "The user", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/User"}}}},
                        "404": {"description": "No such user", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                    }
                }}
            },
            "schemas": {
                "RegisterUser": {"type": "object", "required": ["email"], "properties": {
                    "email": {"type": "string", "format": "email"},
                    "display_name": {"type": "string", "maxLength": 80},
                    "locale": {"type": "string", "examples": ["en", "pt-BR"]},
                    "referrer_user_id": {"type": "string"}
                }},
                "User": {"type": "object", "required": ["id", "email", "created_at"], "properties": {
                    "id": {"type": "string"},
                    "email": {"type": "string"},
                    "display_name": {"type": ["string", "null"]},
                    "locale": {"type": ["string", "null"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "deleted": {"type": "boolean"}
                }}
            }
        })
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

/// A plausible email: one `@`, a dot in the domain, no spaces.
pub(crate) fn check_email(field: &str, email: &str) -> Result<String, ApiError> {
    let email = email.trim();
    let valid = email.len() <= 254
        && !email.contains(char::is_whitespace)
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

fn check_locale(locale: &str) -> Result<(), ApiError> {
    let ok = !locale.is_empty()
        && locale.len() <= 35
        && locale
            .split('-')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "locale",
            format!("`{locale}` is not a BCP 47 language tag such as en or pt-BR"),
        ))
    }
}

async fn register(
    State(api): State<Api>,
    meta: RequestMeta,
    JsonBody(input): JsonBody<RegisterUser>,
) -> Result<axum::response::Response, ApiError> {
    let email = check_email("email", &input.email)?;
    if let Some(name) = &input.display_name {
        if name.trim().is_empty() || name.chars().count() > 80 {
            return Err(ApiError::invalid(
                "display_name",
                "a display name has 1 to 80 characters",
            ));
        }
    }
    if let Some(locale) = &input.locale {
        check_locale(locale)?;
    }
    let id = uuid::Uuid::now_v7().to_string();
    let display_name = input.display_name.clone();
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
                return Err(ApiError::conflict(format!(
                    "the email {email} belongs to another account"
                )));
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
                .await?;
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
                    "locale": locale, "created_at": now, "deleted": false
                }),
            ))
        })
    })
    .await
}

fn user_json(row: &Row) -> Result<Value, ApiError> {
    let deleted: Option<chrono::DateTime<Utc>> = row.get("deleted_at")?;
    Ok(json!({
        "id": row.get::<String>("id")?,
        "email": row.get::<String>("email")?,
        "display_name": row.get::<Option<String>>("display_name")?,
        "locale": row.get::<Option<String>>("locale")?,
        "created_at": row.get::<chrono::DateTime<Utc>>("created_at")?,
        "deleted": deleted.is_some(),
    }))
}

async fn user(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let row = api
        .store
        .query_opt(
            "SELECT id, email, display_name, locale, created_at, deleted_at FROM users WHERE id = $1",
            params![id.as_str()],
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user {id}")))?;
    Ok(Json(user_json(&row)?))
}
