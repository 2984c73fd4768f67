//! Compatibility between versions of an event's payload schema (JSON Schema, draft 2020-12).
//!
//! # The model
//!
//! Every question this module answers is one question asked in a direction: **can a
//! consumer whose code was written against the _reader_ schema read every payload that is
//! valid under the _writer_ schema?** In set terms: is every instance of the writer also an
//! instance of the reader (reader ⊇ writer)? [`can_read`] answers it and lists, as
//! [`Breaking`]s, the places where the answer may be no.
//!
//! A compatibility [`Mode`] (Confluent Schema Registry's, as `schemas/README.md` states)
//! picks the directions and the versions. [`check`] applies it to a candidate version `n`
//! and the earlier versions `1..n-1`:
//!
//! | mode                  | versions checked        | who reads whom                          |
//! |-----------------------|-------------------------|-----------------------------------------|
//! | `BACKWARD`            | the previous one        | `n` reads the previous version's data   |
//! | `BACKWARD_TRANSITIVE` | every earlier one       | `n` reads every earlier version's data  |
//! | `FORWARD`             | the previous one        | the previous version reads `n`'s data   |
//! | `FORWARD_TRANSITIVE`  | every earlier one       | every earlier version reads `n`'s data  |
//! | `FULL`                | the previous one        | both directions                         |
//! | `FULL_TRANSITIVE`     | every earlier one       | both directions                         |
//! | `NONE`                | none                    | nothing is checked                      |
//!
//! [`Direction::Backward`] is "the candidate reads the earlier version's data",
//! [`Direction::Forward`] is "the earlier version reads the candidate's data".
//!
//! # How two schemas are compared
//!
//! Deciding inclusion between two JSON Schemas exactly is impractical; the checker is
//! structural and, with the exceptions listed under "Choices and limits", **conservative**:
//! when it cannot prove that the reader accepts what the writer may send it reports a
//! break. Each schema (after following `$ref`s and merging `allOf`) is seen as one
//! conjunction of constraints; the reader's constraints are then compared, keyword by
//! keyword, with the writer's:
//!
//! - **Types** (`type`, a name or an array of names, taken as a set; no `type` means any
//!   type). Every type the writer may send must be accepted by the reader. `integer` is a
//!   subset of `number`: `integer` → `number` widens (fine for the reader that widens),
//!   `number` → `integer` narrows. A writer with `enum`/`const` may only send the types of
//!   its values. Rules [`Rule::TypeNarrowed`] (the sets overlap) and
//!   [`Rule::TypeChanged`] (they do not).
//! - **Values** (`enum`, `const`). When the reader lists values, every value the writer may
//!   send must be among them: [`Rule::EnumValueRemoved`] / [`Rule::ConstChanged`] when the
//!   writer lists values the reader lacks, [`Rule::EnumAdded`] / [`Rule::ConstAdded`] when
//!   the writer is not restricted to a list at all. A writer typed only `boolean`/`null` is
//!   a finite list too. Values are compared as JSON (`1` equals `1.0`).
//! - **Numbers and strings** (`minimum`, `exclusiveMinimum`, `maximum`,
//!   `exclusiveMaximum`, `multipleOf`, `minLength`, `maxLength`, `pattern`, `format`). The
//!   writer's bounds must lie within the reader's: a minimum raised, a maximum lowered, a
//!   `multipleOf` that the writer's does not divide, a `pattern` or `format` the writer does
//!   not declare identically are [`Rule::ConstraintTightened`]; loosened ones are fine. When
//!   the writer lists its values each one is checked against the reader's bounds instead.
//!   `pattern` and `format` are compared as text: the checker has no regular-expression
//!   engine, so a reader `pattern` the writer does not declare word for word is a break
//!   even when the writer's listed values happen to match it.
//! - **Objects** (`properties`, `required`, `additionalProperties`, `minProperties`,
//!   `maxProperties`):
//!   - a property the reader requires and the writer does not is [`Rule::RequiredAdded`];
//!   - a property the writer declares is checked against the reader's schema for it: the
//!     reader's own declaration, or else the reader's `additionalProperties`. If that is
//!     `false` (closed content) the property is [`Rule::PropertyRemovedClosedContent`]; if
//!     it is a schema the writer's property must satisfy it; if it is absent or `true` the
//!     property is fine;
//!   - a property the reader declares and the writer does not: if the writer is closed
//!     (`additionalProperties: false`) the writer never sends it, so it is fine; if the
//!     writer's `additionalProperties` is a schema, that schema must satisfy the reader's
//!     declaration; if the writer is open (absent or `true`) it is fine — see
//!     "Open content" below;
//!   - properties neither side declares: if the writer may send them and the reader's
//!     `additionalProperties` is `false`, that is [`Rule::AdditionalPropertiesClosed`]; a
//!     schema-valued `additionalProperties` on the reader is compared with the writer's
//!     (field `*`);
//!   - properties are compared recursively, giving field paths such as
//!     `shipping.address.zip`.
//! - **Arrays** (`items`, `prefixItems`, `minItems`, `maxItems`, `uniqueItems`; the
//!   pre-2020 array form of `items` with `additionalItems` is read as `prefixItems` with
//!   `items`). Each tuple position and the remaining items are compared recursively (fields
//!   `items[0]`, `items[]`, `order.items[].sku`); positions the writer can never fill (its
//!   `maxItems`, or `items: false` after its tuple) are skipped. A reader with
//!   `items: false` after its tuple while the writer may send more elements is
//!   [`Rule::ItemsClosed`]; bounds tightened are [`Rule::ConstraintTightened`].
//! - **Boolean schemas**: a writer `false` sends nothing, so anything reads it; a reader
//!   `false` where the writer may send something is [`Rule::FalseSchema`]. `true` and `{}`
//!   accept everything.
//! - **`$ref`**: `#/…` JSON pointers (so `#/$defs/name` and `#/definitions/name`) and
//!   `#name` anchors resolve inside the document that holds the `$ref`; any other
//!   reference is an absolute URI, such as `urn:ovasabi:defs:money` or
//!   `urn:ovasabi:defs:money#/$defs/currency`: the part before `#` is passed to the
//!   `resolve` closure (a reference to the document's own `$id` needs none), which returns
//!   the document, and the fragment is resolved inside it. `$ref` applies together with its
//!   sibling keywords. A reference that cannot be resolved is [`Rule::RefUnresolved`] —
//!   never a panic — and the schema holding it is not compared further. Recursive schemas
//!   are handled by remembering which pair of schema locations is being compared: meeting
//!   the same pair again inside itself adds nothing new, so it is assumed to hold. Nesting
//!   deeper than [`MAX_DEPTH`] levels is reported as [`Rule::TooDeep`].
//!
//! # `allOf`, `anyOf`, `oneOf`
//!
//! - **`allOf`** is merged: its branches' constraints join their parent's into one
//!   conjunction (types intersected, enums intersected, the tightest bounds, required
//!   properties united, each property constrained by every branch that declares it — or,
//!   where a branch does not, by that branch's `additionalProperties`). The merge is exact
//!   for the keywords above, on both sides.
//! - **A writer's `anyOf`/`oneOf`** is split: the writer may send a value of any branch, so
//!   every branch (together with its parent's other constraints) must be readable on its
//!   own. With more than 256 combinations of branches the writer's alternatives are
//!   dropped instead, which only widens the writer (conservative).
//! - **A reader's `anyOf`/`oneOf`**: the reader's other constraints are compared as usual,
//!   and, for each writer type in turn, at least one branch must read everything the writer
//!   may send of that type; otherwise [`Rule::BranchUnmatched`], naming the closest branch
//!   and why it fails. A writer value split across branches is thus handled when the split
//!   is by type or mirrors a writer `anyOf`/`oneOf`, and is otherwise reported.
//!   **`oneOf` is treated as `anyOf` on the reader's side**: a writer value matching two of
//!   the reader's branches (which `oneOf` rejects) is not detected.
//!
//! # Open content
//!
//! Strictly, a writer without `additionalProperties: false` may send any property under
//! any name, so a reader adding even an optional typed property could reject old data
//! (Confluent reports this as "property added to open content model"). That would make
//! every added property a break, so this checker assumes that the extra properties of an
//! open writer do not collide with the names a reader declares. A writer whose
//! `additionalProperties` is a schema says what its extra properties look like, and that is
//! checked.
//!
//! # Choices and limits
//!
//! - Keywords the checker does not compare (`not`, `if`/`then`/`else`, `patternProperties`,
//!   `propertyNames`, `dependentRequired`, `dependentSchemas`, `dependencies`, `contains`,
//!   `minContains`, `maxContains`, `unevaluatedProperties`, `unevaluatedItems`,
//!   `$dynamicRef`, `$recursiveRef`) are ignored on the writer's side (which only widens
//!   it) and, on the reader's side, must appear with an identical value in the writer:
//!   otherwise [`Rule::UncheckedKeyword`]. A writer with `patternProperties` is treated as
//!   open.
//! - Annotations (`title`, `description`, `examples`, `default`, `deprecated`, `x-…`, …)
//!   and unknown keywords are ignored. `$id` inside a subschema is not a new base URI.
//! - Not conservative: the reader's `oneOf` exclusivity and open content, as described
//!   above.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::mem;
use std::rc::Rc;
use std::slice;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// How deep the checker follows nested schemas (properties, items, references) before it
/// gives up with [`Rule::TooDeep`]. Recursive schemas stop much earlier: see the module
/// docs.
pub const MAX_DEPTH: usize = 64;

