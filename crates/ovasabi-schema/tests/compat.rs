//! The compatibility checker (`ovasabi_schema::compat`), table-driven: each row is an old
//! and a new schema, the expected outcome in each of the seven modes, and the rule codes
//! and fields expected in each direction.

use std::collections::BTreeSet;

use ovasabi_schema::compat::{can_read, check, Direction, Mode, Rule, Violation, MAX_DEPTH};
use serde_json::{json, Value};

/// The shared definitions the rows may `$ref`, as the registry would resolve them.
fn defs(uri: &str) -> Option<Value> {
    match uri {
        "urn:ovasabi:defs:money" => Some(json!({
            "$id": "urn:ovasabi:defs:money",
            "type": "object",
            "properties": {
                "amount": { "type": "integer", "description": "In minor units." },
                "currency": { "$ref": "#/$defs/currency" }
            },
            "required": ["amount", "currency"],
            "$defs": { "currency": { "type": "string", "pattern": "^[A-Z]{3}$" } }
        })),
        "urn:ovasabi:defs:tree" => Some(json!({
            "$id": "urn:ovasabi:defs:tree",
            "type": "object",
            "properties": {
                "label": { "type": "string" },
                "children": { "type": "array", "items": { "$ref": "urn:ovasabi:defs:tree" } }
            }
        })),
        _ => None,
    }
}

/// The outcome in one mode: `OK` (no violation) or `NO` (at least one).
const OK: bool = true;
const NO: bool = false;

/// Which modes check each direction, in `Mode::ALL` order (written out, not derived from
/// the implementation).
const CHECKS_BACKWARD: [bool; 7] = [true, true, false, false, true, true, false];
const CHECKS_FORWARD: [bool; 7] = [false, false, true, true, true, true, false];

/// `(rule code, field)`.
type Expected = &'static [(&'static str, &'static str)];

struct Row {
    name: &'static str,
    old: Value,
    new: Value,
    /// Outcome per mode: BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL,
    /// FULL_TRANSITIVE, NONE.
    modes: [bool; 7],
    /// What breaks when the new version reads the old one's data.
    backward: Expected,
    /// What breaks when the old version reads the new one's data.
    forward: Expected,
}

fn row(
    name: &'static str,
    old: Value,
    new: Value,
    modes: [bool; 7],
    backward: Expected,
    forward: Expected,
) -> Row {
    Row {
        name,
        old,
        new,
        modes,
        backward,
        forward,
    }
}

/// A `type: object` schema with these properties (and more keywords merged in).
fn object(properties: Value, extra: Value) -> Value {
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
    });
    if let (Value::Object(schema), Value::Object(extra)) = (&mut schema, extra) {
        schema.extend(extra);
    }
    schema
}

/// An object with one property `field` of the given schema.
fn field(schema: Value) -> Value {
    object(json!({ "field": schema }), json!({}))
}

