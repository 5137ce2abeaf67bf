//! Validation of custom resources against their CRD's structural schema, as the API server
//! does it: defaults, pruning of unknown fields, types, enums, patterns, lengths, item counts,
//! required fields, then `x-kubernetes-validations` CEL rules (kube's `cel` feature).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use serde_json::{Value, json};

/// One invalid field, as the API server reports it in a 422 Status's `details.causes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The cause type: `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`,
    /// `FieldValueTypeInvalid`, `FieldValueTooLong`, ...
    pub reason: String,
    /// The field path, e.g. `spec.container`.
    pub field: String,
    /// The human message, e.g. `Required value` or the CEL rule's message.
    pub message: String,
}

/// The result of validating one object.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Every invalid field; empty when the object is valid.
    pub errors: Vec<FieldError>,
    /// Paths of fields the schema does not know (already pruned from the object); a request
    /// with `fieldValidation=Strict` fails on them, `Warn` turns them into warnings.
    pub unknown_fields: Vec<String>,
}

/// Default, prune and validate `object` (a whole custom resource) against `schema`, in
/// place. `old` is the stored object on updates (for CEL transition rules).
pub fn validate(schema: &JSONSchemaProps, object: &mut Value, old: Option<&Value>) -> Outcome {
    let Ok(schema) = serde_json::to_value(schema) else {
        return Outcome::default();
    };
    let mut outcome = Outcome::default();
    walk(&schema, object, "", &mut outcome);
    if outcome.errors.is_empty()
        && let Err(failures) = kube::core::cel::Validator::new().validate(&schema, object, old)
    {
        for failure in failures.iter() {
            outcome.errors.push(FieldError {
                reason: failure
                    .reason
                    .clone()
                    .unwrap_or_else(|| "FieldValueInvalid".into()),
                field: failure.field_path.clone(),
                message: format!("Invalid value: \"object\": {}", failure.message),
            });
        }
    }
    outcome
}

/// The 422 `Status` the API server returns for `errors` on the object `name` of `kind` in
/// `group`.
pub fn invalid_status(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Value {
    let listed: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    let summary = if listed.len() == 1 {
        listed[0].clone()
    } else {
        format!("[{}]", listed.join(", "))
    };
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("{kind}.{group} \"{name}\" is invalid: {summary}"),
        "reason": "Invalid",
        "details": {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": errors.iter().map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field})).collect::<Vec<_>>(),
        },
        "code": 422,
    })
}

fn error(outcome: &mut Outcome, reason: &str, field: &str, message: String) {
    outcome.errors.push(FieldError {
        reason: reason.into(),
        field: field.into(),
        message,
    });
}

fn walk(schema: &Value, value: &mut Value, path: &str, outcome: &mut Outcome) {
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) && !path.is_empty() {
            error(
                outcome,
                "FieldValueTypeInvalid",
                path,
                "Invalid value: \"null\": must not be null".into(),
            );
        }
        return;
    }
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            error(
                outcome,
                "FieldValueTypeInvalid",
                path,
                format!("Invalid value: {value}: must be an integer or a string"),
            );
        }
        return;
    }
    let expected = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let type_ok = match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        let actual = match value {
            Value::Object(_) => "object",
            Value::Array(_) => "array",
            Value::String(_) => "string",
            Value::Number(_) => "number",
            Value::Bool(_) => "boolean",
            Value::Null => "null",
        };
        error(
            outcome,
            "FieldValueTypeInvalid",
            path,
            format!(
                "Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
            ),
        );
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        error(
            outcome,
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ),
        );
    }
    match value {
        Value::String(s) => check_string(schema, s, path, outcome),
        Value::Array(items) => {
            let count = items.len() as u64;
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && count > max
            {
                error(
                    outcome,
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {count}: must have at most {max} items"),
                );
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && count < min
            {
                error(
                    outcome,
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {count}: {path} in body should have at least {min} items"
                    ),
                );
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), outcome);
                }
            }
        }
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            // Defaults first, so required checks and CEL see them, as the server does.
            if let Some(properties) = properties {
                for (key, prop) in properties {
                    if !map.contains_key(key)
                        && let Some(default) = prop.get("default")
                    {
                        map.insert(key.clone(), default.clone());
                    }
                }
            }
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(required) {
                    error(
                        outcome,
                        "FieldValueRequired",
                        &join(path, required),
                        "Required value".into(),
                    );
                }
            }
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                let Some(child) = map.get_mut(&key) else {
                    continue;
                };
                if let Some(prop) = properties.and_then(|p| p.get(&key)) {
                    walk(prop, child, &child_path, outcome);
                } else if let Some(additional) =
                    schema.get("additionalProperties").filter(|a| a.is_object())
                {
                    walk(additional, child, &child_path, outcome);
                } else if path.is_empty()
                    && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    // Checked by the server itself, never pruned.
                } else if !preserve {
                    outcome.unknown_fields.push(child_path);
                    map.remove(&key);
                }
            }
        }
        _ => check_number(schema, value, path, outcome),
    }
}