/// Keywords the checker does not compare: ignored in a writer, kept only if identical in a
/// reader (see the module docs).
const UNCHECKED_KEYWORDS: &[&str] = &[
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
    "$recursiveRef",
];

/// How many combinations of a writer's `anyOf`/`oneOf` branches are checked one by one
/// before the checker drops the writer's alternatives instead.
const MAX_EXPANSIONS: usize = 256;

/// A compatibility mode: which earlier versions a new version is checked against, and in
/// which direction. The names and meanings are Confluent Schema Registry's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// The new version reads data written with the previous one. The default.
    #[default]
    Backward,
    /// The new version reads data written with every earlier one.
    BackwardTransitive,
    /// The previous version reads data written with the new one.
    Forward,
    /// Every earlier version reads data written with the new one.
    ForwardTransitive,
    /// Backward and forward against the previous version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
    /// No check.
    None,
}

impl Mode {
    /// Every mode, in the order `schemas/README.md` lists them.
    pub const ALL: [Mode; 7] = [
        Mode::Backward,
        Mode::BackwardTransitive,
        Mode::Forward,
        Mode::ForwardTransitive,
        Mode::Full,
        Mode::FullTransitive,
        Mode::None,
    ];

    /// Parses a mode's name (`BACKWARD`, `FULL_TRANSITIVE`, …; case is ignored). The error
    /// names the valid ones.
    pub fn parse(s: &str) -> Result<Mode, String> {
        let wanted = s.trim();
        Mode::ALL
            .into_iter()
            .find(|mode| mode.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                let names: Vec<&str> = Mode::ALL.iter().map(|mode| mode.as_str()).collect();
                format!(
                    "unknown compatibility mode `{s}`: expected one of {}",
                    names.join(", ")
                )
            })
    }

    /// The mode's name as `type.json` spells it: `BACKWARD`, `FULL_TRANSITIVE`, ….
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Backward => "BACKWARD",
            Mode::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Mode::Forward => "FORWARD",
            Mode::ForwardTransitive => "FORWARD_TRANSITIVE",
            Mode::Full => "FULL",
            Mode::FullTransitive => "FULL_TRANSITIVE",
            Mode::None => "NONE",
        }
    }

    /// Whether the mode checks against every earlier version rather than the previous one.
    pub fn is_transitive(&self) -> bool {
        matches!(
            self,
            Mode::BackwardTransitive | Mode::ForwardTransitive | Mode::FullTransitive
        )
    }

    /// The directions the mode checks (none for [`Mode::None`]).
    pub fn directions(&self) -> &'static [Direction] {
        match self {
            Mode::Backward | Mode::BackwardTransitive => &[Direction::Backward],
            Mode::Forward | Mode::ForwardTransitive => &[Direction::Forward],
            Mode::Full | Mode::FullTransitive => &[Direction::Backward, Direction::Forward],
            Mode::None => &[],
        }
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::parse(s)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Mode, D::Error> {
        let name = String::deserialize(deserializer)?;
        Mode::parse(&name).map_err(de::Error::custom)
    }
}

/// Which side of a check reads the other's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The candidate (new) version reads data written with the earlier version.
    Backward,
    /// The earlier version reads data written with the candidate (new) version.
    Forward,
}

impl Direction {
    /// The direction's name in messages: `BACKWARD` or `FORWARD`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::Backward => "BACKWARD",
            Direction::Forward => "FORWARD",
        }
    }

    /// `(reader, writer)` for a check of `candidate` against `earlier` in this direction.
    pub fn reader_writer<T>(&self, candidate: T, earlier: T) -> (T, T) {
        match self {
            Direction::Backward => (candidate, earlier),
            Direction::Forward => (earlier, candidate),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule a [`Breaking`] change breaks. The module docs explain each one; [`Rule::code`]
/// is its stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The reader requires a property the writer may omit.
    RequiredAdded,
    /// The writer declares a property that the reader's closed content
    /// (`additionalProperties: false`) forbids.
    PropertyRemovedClosedContent,
    /// The reader forbids properties it does not declare while the writer may send some.
    AdditionalPropertiesClosed,
    /// The reader accepts some but not all of the writer's types (`number` → `integer`,
    /// `["string","null"]` → `"string"`, no type → a type).
    TypeNarrowed,
    /// The reader accepts none of the writer's types.
    TypeChanged,
    /// The writer may send an `enum`/`const` value the reader's `enum` lacks.
    EnumValueRemoved,
    /// The reader has an `enum` where the writer has no list of values.
    EnumAdded,
    /// The reader has a `const` where the writer has no list of values.
    ConstAdded,
    /// The reader's `const` differs from a value the writer may send.
    ConstChanged,
    /// A bound or format is stricter in the reader: `minimum`/`exclusiveMinimum` up,
    /// `maximum`/`exclusiveMaximum` down, `multipleOf`, `minLength` up, `maxLength` down,
    /// `pattern` or `format` added or changed, `minItems` up, `maxItems` down,
    /// `uniqueItems`, `minProperties` up, `maxProperties` down.
    ConstraintTightened,
    /// The reader forbids array elements (`items: false`) that the writer may send.
    ItemsClosed,
    /// The reader's schema is `false` where the writer may send a value.
    FalseSchema,
    /// No branch of the reader's `anyOf`/`oneOf` reads what the writer may send.
    BranchUnmatched,
    /// The reader uses a keyword the checker does not compare, and the writer does not
    /// have it with the same value.
    UncheckedKeyword,
    /// A `$ref` could not be resolved.
    RefUnresolved,
    /// The schemas nest deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 16] = [
        Rule::RequiredAdded,
        Rule::PropertyRemovedClosedContent,
        Rule::AdditionalPropertiesClosed,
        Rule::TypeNarrowed,
        Rule::TypeChanged,
        Rule::EnumValueRemoved,
        Rule::EnumAdded,
        Rule::ConstAdded,
        Rule::ConstChanged,
        Rule::ConstraintTightened,
        Rule::ItemsClosed,
        Rule::FalseSchema,
        Rule::BranchUnmatched,
        Rule::UncheckedKeyword,
        Rule::RefUnresolved,
        Rule::TooDeep,
    ];

    /// The rule's stable snake_case name, for tools and tests.
    pub fn code(&self) -> &'static str {
        match self {
            Rule::RequiredAdded => "required_added",
            Rule::PropertyRemovedClosedContent => "property_removed_closed_content",
            Rule::AdditionalPropertiesClosed => "additional_properties_closed",
            Rule::TypeNarrowed => "type_narrowed",
            Rule::TypeChanged => "type_changed",
            Rule::EnumValueRemoved => "enum_value_removed",
            Rule::EnumAdded => "enum_added",
            Rule::ConstAdded => "const_added",
            Rule::ConstChanged => "const_changed",
            Rule::ConstraintTightened => "constraint_tightened",
            Rule::ItemsClosed => "items_closed",
            Rule::FalseSchema => "false_schema",
            Rule::BranchUnmatched => "branch_unmatched",
            Rule::UncheckedKeyword => "unchecked_keyword",
            Rule::RefUnresolved => "ref_unresolved",
            Rule::TooDeep => "too_deep",
        }
    }

    /// A short phrase for messages, such as "required property added".
    pub fn summary(&self) -> &'static str {
        match self {
            Rule::RequiredAdded => "required property added",
            Rule::PropertyRemovedClosedContent => "property not allowed by closed content",
            Rule::AdditionalPropertiesClosed => "additional properties closed",
            Rule::TypeNarrowed => "type narrowed",
            Rule::TypeChanged => "type changed",
            Rule::EnumValueRemoved => "enum value removed",
            Rule::EnumAdded => "enum added",
            Rule::ConstAdded => "const added",
            Rule::ConstChanged => "const changed",
            Rule::ConstraintTightened => "constraint tightened",
            Rule::ItemsClosed => "array items closed",
            Rule::FalseSchema => "schema is false",
            Rule::BranchUnmatched => "no matching anyOf/oneOf branch",
            Rule::UncheckedKeyword => "keyword not comparable",
            Rule::RefUnresolved => "unresolved $ref",
            Rule::TooDeep => "schema nested too deep",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.summary(), self.code())
    }
}