fn rows() -> Vec<Row> {
    vec![
        // --- unchanged, annotations -----------------------------------------------------
        row(
            "unchanged",
            object(
                json!({"id": {"type": "string"}}),
                json!({"required": ["id"]}),
            ),
            object(
                json!({"id": {"type": "string"}}),
                json!({"required": ["id"]}),
            ),
            [OK, OK, OK, OK, OK, OK, OK],
            &[],
            &[],
        ),
        row(
            "only annotations changed",
            object(
                json!({"id": {"type": "string", "description": "old"}}),
                json!({}),
            ),
            object(
                json!({"id": {"type": "string", "description": "new", "examples": ["x"]}}),
                json!({"title": "v2", "x-ovasabi-changes": "docs"}),
            ),
            [OK, OK, OK, OK, OK, OK, OK],
            &[],
            &[],
        ),
        // --- properties and required ----------------------------------------------------
        row(
            "optional property added to open content",
            object(json!({"id": {"type": "string"}}), json!({})),
            object(
                json!({"id": {"type": "string"}, "nick": {"type": "string"}}),
                json!({}),
            ),
            [OK, OK, OK, OK, OK, OK, OK],
            &[],
            &[],
        ),
        row(
            "optional property added to closed content",
            object(
                json!({"id": {"type": "string"}}),
                json!({"additionalProperties": false}),
            ),
            object(
                json!({"id": {"type": "string"}, "nick": {"type": "string"}}),
                json!({"additionalProperties": false}),
            ),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("property_removed_closed_content", "nick")],
        ),
        row(
            "required property added",
            object(
                json!({"id": {"type": "string"}}),
                json!({"required": ["id"]}),
            ),
            object(
                json!({"id": {"type": "string"}, "email": {"type": "string"}}),
                json!({"required": ["id", "email"]}),
            ),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("required_added", "email")],
            &[],
        ),
        row(
            "required property removed",
            object(
                json!({"id": {"type": "string"}, "email": {"type": "string"}}),
                json!({"required": ["id", "email"]}),
            ),
            object(
                json!({"id": {"type": "string"}}),
                json!({"required": ["id"]}),
            ),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("required_added", "email")],
        ),
        row(
            "required property made optional",
            object(
                json!({"id": {"type": "string"}, "email": {"type": "string"}}),
                json!({"required": ["id", "email"]}),
            ),
            object(
                json!({"id": {"type": "string"}, "email": {"type": "string"}}),
                json!({"required": ["id"]}),
            ),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("required_added", "email")],
        ),
        row(
            "optional property removed from open content",
            object(
                json!({"id": {"type": "string"}, "nick": {"type": "string"}}),
                json!({}),
            ),
            object(json!({"id": {"type": "string"}}), json!({})),
            [OK, OK, OK, OK, OK, OK, OK],
            &[],
            &[],
        ),
        row(
            "optional property removed from closed content",
            object(
                json!({"id": {"type": "string"}, "nick": {"type": "string"}}),
                json!({"additionalProperties": false}),
            ),
            object(
                json!({"id": {"type": "string"}}),
                json!({"additionalProperties": false}),
            ),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("property_removed_closed_content", "nick")],
            &[],
        ),
        row(
            "property removed where the reader's additionalProperties schema rejects it",
            object(
                json!({"id": {"type": "string"}, "count": {"type": "integer"}}),
                json!({"additionalProperties": false}),
            ),
            object(
                json!({"id": {"type": "string"}}),
                json!({"additionalProperties": {"type": "string"}}),
            ),
            [NO, NO, NO, NO, NO, NO, OK],
            &[("type_changed", "count")],
            &[
                ("type_changed", "count"),
                ("additional_properties_closed", ""),
            ],
        ),
        row(
            "property removed, the reader's additionalProperties schema accepts it",
            object(
                json!({"id": {"type": "string"}, "note": {"type": "string", "maxLength": 10}}),
                json!({"additionalProperties": false}),
            ),
            object(
                json!({"id": {"type": "string"}}),
                json!({"additionalProperties": {"type": "string"}}),
            ),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[
                ("constraint_tightened", "note"),
                ("additional_properties_closed", ""),
            ],
        ),
        // --- additionalProperties -------------------------------------------------------
        row(
            "additionalProperties true to false",
            object(
                json!({"id": {"type": "string"}}),
                json!({"additionalProperties": true}),
            ),
            object(
                json!({"id": {"type": "string"}}),
                json!({"additionalProperties": false}),
            ),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("additional_properties_closed", "")],
            &[],
        ),
        row(
            "additionalProperties false to absent",
            object(
                json!({"id": {"type": "string"}}),
                json!({"additionalProperties": false}),
            ),
            object(json!({"id": {"type": "string"}}), json!({})),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("additional_properties_closed", "")],
        ),
        row(
            "additionalProperties schema narrowed (a map of labels)",
            field(json!({"type": "object", "additionalProperties": {"type": "number"}})),
            field(json!({"type": "object", "additionalProperties": {"type": "integer"}})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("type_narrowed", "field.*")],
            &[],
        ),
        // --- types ----------------------------------------------------------------------
        row(
            "integer widened to number",
            field(json!({"type": "integer"})),
            field(json!({"type": "number"})),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("type_narrowed", "field")],
        ),
        row(
            "number narrowed to integer",
            field(json!({"type": "number"})),
            field(json!({"type": "integer"})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("type_narrowed", "field")],
            &[],
        ),
        row(
            "string changed to integer",
            field(json!({"type": "string"})),
            field(json!({"type": "integer"})),
            [NO, NO, NO, NO, NO, NO, OK],
            &[("type_changed", "field")],
            &[("type_changed", "field")],
        ),
        row(
            "null added to the type",
            field(json!({"type": "string"})),
            field(json!({"type": ["string", "null"]})),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("type_narrowed", "field")],
        ),
        row(
            "type array reordered",
            field(json!({"type": ["null", "string"]})),
            field(json!({"type": ["string", "null"]})),
            [OK, OK, OK, OK, OK, OK, OK],
            &[],
            &[],
        ),
        row(
            "type removed (any value)",
            field(json!({"type": "string"})),
            field(json!({})),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("type_narrowed", "field")],
        ),
        row(
            "payload type changed",
            json!({"type": "object"}),
            json!({"type": "array"}),
            [NO, NO, NO, NO, NO, NO, OK],
            &[("type_changed", "")],
            &[("type_changed", "")],
        ),
        // --- enum and const -------------------------------------------------------------
        row(
            "enum value removed",
            field(json!({"type": "string", "enum": ["a", "b", "c"]})),
            field(json!({"type": "string", "enum": ["a", "b"]})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("enum_value_removed", "field")],
            &[],
        ),
        row(
            "enum value added",
            field(json!({"type": "string", "enum": ["a", "b"]})),
            field(json!({"type": "string", "enum": ["a", "b", "c"]})),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("enum_value_removed", "field")],
        ),
        row(
            "enum added",
            field(json!({"type": "string"})),
            field(json!({"type": "string", "enum": ["a", "b"]})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("enum_added", "field")],
            &[],
        ),
        row(
            "enum removed",
            field(json!({"type": "string", "enum": ["a", "b"]})),
            field(json!({"type": "string"})),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("enum_added", "field")],
        ),
        row(
            "enum on a boolean: false no longer accepted",
            field(json!({"type": "boolean"})),
            field(json!({"enum": [true]})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("enum_value_removed", "field")],
            &[],
        ),
        row(
            "enum numbers compared by value (1 equals 1.0)",
            field(json!({"enum": [1, 2]})),
            field(json!({"enum": [1.0, 2.0, 3]})),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("enum_value_removed", "field")],
        ),
        row(
            "const added",
            field(json!({"type": "string"})),
            field(json!({"type": "string", "const": "card"})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("const_added", "field")],
            &[],
        ),
        row(
            "const changed",
            field(json!({"const": "card"})),
            field(json!({"const": "cash"})),
            [NO, NO, NO, NO, NO, NO, OK],
            &[("const_changed", "field")],
            &[("const_changed", "field")],
        ),
        row(
            "const widened to an enum",
            field(json!({"const": "card"})),
            field(json!({"enum": ["card", "cash"]})),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("const_changed", "field")],
        ),
        // --- numeric and string constraints ---------------------------------------------
        row(
            "minimum raised",
            field(json!({"type": "integer", "minimum": 0})),
            field(json!({"type": "integer", "minimum": 1})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[],
        ),
        row(
            "maximum lowered",
            field(json!({"type": "number", "maximum": 100})),
            field(json!({"type": "number", "maximum": 99.5})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[],
        ),
        row(
            "minimum made exclusive (integers: > 0 is >= 1)",
            field(json!({"type": "integer", "minimum": 0})),
            field(json!({"type": "integer", "exclusiveMinimum": 0})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[],
        ),
        row(
            "exclusiveMaximum added",
            field(json!({"type": "number"})),
            field(json!({"type": "number", "exclusiveMaximum": 1})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[],
        ),
        row(
            "multipleOf added",
            field(json!({"type": "number"})),
            field(json!({"type": "number", "multipleOf": 0.01})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[],
        ),
        row(
            "multipleOf loosened (10 to 5)",
            field(json!({"type": "integer", "multipleOf": 10})),
            field(json!({"type": "integer", "multipleOf": 5})),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("constraint_tightened", "field")],
        ),
        row(
            "minLength raised",
            field(json!({"type": "string", "minLength": 1})),
            field(json!({"type": "string", "minLength": 3})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[],
        ),
        row(
            "maxLength lowered",
            field(json!({"type": "string", "maxLength": 64})),
            field(json!({"type": "string", "maxLength": 32})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[],
        ),
        row(
            "string bounds loosened",
            field(json!({"type": "string", "minLength": 2, "maxLength": 10})),
            field(json!({"type": "string", "minLength": 1, "maxLength": 20})),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("constraint_tightened", "field")],
        ),
        row(
            "enum values checked against a new maxLength",
            field(json!({"enum": ["ab", "abcdef"]})),
            field(json!({"type": "string", "maxLength": 3})),
            [NO, NO, NO, NO, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[("enum_added", "field")],
        ),
        row(
            "pattern added",
            field(json!({"type": "string"})),
            field(json!({"type": "string", "pattern": "^[a-z]+$"})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[],
        ),
        row(
            "pattern changed",
            field(json!({"type": "string", "pattern": "^[a-z]+$"})),
            field(json!({"type": "string", "pattern": "^[a-z0-9]+$"})),
            [NO, NO, NO, NO, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[("constraint_tightened", "field")],
        ),
        row(
            "format added",
            field(json!({"type": "string"})),
            field(json!({"type": "string", "format": "email"})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[],
        ),
        row(
            "format changed",
            field(json!({"type": "string", "format": "date"})),
            field(json!({"type": "string", "format": "date-time"})),
            [NO, NO, NO, NO, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[("constraint_tightened", "field")],
        ),
        row(
            "minProperties raised",
            field(json!({"type": "object"})),
            field(json!({"type": "object", "minProperties": 1})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[],
        ),
        // --- nesting --------------------------------------------------------------------
        row(
            "nested property type changed",
            object(
                json!({"shipping": {"type": "object", "properties": {
                    "address": {"type": "object", "properties": {"zip": {"type": "string"}}}
                }}}),
                json!({}),
            ),
            object(
                json!({"shipping": {"type": "object", "properties": {
                    "address": {"type": "object", "properties": {"zip": {"type": "integer"}}}
                }}}),
                json!({}),
            ),
            [NO, NO, NO, NO, NO, NO, OK],
            &[("type_changed", "shipping.address.zip")],
            &[("type_changed", "shipping.address.zip")],
        ),
        row(
            "nested required property added",
            object(
                json!({"shipping": {"type": "object", "properties": {
                    "country": {"type": "string"}
                }}}),
                json!({}),
            ),
            object(
                json!({"shipping": {"type": "object", "properties": {
                    "country": {"type": "string"}
                }, "required": ["country"]}}),
                json!({}),
            ),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("required_added", "shipping.country")],
            &[],
        ),
        // --- arrays ---------------------------------------------------------------------
        row(
            "array items type changed",
            object(
                json!({"tags": {"type": "array", "items": {"type": "string"}}}),
                json!({}),
            ),
            object(
                json!({"tags": {"type": "array", "items": {"type": "integer"}}}),
                json!({}),
            ),
            [NO, NO, NO, NO, NO, NO, OK],
            &[("type_changed", "tags[]")],
            &[("type_changed", "tags[]")],
        ),
        row(
            "array of objects: nested field type changed",
            object(
                json!({"order": {"type": "object", "properties": {"items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"sku": {"type": "string"}}}
                }}}}),
                json!({}),
            ),
            object(
                json!({"order": {"type": "object", "properties": {"items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"sku": {"type": "integer"}}}
                }}}}),
                json!({}),
            ),
            [NO, NO, NO, NO, NO, NO, OK],
            &[("type_changed", "order.items[].sku")],
            &[("type_changed", "order.items[].sku")],
        ),
        row(
            "tuple position narrowed",
            object(
                json!({"point": {"type": "array",
                    "prefixItems": [{"type": "string"}, {"type": "number"}]}}),
                json!({}),
            ),
            object(
                json!({"point": {"type": "array",
                    "prefixItems": [{"type": "string"}, {"type": "integer"}]}}),
                json!({}),
            ),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("type_narrowed", "point[1]")],
            &[],
        ),
        row(
            "tuple closed with items: false",
            object(
                json!({"point": {"type": "array",
                    "prefixItems": [{"type": "number"}, {"type": "number"}]}}),
                json!({}),
            ),
            object(
                json!({"point": {"type": "array",
                    "prefixItems": [{"type": "number"}, {"type": "number"}], "items": false}}),
                json!({}),
            ),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("items_closed", "point[]")],
            &[],
        ),
        row(
            "minItems raised",
            field(json!({"type": "array", "items": {"type": "string"}})),
            field(json!({"type": "array", "items": {"type": "string"}, "minItems": 1})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[],
        ),
        row(
            "maxItems lowered",
            field(json!({"type": "array", "maxItems": 10})),
            field(json!({"type": "array", "maxItems": 5})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[],
        ),
        row(
            "uniqueItems added",
            field(json!({"type": "array"})),
            field(json!({"type": "array", "uniqueItems": true})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("constraint_tightened", "field")],
            &[],
        ),
        // --- $ref -----------------------------------------------------------------------
        row(
            "local $defs changed",
            object(
                json!({"shipping": {"$ref": "#/$defs/address"}}),
                json!({"$defs": {"address": {"type": "object",
                    "properties": {"zip": {"type": "string"}}}}}),
            ),
            object(
                json!({"shipping": {"$ref": "#/$defs/address"}}),
                json!({"$defs": {"address": {"type": "object",
                    "properties": {"zip": {"type": "integer"}}}}}),
            ),
            [NO, NO, NO, NO, NO, NO, OK],
            &[("type_changed", "shipping.zip")],
            &[("type_changed", "shipping.zip")],
        ),
        row(
            "local definitions widened",
            object(
                json!({"qty": {"$ref": "#/definitions/qty"}}),
                json!({"definitions": {"qty": {"type": "integer"}}}),
            ),
            object(
                json!({"qty": {"$ref": "#/definitions/qty"}}),
                json!({"definitions": {"qty": {"type": "number"}}}),
            ),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("type_narrowed", "qty")],
        ),
        row(
            "inline schema replaced by an equivalent $ref",
            object(json!({"qty": {"type": "integer", "minimum": 1}}), json!({})),
            object(
                json!({"qty": {"$ref": "#/$defs/qty"}}),
                json!({"$defs": {"qty": {"type": "integer", "minimum": 1}}}),
            ),
            [OK, OK, OK, OK, OK, OK, OK],
            &[],
            &[],
        ),
        row(
            "shared definition kept",
            object(
                json!({"price": {"$ref": "urn:ovasabi:defs:money"}}),
                json!({}),
            ),
            object(
                json!({"price": {"$ref": "urn:ovasabi:defs:money"}, "note": {"type": "string"}}),
                json!({}),
            ),
            [OK, OK, OK, OK, OK, OK, OK],
            &[],
            &[],
        ),
        row(
            "shared definition replaced by a wider inline one",
            object(
                json!({"price": {"$ref": "urn:ovasabi:defs:money"}}),
                json!({}),
            ),
            object(
                json!({"price": {"type": "object", "properties": {
                    "amount": {"type": "number"},
                    "currency": {"$ref": "urn:ovasabi:defs:money#/$defs/currency"}
                }, "required": ["amount", "currency"]}}),
                json!({}),
            ),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("type_narrowed", "price.amount")],
        ),
        row(
            "shared definition's currency pattern dropped",
            object(
                json!({"price": {"$ref": "urn:ovasabi:defs:money"}}),
                json!({}),
            ),
            object(
                json!({"price": {"type": "object", "properties": {
                    "amount": {"type": "integer"},
                    "currency": {"type": "string"}
                }, "required": ["amount", "currency"]}}),
                json!({}),
            ),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("constraint_tightened", "price.currency")],
        ),
        row(
            "unresolvable shared $ref",
            object(
                json!({"price": {"$ref": "urn:ovasabi:defs:money"}}),
                json!({}),
            ),
            object(
                json!({"price": {"$ref": "urn:ovasabi:defs:nowhere"}}),
                json!({}),
            ),
            [NO, NO, NO, NO, NO, NO, OK],
            &[("ref_unresolved", "price")],
            &[("ref_unresolved", "price")],
        ),
        row(
            "dangling local $ref",
            object(json!({"qty": {"type": "integer"}}), json!({})),
            object(json!({"qty": {"$ref": "#/$defs/missing"}}), json!({})),
            [NO, NO, NO, NO, NO, NO, OK],
            &[("ref_unresolved", "qty")],
            &[("ref_unresolved", "qty")],
        ),
        row(
            "recursive local definition changed",
            json!({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
            }}}}),
            json!({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {
                "name": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
            }}}}),
            [NO, NO, NO, NO, NO, NO, OK],
            &[
                ("type_changed", "name"),
                ("type_changed", "children[].name"),
            ],
            &[
                ("type_changed", "name"),
                ("type_changed", "children[].name"),
            ],
        ),
        row(
            "recursive shared definition against a recursive local one",
            object(
                json!({"tree": {"$ref": "urn:ovasabi:defs:tree"}}),
                json!({}),
            ),
            object(
                json!({"tree": {"$ref": "#/$defs/node"}}),
                json!({"$defs": {"node": {"type": "object", "properties": {
                    "label": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
                }}}}),
            ),
            [OK, OK, OK, OK, OK, OK, OK],
            &[],
            &[],
        ),
        // --- anyOf, oneOf, allOf --------------------------------------------------------
        row(
            "writer anyOf branch added",
            field(json!({"anyOf": [{"type": "string"}, {"type": "integer"}]})),
            field(json!({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]})),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("branch_unmatched", "field")],
        ),
        row(
            "oneOf branch narrowed",
            field(json!({"oneOf": [{"type": "string"}, {"type": "integer"}]})),
            field(json!({"oneOf": [{"type": "string", "maxLength": 5}, {"type": "integer"}]})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("branch_unmatched", "field")],
            &[],
        ),
        row(
            "discriminated oneOf: a payment method added",
            object(
                json!({"payment": {"oneOf": [
                    {"type": "object", "properties": {"kind": {"const": "card"},
                        "last4": {"type": "string"}}, "required": ["kind", "last4"]},
                    {"type": "object", "properties": {"kind": {"const": "cash"}},
                        "required": ["kind"]}
                ]}}),
                json!({}),
            ),
            object(
                json!({"payment": {"oneOf": [
                    {"type": "object", "properties": {"kind": {"const": "card"},
                        "last4": {"type": "string"}}, "required": ["kind", "last4"]},
                    {"type": "object", "properties": {"kind": {"const": "cash"}},
                        "required": ["kind"]},
                    {"type": "object", "properties": {"kind": {"const": "iban"},
                        "iban": {"type": "string"}}, "required": ["kind", "iban"]}
                ]}}),
                json!({}),
            ),
            [OK, OK, NO, NO, NO, NO, OK],
            &[],
            &[("branch_unmatched", "payment")],
        ),
        row(
            "type array and anyOf of the same types",
            field(json!({"type": ["string", "null"]})),
            field(json!({"anyOf": [{"type": "string"}, {"type": "null"}]})),
            [OK, OK, OK, OK, OK, OK, OK],
            &[],
            &[],
        ),
        row(
            "writer oneOf branches merged with their siblings",
            object(
                json!({"a": {"type": "string"}, "b": {"type": "string"}}),
                json!({"oneOf": [{"required": ["a"]}, {"required": ["b"]}]}),
            ),
            object(
                json!({"a": {"type": "string"}, "b": {"type": "string"}}),
                json!({"required": ["a"]}),
            ),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("required_added", "a")],
            &[],
        ),
        row(
            "allOf: a required property added in a branch",
            json!({"allOf": [
                {"$ref": "#/$defs/base"},
                {"required": ["id"]}
            ], "$defs": {"base": {"type": "object", "properties": {
                "id": {"type": "string"}, "email": {"type": "string"}}}}}),
            json!({"allOf": [
                {"$ref": "#/$defs/base"},
                {"required": ["id", "email"]}
            ], "$defs": {"base": {"type": "object", "properties": {
                "id": {"type": "string"}, "email": {"type": "string"}}}}}),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("required_added", "email")],
            &[],
        ),
        row(
            "allOf: a branch closes content the other declares",
            json!({"allOf": [
                {"type": "object", "properties": {"id": {"type": "string"}}},
                {"properties": {"id": true, "nick": {"type": "string"}}}
            ]}),
            json!({"allOf": [
                {"type": "object", "properties": {"id": {"type": "string"}}},
                {"properties": {"id": true}, "additionalProperties": false}
            ]}),
            [NO, NO, OK, OK, NO, NO, OK],
            &[
                ("property_removed_closed_content", "nick"),
                ("additional_properties_closed", ""),
            ],
            &[],
        ),
        // --- boolean schemas ------------------------------------------------------------
        row(
            "property forbidden with false",
            object(json!({"legacy": {"type": "string"}}), json!({})),
            object(json!({"legacy": false}), json!({})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("false_schema", "legacy")],
            &[],
        ),
        row(
            "property true narrowed to a type",
            object(json!({"extra": true}), json!({})),
            object(json!({"extra": {"type": "string"}}), json!({})),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("type_narrowed", "extra")],
            &[],
        ),
        row(
            "payload schema true to false",
            json!(true),
            json!(false),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("false_schema", "")],
            &[],
        ),
        // --- keywords the checker does not compare --------------------------------------
        row(
            "not added",
            object(json!({"id": {"type": "string"}}), json!({})),
            object(
                json!({"id": {"type": "string"}}),
                json!({"not": {"required": ["legacy"]}}),
            ),
            [NO, NO, OK, OK, NO, NO, OK],
            &[("unchecked_keyword", "")],
            &[],
        ),
        row(
            "not kept identical",
            object(
                json!({"id": {"type": "string"}}),
                json!({"not": {"required": ["legacy"]}}),
            ),
            object(
                json!({"id": {"type": "string"}, "nick": {"type": "string"}}),
                json!({"not": {"required": ["legacy"]}}),
            ),
            [OK, OK, OK, OK, OK, OK, OK],
            &[],
            &[],
        ),
    ]
}

