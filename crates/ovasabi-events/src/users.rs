//! Events of the `users` service, on topic `user.events`. Their subject is the user id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ADA, BO};
use crate::{at, DomainEvent};

const TOPIC: &str = "user.events";

/// `user.registered` v1: a person created an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRegisteredV1 {
    /// The new user's id.
    pub user_id: String,
    /// The address the user signed up with (not yet verified).
    pub email: String,
    /// When the account was created.
    pub registered_at: DateTime<Utc>,
    /// The user whose invitation brought this one, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub referrer_user_id: Option<String>,
}

/// `user.registered` v2: v1 plus an optional `display_name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRegisteredV2 {
    /// The new user's id.
    pub user_id: String,
    /// The address the user signed up with (not yet verified).
    pub email: String,
    /// When the account was created.
    pub registered_at: DateTime<Utc>,
    /// The user whose invitation brought this one, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub referrer_user_id: Option<String>,
    /// The name shown to other users, if given at sign-up.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub display_name: Option<String>,
}

/// `user.registered` v3 (latest): v2 plus an optional `locale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRegistered {
    /// The new user's id.
    pub user_id: String,
    /// The address the user signed up with (not yet verified).
    pub email: String,
    /// When the account was created.
    pub registered_at: DateTime<Utc>,
    /// The user whose invitation brought this one, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub referrer_user_id: Option<String>,
    /// The name shown to other users, if given at sign-up.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub display_name: Option<String>,
    /// The preferred language as a BCP 47 tag (`en`, `pt-BR`), if given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub locale: Option<String>,
}

/// Upcast v1 → v2: a v1 event has no display name.
impl From<UserRegisteredV1> for UserRegisteredV2 {
    fn from(v1: UserRegisteredV1) -> Self {
        UserRegisteredV2 {
            user_id: v1.user_id,
            email: v1.email,
            registered_at: v1.registered_at,
            referrer_user_id: v1.referrer_user_id,
            display_name: None,
        }
    }
}

/// Upcast v2 → v3: a v2 event has no locale.
impl From<UserRegisteredV2> for UserRegistered {
    fn from(v2: UserRegisteredV2) -> Self {
        UserRegistered {
            user_id: v2.user_id,
            email: v2.email,
            registered_at: v2.registered_at,
            referrer_user_id: v2.referrer_user_id,
            display_name: v2.display_name,
            locale: None,
        }
    }
}

/// Upcast v1 → v3, through v2.
impl From<UserRegisteredV1> for UserRegistered {
    fn from(v1: UserRegisteredV1) -> Self {
        UserRegisteredV2::from(v1).into()
    }
}

impl DomainEvent for UserRegisteredV1 {
    const TYPE: &'static str = "user.registered";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.user_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![
            UserRegisteredV1 {
                user_id: ADA.to_owned(),
                email: "ada@example.com".to_owned(),
                registered_at: at("2025-11-27T10:15:00Z"),
                referrer_user_id: None,
            },
            UserRegisteredV1 {
                user_id: BO.to_owned(),
                email: "bo@example.org".to_owned(),
                registered_at: at("2025-11-27T11:02:31Z"),
                referrer_user_id: Some(ADA.to_owned()),
            },
        ]
    }
}

impl DomainEvent for UserRegisteredV2 {
    const TYPE: &'static str = "user.registered";
    const VERSION: u32 = 2;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.user_id.clone())
    }

    fn examples() -> Vec<Self> {
        let mut examples: Vec<Self> = UserRegisteredV1::examples()
            .into_iter()
            .map(Into::into)
            .collect();
        examples[1].display_name = Some("Bo".to_owned());
        examples
    }
}

impl DomainEvent for UserRegistered {
    const TYPE: &'static str = "user.registered";
    const VERSION: u32 = 3;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.user_id.clone())
    }

    fn examples() -> Vec<Self> {
        let mut examples: Vec<Self> = UserRegisteredV2::examples()
            .into_iter()
            .map(Into::into)
            .collect();
        examples[1].locale = Some("pt-BR".to_owned());
        examples
    }
}