/// One incompatibility found by [`can_read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaking {
    /// The payload field it concerns, as a path: `shipping.address.zip`, `items[]` (any
    /// element), `items[0]` (a tuple position), `meta.*` (any property the schema does not
    /// declare); empty for the payload itself.
    pub field: String,
    /// Where in the reader's schema: a JSON pointer as a URI fragment (`#/properties/email`),
    /// preceded by the URI of a shared definition when it lies in one.
    pub reader_pointer: String,
    /// Where in the writer's schema, written like [`Breaking::reader_pointer`].
    pub writer_pointer: String,
    /// The rule broken.
    pub rule: Rule,
    /// What differs, in terms of "the reader" and "the writer".
    pub detail: String,
}

impl Breaking {
    /// "field `x`", or "the payload" when [`Breaking::field`] is empty.
    pub fn field_phrase(&self) -> String {
        if self.field.is_empty() {
            "the payload".to_owned()
        } else {
            format!("field `{}`", self.field)
        }
    }
}

impl fmt::Display for Breaking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.field_phrase(), self.rule, self.detail)
    }
}

/// One incompatibility of a candidate version with an earlier one, found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The candidate version.
    pub version: u32,
    /// The earlier version it is incompatible with.
    pub against: u32,
    /// Which of the two reads the other's data.
    pub direction: Direction,
    /// What breaks.
    pub breaking: Breaking,
}

impl Violation {
    /// `(reader, writer)` versions.
    pub fn reader_writer(&self) -> (u32, u32) {
        self.direction.reader_writer(self.version, self.against)
    }
}

impl fmt::Display for Violation {
    /// One line: `v2 breaks BACKWARD against v1: field `email`: required property added
    /// [required_added]: a consumer on v2 cannot read every event written with v1: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (reader, writer) = self.reader_writer();
        write!(
            f,
            "v{} breaks {} against v{}: {}: {}: a consumer on v{reader} cannot read every \
             event written with v{writer}: {}",
            self.version,
            self.direction,
            self.against,
            self.breaking.field_phrase(),
            self.breaking.rule,
            self.breaking.detail
        )
    }
}

/// Can a consumer using `reader` read every payload valid under `writer` (reader ⊇ writer)?
/// Returns the breaking changes, none if it can. `resolve` returns the document a
/// non-local `$ref` names (the reference without its `#…` fragment), such as
/// `urn:ovasabi:defs:money`, or `None` if it knows none.
pub fn can_read(
    reader: &Value,
    writer: &Value,
    resolve: &dyn Fn(&str) -> Option<Value>,
) -> Vec<Breaking> {
    let mut checker = Checker {
        resolve,
        documents: HashMap::new(),
        active: HashSet::new(),
        out: Vec::new(),
    };
    let reader = Side::of(vec![Node::top("reader", reader.clone())], "#");
    let writer = Side::of(vec![Node::top("writer", writer.clone())], "#");
    checker.sub(&reader, &writer, "");
    let mut unique: Vec<Breaking> = Vec::with_capacity(checker.out.len());
    for breaking in checker.out {
        if !unique.contains(&breaking) {
            unique.push(breaking);
        }
    }
    unique
}

/// Checks `candidate` (`(n, schema)`) against the `earlier` versions (ascending, `1..n-1`)
/// under `mode`: the previous version only, or every earlier one for the transitive modes,
/// in the mode's directions. Returns every violation, grouped by earlier version in the
/// order given, backward before forward.
pub fn check(
    mode: Mode,
    earlier: &[(u32, Value)],
    candidate: (u32, &Value),
    resolve: &dyn Fn(&str) -> Option<Value>,
) -> Vec<Violation> {
    let (version, schema) = candidate;
    let against = if mode.is_transitive() {
        earlier
    } else {
        earlier.last().map(slice::from_ref).unwrap_or_default()
    };
    let mut violations = Vec::new();
    for (old_version, old) in against {
        for &direction in mode.directions() {
            let (reader, writer) = direction.reader_writer(schema, old);
            violations.extend(
                can_read(reader, writer, resolve)
                    .into_iter()
                    .map(|breaking| Violation {
                        version,
                        against: *old_version,
                        direction,
                        breaking,
                    }),
            );
        }
    }
    violations
}

// ---------------------------------------------------------------------------------------
// Schema locations.

/// A document schemas live in: the reader's, the writer's, or a shared one.
struct Doc {
    /// Tells documents apart: `reader`, `writer` or the URI.
    key: String,
    /// Prefix of locations in messages: empty for the reader's and the writer's documents,
    /// the URI for shared ones.
    label: String,
    root: Value,
}

/// A schema: a JSON pointer into a document.
#[derive(Clone)]
struct Node {
    doc: Rc<Doc>,
    ptr: String,
}

impl Node {
    fn top(key: &str, root: Value) -> Node {
        let doc = Doc {
            key: key.to_owned(),
            label: String::new(),
            root,
        };
        Node {
            doc: Rc::new(doc),
            ptr: String::new(),
        }
    }

    fn child(&self, segment: &str) -> Node {
        let escaped = segment.replace('~', "~0").replace('/', "~1");
        Node {
            doc: Rc::clone(&self.doc),
            ptr: format!("{}/{escaped}", self.ptr),
        }
    }

    fn value(&self) -> Option<&Value> {
        self.doc.root.pointer(&self.ptr)
    }

    fn location(&self) -> String {
        format!("{}#{}", self.doc.label, self.ptr)
    }

    fn key(&self) -> String {
        format!("{}#{}", self.doc.key, self.ptr)
    }
}

/// One side of a comparison: the conjunction of `nodes` (none: any value), and the
/// location to report.
struct Side {
    nodes: Vec<Node>,
    at: String,
}

impl Side {
    fn of(nodes: Vec<Node>, fallback: &str) -> Side {
        let at = nodes
            .first()
            .map_or_else(|| fallback.to_owned(), Node::location);
        Side { nodes, at }
    }

    fn key(&self) -> String {
        let keys: Vec<String> = self.nodes.iter().map(Node::key).collect();
        keys.join("&")
    }
}

// ---------------------------------------------------------------------------------------
// A schema seen as one conjunction of constraints.

/// A set of JSON types, as bits. `number` always includes `integer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Types(u8);

impl Types {
    const NULL: u8 = 1;
    const BOOLEAN: u8 = 2;
    const OBJECT: u8 = 4;
    const ARRAY: u8 = 8;
    const STRING: u8 = 16;
    const INTEGER: u8 = 32;
    const NUMBER: u8 = 64;
    const NUMERIC: u8 = Types::INTEGER | Types::NUMBER;
    const ANY: Types = Types(127);
    /// The types a value of one kind may have, to split a writer by kind.
    const KINDS: [u8; 6] = [
        Types::NULL,
        Types::BOOLEAN,
        Types::OBJECT,
        Types::ARRAY,
        Types::STRING,
        Types::NUMERIC,
    ];