fn codes_and_fields<'a>(
    violations: impl IntoIterator<Item = &'a Violation>,
    direction: Direction,
) -> BTreeSet<(String, String)> {
    violations
        .into_iter()
        .filter(|v| v.direction == direction)
        .map(|v| (v.breaking.rule.code().to_owned(), v.breaking.field.clone()))
        .collect()
}

fn expected_set(expected: Expected) -> BTreeSet<(String, String)> {
    expected
        .iter()
        .map(|(code, field)| ((*code).to_owned(), (*field).to_owned()))
        .collect()
}

#[test]
fn every_row_in_every_mode() {
    let mut failures = Vec::new();
    for row in rows() {
        let earlier = [(1, row.old.clone())];
        for (i, mode) in Mode::ALL.into_iter().enumerate() {
            let violations = check(mode, &earlier, (2, &row.new), &defs);
            let shown: Vec<String> = violations.iter().map(ToString::to_string).collect();
            if violations.is_empty() != row.modes[i] {
                failures.push(format!(
                    "{} / {mode}: expected {}, got {shown:#?}",
                    row.name,
                    if row.modes[i] { "OK" } else { "a violation" },
                ));
            }
            for (direction, checked, expected) in [
                (Direction::Backward, CHECKS_BACKWARD[i], row.backward),
                (Direction::Forward, CHECKS_FORWARD[i], row.forward),
            ] {
                let want = if checked {
                    expected_set(expected)
                } else {
                    BTreeSet::new()
                };
                let got = codes_and_fields(&violations, direction);
                if got != want {
                    failures.push(format!(
                        "{} / {mode} / {direction}: expected {want:?}, got {got:?}: {shown:#?}",
                        row.name
                    ));
                }
            }
            if violations.iter().any(|v| v.version != 2 || v.against != 1) {
                failures.push(format!("{} / {mode}: wrong versions: {shown:#?}", row.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_table_covers_every_rule() {
    let mut covered = BTreeSet::new();
    for row in rows() {
        covered.extend(
            row.backward
                .iter()
                .chain(row.forward)
                .map(|(code, _)| *code),
        );
    }
    // Covered by its own test below.
    covered.insert(Rule::TooDeep.code());
    let missing: Vec<&str> = Rule::ALL
        .iter()
        .map(Rule::code)
        .filter(|code| !covered.contains(code))
        .collect();
    assert!(missing.is_empty(), "rules without a row: {missing:?}");
    let unknown: Vec<&&str> = covered
        .iter()
        .filter(|code| !Rule::ALL.iter().any(|rule| rule.code() == **code))
        .collect();
    assert!(unknown.is_empty(), "rows expect unknown rules: {unknown:?}");
    let codes: BTreeSet<&str> = Rule::ALL.iter().map(Rule::code).collect();
    assert_eq!(codes.len(), Rule::ALL.len(), "rule codes must be distinct");
}

/// Three versions where v3 is compatible with v2 but not with v1: only the transitive
/// modes see it.
#[test]
fn transitive_modes_check_every_earlier_version() {
    type Found = &'static [(u32, Direction, &'static str, &'static str)];
    struct History {
        name: &'static str,
        versions: [Value; 3],
        /// Per mode, in `Mode::ALL` order: `(against, direction, rule code, field)`.
        expected: [Found; 7],
    }
    use Direction::{Backward as B, Forward as F};
    let histories = [
        History {
            name: "a property removed in v2 comes back with another type in v3",
            versions: [
                object(
                    json!({"id": {"type": "string"}, "a": {"type": "string"}}),
                    json!({}),
                ),
                object(json!({"id": {"type": "string"}}), json!({})),
                object(
                    json!({"id": {"type": "string"}, "a": {"type": "integer"}}),
                    json!({}),
                ),
            ],
            expected: [
                &[],
                &[(1, B, "type_changed", "a")],
                &[],
                &[(1, F, "type_changed", "a")],
                &[],
                &[(1, B, "type_changed", "a"), (1, F, "type_changed", "a")],
                &[],
            ],
        },
        History {
            name: "v3 widens what v1 had and v2 removed: only forward, only transitive",
            versions: [
                object(json!({"a": {"type": "integer"}}), json!({})),
                object(json!({}), json!({})),
                object(json!({"a": {"type": "number"}}), json!({})),
            ],
            expected: [
                &[],
                &[],
                &[],
                &[(1, F, "type_narrowed", "a")],
                &[],
                &[(1, F, "type_narrowed", "a")],
                &[],
            ],
        },
        History {
            name: "v3 narrows what v1 had and v2 removed: only backward, only transitive",
            versions: [
                object(json!({"a": {"type": "number"}}), json!({})),
                object(json!({}), json!({})),
                object(json!({"a": {"type": "integer"}}), json!({})),
            ],
            expected: [
                &[],
                &[(1, B, "type_narrowed", "a")],
                &[],
                &[],
                &[],
                &[(1, B, "type_narrowed", "a")],
                &[],
            ],
        },
        History {
            name: "every version adds an enum value: forward breaks against each earlier one",
            versions: [
                field(json!({"enum": ["a", "b"]})),
                field(json!({"enum": ["a", "b", "c"]})),
                field(json!({"enum": ["a", "b", "c", "d"]})),
            ],
            expected: [
                &[],
                &[],
                &[(2, F, "enum_value_removed", "field")],
                &[
                    (1, F, "enum_value_removed", "field"),
                    (2, F, "enum_value_removed", "field"),
                ],
                &[(2, F, "enum_value_removed", "field")],
                &[
                    (1, F, "enum_value_removed", "field"),
                    (2, F, "enum_value_removed", "field"),
                ],
                &[],
            ],
        },
        History {
            name: "v3 narrows what v2 widened",
            versions: [
                field(json!({"type": "integer"})),
                field(json!({"type": "number"})),
                field(json!({"type": "integer"})),
            ],
            expected: [
                &[(2, B, "type_narrowed", "field")],
                &[(2, B, "type_narrowed", "field")],
                &[],
                &[],
                &[(2, B, "type_narrowed", "field")],
                &[(2, B, "type_narrowed", "field")],
                &[],
            ],
        },
    ];
    let mut failures = Vec::new();
    for history in histories {
        let [v1, v2, v3] = history.versions;
        let earlier = [(1, v1), (2, v2)];
        for (i, mode) in Mode::ALL.into_iter().enumerate() {
            let violations = check(mode, &earlier, (3, &v3), &defs);
            let got: BTreeSet<(u32, &str, &str, String)> = violations
                .iter()
                .map(|v| {
                    (
                        v.against,
                        v.direction.as_str(),
                        v.breaking.rule.code(),
                        v.breaking.field.clone(),
                    )
                })
                .collect();
            let want: BTreeSet<(u32, &str, &str, String)> = history.expected[i]
                .iter()
                .map(|(against, direction, code, field)| {
                    (*against, direction.as_str(), *code, (*field).to_owned())
                })
                .collect();
            if got != want {
                failures.push(format!(
                    "{} / {mode}: expected {want:?}, got {got:?}",
                    history.name
                ));
            }
            assert!(violations.iter().all(|v| v.version == 3));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn messages_name_the_versions_the_field_and_the_rule() {
    let v1 = object(
        json!({"customer": {"type": "object", "properties": {"id": {"type": "string"}}}}),
        json!({}),
    );
    let v2 = object(
        json!({"customer": {"type": "object",
            "properties": {"id": {"type": "string"}, "email": {"type": "string"}},
            "required": ["email"]}}),
        json!({}),
    );

    let violations = check(Mode::Full, &[(1, v1.clone())], (2, &v2), &defs);
    assert_eq!(violations.len(), 1, "{violations:#?}");
    let violation = &violations[0];
    assert_eq!(violation.direction, Direction::Backward);
    assert_eq!(violation.reader_writer(), (2, 1));
    assert_eq!(violation.breaking.field, "customer.email");
    assert_eq!(violation.breaking.rule, Rule::RequiredAdded);
    assert_eq!(
        violation.breaking.reader_pointer,
        "#/properties/customer/required"
    );
    assert_eq!(violation.breaking.writer_pointer, "#/properties/customer");
    let message = violation.to_string();
    for part in [
        "v2 breaks BACKWARD against v1",
        "field `customer.email`",
        "required property added",
        "[required_added]",
        "a consumer on v2 cannot read every event written with v1",
        "the reader requires `email`",
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
    assert!(!message.contains('\n'), "one line: {message}");

    // The other way round the reader is the earlier version.
    let violations = check(Mode::Forward, &[(1, v2)], (2, &v1), &defs);
    assert_eq!(violations.len(), 1, "{violations:#?}");
    let message = violations[0].to_string();
    assert!(
        message.starts_with("v2 breaks FORWARD against v1: field `customer.email`:"),
        "{message}"
    );
    assert!(
        message.contains("a consumer on v1 cannot read every event written with v2"),
        "{message}"
    );

    // A change of the payload itself says so.
    let breaking = &can_read(
        &json!({"type": "string"}),
        &json!({"type": "integer"}),
        &defs,
    )[0];
    assert_eq!(breaking.field, "");
    assert!(
        breaking
            .to_string()
            .starts_with("the payload: type changed [type_changed]:"),
        "{breaking}"
    );
    assert!(breaking.detail.contains("integer") && breaking.detail.contains("string"));
}

#[test]
fn breaking_changes_point_into_shared_definitions() {
    let reader = object(
        json!({"price": {"type": "object", "properties": {
            "amount": {"type": "integer"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}
        }, "required": ["amount", "currency"]}}),
        json!({}),
    );
    let writer = object(
        json!({"price": {"$ref": "urn:ovasabi:defs:money"}}),
        json!({}),
    );
    assert_eq!(can_read(&reader, &writer, &defs), vec![]);

    let writer_wider = json!({"$ref": "urn:ovasabi:defs:money"});
    let reader_narrower = json!({"$ref": "urn:ovasabi:defs:money", "properties": {
        "amount": {"minimum": 0}
    }});
    let found = can_read(&reader_narrower, &writer_wider, &defs);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].rule, Rule::ConstraintTightened);
    assert_eq!(found[0].field, "amount");
    assert_eq!(found[0].reader_pointer, "#/properties/amount");
    assert_eq!(
        found[0].writer_pointer,
        "urn:ovasabi:defs:money#/properties/amount"
    );
    assert!(found[0].detail.contains("minimum 0"), "{}", found[0].detail);
}

#[test]
fn references_resolve_by_pointer_anchor_and_own_id() {
    let resolve_nothing = |_: &str| -> Option<Value> { None };
    let by_anchor = json!({
        "$id": "urn:ovasabi:schema:demo:1",
        "type": "object",
        "properties": {
            "a": {"$ref": "#zip"},
            "b": {"$ref": "urn:ovasabi:schema:demo:1#/$defs/escaped~1name"},
            "c": {"$ref": "#/$defs/with%20space"}
        },
        "$defs": {
            "zip": {"$anchor": "zip", "type": "string"},
            "escaped/name": {"type": "integer"},
            "with space": {"type": "boolean"}
        }
    });
    let inline = object(
        json!({"a": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "boolean"}}),
        json!({}),
    );
    assert_eq!(can_read(&by_anchor, &inline, &resolve_nothing), vec![]);
    assert_eq!(can_read(&inline, &by_anchor, &resolve_nothing), vec![]);

    let changed = object(
        json!({"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "boolean"}}),
        json!({}),
    );
    let found = can_read(&changed, &by_anchor, &resolve_nothing);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        (found[0].rule, found[0].field.as_str()),
        (Rule::TypeChanged, "a")
    );
}

#[test]
fn reference_cycles_end_without_a_panic() {
    let resolve_nothing = |_: &str| -> Option<Value> { None };
    let cases = [
        // A reference to itself, and a cycle of two that never reaches a schema.
        json!({"$ref": "#"}),
        json!({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}),
        // Mutual recursion through properties.
        json!({"$ref": "#/$defs/a", "$defs": {
            "a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}}},
            "b": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}}
        }}),
        // Not a string: ignored.
        json!({"$ref": 42, "type": "string"}),
    ];
    for schema in &cases {
        for other in &cases {
            // Must return; what it finds depends on the pair.
            let _ = can_read(schema, other, &resolve_nothing);
        }
        assert_eq!(
            can_read(schema, schema, &resolve_nothing),
            vec![],
            "{schema}"
        );
    }

    // A mutually recursive schema with a change deep inside reports the field.
    let old = json!({"$ref": "#/$defs/a", "$defs": {
        "a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}}},
        "b": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}, "n": {"type": "string"}}}
    }});
    let new = json!({"$ref": "#/$defs/a", "$defs": {
        "a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}}},
        "b": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}, "n": {"type": "integer"}}}
    }});
    let found = can_read(&new, &old, &resolve_nothing);
    let fields: BTreeSet<&str> = found.iter().map(|b| b.field.as_str()).collect();
    assert!(fields.contains("b.n"), "{found:#?}");
    assert!(
        found.iter().all(|b| b.rule == Rule::TypeChanged),
        "{found:#?}"
    );
}

