//! `content`: posts, edits, deletions, comments and reactions.
//!
//! Owns tables `content_items`, `content_comments` and `content_reactions`. Every change and
//! its event commit in one transaction ([`Api::transact`]), once per `Idempotency-Key`
//! (scoped by method and path); the outbox relay publishes the events on `content.events`
//! with the content id as subject and partition key — comments and reactions too — so one
//! piece of content's thread is published in the order it committed.
//!
//! | request | event | answer |
//! | --- | --- | --- |
//! | `POST /v1/content` `{author_id, kind, title?, body, media_urls?, tags?, visibility?}` | `content.posted` | 201, the content |
//! | `PATCH /v1/content/{id}` `{editor_id?, title?, body?, media_urls?, tags?, visibility?}` | `content.updated` with the fields that changed (none changed: 200, no event) | 200, the content |
//! | `DELETE /v1/content/{id}` `{deleted_by?, reason?}` (body optional) | `content.deleted` | 200, the content |
//! | `POST /v1/content/{id}/comments` `{author_id, body, parent_comment_id?}` | `comment.added` | 201, the comment |
//! | `POST /v1/content/{id}/reactions` `{user_id, kind}` | `reaction.added` (first time only) | 201 new, 200 the existing one |
//! | `GET /v1/content/{id}` | — | the content with `comment_count` and `reactions` counts |
//! | `GET /v1/content?author_id=&limit=&cursor=` | — | newest first, `{items, next_cursor}` |
//! | `GET /v1/content/{id}/comments?limit=&cursor=` | — | oldest first, `{items, next_cursor}` |
//!
//! # Rules
//!
//! - Kinds: a `post` and an `article` have a non-empty body, an `article` a title; an
//!   `image` and a `video` at least one of `media_urls` (http(s) URLs). Titles have 1 to
//!   [`MAX_TITLE`] characters (one can be changed, not removed), bodies up to [`MAX_BODY`],
//!   comments 1 to [`MAX_COMMENT`]; tags are lower-cased, `[a-z0-9_-]{1,40}`, no repeats.
//!   An edit must leave the content valid for its kind. Visibility defaults to `public`.
//! - **One reaction per user and kind per content.** A repeat is not an error: it answers
//!   200 with the reaction that exists and publishes nothing (so a client retrying without
//!   an `Idempotency-Key` does no harm); the first answers 201 and publishes
//!   `reaction.added`. The unique index decides, so two racing requests publish once.
//! - **Deleted content** (soft delete: the row stays) is gone for readers: `GET` answers
//!   404 `content_deleted` (naming when and why), and it leaves the author's list. Editing,
//!   commenting, reacting or deleting it again answers 409 `content_deleted`.
//! - **Moderated content**: the `content` consumer reads `moderation.events` (last write
//!   wins per content): `content.flagged` hides a piece of content (`GET` answers 404
//!   `content_hidden` naming the rule, lists leave it out), `moderation.decided` approve
//!   shows it again, remove hides it for good. Table `content_moderation`.
//! - A reply (`parent_comment_id`) must name a comment of the same content.
//! - There is no authentication yet: `author_id`, `editor_id`, `user_id` are taken as
//!   given (ids of the users service, which this service does not read), and visibility
//!   is recorded and published, not enforced on reads.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use ovasabi_core::Ordering;
use ovasabi_events::moderation::{ContentFlagged, Decision, ModerationDecided, ModerationTarget};
use ovasabi_events::DomainEvent as _;
use ovasabi_middleware::{HandlerError, Message};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ovasabi_events::content::{
    CommentAdded, ContentDeleted, ContentDeletionReason, ContentField, ContentKind, ContentPosted,
    ContentUpdated, ReactionAdded, ReactionKind, Visibility,
};
use ovasabi_store::inbox::Order as InboxOrder;
use ovasabi_store::{params, Migration, MigrationSet, Row, Transaction, Value as SqlValue};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::commerce::{
    check_id, check_text, conflict, enum_from, enum_text, now, query_params, Body,
};
use crate::http::{Api, ApiError, RequestMeta};
use crate::reactor::{Reaction, Reactor};
use crate::runtime::{ConsumerSpec, Context, Service, ServiceError};
use crate::users::{check_url, paging};
use crate::wallet::{payload, store_failure};

/// Where this service's events come from.
pub const SOURCE: &str = "/ovasabi/content";
/// The longest title, in characters.
pub const MAX_TITLE: usize = 300;
/// The longest body, in characters.
pub const MAX_BODY: usize = 100_000;
/// The longest comment, in characters.
pub const MAX_COMMENT: usize = 10_000;
/// Most media per content.
pub const MAX_MEDIA: usize = 20;
/// Most tags per content.
pub const MAX_TAGS: usize = 30;

