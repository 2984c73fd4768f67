//! Events of the `content` service, on topic `content.events`. Their subject is the content
//! id (for comments and reactions too, so a content's thread stays in order).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ADA, BO, COMMENT, MODERATOR, POST};
use crate::{at, DomainEvent};

const TOPIC: &str = "content.events";

/// What kind of content a post is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentKind {
    /// A short post.
    Post,
    /// A long-form article with a title.
    Article,
    /// An image with a caption.
    Image,
    /// A video with a caption.
    Video,
}

/// Who can see a piece of content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Everyone.
    Public,
    /// The author's followers.
    Followers,
    /// The author only.
    Private,
}

/// `content.posted` v1: a user published a piece of content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPosted {
    /// The new content's id.
    pub content_id: String,
    /// The user who posted it.
    pub author_id: String,
    /// What kind of content it is.
    pub kind: ContentKind,
    /// The title, for kinds that have one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub title: Option<String>,
    /// The text (Markdown), possibly empty for media posts.
    pub body: String,
    /// Attached media URLs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub media_urls: Option<Vec<String>>,
    /// Topic tags, lower-case.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tags: Option<Vec<String>>,
    /// Who can see it.
    pub visibility: Visibility,
    /// When it was published.
    pub posted_at: DateTime<Utc>,
}

impl DomainEvent for ContentPosted {
    const TYPE: &'static str = "content.posted";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.content_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![
            ContentPosted {
                content_id: POST.to_owned(),
                author_id: ADA.to_owned(),
                kind: ContentKind::Article,
                title: Some("Notes on the Analytical Engine".to_owned()),
                body: "It weaves algebraic patterns.".to_owned(),
                media_urls: Some(vec![
                    "https://cdn.ovasabi.example/media/engine.jpg".to_owned()
                ]),
                tags: Some(vec!["history".to_owned(), "computing".to_owned()]),
                visibility: Visibility::Public,
                posted_at: at("2025-11-27T12:00:00Z"),
            },
            ContentPosted {
                content_id: "01JDQ6B9K2M5P8R1T4W7Y0B3D6".to_owned(),
                author_id: BO.to_owned(),
                kind: ContentKind::Image,
                title: None,
                body: String::new(),
                media_urls: Some(vec![
                    "https://cdn.ovasabi.example/media/sunset.png".to_owned()
                ]),
                tags: None,
                visibility: Visibility::Followers,
                posted_at: at("2025-11-27T18:45:10Z"),
            },
        ]
    }
}

/// A field of a piece of content that an edit can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentField {
    /// The title.
    Title,
    /// The text.
    Body,
    /// The attached media.
    MediaUrls,
    /// The tags.
    Tags,
    /// Who can see it.
    Visibility,
}

/// `content.updated` v1: a piece of content was edited; carries the new values of the fields
/// that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentUpdated {
    /// The content that changed.
    pub content_id: String,
    /// The content's author.
    pub author_id: String,
    /// Who made the change (the author or an editor).
    pub editor_id: String,
    /// The fields this edit changed.
    pub changed_fields: Vec<ContentField>,
    /// The new title, if it changed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub title: Option<String>,
    /// The new text, if it changed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub body: Option<String>,
    /// The new media list, if it changed (empty when all media were removed).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub media_urls: Option<Vec<String>>,
    /// The new tags, if they changed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tags: Option<Vec<String>>,
    /// The new visibility, if it changed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub visibility: Option<Visibility>,
    /// The content's revision after this edit (the first post is 1).
    pub revision: u32,
    /// When the edit was saved.
    pub updated_at: DateTime<Utc>,
}

impl DomainEvent for ContentUpdated {
    const TYPE: &'static str = "content.updated";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.content_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![
            ContentUpdated {
                content_id: POST.to_owned(),
                author_id: ADA.to_owned(),
                editor_id: ADA.to_owned(),
                changed_fields: vec![ContentField::Body, ContentField::Tags],
                title: None,
                body: Some(
                    "It weaves algebraic patterns, just as the Jacquard loom weaves flowers."
                        .to_owned(),
                ),
                media_urls: None,
                tags: Some(vec![
                    "history".to_owned(),
                    "computing".to_owned(),
                    "looms".to_owned(),
                ]),
                visibility: None,
                revision: 2,
                updated_at: at("2025-11-27T13:10:00Z"),
            },
            ContentUpdated {
                content_id: POST.to_owned(),
                author_id: ADA.to_owned(),
                editor_id: MODERATOR.to_owned(),
                changed_fields: vec![
                    ContentField::Title,
                    ContentField::MediaUrls,
                    ContentField::Visibility,
                ],
                title: Some("Notes on the Engine".to_owned()),
                body: None,
                media_urls: Some(Vec::new()),
                tags: None,
                visibility: Some(Visibility::Followers),
                revision: 3,
                updated_at: at("2025-11-27T14:00:00Z"),
            },
        ]
    }
}