#[test]
fn nesting_deeper_than_the_limit_is_reported() {
    fn nested(levels: usize, leaf: Value) -> Value {
        (0..levels).fold(
            leaf,
            |inner, _| json!({"type": "object", "properties": {"x": inner}}),
        )
    }
    let deep = MAX_DEPTH + 10;
    let found = can_read(
        &nested(deep, json!({"type": "string"})),
        &nested(deep, json!({"type": "string"})),
        &defs,
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].rule, Rule::TooDeep);
    assert_eq!(found[0].field.split('.').count(), MAX_DEPTH);

    // Within the limit, the same shape is compared to the leaf.
    let shallow = MAX_DEPTH / 2;
    let found = can_read(
        &nested(shallow, json!({"type": "string"})),
        &nested(shallow, json!({"type": "integer"})),
        &defs,
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].rule, Rule::TypeChanged);
    assert_eq!(found[0].field, vec!["x"; shallow].join("."));
}

#[test]
fn many_writer_alternatives_are_widened_not_expanded() {
    // 2^10 combinations of branches: the checker drops the writer's alternatives, which
    // only widens the writer, so a reader accepting everything still reads it and a
    // reader that does not is still told.
    let branch = json!({"anyOf": [{"required": ["a"]}, {"required": ["b"]}]});
    let writer = json!({"type": "object", "allOf": vec![branch; 10]});
    assert_eq!(can_read(&json!({"type": "object"}), &writer, &defs), vec![]);
    let found = can_read(&json!({"type": "string"}), &writer, &defs);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].rule, Rule::TypeChanged);
}