const MIGRATIONS: MigrationSet = MigrationSet::new(
    "content",
    &[
        Migration::new(
            1,
            "content, comments, reactions",
            "CREATE TABLE content_items (
            id TEXT PRIMARY KEY,
            author_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            title TEXT,
            body TEXT NOT NULL,
            media_urls TEXT NOT NULL,
            tags TEXT NOT NULL,
            visibility TEXT NOT NULL,
            revision BIGINT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            deleted_at TIMESTAMPTZ,
            deleted_by TEXT,
            deletion_reason TEXT
        );
        CREATE INDEX content_items_author ON content_items (author_id, id);
        CREATE TABLE content_comments (
            id TEXT PRIMARY KEY,
            content_id TEXT NOT NULL,
            author_id TEXT NOT NULL,
            parent_comment_id TEXT,
            body TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX content_comments_content ON content_comments (content_id, id);
        CREATE TABLE content_reactions (
            id TEXT PRIMARY KEY,
            content_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            UNIQUE (content_id, user_id, kind)
        );",
        ),
        Migration::new(
            2,
            "content_moderation",
            "CREATE TABLE content_moderation (
            content_id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            reason TEXT,
            decided_at TIMESTAMPTZ NOT NULL
        );",
        ),
    ],
);

/// The consumer group reading moderation decisions, and its inbox name.
pub const GROUP: &str = "content";

/// The `content` service.
#[derive(Clone, Debug, Default)]
pub struct ContentService;

impl Service for ContentService {
    fn name(&self) -> &'static str {
        "content"
    }

    fn about(&self) -> &'static str {
        "posts, edits, deletions, comments and reactions"
    }

    fn migrations(&self) -> MigrationSet {
        MIGRATIONS
    }

    fn consumers(&self, ctx: &Context) -> Result<Vec<ConsumerSpec>, ServiceError> {
        let topics = vec![ContentFlagged::TOPIC.to_owned()];
        // The latest decision about a piece of content is the one that counts.
        Ok(vec![ctx.consumer(
            "content",
            GROUP,
            &topics,
            Ordering::PerKey,
            Arc::new(Reactor::new(
                GROUP,
                InboxOrder::LastWriteWins,
                ctx.store.clone(),
                Moderated,
            )),
        )?])
    }

    fn routes(&self, ctx: &Context) -> Option<Router> {
        Some(
            Router::new()
                .route("/v1/content", post(create).get(list))
                .route("/v1/content/{id}", get(content).patch(edit).delete(delete))
                .route("/v1/content/{id}/comments", post(comment).get(comments))
                .route("/v1/content/{id}/reactions", post(react))
                .with_state(ctx.api.clone()),
        )
    }

    fn openapi(&self) -> Value {
        openapi()
    }
}

// ---------------------------------------------------------------------------------------
// What is stored, and how it reads
// ---------------------------------------------------------------------------------------

const CONTENT_COLUMNS: &str = "id, author_id, kind, title, body, media_urls, tags, visibility, \
    revision, created_at, updated_at, deleted_at, deleted_by, deletion_reason";

/// A row of `content_items`.
struct Content {
    id: String,
    author_id: String,
    kind: ContentKind,
    title: Option<String>,
    body: String,
    media_urls: Vec<String>,
    tags: Vec<String>,
    visibility: Visibility,
    revision: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    deleted_by: Option<String>,
    deletion_reason: Option<String>,
}

fn string_list(row: &Row, column: &str) -> Result<Vec<String>, ApiError> {
    let value: Value = row.get(column)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}

impl Content {
    fn from_row(row: &Row) -> Result<Content, ApiError> {
        Ok(Content {
            id: row.get("id")?,
            author_id: row.get("author_id")?,
            kind: enum_from("content kind", &row.get::<String>("kind")?)?,
            title: row.get("title")?,
            body: row.get("body")?,
            media_urls: string_list(row, "media_urls")?,
            tags: string_list(row, "tags")?,
            visibility: enum_from("visibility", &row.get::<String>("visibility")?)?,
            revision: row.get("revision")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
            deleted_at: row.get("deleted_at")?,
            deleted_by: row.get("deleted_by")?,
            deletion_reason: row.get("deletion_reason")?,
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "author_id": self.author_id,
            "kind": self.kind,
            "title": self.title,
            "body": self.body,
            "media_urls": self.media_urls,
            "tags": self.tags,
            "visibility": self.visibility,
            "revision": self.revision,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "deleted": self.deleted_at.is_some(),
            "deleted_at": self.deleted_at,
        })
    }

    /// Why it is gone, for messages: `deleted at … (moderation)`.
    fn gone(&self) -> String {
        format!(
            "content {} was deleted at {} ({}, by {})",
            self.id,
            self.deleted_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            self.deletion_reason.as_deref().unwrap_or("unknown reason"),
            self.deleted_by.as_deref().unwrap_or("unknown")
        )
    }