/// A field of a user's public profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileField {
    /// The name shown to other users.
    DisplayName,
    /// The avatar image.
    AvatarUrl,
    /// The biography.
    Bio,
    /// The preferred language.
    Locale,
}

/// `user.profile_updated` v1: a user changed their public profile; carries the new values of
/// the fields that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserProfileUpdated {
    /// The user whose profile changed.
    pub user_id: String,
    /// The fields this update changed.
    pub changed_fields: Vec<ProfileField>,
    /// The new display name, if it changed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub display_name: Option<String>,
    /// The new avatar image URL, if it changed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub avatar_url: Option<String>,
    /// The new biography, if it changed; empty when cleared.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bio: Option<String>,
    /// The new preferred language (BCP 47), if it changed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub locale: Option<String>,
    /// When the profile was changed.
    pub updated_at: DateTime<Utc>,
}

impl DomainEvent for UserProfileUpdated {
    const TYPE: &'static str = "user.profile_updated";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.user_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![
            UserProfileUpdated {
                user_id: ADA.to_owned(),
                changed_fields: vec![ProfileField::DisplayName, ProfileField::AvatarUrl],
                display_name: Some("Ada L.".to_owned()),
                avatar_url: Some("https://cdn.ovasabi.example/avatars/ada.png".to_owned()),
                bio: None,
                locale: None,
                updated_at: at("2025-11-28T08:30:00Z"),
            },
            UserProfileUpdated {
                user_id: BO.to_owned(),
                changed_fields: vec![ProfileField::Bio, ProfileField::Locale],
                display_name: None,
                avatar_url: None,
                bio: Some(String::new()),
                locale: Some("en-GB".to_owned()),
                updated_at: at("2025-11-28T09:00:00Z"),
            },
        ]
    }
}

/// `user.email_changed` v1: a user's login email address changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEmailChanged {
    /// The user whose address changed.
    pub user_id: String,
    /// The previous address (notified of the change).
    pub old_email: String,
    /// The new address.
    pub new_email: String,
    /// Whether the new address was verified before the change took effect.
    pub verified: bool,
    /// When the change took effect.
    pub changed_at: DateTime<Utc>,
}

impl DomainEvent for UserEmailChanged {
    const TYPE: &'static str = "user.email_changed";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.user_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![UserEmailChanged {
            user_id: ADA.to_owned(),
            old_email: "ada@example.com".to_owned(),
            new_email: "ada@lovelace.example".to_owned(),
            verified: true,
            changed_at: at("2025-11-29T14:00:00Z"),
        }]
    }
}

/// Why an account was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionReason {
    /// The user asked.
    UserRequest,
    /// An administrator deleted it.
    AdminAction,
    /// Fraud was confirmed.
    Fraud,
    /// The account was inactive too long.
    Inactivity,
}

/// `user.deleted` v1: an account was soft-deleted (hidden now, personal data erased at
/// `purge_after`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDeleted {
    /// The deleted user.
    pub user_id: String,
    /// Why the account was deleted.
    pub reason: DeletionReason,
    /// Who deleted it: the user themself or an administrator's id.
    pub deleted_by: String,
    /// When the account was soft-deleted.
    pub deleted_at: DateTime<Utc>,
    /// When personal data will be erased for good, if scheduled.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub purge_after: Option<DateTime<Utc>>,
}

impl DomainEvent for UserDeleted {
    const TYPE: &'static str = "user.deleted";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = TOPIC;

    fn subject(&self) -> Option<String> {
        Some(self.user_id.clone())
    }

    fn examples() -> Vec<Self> {
        vec![UserDeleted {
            user_id: BO.to_owned(),
            reason: DeletionReason::UserRequest,
            deleted_by: BO.to_owned(),
            deleted_at: at("2025-12-01T12:00:00Z"),
            purge_after: Some(at("2025-12-31T12:00:00Z")),
        }]
    }
}