    fn named(name: &str) -> Option<u8> {
        Some(match name {
            "null" => Types::NULL,
            "boolean" => Types::BOOLEAN,
            "object" => Types::OBJECT,
            "array" => Types::ARRAY,
            "string" => Types::STRING,
            "integer" => Types::INTEGER,
            "number" => Types::NUMERIC,
            _ => return None,
        })
    }

    /// The type of one value: an integral number is an `integer`, another number only a
    /// `number`.
    fn of(value: &Value) -> u8 {
        match value {
            Value::Null => Types::NULL,
            Value::Bool(_) => Types::BOOLEAN,
            Value::Object(_) => Types::OBJECT,
            Value::Array(_) => Types::ARRAY,
            Value::String(_) => Types::STRING,
            Value::Number(n) if n.is_i64() || n.is_u64() => Types::INTEGER,
            Value::Number(n) if n.as_f64().is_some_and(|x| x.fract() == 0.0) => Types::INTEGER,
            Value::Number(_) => Types::NUMBER,
        }
    }

    fn has(self, bits: u8) -> bool {
        self.0 & bits != 0
    }

    fn describe(self) -> String {
        if self == Types::ANY {
            return "any type".to_owned();
        }
        if self.0 == 0 {
            return "no type".to_owned();
        }
        let mut names = Vec::new();
        for (bit, name) in [
            (Types::NULL, "null"),
            (Types::BOOLEAN, "boolean"),
            (Types::OBJECT, "object"),
            (Types::ARRAY, "array"),
            (Types::STRING, "string"),
        ] {
            if self.has(bit) {
                names.push(name);
            }
        }
        if self.has(Types::NUMBER) {
            names.push("number");
        } else if self.has(Types::INTEGER) {
            names.push("integer");
        }
        names.join(" or ")
    }
}

impl Default for Types {
    fn default() -> Types {
        Types::ANY
    }
}

/// A numeric bound.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bound {
    value: f64,
    exclusive: bool,
}

impl Bound {
    /// The tighter of two lower bounds.
    fn max_lower(a: Option<Bound>, b: Bound) -> Bound {
        match a {
            Some(a) if a.value > b.value || (a.value == b.value && a.exclusive) => a,
            _ => b,
        }
    }

    /// The tighter of two upper bounds.
    fn min_upper(a: Option<Bound>, b: Bound) -> Bound {
        match a {
            Some(a) if a.value < b.value || (a.value == b.value && a.exclusive) => a,
            _ => b,
        }
    }

    /// Whether the writer's lower bound `self` is within the reader's lower bound `reader`.
    fn within_lower(self, reader: Bound) -> bool {
        self.value > reader.value
            || (self.value == reader.value && (self.exclusive || !reader.exclusive))
    }

    /// Whether the writer's upper bound `self` is within the reader's upper bound `reader`.
    fn within_upper(self, reader: Bound) -> bool {
        self.value < reader.value
            || (self.value == reader.value && (self.exclusive || !reader.exclusive))
    }

    fn admits_lower(self, x: f64) -> bool {
        x > self.value || (x == self.value && !self.exclusive)
    }

    fn admits_upper(self, x: f64) -> bool {
        x < self.value || (x == self.value && !self.exclusive)
    }

    fn describe_lower(self) -> String {
        let keyword = if self.exclusive {
            "exclusiveMinimum"
        } else {
            "minimum"
        };
        format!("{keyword} {}", self.value)
    }

    fn describe_upper(self) -> String {
        let keyword = if self.exclusive {
            "exclusiveMaximum"
        } else {
            "maximum"
        };
        format!("{keyword} {}", self.value)
    }
}

/// The `properties` and `additionalProperties` of one schema of a conjunction.
#[derive(Clone)]
struct ObjectPart {
    properties: BTreeMap<String, Node>,
    additional: Option<Node>,
    /// The schema has `patternProperties`, so its `additionalProperties` does not cover
    /// every undeclared name.
    patterned: bool,
}

impl ObjectPart {
    /// This part's schema for property `name`, `None` if it does not constrain it.
    fn schema_for(&self, name: &str, role: Role) -> Option<Node> {
        match self.properties.get(name) {
            Some(node) => Some(node.clone()),
            None => self.extra(role),
        }
    }

    /// This part's schema for properties it does not declare, `None` if it does not
    /// constrain them.
    fn extra(&self, role: Role) -> Option<Node> {
        // A writer's pattern properties may be sent under names it does not declare.
        if self.patterned && role == Role::Writer {
            None
        } else {
            self.additional.clone()
        }
    }
}

/// The `prefixItems` and `items` of one schema of a conjunction.
#[derive(Clone)]
struct ArrayPart {
    prefix: Vec<Node>,
    rest: Option<Node>,
}

impl ArrayPart {
    fn schema_at(&self, index: usize) -> Option<Node> {
        self.prefix
            .get(index)
            .cloned()
            .or_else(|| self.rest.clone())
    }
}

/// An `anyOf` or `oneOf`.
#[derive(Clone)]
struct Group {
    keyword: &'static str,
    branches: Vec<Node>,
}

/// A keyword the checker does not compare.
#[derive(Clone)]
struct Unchecked {
    keyword: String,
    value: Value,
    at: String,
}

/// Which side of a comparison a schema is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Reader,
    Writer,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
        }
    }
}

/// A conjunction of schemas, merged: what a value must satisfy.
#[derive(Clone, Default)]
struct Shape {
    /// A `false` schema is part of it: no value satisfies it.
    never: bool,
    /// `(reference, location)` of each `$ref` that could not be resolved.
    unresolved: Vec<(String, String)>,
    /// The location where references nested deeper than [`MAX_DEPTH`].
    too_deep: Option<String>,
    types: Types,
    values: Option<Vec<Value>>,
    /// Some of `values` came from `const`.
    from_const: bool,
    lower: Option<Bound>,
    upper: Option<Bound>,
    multiple_of: Vec<f64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    patterns: Vec<String>,
    formats: Vec<String>,
    required: BTreeSet<String>,
    objects: Vec<ObjectPart>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    arrays: Vec<ArrayPart>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique_items: bool,
    groups: Vec<Group>,
    unchecked: Vec<Unchecked>,
}

impl Shape {
    /// Adds the constraints of `other`.
    fn and(&mut self, other: Shape) {
        self.never |= other.never;
        self.unresolved.extend(other.unresolved);
        self.too_deep = self.too_deep.take().or(other.too_deep);
        self.types = Types(self.types.0 & other.types.0);
        if let Some(values) = other.values {
            self.restrict_values(values, other.from_const);
        }
        if let Some(bound) = other.lower {
            self.lower = Some(Bound::max_lower(self.lower, bound));
        }
        if let Some(bound) = other.upper {
            self.upper = Some(Bound::min_upper(self.upper, bound));
        }
        self.multiple_of.extend(other.multiple_of);
        self.min_length = max_opt(self.min_length, other.min_length);
        self.max_length = min_opt(self.max_length, other.max_length);
        self.patterns.extend(other.patterns);
        self.formats.extend(other.formats);
        self.required.extend(other.required);
        self.objects.extend(other.objects);
        self.min_properties = max_opt(self.min_properties, other.min_properties);
        self.max_properties = min_opt(self.max_properties, other.max_properties);
        self.arrays.extend(other.arrays);
        self.min_items = max_opt(self.min_items, other.min_items);
        self.max_items = min_opt(self.max_items, other.max_items);
        self.unique_items |= other.unique_items;
        self.groups.extend(other.groups);
        self.unchecked.extend(other.unchecked);
    }

    fn restrict_values(&mut self, values: Vec<Value>, from_const: bool) {
        self.values = Some(match self.values.take() {
            None => values,
            Some(old) => old
                .into_iter()
                .filter(|v| values.iter().any(|w| json_eq(v, w)))
                .collect(),
        });
        self.from_const |= from_const;
    }