    /// 409 `content_deleted` for a change to deleted content.
    fn live(self, action: &str) -> Result<Content, ApiError> {
        match self.deleted_at {
            None => Ok(self),
            Some(_) => Err(conflict(
                "content_deleted",
                format!("{}: it cannot be {action}", self.gone()),
            )),
        }
    }
}

/// The content `id`, locked for the rest of the transaction (`FOR UPDATE`, or `FOR SHARE`
/// for additions that only need it to stay), deleted or not; 404 if there is none.
async fn lock_content(db: &mut Transaction, id: &str, lock: &str) -> Result<Content, ApiError> {
    let row = db
        .query_opt(
            &format!("SELECT {CONTENT_COLUMNS} FROM content_items WHERE id = $1 {lock}"),
            params![id],
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("content {id}")))?;
    Content::from_row(&row)
}

fn comment_json(row: &Row) -> Result<Value, ApiError> {
    Ok(json!({
        "id": row.get::<String>("id")?,
        "content_id": row.get::<String>("content_id")?,
        "author_id": row.get::<String>("author_id")?,
        "parent_comment_id": row.get::<Option<String>>("parent_comment_id")?,
        "body": row.get::<String>("body")?,
        "created_at": row.get::<DateTime<Utc>>("created_at")?,
    }))
}

fn reaction_json(row: &Row) -> Result<Value, ApiError> {
    Ok(json!({
        "id": row.get::<String>("id")?,
        "content_id": row.get::<String>("content_id")?,
        "user_id": row.get::<String>("user_id")?,
        "kind": row.get::<String>("kind")?,
        "created_at": row.get::<DateTime<Utc>>("created_at")?,
    }))
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

fn check_title(title: &str) -> Result<String, ApiError> {
    check_text("title", title, 1, MAX_TITLE)
}

fn check_body(body: &str) -> Result<String, ApiError> {
    check_text("body", body, 0, MAX_BODY)
}

fn check_media(urls: &[String]) -> Result<Vec<String>, ApiError> {
    if urls.len() > MAX_MEDIA {
        return Err(ApiError::invalid(
            "media_urls",
            format!("at most {MAX_MEDIA} media, not {}", urls.len()),
        ));
    }
    urls.iter()
        .enumerate()
        .map(|(i, url)| check_url(&format!("media_urls[{i}]"), url))
        .collect()
}

fn check_tags(tags: &[String]) -> Result<Vec<String>, ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::invalid(
            "tags",
            format!("at most {MAX_TAGS} tags, not {}", tags.len()),
        ));
    }
    let mut checked: Vec<String> = Vec::with_capacity(tags.len());
    for (i, tag) in tags.iter().enumerate() {
        let tag = tag.trim().to_lowercase();
        let valid = (1..=40).contains(&tag.len())
            && tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid {
            return Err(ApiError::invalid(
                format!("tags[{i}]"),
                format!("`{tag}` is not a tag: 1 to 40 of a-z, 0-9, `_` and `-`"),
            ));
        }
        if checked.contains(&tag) {
            return Err(ApiError::invalid(
                format!("tags[{i}]"),
                format!("`{tag}` is given twice"),
            ));
        }
        checked.push(tag);
    }
    Ok(checked)
}

/// What each kind needs: a body for posts and articles, a title for articles, media for
/// images and videos.
fn check_kind(
    kind: ContentKind,
    title: Option<&str>,
    body: &str,
    media: &[String],
) -> Result<(), ApiError> {
    let a_kind = match kind {
        ContentKind::Post => "a post",
        ContentKind::Article => "an article",
        ContentKind::Image => "an image",
        ContentKind::Video => "a video",
    };
    match kind {
        ContentKind::Article if title.is_none() => {
            Err(ApiError::invalid("title", "an article has a title"))
        }
        ContentKind::Post | ContentKind::Article if body.is_empty() => Err(ApiError::invalid(
            "body",
            format!("{a_kind} has a body (1 to {MAX_BODY} characters)"),
        )),
        ContentKind::Image | ContentKind::Video if media.is_empty() => Err(ApiError::invalid(
            "media_urls",
            format!("{a_kind} has at least one media URL"),
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// Requests and handlers
// ---------------------------------------------------------------------------------------

/// `POST /v1/content`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PostContent {
    author_id: String,
    kind: ContentKind,
    #[serde(default)]
    title: Option<String>,
    body: String,
    #[serde(default)]
    media_urls: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    visibility: Option<Visibility>,
}

/// `PATCH /v1/content/{id}`: the fields to change.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct EditContent {
    #[serde(default)]
    editor_id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    media_urls: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    visibility: Option<Visibility>,
}

/// `DELETE /v1/content/{id}`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct DeleteContent {
    #[serde(default)]
    deleted_by: Option<String>,
    #[serde(default)]
    reason: Option<ContentDeletionReason>,
}

/// `POST /v1/content/{id}/comments`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AddComment {
    author_id: String,
    body: String,
    #[serde(default)]
    parent_comment_id: Option<String>,
}