/// Why a piece of content was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentDeletionReason {
    /// The author deleted it.
    AuthorRequest,
    /// A moderator removed it.
    Moderation,
    /// The author's account was deleted.
    AccountDeleted,
}

/// `content.deleted` v1: a piece of content was removed and is no longer shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentDeleted {
    /// The removed content.
    pub content_id: String,
    /// The content's author.
    pub author_id: String,
    /// Who removed it: the author, a moderator or the system.
    pub deleted_by: String,
    /// Why it was removed.
    pub reason: ContentDeletionReason,
    /// When it was removed.
    pub deleted_at: DateTime<Utc>,
}

impl DomainEvent for ContentDeleted {
    const TYPE: &'static str = "content.deleted";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.content_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![ContentDeleted {
            content_id: POST.to_owned(),
            author_id: ADA.to_owned(),
            deleted_by: MODERATOR.to_owned(),
            reason: ContentDeletionReason::Moderation,
            deleted_at: at("2025-11-30T09:00:00Z"),
        }]
    }
}

/// `comment.added` v1: a user commented on a piece of content, or replied to a comment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommentAdded {
    /// The new comment's id.
    pub comment_id: String,
    /// The content commented on.
    pub content_id: String,
    /// The user who commented.
    pub author_id: String,
    /// The comment this one replies to, if it is a reply.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub parent_comment_id: Option<String>,
    /// The comment's text.
    pub body: String,
    /// When the comment was posted.
    pub added_at: DateTime<Utc>,
}

impl DomainEvent for CommentAdded {
    const TYPE: &'static str = "comment.added";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.content_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![
            CommentAdded {
                comment_id: COMMENT.to_owned(),
                content_id: POST.to_owned(),
                author_id: BO.to_owned(),
                parent_comment_id: None,
                body: "Lovely read!".to_owned(),
                added_at: at("2025-11-27T12:30:00Z"),
            },
            CommentAdded {
                comment_id: "01JDQ6C9P2R5T8W1Y4B7E0H3K6".to_owned(),
                content_id: POST.to_owned(),
                author_id: ADA.to_owned(),
                parent_comment_id: Some(COMMENT.to_owned()),
                body: "Thank you.".to_owned(),
                added_at: at("2025-11-27T12:41:00Z"),
            },
        ]
    }
}

/// A reaction a user can leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReactionKind {
    /// Like (thumbs up).
    Like,
    /// Love (heart).
    Love,
    /// Laughter.
    Laugh,
    /// Surprise.
    Wow,
    /// Sadness.
    Sad,
    /// Anger.
    Angry,
}

/// `reaction.added` v1: a user reacted to a piece of content, or to one of its comments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReactionAdded {
    /// The reaction's id.
    pub reaction_id: String,
    /// The content reacted to (or the content of the comment reacted to).
    pub content_id: String,
    /// The comment reacted to, when the reaction is on a comment.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comment_id: Option<String>,
    /// The user who reacted.
    pub user_id: String,
    /// The reaction.
    pub reaction: ReactionKind,
    /// When the user reacted.
    pub added_at: DateTime<Utc>,
}

impl DomainEvent for ReactionAdded {
    const TYPE: &'static str = "reaction.added";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.content_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![
            ReactionAdded {
                reaction_id: "01JDQ6D8N1Q4S7V0X3Z6C9F2J5".to_owned(),
                content_id: POST.to_owned(),
                comment_id: None,
                user_id: BO.to_owned(),
                reaction: ReactionKind::Love,
                added_at: at("2025-11-27T12:31:00Z"),
            },
            ReactionAdded {
                reaction_id: "01JDQ6DB3E6H9K2N5Q8S1V4X7Z".to_owned(),
                content_id: POST.to_owned(),
                comment_id: Some(COMMENT.to_owned()),
                user_id: ADA.to_owned(),
                reaction: ReactionKind::Like,
                added_at: at("2025-11-27T12:40:00Z"),
            },
        ]
    }
}