#[test]
fn no_earlier_version_means_no_violation() {
    let schema = field(json!({"type": "string"}));
    for mode in Mode::ALL {
        assert!(check(mode, &[], (1, &schema), &defs).is_empty(), "{mode}");
    }
}

#[test]
fn mode_names() {
    let names = [
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
        "NONE",
    ];
    for (mode, name) in Mode::ALL.into_iter().zip(names) {
        assert_eq!(mode.as_str(), name);
        assert_eq!(mode.to_string(), name);
        assert_eq!(Mode::parse(name), Ok(mode));
        assert_eq!(name.parse::<Mode>(), Ok(mode));
        assert_eq!(Mode::parse(&name.to_lowercase()), Ok(mode));
        assert_eq!(serde_json::to_value(mode).unwrap(), json!(name));
        assert_eq!(serde_json::from_value::<Mode>(json!(name)).unwrap(), mode);
        assert_eq!(mode.is_transitive(), name.ends_with("_TRANSITIVE"));
    }
    assert_eq!(Mode::default(), Mode::Backward);

    let error = Mode::parse("SIDEWAYS").unwrap_err();
    assert!(error.contains("SIDEWAYS"), "{error}");
    for name in names {
        assert!(error.contains(name), "{error}");
    }
    let error = serde_json::from_value::<Mode>(json!("FULLY")).unwrap_err();
    assert!(error.to_string().contains("FULL_TRANSITIVE"), "{error}");
}

#[test]
fn rule_codes_are_stable() {
    let codes: Vec<&str> = Rule::ALL.iter().map(Rule::code).collect();
    assert_eq!(
        codes,
        [
            "required_added",
            "property_removed_closed_content",
            "additional_properties_closed",
            "type_narrowed",
            "type_changed",
            "enum_value_removed",
            "enum_added",
            "const_added",
            "const_changed",
            "constraint_tightened",
            "items_closed",
            "false_schema",
            "branch_unmatched",
            "unchecked_keyword",
            "ref_unresolved",
            "too_deep",
        ]
    );
    assert_eq!(
        Rule::RequiredAdded.to_string(),
        "required property added [required_added]"
    );
}