/// `POST /v1/content/{id}/reactions`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AddReaction {
    user_id: String,
    kind: ReactionKind,
}

/// `POST /v1/content`.
async fn create(
    State(api): State<Api>,
    meta: RequestMeta,
    Body(input): Body<PostContent>,
) -> Result<Response, ApiError> {
    let author_id = check_id("author_id", &input.author_id)?;
    let title = input.title.as_deref().map(check_title).transpose()?;
    let body = check_body(&input.body)?;
    let media_urls = check_media(input.media_urls.as_deref().unwrap_or_default())?;
    let tags = check_tags(input.tags.as_deref().unwrap_or_default())?;
    check_kind(input.kind, title.as_deref(), &body, &media_urls)?;
    let kind = input.kind;
    let visibility = input.visibility.unwrap_or(Visibility::Public);
    let id = uuid::Uuid::now_v7().to_string();
    api.transact(&meta, "POST /v1/content", &input, move |tx| {
        Box::pin(async move {
            let now = now();
            tx.db()
                .execute(
                    "INSERT INTO content_items (id, author_id, kind, title, body, media_urls, tags,
                         visibility, revision, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $9)",
                    params![
                        id.as_str(),
                        author_id.as_str(),
                        enum_text(&kind),
                        title.as_deref(),
                        body.as_str(),
                        json!(media_urls),
                        json!(tags),
                        enum_text(&visibility),
                        now
                    ],
                )
                .await?;
            tx.publish(
                &ContentPosted {
                    content_id: id.clone(),
                    author_id,
                    kind,
                    title,
                    body,
                    media_urls: (!media_urls.is_empty()).then_some(media_urls),
                    tags: (!tags.is_empty()).then_some(tags),
                    visibility,
                    posted_at: now,
                },
                SOURCE,
            )
            .await?;
            let content = lock_content(tx.db(), &id, "").await?;
            Ok((StatusCode::CREATED, content.to_json()))
        })
    })
    .await
}

/// `GET /v1/content/{id}`: with `comment_count` and `reactions` (count per kind).
async fn content(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let content = readable(&api, &id).await?;
    let comments = api
        .store
        .query_one(
            "SELECT COUNT(*) AS n FROM content_comments WHERE content_id = $1",
            params![id.as_str()],
        )
        .await?
        .get::<i64>("n")?;
    let mut reactions = serde_json::Map::new();
    for row in api
        .store
        .query(
            "SELECT kind, COUNT(*) AS n FROM content_reactions WHERE content_id = $1
             GROUP BY kind ORDER BY kind",
            params![id.as_str()],
        )
        .await?
    {
        reactions.insert(row.get::<String>("kind")?, json!(row.get::<i64>("n")?));
    }
    let mut body = content.to_json();
    body["comment_count"] = json!(comments);
    body["reactions"] = Value::Object(reactions);
    Ok(Json(body))
}

/// Hides flagged content and shows it again once approved.
struct Moderated;