    /// Adds the keywords of one schema object, except `$ref`, `allOf`, `anyOf` and
    /// `oneOf`, which need the checker.
    fn add_keywords(&mut self, node: &Node, map: &Map<String, Value>) {
        for (keyword, value) in map {
            match keyword.as_str() {
                "type" => {
                    let bits = match value {
                        Value::String(name) => Types::named(name),
                        Value::Array(names) => Some(
                            names
                                .iter()
                                .filter_map(Value::as_str)
                                .filter_map(Types::named)
                                .fold(0, |acc, bits| acc | bits),
                        ),
                        _ => None,
                    };
                    if let Some(bits) = bits {
                        self.types = Types(self.types.0 & bits);
                    }
                }
                "enum" => {
                    if let Value::Array(values) = value {
                        self.restrict_values(values.clone(), false);
                    }
                }
                "const" => self.restrict_values(vec![value.clone()], true),
                "minimum" | "exclusiveMinimum" => {
                    if let Some(x) = value.as_f64() {
                        let bound = Bound {
                            value: x,
                            exclusive: keyword == "exclusiveMinimum",
                        };
                        self.lower = Some(Bound::max_lower(self.lower, bound));
                    }
                }
                "maximum" | "exclusiveMaximum" => {
                    if let Some(x) = value.as_f64() {
                        let bound = Bound {
                            value: x,
                            exclusive: keyword == "exclusiveMaximum",
                        };
                        self.upper = Some(Bound::min_upper(self.upper, bound));
                    }
                }
                "multipleOf" => {
                    if let Some(x) = value.as_f64().filter(|x| *x > 0.0) {
                        self.multiple_of.push(x);
                    }
                }
                "minLength" => self.min_length = max_opt(self.min_length, value.as_u64()),
                "maxLength" => self.max_length = min_opt(self.max_length, value.as_u64()),
                "pattern" => {
                    if let Some(pattern) = value.as_str() {
                        self.patterns.push(pattern.to_owned());
                    }
                }
                "format" => {
                    if let Some(format) = value.as_str() {
                        self.formats.push(format.to_owned());
                    }
                }
                "required" => {
                    if let Value::Array(names) = value {
                        self.required
                            .extend(names.iter().filter_map(Value::as_str).map(str::to_owned));
                    }
                }
                "minProperties" => {
                    self.min_properties = max_opt(self.min_properties, value.as_u64());
                }
                "maxProperties" => {
                    self.max_properties = min_opt(self.max_properties, value.as_u64());
                }
                "minItems" => self.min_items = max_opt(self.min_items, value.as_u64()),
                "maxItems" => self.max_items = min_opt(self.max_items, value.as_u64()),
                "uniqueItems" => self.unique_items |= value.as_bool() == Some(true),
                keyword if UNCHECKED_KEYWORDS.contains(&keyword) => {
                    self.unchecked.push(Unchecked {
                        keyword: keyword.to_owned(),
                        value: value.clone(),
                        at: node.child(keyword).location(),
                    });
                }
                _ => {}
            }
        }

        let properties = map.get("properties").and_then(Value::as_object);
        if properties.is_some() || map.contains_key("additionalProperties") {
            let properties = properties
                .into_iter()
                .flatten()
                .map(|(name, _)| (name.clone(), node.child("properties").child(name)))
                .collect();
            self.objects.push(ObjectPart {
                properties,
                additional: map
                    .get("additionalProperties")
                    .map(|_| node.child("additionalProperties")),
                patterned: map.contains_key("patternProperties"),
            });
        }

        // 2020-12: `prefixItems` + `items`; before: `items` (array) + `additionalItems`.
        let (prefix_keyword, rest_keyword) = match map.get("items") {
            Some(Value::Array(_)) => ("items", "additionalItems"),
            _ => ("prefixItems", "items"),
        };
        let prefix_len = map
            .get(prefix_keyword)
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if prefix_len > 0 || map.contains_key(rest_keyword) {
            self.arrays.push(ArrayPart {
                prefix: (0..prefix_len)
                    .map(|i| node.child(prefix_keyword).child(&i.to_string()))
                    .collect(),
                rest: map.get(rest_keyword).map(|_| node.child(rest_keyword)),
            });
        }
    }

    /// Whether no value satisfies the shape (as far as the checker can tell).
    fn is_empty(&self) -> bool {
        self.never || self.types.0 == 0 || self.values.as_ref().is_some_and(Vec::is_empty)
    }

    /// Whether every value satisfies the shape (`true`, `{}`, annotations only).
    fn is_any(&self) -> bool {
        !self.never
            && self.unresolved.is_empty()
            && self.too_deep.is_none()
            && self.types == Types::ANY
            && self.values.is_none()
            && self.lower.is_none()
            && self.upper.is_none()
            && self.multiple_of.is_empty()
            && self.min_length.is_none()
            && self.max_length.is_none()
            && self.patterns.is_empty()
            && self.formats.is_empty()
            && self.required.is_empty()
            && self.objects.is_empty()
            && self.min_properties.is_none()
            && self.max_properties.is_none()
            && self.arrays.is_empty()
            && self.min_items.is_none()
            && self.max_items.is_none()
            && !self.unique_items
            && self.groups.is_empty()
            && self.unchecked.is_empty()
    }

    /// Makes implicit facts explicit before the shape is compared as a writer: a writer
    /// typed only `boolean`/`null` has a finite list of values; a writer with a list of
    /// values only has their types; an integer-only writer's exclusive bounds become
    /// inclusive ones.
    fn as_writer(&self) -> Shape {
        let mut shape = self.clone();
        if shape.values.is_none() && shape.types.0 & !(Types::NULL | Types::BOOLEAN) == 0 {
            let mut values = Vec::new();
            if shape.types.has(Types::NULL) {
                values.push(Value::Null);
            }
            if shape.types.has(Types::BOOLEAN) {
                values.extend([Value::Bool(true), Value::Bool(false)]);
            }
            shape.values = Some(values);
        }
        if let Some(values) = &mut shape.values {
            let declared = shape.types;
            values.retain(|v| declared.has(Types::of(v)));
            shape.types = Types(values.iter().fold(0, |acc, v| acc | Types::of(v)));
        }
        if shape.types.0 & Types::NUMERIC == Types::INTEGER {
            if let Some(bound) = shape.lower.filter(|b| b.exclusive) {
                shape.lower = Some(Bound {
                    value: bound.value.floor() + 1.0,
                    exclusive: false,
                });
            }
            if let Some(bound) = shape.upper.filter(|b| b.exclusive) {
                shape.upper = Some(Bound {
                    value: bound.value.ceil() - 1.0,
                    exclusive: false,
                });
            }
        }
        shape
    }

    /// The shape restricted to each kind of value it may have (null, boolean, object,
    /// array, string, number), the kinds it cannot have left out.
    fn split_by_kind(&self) -> Vec<Shape> {
        Types::KINDS
            .iter()
            .filter(|&&kind| self.types.has(kind))
            .map(|&kind| {
                let mut piece = self.clone();
                piece.types = Types(self.types.0 & kind);
                piece.as_writer()
            })
            .filter(|piece| !piece.is_empty())
            .collect()
    }

    /// The fewest properties a writer's object has.
    fn least_properties(&self) -> u64 {
        let required = u64::try_from(self.required.len()).unwrap_or(u64::MAX);
        self.min_properties.unwrap_or(0).max(required)
    }

    /// Whether a number satisfies the numeric keywords.
    fn admits_number(&self, x: f64) -> bool {
        self.lower.is_none_or(|b| b.admits_lower(x))
            && self.upper.is_none_or(|b| b.admits_upper(x))
            && self.multiple_of.iter().all(|&m| is_multiple(x, m))
    }

    /// The numeric keywords, for messages.
    fn describe_numbers(&self) -> String {
        let mut parts = Vec::new();
        parts.extend(self.lower.map(Bound::describe_lower));
        parts.extend(self.upper.map(Bound::describe_upper));
        parts.extend(self.multiple_of.iter().map(|m| format!("multipleOf {m}")));
        parts.join(", ")
    }
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether `x` is a multiple of `m` (up to floating-point noise).
fn is_multiple(x: f64, m: f64) -> bool {
    let ratio = x / m;
    (ratio - ratio.round()).abs() < 1e-9
}

/// JSON equality as JSON Schema defines it: numbers by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| json_eq(x, y)))
        }
        _ => a == b,
    }
}

fn list_values<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    let shown: Vec<String> = values.into_iter().map(Value::to_string).collect();
    shown.join(", ")
}