fn check_string(schema: &Value, s: &str, path: &str, outcome: &mut Outcome) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        error(
            outcome,
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {max} bytes"),
        );
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        error(
            outcome,
            "FieldValueInvalid",
            path,
            format!("Invalid value: \"{s}\": {path} in body should be at least {min} chars long"),
        );
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && let Ok(re) = regex::Regex::new(pattern)
        && !re.is_match(s)
    {
        error(
            outcome,
            "FieldValueInvalid",
            path,
            format!("Invalid value: \"{s}\": {path} in body should match '{pattern}'"),
        );
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str)
        && !format_ok(format, s)
    {
        error(
            outcome,
            "FieldValueInvalid",
            path,
            format!("Invalid value: \"{s}\": {path} in body must be of type {format}: \"{s}\""),
        );
    }
}

/// The string formats the API server checks (kube-openapi's registry); unknown formats pass.
fn format_ok(format: &str, s: &str) -> bool {
    use base64::Engine as _;
    match format {
        "date-time" => s.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "date" => s.parse::<k8s_openapi::jiff::civil::Date>().is_ok() && s.len() == 10,
        "uuid" | "uuid3" | "uuid4" | "uuid5" => {
            s.len() == 36
                && uuid::Uuid::parse_str(s).is_ok_and(|u| match format {
                    "uuid3" => u.get_version_num() == 3,
                    "uuid4" => u.get_version_num() == 4,
                    "uuid5" => u.get_version_num() == 5,
                    _ => true,
                })
        }
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        _ => true,
    }
}

fn check_number(schema: &Value, value: &Value, path: &str, outcome: &mut Outcome) {
    let Some(n) = value.as_f64() else { return };
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && n > max
    {
        error(
            outcome,
            "FieldValueInvalid",
            path,
            format!("Invalid value: {value}: {path} in body should be less than or equal to {max}"),
        );
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && n < min
    {
        error(
            outcome,
            "FieldValueInvalid",
            path,
            format!(
                "Invalid value: {value}: {path} in body should be greater than or equal to {min}"
            ),
        );
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::format_ok;

    #[test]
    fn string_formats_are_checked_like_the_api_server_does() {
        assert!(format_ok("date-time", "2026-11-25T04:00:00Z"));
        assert!(!format_ok("date-time", "yesterday"));
        assert!(format_ok("date", "2026-11-25"));
        assert!(!format_ok("date", "2026-13-01"));
        assert!(format_ok("uuid", "6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10"));
        assert!(!format_ok("uuid", "6f8f4c2e3b1a4d8e9c712a5e0b9d4f10"));
        assert!(format_ok("uuid4", "6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10"));
        assert!(!format_ok("uuid5", "6f8f4c2e-3b1a-4d8e-9c71-2a5e0b9d4f10"));
        assert!(format_ok("byte", "aGVsbG8="));
        assert!(!format_ok("byte", "not base64!"));
        assert!(format_ok("ipv4", "10.0.0.1"));
        assert!(!format_ok("ipv6", "10.0.0.1"));
        assert!(format_ok("int64", "anything"), "unknown formats pass");
    }
}