#[async_trait]
impl Reaction for Moderated {
    /// (content id, state, reason).
    type Plan = (String, &'static str, Option<String>);

    fn plan(&self, msg: &Message) -> Result<Option<Self::Plan>, HandlerError> {
        let event = msg.event();
        Ok(match event.ty.as_str() {
            ContentFlagged::TYPE => {
                let flagged: ContentFlagged = payload(event)?;
                (flagged.target_kind == ModerationTarget::Content).then_some((
                    flagged.target_id,
                    "flagged",
                    flagged.note,
                ))
            }
            ModerationDecided::TYPE => {
                let decided: ModerationDecided = payload(event)?;
                let state = match decided.decision {
                    Decision::Approve | Decision::Warn => "approved",
                    Decision::Remove => "removed",
                };
                (decided.target_kind == ModerationTarget::Content).then_some((
                    decided.target_id,
                    state,
                    decided.reason,
                ))
            }
            _ => None,
        })
    }

    async fn apply(
        &self,
        tx: &mut Transaction,
        _msg: &Message,
        (content_id, state, reason): Self::Plan,
    ) -> Result<bool, HandlerError> {
        tx.execute(
            "INSERT INTO content_moderation (content_id, state, reason, decided_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (content_id) DO UPDATE
             SET state = excluded.state, reason = excluded.reason, decided_at = excluded.decided_at",
            params![content_id.as_str(), state, reason, Utc::now()],
        )
        .await
        .map_err(store_failure("content"))?;
        Ok(false)
    }
}

/// Content hidden by moderation, for `WHERE … AND id NOT IN (…)`.
const HIDDEN: &str =
    "SELECT content_id FROM content_moderation WHERE state IN ('flagged', 'removed')";

/// The content `id` for reading: 404 if there is none, 404 `content_deleted` if deleted,
/// 404 `content_hidden` while moderation hides it.
async fn readable(api: &Api, id: &str) -> Result<Content, ApiError> {
    let hidden = api
        .store
        .query_opt(
            "SELECT state, reason FROM content_moderation WHERE content_id = $1
             AND state IN ('flagged', 'removed')",
            params![id],
        )
        .await?;
    if let Some(row) = hidden {
        let state: String = row.get("state")?;
        let reason: Option<String> = row.get("reason")?;
        return Err(ApiError::with(
            StatusCode::NOT_FOUND,
            "content_hidden",
            format!(
                "content {id} is hidden: moderation {} it ({})",
                if state == "removed" {
                    "removed"
                } else {
                    "flagged"
                },
                reason.unwrap_or_else(|| "no reason given".to_owned())
            ),
        ));
    }
    let row = api
        .store
        .query_opt(
            &format!("SELECT {CONTENT_COLUMNS} FROM content_items WHERE id = $1"),
            params![id],
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("content {id}")))?;
    let content = Content::from_row(&row)?;
    if content.deleted_at.is_some() {
        return Err(ApiError::with(
            StatusCode::NOT_FOUND,
            "content_deleted",
            content.gone(),
        ));
    }
    Ok(content)
}