fn child_field(field: &str, name: &str) -> String {
    if field.is_empty() {
        name.to_owned()
    } else {
        format!("{field}.{name}")
    }
}

fn item_field(field: &str, index: Option<usize>) -> String {
    match index {
        Some(i) => format!("{field}[{i}]"),
        None => format!("{field}[]"),
    }
}

/// Decodes `%XX` escapes of a URI fragment.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pointer of the subschema whose `$anchor` is `anchor`.
fn find_anchor(value: &Value, anchor: &str, ptr: &str) -> Option<String> {
    match value {
        Value::Object(map) => {
            if map.get("$anchor").and_then(Value::as_str) == Some(anchor) {
                return Some(ptr.to_owned());
            }
            map.iter().find_map(|(key, child)| {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                find_anchor(child, anchor, &format!("{ptr}/{escaped}"))
            })
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, child)| find_anchor(child, anchor, &format!("{ptr}/{i}"))),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// The comparison.

/// Where a comparison stands: the field, and the reader's and writer's locations.
#[derive(Clone, Copy)]
struct At<'a> {
    field: &'a str,
    reader: &'a str,
    writer: &'a str,
}

struct Checker<'r> {
    resolve: &'r dyn Fn(&str) -> Option<Value>,
    /// Shared documents by URI, `None` when `resolve` knows none.
    documents: HashMap<String, Option<Rc<Doc>>>,
    /// The `(reader, writer)` pairs being compared, outermost first: meeting one again
    /// means a recursive schema came back to where it started.
    active: HashSet<(String, String)>,
    out: Vec<Breaking>,
}