/// `GET /v1/content?author_id=&limit=&cursor=`: content not deleted, newest first.
async fn list(
    State(api): State<Api>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = query_params(query, &["author_id", "limit", "cursor"])?;
    let page = paging::request(&query)?;
    let mut sql = format!(
        "SELECT {CONTENT_COLUMNS} FROM content_items WHERE deleted_at IS NULL AND id NOT IN ({HIDDEN})"
    );
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(author) = query.get("author_id") {
        args.push(check_id("author_id", author)?.into());
        sql.push_str(&format!(" AND author_id = ${}", args.len()));
    }
    if let Some(after) = &page.after {
        args.push(after.into());
        sql.push_str(&format!(" AND id < ${}", args.len()));
    }
    args.push(page.fetch().into());
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    let items = api
        .store
        .query(&sql, &args)
        .await?
        .iter()
        .map(|row| {
            let content = Content::from_row(row)?;
            Ok((content.id.clone(), content.to_json()))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(paging::answer(&page, items)))
}

/// `PATCH /v1/content/{id}`.
async fn edit(
    State(api): State<Api>,
    Path(id): Path<String>,
    meta: RequestMeta,
    Body(input): Body<EditContent>,
) -> Result<Response, ApiError> {
    let editor_id = input
        .editor_id
        .as_deref()
        .map(|e| check_id("editor_id", e))
        .transpose()?;
    let title = input.title.as_deref().map(check_title).transpose()?;
    let body = input.body.as_deref().map(check_body).transpose()?;
    let media_urls = input.media_urls.as_deref().map(check_media).transpose()?;
    let tags = input.tags.as_deref().map(check_tags).transpose()?;
    let visibility = input.visibility;
    let scope = format!("PATCH /v1/content/{id}");
    api.transact(&meta, &scope, &input, move |tx| {
        Box::pin(async move {
            let now = now();
            let old = lock_content(tx.db(), &id, "FOR UPDATE")
                .await?
                .live("edited")?;
            let mut changed = Vec::new();
            let title = title.filter(|t| old.title.as_ref() != Some(t));
            if title.is_some() {
                changed.push(ContentField::Title);
            }
            let body = body.filter(|b| *b != old.body);
            if body.is_some() {
                changed.push(ContentField::Body);
            }
            let media_urls = media_urls.filter(|m| *m != old.media_urls);
            if media_urls.is_some() {
                changed.push(ContentField::MediaUrls);
            }
            let tags = tags.filter(|t| *t != old.tags);
            if tags.is_some() {
                changed.push(ContentField::Tags);
            }
            let visibility = visibility.filter(|v| *v != old.visibility);
            if visibility.is_some() {
                changed.push(ContentField::Visibility);
            }
            if changed.is_empty() {
                return Ok((StatusCode::OK, old.to_json()));
            }
            let new_title = title.clone().or_else(|| old.title.clone());
            let new_body = body.clone().unwrap_or_else(|| old.body.clone());
            let new_media = media_urls.clone().unwrap_or_else(|| old.media_urls.clone());
            check_kind(old.kind, new_title.as_deref(), &new_body, &new_media)?;
            let revision = old.revision + 1;
            tx.db()
                .execute(
                    "UPDATE content_items SET title = $2, body = $3, media_urls = $4, tags = $5,
                         visibility = $6, revision = $7, updated_at = $8
                     WHERE id = $1",
                    params![
                        id.as_str(),
                        new_title.as_deref(),
                        new_body.as_str(),
                        json!(new_media),
                        json!(tags.clone().unwrap_or_else(|| old.tags.clone())),
                        enum_text(&visibility.unwrap_or(old.visibility)),
                        revision,
                        now
                    ],
                )
                .await?;
            tx.publish(
                &ContentUpdated {
                    content_id: id.clone(),
                    editor_id: editor_id.unwrap_or_else(|| old.author_id.clone()),
                    author_id: old.author_id,
                    changed_fields: changed,
                    title,
                    body,
                    media_urls,
                    tags,
                    visibility,
                    revision: u32::try_from(revision).unwrap_or(u32::MAX),
                    updated_at: now,
                },
                SOURCE,
            )
            .await?;
            let content = lock_content(tx.db(), &id, "").await?;
            Ok((StatusCode::OK, content.to_json()))
        })
    })
    .await
}

/// `DELETE /v1/content/{id}`: by the author for `author_request` unless said otherwise.
async fn delete(
    State(api): State<Api>,
    Path(id): Path<String>,
    meta: RequestMeta,
    Body(input): Body<DeleteContent>,
) -> Result<Response, ApiError> {
    let deleted_by = input
        .deleted_by
        .as_deref()
        .map(|d| check_id("deleted_by", d))
        .transpose()?;
    let reason = input.reason.unwrap_or(ContentDeletionReason::AuthorRequest);
    let scope = format!("DELETE /v1/content/{id}");
    api.transact(&meta, &scope, &input, move |tx| {
        Box::pin(async move {
            let now = now();
            let old = lock_content(tx.db(), &id, "FOR UPDATE")
                .await?
                .live("deleted again")?;
            let deleted_by = deleted_by.unwrap_or_else(|| old.author_id.clone());
            tx.db()
                .execute(
                    "UPDATE content_items SET deleted_at = $2, deleted_by = $3,
                         deletion_reason = $4, updated_at = $2
                     WHERE id = $1",
                    params![id.as_str(), now, deleted_by.as_str(), enum_text(&reason)],
                )
                .await?;
            tx.publish(
                &ContentDeleted {
                    content_id: id.clone(),
                    author_id: old.author_id,
                    deleted_by,
                    reason,
                    deleted_at: now,
                },
                SOURCE,
            )
            .await?;
            let content = lock_content(tx.db(), &id, "").await?;
            Ok((StatusCode::OK, content.to_json()))
        })
    })
    .await
}

/// `POST /v1/content/{id}/comments`.
async fn comment(
    State(api): State<Api>,
    Path(id): Path<String>,
    meta: RequestMeta,
    Body(input): Body<AddComment>,
) -> Result<Response, ApiError> {
    let author_id = check_id("author_id", &input.author_id)?;
    let body = check_text("body", &input.body, 1, MAX_COMMENT)?;
    let parent = input
        .parent_comment_id
        .as_deref()
        .map(|p| check_id("parent_comment_id", p))
        .transpose()?;
    let scope = format!("POST /v1/content/{id}/comments");
    let comment_id = uuid::Uuid::now_v7().to_string();
    api.transact(&meta, &scope, &input, move |tx| {
        Box::pin(async move {
            let now = now();
            lock_content(tx.db(), &id, "FOR SHARE")
                .await?
                .live("commented on")?;
            if let Some(parent) = &parent {
                let found = tx
                    .db()
                    .query_opt(
                        "SELECT id FROM content_comments WHERE id = $1 AND content_id = $2",
                        params![parent.as_str(), id.as_str()],
                    )
                    .await?;
                if found.is_none() {
                    return Err(ApiError::invalid(
                        "parent_comment_id",
                        format!("content {id} has no comment {parent} to reply to"),
                    ));
                }
            }
            tx.db()
                .execute(
                    "INSERT INTO content_comments (id, content_id, author_id, parent_comment_id,
                         body, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    params![
                        comment_id.as_str(),
                        id.as_str(),
                        author_id.as_str(),
                        parent.as_deref(),
                        body.as_str(),
                        now
                    ],
                )
                .await?;
            tx.publish(
                &CommentAdded {
                    comment_id: comment_id.clone(),
                    content_id: id.clone(),
                    author_id,
                    parent_comment_id: parent,
                    body,
                    added_at: now,
                },
                SOURCE,
            )
            .await?;
            let row = tx
                .db()
                .query_one(
                    "SELECT * FROM content_comments WHERE id = $1",
                    params![comment_id.as_str()],
                )
                .await?;
            Ok((StatusCode::CREATED, comment_json(&row)?))
        })
    })
    .await
}

/// `GET /v1/content/{id}/comments?limit=&cursor=`: oldest first.
async fn comments(
    State(api): State<Api>,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = query_params(query, &["limit", "cursor"])?;
    let page = paging::request(&query)?;
    readable(&api, &id).await?;
    let rows = api
        .store
        .query(
            "SELECT * FROM content_comments WHERE content_id = $1 AND id > $2
             ORDER BY id LIMIT $3",
            params![
                id.as_str(),
                page.after.as_deref().unwrap_or(""),
                page.fetch()
            ],
        )
        .await?;
    let items = rows
        .iter()
        .map(|row| Ok((row.get::<String>("id")?, comment_json(row)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(paging::answer(&page, items)))
}

/// `POST /v1/content/{id}/reactions`: 201 and `reaction.added` the first time, 200 with the
/// existing reaction (and no event) after.
async fn react(
    State(api): State<Api>,
    Path(id): Path<String>,
    meta: RequestMeta,
    Body(input): Body<AddReaction>,
) -> Result<Response, ApiError> {
    let user_id = check_id("user_id", &input.user_id)?;
    let kind = input.kind;
    let scope = format!("POST /v1/content/{id}/reactions");
    let reaction_id = uuid::Uuid::now_v7().to_string();
    api.transact(&meta, &scope, &input, move |tx| {
        Box::pin(async move {
            let now = now();
            lock_content(tx.db(), &id, "FOR SHARE")
                .await?
                .live("reacted to")?;
            let inserted = tx
                .db()
                .execute(
                    "INSERT INTO content_reactions (id, content_id, user_id, kind, created_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (content_id, user_id, kind) DO NOTHING",
                    params![
                        reaction_id.as_str(),
                        id.as_str(),
                        user_id.as_str(),
                        enum_text(&kind),
                        now
                    ],
                )
                .await?;
            if inserted == 1 {
                tx.publish(
                    &ReactionAdded {
                        reaction_id,
                        content_id: id.clone(),
                        comment_id: None,
                        user_id: user_id.clone(),
                        reaction: kind,
                        added_at: now,
                    },
                    SOURCE,
                )
                .await?;
            }
            let row = tx
                .db()
                .query_one(
                    "SELECT * FROM content_reactions
                     WHERE content_id = $1 AND user_id = $2 AND kind = $3",
                    params![id.as_str(), user_id.as_str(), enum_text(&kind)],
                )
                .await?;
            let status = if inserted == 1 {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, reaction_json(&row)?))
        })
    })
    .await
}

// ---------------------------------------------------------------------------------------
// OpenAPI
// ---------------------------------------------------------------------------------------

fn openapi() -> Value {
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let schema = |name: &str| json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}});
    let ok = |description: &str, name: &str| json!({"description": description, "content": schema(name)});
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let idem = json!({"$ref": "#/components/parameters/IdempotencyKey"});
    let corr = json!({"$ref": "#/components/parameters/CorrelationId"});
    let page_params = paging::openapi_parameters_after;
    let kinds = json!(["post", "article", "image", "video"]);
    let visibilities = json!(["public", "followers", "private"]);
    let tags = json!({"type": "array", "maxItems": MAX_TAGS, "uniqueItems": true, "items": {"type": "string", "pattern": "^[a-z0-9_-]{1,40}$"}});
    let media = json!({"type": "array", "maxItems": MAX_MEDIA, "items": {"type": "string", "format": "uri"}});
    json!({
        "paths": {
            "/v1/content": {
                "post": {
                    "summary": "Post content (publishes content.posted)",
                    "parameters": [idem, corr],
                    "requestBody": {"required": true, "content": schema("PostContent")},
                    "responses": {"201": ok("Posted", "Content"), "422": error("A field is invalid (named in `field`)")}
                },
                "get": {
                    "summary": "Content not deleted, newest first, optionally of one author",
                    "parameters": page_params(vec![json!({"name": "author_id", "in": "query", "required": false, "schema": {"type": "string"}})]),
                    "responses": {"200": ok("A page", "ContentPage"), "422": error("`author_id`, `limit` or `cursor` is invalid")}
                }
            },
            "/v1/content/{id}": {
                "get": {
                    "summary": "A piece of content, with its comment count and reaction counts",
                    "parameters": [id],
                    "responses": {"200": ok("The content", "Content"), "404": error("No such content, or it was deleted (`content_deleted`)")}
                },
                "patch": {
                    "summary": "Edit (publishes content.updated with the changed fields; nothing changed: no event)",
                    "parameters": [id, idem, corr],
                    "requestBody": {"required": true, "content": schema("EditContent")},
                    "responses": {"200": ok("The content", "Content"), "404": error("No such content"), "409": error("The content was deleted (`content_deleted`)"), "422": error("A field is invalid")}
                },
                "delete": {
                    "summary": "Delete (soft; publishes content.deleted)",
                    "parameters": [id, idem, corr],
                    "requestBody": {"required": false, "content": schema("DeleteContent")},
                    "responses": {"200": ok("The deleted content", "Content"), "404": error("No such content"), "409": error("Deleted already (`content_deleted`)"), "422": error("A field is invalid")}
                }
            },
            "/v1/content/{id}/comments": {
                "post": {
                    "summary": "Comment or reply (publishes comment.added)",
                    "parameters": [id, idem, corr],
                    "requestBody": {"required": true, "content": schema("AddComment")},
                    "responses": {"201": ok("The comment", "Comment"), "404": error("No such content"), "409": error("The content was deleted (`content_deleted`)"), "422": error("A field is invalid")}
                },
                "get": {
                    "summary": "Comments, oldest first",
                    "parameters": page_params(vec![id.clone()]),
                    "responses": {"200": ok("A page", "CommentPage"), "404": error("No such content, or it was deleted"), "422": error("`limit` or `cursor` is invalid")}
                }
            },
            "/v1/content/{id}/reactions": {"post": {
                "summary": "React (publishes reaction.added the first time; one reaction per user and kind)",
                "parameters": [id, idem, corr],
                "requestBody": {"required": true, "content": schema("AddReaction")},
                "responses": {"201": ok("Added", "Reaction"), "200": ok("The user had already reacted so; nothing published", "Reaction"), "404": error("No such content"), "409": error("The content was deleted (`content_deleted`)"), "422": error("A field is invalid")}
            }}
        },
        "schemas": {
            "PostContent": {"type": "object", "required": ["author_id", "kind", "body"], "properties": {
                "author_id": {"type": "string"},
                "kind": {"type": "string", "enum": kinds},
                "title": {"type": "string", "maxLength": MAX_TITLE, "description": "Required for articles"},
                "body": {"type": "string", "maxLength": MAX_BODY, "description": "Non-empty for posts and articles"},
                "media_urls": media, "tags": tags,
                "visibility": {"type": "string", "enum": visibilities, "default": "public"}
            }},
            "EditContent": {"type": "object", "properties": {
                "editor_id": {"type": "string", "description": "Default: the author"},
                "title": {"type": "string", "maxLength": MAX_TITLE},
                "body": {"type": "string", "maxLength": MAX_BODY},
                "media_urls": media, "tags": tags,
                "visibility": {"type": "string", "enum": visibilities}
            }},
            "DeleteContent": {"type": "object", "properties": {
                "deleted_by": {"type": "string", "description": "Default: the author"},
                "reason": {"type": "string", "enum": ["author_request", "moderation", "account_deleted"], "default": "author_request"}
            }},
            "AddComment": {"type": "object", "required": ["author_id", "body"], "properties": {
                "author_id": {"type": "string"},
                "body": {"type": "string", "minLength": 1, "maxLength": MAX_COMMENT},
                "parent_comment_id": {"type": "string"}
            }},
            "AddReaction": {"type": "object", "required": ["user_id", "kind"], "properties": {
                "user_id": {"type": "string"},
                "kind": {"type": "string", "enum": ["like", "love", "laugh", "wow", "sad", "angry"]}
            }},
            "Content": {"type": "object", "required": ["id", "author_id", "kind", "body", "visibility", "revision"], "properties": {
                "id": {"type": "string"}, "author_id": {"type": "string"},
                "kind": {"type": "string", "enum": kinds}, "title": {"type": ["string", "null"]},
                "body": {"type": "string"}, "media_urls": media, "tags": tags,
                "visibility": {"type": "string", "enum": visibilities},
                "revision": {"type": "integer", "minimum": 1},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "deleted": {"type": "boolean"},
                "deleted_at": {"type": ["string", "null"], "format": "date-time"},
                "comment_count": {"type": "integer", "description": "Only on GET /v1/content/{id}"},
                "reactions": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "Count per kind; only on GET /v1/content/{id}"}
            }},
            "Comment": {"type": "object", "required": ["id", "content_id", "author_id", "body", "created_at"], "properties": {
                "id": {"type": "string"}, "content_id": {"type": "string"}, "author_id": {"type": "string"},
                "parent_comment_id": {"type": ["string", "null"]}, "body": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"}
            }},
            "Reaction": {"type": "object", "required": ["id", "content_id", "user_id", "kind", "created_at"], "properties": {
                "id": {"type": "string"}, "content_id": {"type": "string"}, "user_id": {"type": "string"},
                "kind": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}
            }},
            "ContentPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Content"}},
                "next_cursor": {"type": ["string", "null"]}
            }},
            "CommentPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Comment"}},
                "next_cursor": {"type": ["string", "null"]}
            }}
        }
    })
}