impl Checker<'_> {
    fn report(&mut self, at: At<'_>, rule: Rule, detail: String) {
        self.out.push(Breaking {
            field: at.field.to_owned(),
            reader_pointer: at.reader.to_owned(),
            writer_pointer: at.writer.to_owned(),
            rule,
            detail,
        });
    }

    /// Follows `reference` from the document holding `from`.
    fn resolve_ref(&mut self, from: &Node, reference: &str) -> Option<Node> {
        let (base, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        let own_id = from.doc.root.get("$id").and_then(Value::as_str);
        let doc = if base.is_empty() || own_id == Some(base) {
            Rc::clone(&from.doc)
        } else {
            let resolve = self.resolve;
            let entry = self.documents.entry(base.to_owned()).or_insert_with(|| {
                resolve(base).map(|root| {
                    Rc::new(Doc {
                        key: base.to_owned(),
                        label: base.to_owned(),
                        root,
                    })
                })
            });
            Rc::clone(entry.as_ref()?)
        };
        let ptr = if fragment.is_empty() || fragment.starts_with('/') {
            percent_decode(fragment)
        } else {
            find_anchor(&doc.root, &percent_decode(fragment), "")?
        };
        doc.root.pointer(&ptr)?;
        Some(Node { doc, ptr })
    }

    /// The conjunction of `nodes`, with references followed and `allOf`s merged.
    fn collect(&mut self, nodes: &[Node]) -> Shape {
        let mut shape = Shape::default();
        let mut seen = HashSet::new();
        for node in nodes {
            self.add(&mut shape, node, &mut seen, 0);
        }
        shape
    }

    fn add(&mut self, shape: &mut Shape, node: &Node, seen: &mut HashSet<String>, depth: usize) {
        if depth > MAX_DEPTH {
            shape.too_deep = Some(node.location());
            return;
        }
        // A schema met again within one conjunction adds nothing (`A and A` is `A`): this
        // also ends reference cycles such as `a → b → a`.
        if !seen.insert(node.key()) {
            return;
        }
        let map = match node.value() {
            Some(Value::Object(map)) => map,
            Some(Value::Bool(false)) => {
                shape.never = true;
                return;
            }
            _ => return,
        };
        // The node's own keywords first, so that locations name it before what it refers to.
        shape.add_keywords(node, map);
        if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
            match self.resolve_ref(node, reference) {
                Some(target) => self.add(shape, &target, seen, depth + 1),
                None => shape
                    .unresolved
                    .push((reference.to_owned(), node.child("$ref").location())),
            }
        }
        if let Some(Value::Array(branches)) = map.get("allOf") {
            let all_of = node.child("allOf");
            for i in 0..branches.len() {
                self.add(shape, &all_of.child(&i.to_string()), seen, depth + 1);
            }
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = map.get(keyword) {
                let group = node.child(keyword);
                shape.groups.push(Group {
                    keyword,
                    branches: (0..branches.len())
                        .map(|i| group.child(&i.to_string()))
                        .collect(),
                });
            }
        }
    }

    /// Compares two conjunctions of schemas, guarding against recursion.
    fn sub(&mut self, reader: &Side, writer: &Side, field: &str) {
        let at = At {
            field,
            reader: &reader.at,
            writer: &writer.at,
        };
        let key = (reader.key(), writer.key());
        // The very same schemas: nothing to compare (a shared definition both use).
        if !reader.nodes.is_empty() && key.0 == key.1 {
            return;
        }
        if self.active.contains(&key) {
            return;
        }
        if self.active.len() >= MAX_DEPTH {
            self.report(
                at,
                Rule::TooDeep,
                format!("the schemas nest deeper than {MAX_DEPTH} levels here"),
            );
            return;
        }
        self.active.insert(key.clone());
        let r = self.collect(&reader.nodes);
        let w = self.collect(&writer.nodes);
        self.shapes(&r, &w, at);
        self.active.remove(&key);
    }

    fn shapes(&mut self, r: &Shape, w: &Shape, at: At<'_>) {
        let mut stop = false;
        for (role, shape) in [(Role::Reader, r), (Role::Writer, w)] {
            let side = role.name();
            for (reference, location) in &shape.unresolved {
                let (reader, writer) = match role {
                    Role::Reader => (location.as_str(), at.writer),
                    Role::Writer => (at.reader, location.as_str()),
                };
                self.report(
                    At {
                        reader,
                        writer,
                        ..at
                    },
                    Rule::RefUnresolved,
                    format!("the {side}'s `$ref` `{reference}` resolves to no schema"),
                );
                stop = true;
            }
            if let Some(location) = &shape.too_deep {
                self.report(
                    at,
                    Rule::TooDeep,
                    format!(
                        "the {side}'s references at `{location}` nest deeper than {MAX_DEPTH} \
                         levels"
                    ),
                );
                stop = true;
            }
        }
        if stop {
            return;
        }

        if !w.groups.is_empty() {
            self.writer_branches(r, w, at);
            return;
        }
        let w = w.as_writer();
        if w.is_empty() {
            return;
        }
        if r.never {
            self.report(
                at,
                Rule::FalseSchema,
                format!(
                    "the reader's schema is `false`; the writer may send {}",
                    w.types.describe()
                ),
            );
            return;
        }
        if r.groups.is_empty() {
            self.plain(r, &w, at);
            return;
        }
        let mut base = r.clone();
        let groups = mem::take(&mut base.groups);
        self.plain(&base, &w, at);
        for group in &groups {
            self.reader_branches(group, &w, at);
        }
    }

    /// A writer's `anyOf`/`oneOf`: each branch, with the rest of the writer, on its own.
    fn writer_branches(&mut self, r: &Shape, w: &Shape, at: At<'_>) {
        let combinations = w
            .groups
            .iter()
            .try_fold(1usize, |acc, g| acc.checked_mul(g.branches.len().max(1)));
        let mut rest = w.clone();
        if combinations.is_none_or(|n| n > MAX_EXPANSIONS) {
            // Dropping the writer's alternatives only widens the writer.
            rest.groups.clear();
            self.shapes(r, &rest, at);
            return;
        }
        let group = rest.groups.remove(0);
        for branch in &group.branches {
            let mut piece = rest.clone();
            piece.and(self.collect(slice::from_ref(branch)));
            let location = branch.location();
            self.shapes(
                r,
                &piece,
                At {
                    writer: &location,
                    ..at
                },
            );
        }
    }

    /// A reader's `anyOf`/`oneOf`: for each kind of value the writer may send, one branch
    /// must read all of them.
    fn reader_branches(&mut self, group: &Group, w: &Shape, at: At<'_>) {
        let branches: Vec<(Shape, String)> = group
            .branches
            .iter()
            .map(|node| (self.collect(slice::from_ref(node)), node.location()))
            .collect();
        for piece in w.split_by_kind() {
            let mut closest: Option<(usize, Vec<Breaking>)> = None;
            for (i, (branch, location)) in branches.iter().enumerate() {
                let saved = mem::take(&mut self.out);
                self.shapes(
                    branch,
                    &piece,
                    At {
                        reader: location,
                        ..at
                    },
                );
                let found = mem::replace(&mut self.out, saved);
                if found.is_empty() {
                    closest = None;
                    break;
                }
                if closest
                    .as_ref()
                    .is_none_or(|(_, fewest)| found.len() < fewest.len())
                {
                    closest = Some((i, found));
                }
            }
            let Some((i, found)) = closest else { continue };
            let why = found
                .first()
                .map(|b| format!(" (closest: branch {i}: {b})"))
                .unwrap_or_default();
            let group_at = format!("{}/{}", at.reader, group.keyword);
            self.report(
                At {
                    reader: &group_at,
                    ..at
                },
                Rule::BranchUnmatched,
                format!(
                    "no branch of the reader's `{}` reads every {} value the writer may send{why}",
                    group.keyword,
                    piece.types.describe()
                ),
            );
        }
    }

    /// Compares a reader and a writer without alternatives left.
    fn plain(&mut self, r: &Shape, w: &Shape, at: At<'_>) {
        // A reader's list of values is compared value by value, types included.
        if r.values.is_none() {
            self.types(r, w, at);
        }
        self.values(r, w, at);
        if w.types.has(Types::NUMERIC) && r.types.has(Types::NUMERIC) {
            self.numbers(r, w, at);
        }
        if w.types.has(Types::STRING) && r.types.has(Types::STRING) {
            self.strings(r, w, at);
        }
        if w.types.has(Types::OBJECT) && r.types.has(Types::OBJECT) {
            self.objects(r, w, at);
        }
        if w.types.has(Types::ARRAY) && r.types.has(Types::ARRAY) {
            self.arrays(r, w, at);
        }
        for unchecked in &r.unchecked {
            let matched = w.unchecked.iter().any(|other| {
                other.keyword == unchecked.keyword && json_eq(&other.value, &unchecked.value)
            });
            if !matched {
                self.report(
                    At {
                        reader: &unchecked.at,
                        ..at
                    },
                    Rule::UncheckedKeyword,
                    format!(
                        "the reader has `{}`: {}, which the checker cannot compare, and the \
                         writer has no identical `{}`",
                        unchecked.keyword, unchecked.value, unchecked.keyword
                    ),
                );
            }
        }
    }

    fn types(&mut self, r: &Shape, w: &Shape, at: At<'_>) {
        if w.types.0 & !r.types.0 == 0 {
            return;
        }
        let rule = if w.types.0 & r.types.0 != 0 {
            Rule::TypeNarrowed
        } else {
            Rule::TypeChanged
        };
        let detail = format!(
            "the writer may send {}; the reader accepts only {}",
            w.types.describe(),
            r.types.describe()
        );
        self.report(at, rule, detail);
    }

    fn values(&mut self, r: &Shape, w: &Shape, at: At<'_>) {
        let Some(accepted) = &r.values else { return };
        let (keyword, added, changed) = if r.from_const {
            ("const", Rule::ConstAdded, Rule::ConstChanged)
        } else {
            ("enum", Rule::EnumAdded, Rule::EnumValueRemoved)
        };
        match &w.values {
            None => self.report(
                at,
                added,
                format!(
                    "the reader accepts only {} (`{keyword}`); the writer may send any {}",
                    list_values(accepted),
                    w.types.describe()
                ),
            ),
            Some(sent) => {
                let missing: Vec<&Value> = sent
                    .iter()
                    .filter(|v| !accepted.iter().any(|a| json_eq(a, v)))
                    .collect();
                if !missing.is_empty() {
                    self.report(
                        at,
                        changed,
                        format!(
                            "the writer may send {}, which the reader's `{keyword}` ({}) \
                             does not accept",
                            list_values(missing),
                            list_values(accepted)
                        ),
                    );
                }
            }
        }
    }

    fn numbers(&mut self, r: &Shape, w: &Shape, at: At<'_>) {
        if let Some(sent) = &w.values {
            let outside: Vec<&Value> = sent
                .iter()
                .filter(|v| v.as_f64().is_some_and(|x| !r.admits_number(x)))
                .collect();
            if !outside.is_empty() {
                self.report(
                    at,
                    Rule::ConstraintTightened,
                    format!(
                        "the writer may send {}, outside the reader's {}",
                        list_values(outside),
                        r.describe_numbers()
                    ),
                );
            }
            return;
        }
        if let Some(reader) = r.lower {
            if !w.lower.is_some_and(|writer| writer.within_lower(reader)) {
                let writer = w
                    .lower
                    .map_or_else(|| "no lower bound".to_owned(), Bound::describe_lower);
                self.report(
                    at,
                    Rule::ConstraintTightened,
                    format!(
                        "the reader has {}; the writer has {writer}",
                        reader.describe_lower()
                    ),
                );
            }
        }
        if let Some(reader) = r.upper {
            if !w.upper.is_some_and(|writer| writer.within_upper(reader)) {
                let writer = w
                    .upper
                    .map_or_else(|| "no upper bound".to_owned(), Bound::describe_upper);
                self.report(
                    at,
                    Rule::ConstraintTightened,
                    format!(
                        "the reader has {}; the writer has {writer}",
                        reader.describe_upper()
                    ),
                );
            }
        }
        let integers_only = w.types.0 & Types::NUMERIC == Types::INTEGER;
        for &m in &r.multiple_of {
            let divides = w.multiple_of.iter().any(|&k| is_multiple(k, m))
                || (integers_only && is_multiple(1.0, m));
            if !divides {
                let writer: Vec<String> = w.multiple_of.iter().map(f64::to_string).collect();
                let writer = if writer.is_empty() {
                    "none".to_owned()
                } else {
                    writer.join(", ")
                };
                self.report(
                    at,
                    Rule::ConstraintTightened,
                    format!("the reader has multipleOf {m}; the writer's multipleOf: {writer}"),
                );
            }
        }
    }

    fn strings(&mut self, r: &Shape, w: &Shape, at: At<'_>) {
        if let Some(sent) = &w.values {
            let outside: Vec<&Value> = sent
                .iter()
                .filter(|v| {
                    v.as_str().is_some_and(|s| {
                        let len = u64::try_from(s.chars().count()).unwrap_or(u64::MAX);
                        r.min_length.is_some_and(|min| len < min)
                            || r.max_length.is_some_and(|max| len > max)
                    })
                })
                .collect();
            if !outside.is_empty() {
                self.report(
                    at,
                    Rule::ConstraintTightened,
                    format!(
                        "the writer may send {}, outside the reader's length bounds \
                         (minLength {}, maxLength {})",
                        list_values(outside),
                        r.min_length.unwrap_or(0),
                        r.max_length
                            .map_or_else(|| "none".to_owned(), |m| m.to_string())
                    ),
                );
            }
        } else {
            if let Some(min) = r.min_length.filter(|&min| min > w.min_length.unwrap_or(0)) {
                self.report(
                    at,
                    Rule::ConstraintTightened,
                    format!(
                        "the reader has minLength {min}; the writer has minLength {}",
                        w.min_length.unwrap_or(0)
                    ),
                );
            }
            if let Some(max) = r.max_length {
                if w.max_length.is_none_or(|writer| writer > max) {
                    let writer = w
                        .max_length
                        .map_or_else(|| "none".to_owned(), |m| m.to_string());
                    self.report(
                        at,
                        Rule::ConstraintTightened,
                        format!("the reader has maxLength {max}; the writer's maxLength: {writer}"),
                    );
                }
            }
        }
        for (keyword, reader, writer) in [
            ("pattern", &r.patterns, &w.patterns),
            ("format", &r.formats, &w.formats),
        ] {
            for wanted in reader {
                if writer.contains(wanted) {
                    continue;
                }
                let theirs = if writer.is_empty() {
                    format!("the writer has no `{keyword}`")
                } else {
                    let quoted: Vec<String> = writer.iter().map(|p| format!("`{p}`")).collect();
                    format!("the writer's is {}", quoted.join(", "))
                };
                self.report(
                    at,
                    Rule::ConstraintTightened,
                    format!(
                        "the reader has {keyword} `{wanted}`; {theirs} (a {keyword} only \
                         counts as kept when the writer declares it identically)"
                    ),
                );
            }
        }
    }

    fn objects(&mut self, r: &Shape, w: &Shape, at: At<'_>) {
        for name in &r.required {
            if !w.required.contains(name) {
                let field = child_field(at.field, name);
                let reader = format!("{}/required", at.reader);
                self.report(
                    At {
                        field: &field,
                        reader: &reader,
                        ..at
                    },
                    Rule::RequiredAdded,
                    format!("the reader requires `{name}`; the writer may omit it"),
                );
            }
        }
        if let Some(min) = r.min_properties.filter(|&min| min > w.least_properties()) {
            self.report(
                at,
                Rule::ConstraintTightened,
                format!(
                    "the reader has minProperties {min}; the writer's objects may have {}",
                    w.least_properties()
                ),
            );
        }

        let writer_extra: Vec<Node> = w
            .objects
            .iter()
            .filter_map(|part| part.extra(Role::Writer))
            .collect();
        let writer_extra_shape = self.collect(&writer_extra);
        let writer_closed = writer_extra_shape.is_empty();
        let writer_open = writer_extra_shape.is_any();
        let reader_extra: Vec<Node> = r
            .objects
            .iter()
            .filter_map(|part| part.extra(Role::Reader))
            .collect();
        let reader_extra_shape = self.collect(&reader_extra);

        if let Some(max) = r.max_properties {
            let declared: BTreeSet<&String> = w
                .objects
                .iter()
                .flat_map(|part| part.properties.keys())
                .collect();
            let most = w.max_properties.or_else(|| {
                writer_closed.then(|| u64::try_from(declared.len()).unwrap_or(u64::MAX))
            });
            if most.is_none_or(|most| most > max) {
                let most = most.map_or_else(|| "any number of".to_owned(), |m| m.to_string());
                self.report(
                    at,
                    Rule::ConstraintTightened,
                    format!(
                        "the reader has maxProperties {max}; the writer's objects may have \
                         {most} properties"
                    ),
                );
            }
        }

        let mut names: BTreeSet<&String> = BTreeSet::new();
        for part in r.objects.iter().chain(&w.objects) {
            names.extend(part.properties.keys());
        }
        for name in names {
            let declared_by_writer = w.objects.iter().any(|p| p.properties.contains_key(name));
            let declared_by_reader = r.objects.iter().any(|p| p.properties.contains_key(name));
            if !declared_by_writer && (writer_closed || writer_open) {
                // A closed writer never sends it; an open one is assumed not to use the
                // name (module docs, "Open content").
                continue;
            }
            let w_nodes: Vec<Node> = w
                .objects
                .iter()
                .filter_map(|part| part.schema_for(name, Role::Writer))
                .collect();
            let r_nodes: Vec<Node> = r
                .objects
                .iter()
                .filter_map(|part| part.schema_for(name, Role::Reader))
                .collect();
            let field = child_field(at.field, name);
            if !declared_by_reader {
                if reader_extra_shape.is_any() || self.collect(&w_nodes).is_empty() {
                    continue;
                }
                if reader_extra_shape.never {
                    let reader = format!("{}/additionalProperties", at.reader);
                    let writer = w_nodes.first().map_or_else(String::new, Node::location);
                    self.report(
                        At {
                            field: &field,
                            reader: &reader,
                            writer: &writer,
                        },
                        Rule::PropertyRemovedClosedContent,
                        format!(
                            "the writer may send `{name}`, which the reader does not declare \
                             and its `additionalProperties: false` forbids"
                        ),
                    );
                    continue;
                }
            }
            let reader_fallback = format!("{}/properties/{name}", at.reader);
            let writer_fallback = format!("{}/properties/{name}", at.writer);
            self.sub(
                &Side::of(r_nodes, &reader_fallback),
                &Side::of(w_nodes, &writer_fallback),
                &field,
            );
        }

        // Properties neither side declares.
        if writer_closed || reader_extra_shape.is_any() {
            return;
        }
        let field = child_field(at.field, "*");
        if reader_extra_shape.never {
            let reader = format!("{}/additionalProperties", at.reader);
            self.report(
                At {
                    reader: &reader,
                    ..at
                },
                Rule::AdditionalPropertiesClosed,
                "the reader forbids properties it does not declare \
                 (`additionalProperties: false`); the writer's content is open"
                    .to_owned(),
            );
            return;
        }
        let reader_fallback = format!("{}/additionalProperties", at.reader);
        let writer_fallback = format!("{}/additionalProperties", at.writer);
        self.sub(
            &Side::of(reader_extra, &reader_fallback),
            &Side::of(writer_extra, &writer_fallback),
            &field,
        );
    }

    fn arrays(&mut self, r: &Shape, w: &Shape, at: At<'_>) {
        let writer_prefix = w.arrays.iter().map(|a| a.prefix.len()).max().unwrap_or(0);
        let reader_prefix = r.arrays.iter().map(|a| a.prefix.len()).max().unwrap_or(0);
        let positions = writer_prefix.max(reader_prefix);
        let writer_rest: Vec<Node> = w.arrays.iter().filter_map(|a| a.rest.clone()).collect();
        let writer_rest_empty = self.collect(&writer_rest).is_empty();

        // The most elements the writer's arrays may have.
        let mut most = w.max_items;
        if writer_rest_empty {
            let tuple = u64::try_from(writer_prefix).unwrap_or(u64::MAX);
            most = min_opt(most, Some(tuple));
        }
        let least = w.min_items.unwrap_or(0);
        if let Some(min) = r.min_items.filter(|&min| min > least) {
            self.report(
                at,
                Rule::ConstraintTightened,
                format!("the reader has minItems {min}; the writer has minItems {least}"),
            );
        }
        if let Some(max) = r.max_items {
            if most.is_none_or(|most| most > max) {
                let most = most.map_or_else(|| "none".to_owned(), |m| m.to_string());
                self.report(
                    at,
                    Rule::ConstraintTightened,
                    format!("the reader has maxItems {max}; the writer's maxItems: {most}"),
                );
            }
        }
        if r.unique_items && !w.unique_items && most.is_none_or(|most| most > 1) {
            self.report(
                at,
                Rule::ConstraintTightened,
                "the reader has uniqueItems; the writer's arrays may repeat elements".to_owned(),
            );
        }
        if r.arrays.is_empty() {
            return;
        }

        for index in 0..=positions {
            // `positions` stands for every index past both tuples.
            let tail = index == positions;
            if most.is_some_and(|most| u64::try_from(index).unwrap_or(u64::MAX) >= most) {
                return;
            }
            let w_nodes: Vec<Node> = w.arrays.iter().filter_map(|a| a.schema_at(index)).collect();
            if self.collect(&w_nodes).is_empty() {
                return;
            }
            let r_nodes: Vec<Node> = r.arrays.iter().filter_map(|a| a.schema_at(index)).collect();
            let reader_shape = self.collect(&r_nodes);
            let field = item_field(at.field, (!tail).then_some(index));
            let keyword = if tail { "items" } else { "prefixItems" };
            let reader_fallback = format!("{}/{keyword}", at.reader);
            let writer_fallback = format!("{}/{keyword}", at.writer);
            let reader = Side::of(r_nodes, &reader_fallback);
            let writer = Side::of(w_nodes, &writer_fallback);
            if reader_shape.never {
                let shown = if tail {
                    format!("more than {positions}")
                } else {
                    format!("{}", index + 1)
                };
                self.report(
                    At {
                        field: &field,
                        reader: &reader.at,
                        writer: &writer.at,
                    },
                    Rule::ItemsClosed,
                    format!(
                        "the reader's arrays end after {reader_prefix} element(s) \
                         (`items: false`); the writer's may have {shown}"
                    ),
                );
                return;
            }
            self.sub(&reader, &writer, &field);
        }
    }
}
